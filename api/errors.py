"""The one place where domain errors become HTTP responses: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.deps import DATABASE_AWAY, ApiDatabase
from core.errors import (
    DatabaseUnavailable,
    EnvLinkError,
    Forbidden,
    InvalidInput,
    MigrationsPending,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)
from schemas.common import ErrorOut

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[EnvLinkError], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (PayloadTooLarge, 413),
    (InvalidInput, 400),
    (MigrationsPending, 503),
]


# What each error status means, as the OpenAPI document says it; every error body is ErrorOut.
ERROR_MEANINGS = {
    400: "invalid_input: the request matches this schema but cannot be right for a reason the"
    " schema cannot express (a cursor this API did not issue, a range that ends before it"
    " starts, a time already past), or a body that is not UTF-8 JSON; the message says what",
    401: "unauthenticated: no API key, or one that is unknown, revoked or expired",
    403: "forbidden: the key lacks the role, or the agency, the action needs",
    404: "not_found: the station, parameter, alert, rule or other item named does not exist",
    413: "payload_too_large: over a size limit; the message says which",
    422: "invalid_request: a parameter or the body does not match this schema; the message"
    " names the field",
    503: "overloaded (no database connection came in time) or database_unavailable;"
    " try again after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses: ErrorOut and what each status means."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ErrorOut,
            "description": ERROR_MEANINGS[status],
            # Errors are JSON also where the route's answer is not (GeoJSON, CSV, CAP XML).
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        documented[status] = entry
    return documented


# Retry-After (seconds) of a 503: a full pool frees up in moments; a database takes a while.
OVERLOADED_RETRY_S = 1
UNAVAILABLE_RETRY_S = 5


def error_response(
    status: int, code: str, message: str, *, retry_after_s: int | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def database_unavailable(message: str = DATABASE_AWAY) -> JSONResponse:
    return error_response(503, DatabaseUnavailable.code, message, retry_after_s=UNAVAILABLE_RETRY_S)


def rate_limited(exc: RateLimited) -> JSONResponse:
    response = error_response(429, exc.code, str(exc), retry_after_s=exc.reset_s)
    response.headers["RateLimit-Limit"] = str(exc.limit)
    response.headers["RateLimit-Remaining"] = str(exc.remaining)
    response.headers["RateLimit-Reset"] = str(exc.reset_s)
    return response


def _database_known_away(request: Request) -> bool:
    database: ApiDatabase | None = getattr(request.app.state, "database", None)
    return database is not None and database.listener is not None and database.listener.down


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def _methods_of(request: Request) -> list[str]:
    """The methods the request's path takes: those a route of the app matches in full."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and stray exceptions to the JSON error envelope."""

    @app.exception_handler(EnvLinkError)
    async def domain_error(request: Request, exc: EnvLinkError) -> JSONResponse:
        if isinstance(exc, DatabaseUnavailable):
            return database_unavailable(str(exc))
        if isinstance(exc, RateLimited):
            return rate_limited(exc)
        status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 400)
        return error_response(status, exc.code, str(exc))

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        # No connection came in time: the database is away, or every connection is busy.
        if _database_known_away(request):
            return database_unavailable()
        log.warning("no database connection for %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            503,
            "overloaded",
            "the server is busy (every database connection is in use); try again shortly",
            retry_after_s=OVERLOADED_RETRY_S,
        )

    @app.exception_handler(psycopg.OperationalError)
    async def connection_lost(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The server went away under a query, or refuses connections: not the caller's doing.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return database_unavailable()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            place = ".".join(str(part) for part in error["loc"] if part not in ("query", "body"))
            problems.append(f"{place}: {error['msg']}" if place else error["msg"])
        return error_response(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.status_code == 405:
            # Allow lists what the path takes (RFC 9110), from every route of the path: each
            # method of a path is a route of its own, and Starlette names the first one's only.
            response.headers["Allow"] = ", ".join(_methods_of(request))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never leak internals (SQL, paths) to a client; the log has the traceback.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; the server log has details")
