"""E-mail over SMTP, optionally upgraded with STARTTLS, in Chinese, English or both.

The target address lists the recipients, comma-separated. The subject is RFC 2047-encoded UTF-8;
a notification in one language is one text/plain part (Content-Language zh-CN or en-US), in both
languages a multipart/mixed message of two inline text/plain parts, Chinese first. The
Message-ID is derived from the notification id (`message_id`), so a re-send after a retry
carries the same Message-ID and the same Date, and mail systems can tell it is the same message.

SMTP replies map to the delivery status as everywhere else: 4xx replies, timeouts and dropped or
refused connections are worth retrying; 5xx replies (a recipient refused, authentication failed),
a server without STARTTLS when it is required and an untrusted certificate are not. When the
server accepts some recipients and refuses others the message counts as sent (a retry would send
it twice to the accepted ones); the refused addresses are in the result's error text.
"""

from __future__ import annotations

import asyncio
import base64
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, parseaddr

from alerts.notify.bulletin import BulletinMessage, email_message
from alerts.notify.channels.base import ChannelTarget, DeliveryResult, DeliveryStatus, clip
from alerts.notify.message import Notification
from alerts.notify.render import Lang, full_subject, languages, render_text
from core.settings import Settings

CONTENT_LANGUAGE: dict[Lang, str] = {"zh": "zh-CN", "en": "en-US"}
# Characters of the notification id kept as they are in the Message-ID's local part; the others
# (and "=" itself) are written =XX, so distinct ids always give distinct Message-IDs.
_PLAIN = re.compile(r"[A-Za-z0-9_+/-]")


@dataclass(frozen=True)
class SmtpConfig:
    """How to reach the SMTP relay."""

    host: str
    port: int = 25
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    from_address: str = "EnvLink <envlink@localhost>"
    timeout_s: float = 10.0
    # Certificates trusted for STARTTLS; None means the system's default trust store.
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig | None:
        """The relay the settings name, or None when ENVLINK_SMTP_HOST is unset."""
        if settings.smtp_host is None:
            return None
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            starttls=settings.smtp_starttls,
            from_address=settings.smtp_from,
            timeout_s=settings.notify_http_timeout_s,
        )


def message_id(notification_id: str, domain: str) -> str:
    """The Message-ID of a notification: <envlink.<encoded id>@<domain>>, the same on re-send."""
    local = "".join(c if _PLAIN.fullmatch(c) else f"={ord(c):02X}" for c in notification_id)
    return f"<envlink.{local}@{domain}>"


def recipients(address: str) -> list[str]:
    """The e-mail addresses of a target, in order; raises ValueError naming a malformed one."""
    found = []
    for name, addr in getaddresses([address]):
        if not addr and not name:
            continue
        if "@" not in addr or any(c in addr for c in " \r\n<>,;"):
            raise ValueError(f"{(addr or name)!r} is not an e-mail address")
        found.append(addr)
    if not found:
        raise ValueError(f"no e-mail address in {address!r}")
    return found


def build_message(notification: Notification, *, from_address: str, to: list[str]) -> EmailMessage:
    """The complete e-mail of a notification."""
    message = EmailMessage(policy=SMTP)
    sender = parseaddr(from_address)[1]
    domain = sender.rpartition("@")[2] or "envlink.local"
    message["Subject"] = full_subject(notification)
    message["From"] = from_address
    message["To"] = ", ".join(str(Address(addr_spec=addr)) for addr in to)
    message["Date"] = format_datetime(notification.created_at)
    message["Message-ID"] = message_id(notification.id, domain)
    message["Auto-Submitted"] = "auto-generated"
    message["X-EnvLink-Notification-Id"] = notification.id
    message["X-EnvLink-Notification-Kind"] = notification.kind
    langs = languages(notification.language)
    if len(langs) == 1:
        message.set_content(render_text(notification, langs[0]), charset="utf-8")
        message["Content-Language"] = CONTENT_LANGUAGE[langs[0]]
        return message
    message.make_mixed()
    for lang in langs:
        part = EmailMessage(policy=SMTP)
        part.set_content(render_text(notification, lang), charset="utf-8", disposition="inline")
        part["Content-Language"] = CONTENT_LANGUAGE[lang]
        message.attach(part)
    return message


class EmailChannel:
    """Sends notifications as e-mail through one SMTP relay."""

    name = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    async def send(self, notification: Notification, target: ChannelTarget) -> DeliveryResult:
        """Submit the e-mail once to the relay."""
        try:
            to = recipients(target.address)
        except ValueError as exc:
            return DeliveryResult("failed", error=f"bad e-mail target: {exc}")
        message = build_message(notification, from_address=self._config.from_address, to=to)
        # smtplib blocks; its socket timeout bounds the thread, so the attempt cannot hang.
        return await asyncio.to_thread(self._submit, message, to)

    async def send_bulletin(
        self, bulletin: BulletinMessage, target: ChannelTarget
    ) -> DeliveryResult:
        """Submit the bulletin (page and CSV zip attached) once to the relay."""
        try:
            to = recipients(target.address)
        except ValueError as exc:
            return DeliveryResult("failed", error=f"bad e-mail target: {exc}")
        message = email_message(bulletin, from_address=self._config.from_address, to=to)
        return await asyncio.to_thread(self._submit, message, to)

    def _submit(self, message: EmailMessage, to: list[str]) -> DeliveryResult:
        config = self._config
        envelope_from = parseaddr(config.from_address)[1]
        try:
            with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
                smtp.ehlo()
                if config.starttls:
                    smtp.starttls(context=config.ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                if config.username:
                    _login(smtp, config.username, config.password or "")
                refused = smtp.send_message(message, from_addr=envelope_from, to_addrs=to)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            transient = any(_status_for(code) == "retry" for code in codes)
            status: DeliveryStatus = "retry" if transient else "failed"
            problem = "; ".join(
                f"{addr}: {code} {_text(reply)}" for addr, (code, reply) in exc.recipients.items()
            )
            return DeliveryResult(
                status, response_code=codes[0], error=clip(f"recipients refused: {problem}")
            )
        except smtplib.SMTPResponseException as exc:
            problem = f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}"
            return DeliveryResult(
                _status_for(exc.smtp_code), response_code=exc.smtp_code, error=clip(problem)
            )
        except smtplib.SMTPNotSupportedError as exc:
            return DeliveryResult("failed", error=clip(f"SMTP server: {exc}"))
        except ssl.SSLCertVerificationError as exc:
            return DeliveryResult("failed", error=clip(f"STARTTLS certificate not trusted: {exc}"))
        except smtplib.SMTPServerDisconnected as exc:
            return DeliveryResult("retry", error=clip(f"SMTP server disconnected: {exc}"))
        except TimeoutError:
            return DeliveryResult("retry", error=f"SMTP timed out after {config.timeout_s:g} s")
        except (OSError, smtplib.SMTPException) as exc:
            problem = f"cannot reach SMTP {config.host}:{config.port}: {exc}"
            return DeliveryResult("retry", error=clip(problem))
        if refused:
            problem = "; ".join(
                f"{addr}: {code} {_text(reply)}" for addr, (code, reply) in refused.items()
            )
            return DeliveryResult(
                "sent", response_code=250, error=clip(f"some recipients refused: {problem}")
            )
        return DeliveryResult("sent", response_code=250)


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """Authenticate with AUTH PLAIN where offered: RFC 4616 carries UTF-8 credentials, while
    smtplib's own login encodes them as ASCII and fails on any other password."""
    mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
    if "PLAIN" in mechanisms:
        token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
        code, reply = smtp.docmd("AUTH", f"PLAIN {token}")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)
        return
    if not (username.isascii() and password.isascii()):
        raise smtplib.SMTPNotSupportedError(
            "the server offers no AUTH PLAIN, the only mechanism that carries non-ASCII credentials"
        )
    smtp.login(username, password)


def _status_for(code: int) -> DeliveryStatus:
    """An SMTP reply: 4xx is transient (retry), anything else refused for good."""
    return "retry" if 400 <= code < 500 else "failed"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
