"""Request dependencies as Annotated aliases: the request's connection, the caller's key.

A request holds at most ONE pooled connection at a time. It takes it when a handler (or the key
check) first needs it and gives it back when the handler returns, before the response is sent;
a handler whose reads are done may give it back sooner (`RequestConnection.release`), so that
the CPU work of building a large response holds no connection that other requests wait for.
The key check uses the connection the request already holds, takes one only for the check when
it holds none, and needs none at all when the process's key cache knows the key: a request that
asked the pool for a second connection while holding one could wait forever on requests doing
the same (16 clients deadlocked a pool of 10 that way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.security import APIKeyHeader, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from api.ratelimit import RateLimits, Verdict
from core.errors import DatabaseUnavailable, Forbidden, RateLimited, Unauthenticated
from core.settings import Settings
from core.timeutil import utcnow
from ingest.pipeline import Pipeline
from schemas.common import Role, Text
from store.catalogue import CatalogueCache, CatalogueSnapshot
from store.coordination import KEYS_CHANNEL
from store.keys import ApiKey, KeyCache, authenticate, authenticate_stream_token, hash_key
from store.listen import Listener
from store.pool import Conn

DATABASE_AWAY = "the database is unavailable; try again shortly"


@dataclass
class ApiDatabase:
    """What requests need of the database: the pool, the process's Listener, the key cache."""

    pool: AsyncConnectionPool
    timeout_s: float
    listener: Listener | None = None
    keys: KeyCache = field(default_factory=KeyCache)
    rate_limits: RateLimits | None = None  # None: ENVLINK_RATE_LIMITS=off

    def listen(self, listener: Listener) -> None:
        """Use `listener` for the key cache's revocations and to know when the database is away."""
        self.listener = listener
        listener.subscribe(KEYS_CHANNEL, self.keys.clear)
        # Connections that died with the server are replaced before requests trust it again.
        listener.add_reconnect_hook(self.pool.check)

    def check_up(self) -> None:
        """Fail at once, rather than wait for a connection, while the database is known away."""
        if self.listener is not None and self.listener.down:
            raise DatabaseUnavailable(DATABASE_AWAY)

    @property
    def key_cache(self) -> KeyCache | None:
        """The key cache, when it can be trusted: only while revocations are being heard."""
        if self.listener is not None and self.listener.connected:
            return self.keys
        return None


class RequestConnection:
    """The request's one connection: taken from the pool when first needed, held until the end.

    Leaving commits what the handler left uncommitted, or rolls it back if the handler failed.
    """

    def __init__(self, database: ApiDatabase) -> None:
        self.database = database
        self._conn: Conn | None = None
        self._stack = AsyncExitStack()

    async def get(self) -> Conn:
        """The request's connection, taken now if the request holds none yet."""
        if self._conn is None:
            self.database.check_up()
            self._conn = await self._stack.enter_async_context(
                self.database.pool.connection(timeout=self.database.timeout_s)
            )
        return self._conn

    async def release(self) -> None:
        """Give the connection back now, committing: for a handler whose reads are done, so
        that building and serialising the response holds none. A later `get` takes another."""
        if self._conn is not None:
            self._conn = None
            stack, self._stack = self._stack, AsyncExitStack()
            await stack.aclose()

    @asynccontextmanager
    async def briefly(self) -> AsyncIterator[Conn]:
        """The request's connection if it holds one, else one taken for the block only."""
        if self._conn is not None:
            yield self._conn
            return
        self.database.check_up()
        async with self.database.pool.connection(timeout=self.database.timeout_s) as conn:
            yield conn

    async def __aenter__(self) -> RequestConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._conn = None
        await self._stack.__aexit__(exc_type, exc, traceback)


# Dependencies that only look something up are coroutines: FastAPI runs a plain function in a
# worker thread, and a thread hand-off per dependency per request cost the event loop more than
# the lookups themselves under load.
async def get_database(request: Request) -> ApiDatabase:
    database: ApiDatabase = request.app.state.database
    return database


async def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.database.pool
    return pool


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


async def get_catalogue_cache(request: Request) -> CatalogueCache:
    cache: CatalogueCache = request.app.state.catalogue
    return cache


DatabaseDep = Annotated[ApiDatabase, Depends(get_database)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def request_connection(request: Request) -> AsyncIterator[RequestConnection]:
    async with RequestConnection(request.app.state.database) as held:
        yield held


# "function" scope: the connection goes back to the pool when the handler returns, not after
# the response has been sent to a client that may read it slowly.
RequestConnectionDep = Annotated[RequestConnection, Depends(request_connection, scope="function")]


async def get_conn(held: RequestConnectionDep) -> Conn:
    return await held.get()


ConnDep = Annotated[Conn, Depends(get_conn)]


async def current_catalogue(request: Request, held: RequestConnectionDep) -> CatalogueSnapshot:
    """The process's catalogue snapshot; read, if due, on the request's own connection."""
    cache: CatalogueCache = request.app.state.catalogue
    return await cache.get(via=held.briefly)


CatalogueDep = Annotated[CatalogueSnapshot, Depends(current_catalogue)]


def presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key from `Authorization: Bearer …` or `X-API-Key`, or why there is none."""
    plain = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <API key>'")
        plain = token.strip()
    if not plain:
        raise Unauthenticated("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    return plain


# The two ways to present a key, declared as OpenAPI security schemes so that /docs asks for
# the key once ("Authorize") for every operation. They only document: api/app.py writes them
# into the document for every keyed operation, and the headers are read below, so that a
# malformed one gets its own 401 rather than being ignored (as dependencies they would cost
# every request two more to solve, for nothing).
BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")
KEY_SCHEMES: dict[str, dict[str, Any]] = {
    scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
    for scheme in (BEARER, API_KEY_HEADER)
}


async def current_key(request: Request, held: RequestConnectionDep) -> ApiKey:
    """The caller's live API key, within its rate limit.

    The key comes from the key cache or is checked on the request's connection; its tokens from
    this process's share of its bucket or, when that is spent, from the bucket on the same
    connection. An address that presented too many bad keys is refused before any check.
    """
    plain = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    key_hash = hash_key(plain)
    limits = held.database.rate_limits
    cache = held.database.key_cache
    key = cache.get(key_hash, now=utcnow()) if cache is not None else None
    if key is None:
        address = request.client.host if request.client else "unknown"
        if limits is not None and (refused := limits.refused_address(address)) is not None:
            raise _refusal(refused, "too many unknown keys from this address")
        generation = cache.generation if cache is not None else 0
        async with held.briefly() as conn:
            key = await authenticate(conn, plain)
            if key is None:
                if limits is not None:
                    verdict = await limits.count_failure(address, conn)
                    if not verdict.allowed:
                        raise _refusal(verdict, "too many unknown keys from this address")
                raise Unauthenticated("the API key is unknown, revoked or expired")
            if cache is not None:
                cache.put(key_hash, key, generation=generation)
            if limits is not None:
                await _admit(request, limits, key, partial(_ready, conn))
    elif limits is not None:
        # The handler takes the request's connection next in most cases: take it for both.
        await _admit(request, limits, key, held.get)
    return key


async def _ready(conn: Conn) -> Conn:
    return conn


async def _admit(
    request: Request, limits: RateLimits, key: ApiKey, conn: Callable[[], Awaitable[Conn]]
) -> None:
    verdict = await limits.admit_key(key, conn)
    request.state.rate_limit = verdict
    if not verdict.allowed:
        raise _refusal(verdict, f"this API key's limit is {verdict.limit.per_minute} a minute")


def _refusal(verdict: Verdict, why: str) -> RateLimited:
    return RateLimited(
        f"{why}; try again in {verdict.reset_s} s",
        limit=verdict.limit.per_minute,
        remaining=verdict.remaining,
        reset_s=verdict.reset_s,
    )


KeyDep = Annotated[ApiKey, Depends(current_key)]


async def stream_key(
    request: Request,
    held: RequestConnectionDep,
    token: Annotated[
        Text | None,
        Query(description="A stream token (POST /v1/stream-tokens), for clients without headers"),
    ] = None,
) -> ApiKey:
    """The caller's live key, from a key header or else from a stream token (`?token=`).

    A stream opened with a token counts against its key's rate limit as one with the key does.
    """
    if token is None or "authorization" in request.headers or "x-api-key" in request.headers:
        return await current_key(request, held)
    limits = held.database.rate_limits
    async with held.briefly() as conn:
        key = await authenticate_stream_token(conn, token)
        if key is None:
            raise Unauthenticated(
                "the stream token is unknown or expired, or its key was revoked;"
                " get a new one from POST /v1/stream-tokens"
            )
        if limits is not None:
            await _admit(request, limits, key, partial(_ready, conn))
    return key


def require_role(role: Role) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """A dependency that lets through only keys holding `role`."""

    async def check(key: KeyDep) -> ApiKey:
        if role not in key.roles:
            raise Forbidden(f"this action needs the {role!r} role; the key has {key.roles}")
        return key

    return check
