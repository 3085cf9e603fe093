"""The one place where domain errors become HTTP responses: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

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

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[EnvLinkError], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (PayloadTooLarge, 413),
    (InvalidInput, 400),
    (MigrationsPending, 503),
]


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
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never leak internals (SQL, paths) to a client; the log has the traceback.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; the server log has details")
