"""Request dependencies as Annotated aliases: the pool, a connection, the caller's key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from psycopg_pool import AsyncConnectionPool

from core.errors import Forbidden, Unauthenticated
from core.settings import Settings
from ingest.pipeline import Pipeline
from schemas.common import Role
from store.keys import ApiKey, authenticate
from store.pool import Conn


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_conn(pool: PoolDep) -> AsyncIterator[Conn]:
    async with pool.connection() as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]


async def current_key(
    pool: PoolDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The caller's live API key from `Authorization: Bearer …` or `X-API-Key`."""
    plain = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <API key>'")
        plain = token.strip()
    if not plain:
        raise Unauthenticated("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    async with pool.connection() as conn:
        key = await authenticate(conn, plain)
    if key is None:
        raise Unauthenticated("the API key is unknown, revoked or expired")
    return key


KeyDep = Annotated[ApiKey, Depends(current_key)]


def require_role(role: Role) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """A dependency that lets through only keys holding `role`."""

    async def check(key: KeyDep) -> ApiKey:
        if role not in key.roles:
            raise Forbidden(f"this action needs the {role!r} role; the key has {key.roles}")
        return key

    return check
