"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API on the test's database, called in process (ASGI, no socket)."""
    app = create_app(settings, pool=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
        yield client
