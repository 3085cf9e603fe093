"""Signed links: a URL that works without an API key, for what it names and until it expires.

The signature is the lowercase hex HMAC-SHA256, keyed with the server's signing key
(ENVLINK_SIGNING_KEY), of `bulletin\\n<month>\\n<version>\\n<format>\\n<expires>` (expires in unix
seconds). Changing any of them, or the key, makes the signature wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import urlencode

from core.errors import BadSignature, InvalidInput, LinkExpired

# How long a bulletin link sent in a message works.
BULLETIN_LINK_TTL = timedelta(days=30)
BULLETIN_SIGNED_PATH = "/v1/reports/bulletin/signed"


def check_signing_key(kind: str, channel: str, key_set: bool, *, code: str) -> None:
    """InvalidInput unless a bulletin subscription by a link channel has a signing key to use."""
    if kind == "bulletin" and channel != "email" and not key_set:
        raise InvalidInput(
            f"kind: subscription {code} sends the bulletin by {channel} as a signed link, which"
            " needs ENVLINK_SIGNING_KEY (the same on the API and the worker); set it, or use e-mail"
        )


def missing_signing_key(codes: list[str]) -> str | None:
    """What is wrong when bulletin subscriptions `codes` send links and no signing key is set."""
    if not codes:
        return None
    return (
        f"ENVLINK_SIGNING_KEY is not set, but bulletin subscriptions {', '.join(codes)} send"
        " the bulletin as a signed link (webhook, WeCom, DingTalk): their deliveries fail. Set"
        " it (the same value on the worker and the API), or send them by e-mail"
    )


def bulletin_signature(
    key: str, *, month: str, version: int, file_format: str, expires: int
) -> str:
    """The signature of a bulletin link."""
    message = f"bulletin\n{month}\n{version}\n{file_format}\n{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def bulletin_link(
    base_url: str, key: str, *, month: str, version: int, file_format: str, expires_at: datetime
) -> str:
    """The signed URL of a stored bulletin version (`html` or `csv`), working until expires_at."""
    expires = int(expires_at.timestamp())
    query = {"month": month, "version": version, "expires": expires}
    if file_format != "html":
        query["format"] = file_format
    query["sig"] = bulletin_signature(
        key, month=month, version=version, file_format=file_format, expires=expires
    )
    return f"{base_url.rstrip('/')}{BULLETIN_SIGNED_PATH}?{urlencode(query)}"


def check_bulletin_link(
    key: str | None,
    *,
    month: str,
    version: int,
    file_format: str,
    expires: int,
    sig: str,
    now: datetime,
) -> None:
    """BadSignature unless the link was signed with `key`; LinkExpired once it has expired."""
    if key is None:
        raise BadSignature("sig: this server signs no links (ENVLINK_SIGNING_KEY is not set)")
    expected = bulletin_signature(
        key, month=month, version=version, file_format=file_format, expires=expires
    )
    if not hmac.compare_digest(expected, sig.lower()):
        raise BadSignature("sig: the signature does not match month, version, format and expires")
    if now.timestamp() >= expires:
        raise LinkExpired(f"expires: the link expired at {expires} (unix seconds)")
