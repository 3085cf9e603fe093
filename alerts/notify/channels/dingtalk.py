"""DingTalk (钉钉) custom group robot: a markdown message POSTed to a signed robot URL.

The target address is the robot's URL, `https://oapi.dingtalk.com/robot/send?access_token=…`.
With the robot's "加签" security the target's secret (the `SEC…` string) signs every request:
`sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")))`, timestamp in
milliseconds, appended as `&timestamp=…&sign=…` (DingTalk refuses a timestamp more than an hour
off). The body is `{"msgtype": "markdown", "markdown": {"title": …, "text": …}}`; the title is
what the chat list shows. DingTalk answers HTTP 200 with `{"errcode": 0, "errmsg": "ok"}`;
errcode 130101 (over 20 messages a minute: the robot is throttled for 10 minutes) and -1
(system busy) are worth retrying, any other errcode (310000: bad signature, keyword or IP) is not.
DingTalk publishes no markdown size limit; 20,000 bytes of UTF-8 keeps messages well inside what
robots are known to accept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import quote_plus

import httpx
import orjson

from alerts.notify.bulletin import BulletinMessage, markdown, subject
from alerts.notify.channels.base import ChannelTarget, DeliveryResult, http_result, post
from alerts.notify.channels.robot import robot_result
from alerts.notify.message import Notification
from alerts.notify.render import full_subject, render_markdown, truncate_utf8

MAX_TEXT_BYTES = 20_000
MAX_TITLE_BYTES = 256
RETRY_ERRCODES = frozenset({-1, 130101})


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's URL signature: urlencoded base64 of HMAC-SHA256(secret, "<ms>\\n<secret>")."""
    message = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


def signed_url(address: str, secret: str | None, timestamp_ms: int) -> str:
    """The robot URL with `timestamp` and `sign` appended when the robot has a secret."""
    if not secret:
        return address
    joiner = "&" if "?" in address else "?"
    return f"{address}{joiner}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"


class DingTalkChannel:
    """Sends notifications to DingTalk group robots as markdown, signing the URL."""

    name = "dingtalk"

    def __init__(
        self, client: httpx.AsyncClient, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._clock = clock

    async def send(self, notification: Notification, target: ChannelTarget) -> DeliveryResult:
        """POST the markdown message once to the signed URL and read DingTalk's errcode."""
        return await self._post(title(notification), text(notification), target)

    async def send_bulletin(
        self, bulletin: BulletinMessage, target: ChannelTarget
    ) -> DeliveryResult:
        """POST the bulletin's title and signed links once as markdown to the signed URL."""
        return await self._post(
            truncate_utf8(subject(bulletin), MAX_TITLE_BYTES), markdown(bulletin), target
        )

    async def _post(
        self, title_text: str, markdown_text: str, target: ChannelTarget
    ) -> DeliveryResult:
        message = {"title": title_text, "text": markdown_text}
        body = orjson.dumps({"msgtype": "markdown", "markdown": message})
        url = signed_url(target.address, target.secret, int(self._clock() * 1000))
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = await post(self._client, url, content=body, headers=headers)
        if isinstance(response, DeliveryResult):
            return response
        if response.status_code != 200:
            return http_result(response)
        return robot_result(response, retry_errcodes=RETRY_ERRCODES)


def title(notification: Notification) -> str:
    """The title DingTalk shows in the chat list."""
    return truncate_utf8(full_subject(notification), MAX_TITLE_BYTES)


def text(notification: Notification) -> str:
    """The markdown text of the message, within MAX_TEXT_BYTES."""
    return render_markdown(notification, "dingtalk", max_bytes=MAX_TEXT_BYTES)
