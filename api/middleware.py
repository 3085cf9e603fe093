"""ASGI middleware: response headers that come from what the request's dependencies decided."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.ratelimit import Verdict, headers


class RateLimitHeaders:
    """Add RateLimit-* headers to every response whose key went through the rate limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                verdict = scope.get("state", {}).get("rate_limit")
                if isinstance(verdict, Verdict) and verdict.allowed:
                    MutableHeaders(scope=message).update(headers(verdict))
            await send(message)

        await self.app(scope, receive, send_with_headers)
