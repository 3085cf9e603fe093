"""The one protocol every notification channel implements, and what a delivery attempt returns.

A channel turns a `Notification` into one delivery attempt to one target and reports how it
went; it never raises for a delivery problem and never retries by itself: the dispatcher records
every attempt and decides when to try again. The classification is shared by all channels:

- `sent`: the receiver accepted the message (HTTP 2xx and, for the robots, errcode 0; SMTP 250);
- `retry`: a transient problem — timeouts, refused or dropped connections, HTTP 5xx, 408 and 429,
  robot rate limits (WeCom 45009, DingTalk 130101), SMTP 4xx replies;
- `failed`: retrying cannot help — other HTTP 4xx, other robot errcodes (bad key, bad signature,
  bad content), SMTP 5xx replies, a malformed target. The dispatcher dead-letters these at once.

Every message carries the notification id as its idempotency key (HTTP `Idempotency-Key`, the
e-mail `Message-ID`), so a receiver recognises the re-send after a retry or a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from alerts.notify.bulletin import BulletinMessage
from alerts.notify.message import Notification

DeliveryStatus = Literal["sent", "retry", "failed"]
TargetFormat = Literal["json", "cap"]
USER_AGENT = "EnvLink-Notify/0.1"
# An error text is stored with each attempt; the start of a response body is enough to diagnose.
ERROR_TEXT_LIMIT = 500


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """Where a subscription delivers: a URL or e-mail addresses, a secret, a body format.

    `address` is the webhook / robot URL, or comma-separated e-mail addresses. `secret` signs
    webhooks (HMAC-SHA256) and DingTalk URLs; WeCom keys travel inside the URL. `format` picks
    the webhook body: EnvLink JSON, or CAP 1.2 XML.
    """

    address: str
    secret: str | None = None
    format: TargetFormat = "json"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one delivery attempt went: status, the receiver's code, and what went wrong."""

    status: DeliveryStatus
    response_code: int | None = None
    error: str | None = None
    # Seconds the receiver asked us to wait (HTTP Retry-After), a hint for the backoff.
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        """The message was delivered."""
        return self.status == "sent"


class Channel(Protocol):
    """A way to deliver notifications (webhook, WeCom, DingTalk, e-mail).

    `name` is the channel's code in subscriptions. `send` makes exactly one delivery attempt of
    `notification` to `target` and returns its `DeliveryResult`; it must not raise for anything
    the receiver or the network does (those are `retry` or `failed` results), must finish within
    the channel's configured timeout, and must send `notification.id` as the idempotency key.
    """

    name: str

    async def send(self, notification: Notification, target: ChannelTarget) -> DeliveryResult:
        """Deliver one notification to one target, once."""
        ...

    async def send_bulletin(
        self, bulletin: BulletinMessage, target: ChannelTarget
    ) -> DeliveryResult:
        """Deliver one bulletin version to one target, once (same rules as `send`)."""
        ...


def http_client(timeout_s: float) -> httpx.AsyncClient:
    """The HTTP client channels share: one timeout per attempt, no redirects followed.

    Redirects are not followed because a signed request must reach the host it was signed for;
    a 3xx is reported as a failure naming the new location, for the subscription to be fixed.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def status_for_http(code: int) -> DeliveryStatus:
    """Classify an HTTP status: 2xx sent; 408, 429 and 5xx retry; anything else failed."""
    if 200 <= code < 300:
        return "sent"
    if code in (408, 429) or code >= 500:
        return "retry"
    return "failed"


def clip(text: str) -> str:
    """An error text short enough to store with each attempt."""
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, when given as a number."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def post(
    client: httpx.AsyncClient, url: str, *, content: bytes, headers: dict[str, str]
) -> httpx.Response | DeliveryResult:
    """POST once; a network problem comes back as a DeliveryResult instead of an exception."""
    try:
        return await client.post(url, content=content, headers=headers)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return DeliveryResult("failed", error=clip(f"bad target URL: {exc}"))
    except httpx.TimeoutException as exc:
        limit = client.timeout.read
        problem = f"timed out after {limit:g} s ({type(exc).__name__})"
        return DeliveryResult("retry", error=clip(problem))
    except httpx.ConnectError as exc:
        return DeliveryResult("retry", error=clip(f"cannot connect: {exc}"))
    except httpx.TransportError as exc:
        return DeliveryResult("retry", error=clip(f"{type(exc).__name__}: {exc}"))


def http_result(response: httpx.Response) -> DeliveryResult:
    """The result of a plain HTTP delivery from its response status."""
    status = status_for_http(response.status_code)
    if status == "sent":
        return DeliveryResult("sent", response_code=response.status_code)
    problem = f"HTTP {response.status_code}"
    if 300 <= response.status_code < 400:
        problem += f" redirect to {response.headers.get('Location', '?')} (not followed)"
    body = response.text.strip()
    if body:
        problem += f": {body}"
    return DeliveryResult(
        status,
        response_code=response.status_code,
        error=clip(problem),
        retry_after_s=retry_after(response) if status == "retry" else None,
    )
