"""ASGI middleware (plain ASGI, no BaseHTTPMiddleware): request ids and metrics, rate-limit
headers."""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics
from api.ratelimit import Verdict, headers
from core.logging import request_id


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


# An X-Request-ID a client gives is kept if it is 1 to 128 of these characters; any other is
# replaced by a new id (it goes into log lines and a response header: nothing may break them).
_GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(given: str | None) -> str:
    """The id of a request: the one the client gave if it is safe, else a new random one."""
    if given is not None and _GIVEN_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestIdsAndMetrics:
    """Give each request an id (X-Request-ID), echo it in the answer and in every log line; count
    and time the request by its route template and status (api/metrics.py).

    One layer for both, outside every other, so that even an answer of 500 carries its id and is
    counted, and the error's log line names the request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current = request_id_from(_header(scope, b"x-request-id"))
        metrics: ApiMetrics | None = getattr(scope["app"].state, "metrics", None)
        status = 500  # what the client gets if the app fails before it answers
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = current
            await send(message)

        token = request_id.set(current)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if metrics is not None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                metrics.observe(scope["method"], route, status, time.perf_counter() - started)
                database = getattr(scope["app"].state, "database", None)
                if database is not None:
                    metrics.observe_pool(database.pool)
            request_id.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case, as ASGI gives names)."""
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
