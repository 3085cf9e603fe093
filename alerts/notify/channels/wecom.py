"""WeCom (企业微信) group robot: a markdown message POSTed to the robot's webhook URL.

The target address is the robot's URL, `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`
(the key is the credential; there is no separate secret). The body is
`{"msgtype": "markdown", "markdown": {"content": "…"}}` with at most 4096 bytes of UTF-8 content:
longer notifications keep whole events and end with a note of how many were left out. WeCom
answers HTTP 200 with `{"errcode": 0, "errmsg": "ok"}` on success; errcode 45009 (a robot may
send 20 messages a minute) and -1 (system busy) are worth retrying, any other errcode (a wrong
key, malformed content) is not.
"""

from __future__ import annotations

import httpx
import orjson

from alerts.notify.bulletin import BulletinMessage, markdown
from alerts.notify.channels.base import ChannelTarget, DeliveryResult, http_result, post
from alerts.notify.channels.robot import robot_result
from alerts.notify.message import Notification
from alerts.notify.render import render_markdown

MAX_CONTENT_BYTES = 4096
RETRY_ERRCODES = frozenset({-1, 45009})


class WeComChannel:
    """Sends notifications to WeCom group robots as markdown."""

    name = "wecom"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, notification: Notification, target: ChannelTarget) -> DeliveryResult:
        """POST the markdown message once and read WeCom's errcode."""
        return await self._post(content(notification), target)

    async def send_bulletin(
        self, bulletin: BulletinMessage, target: ChannelTarget
    ) -> DeliveryResult:
        """POST the bulletin's title and signed links once as markdown."""
        return await self._post(markdown(bulletin), target)

    async def _post(self, markdown_content: str, target: ChannelTarget) -> DeliveryResult:
        body = orjson.dumps({"msgtype": "markdown", "markdown": {"content": markdown_content}})
        headers = {"Content-Type": "application/json; charset=utf-8"}
        response = await post(self._client, target.address, content=body, headers=headers)
        if isinstance(response, DeliveryResult):
            return response
        if response.status_code != 200:
            return http_result(response)
        return robot_result(response, retry_errcodes=RETRY_ERRCODES)


def content(notification: Notification) -> str:
    """The markdown content WeCom shows, within its 4096-byte limit."""
    return render_markdown(notification, "wecom", max_bytes=MAX_CONTENT_BYTES)
