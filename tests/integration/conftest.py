"""Fixtures shared by the integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from store.keys import create_key


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API on the test's database, called in process (ASGI, no socket)."""
    app = create_app(settings, pool=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
        yield client


@contextlib.asynccontextmanager
async def reader_client(
    pool: AsyncConnectionPool, settings: Settings, agency: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The API on `pool`'s database, called in process with a new reader key of `agency`."""
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency=agency, roles=["reader"])
    transport = httpx.ASGITransport(app=create_app(settings, pool=pool))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://envlink", headers={"X-API-Key": plain}
    ) as client:
        yield client
