"""GET /v1/me: the caller's own key; answers compressed where the client accepts gzip."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from store.keys import create_key


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"rate_limits": "on"}), pool=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
        yield client


async def _key(pool: AsyncConnectionPool, agency: str, *roles: str, **options: object) -> str:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency=agency, roles=list(roles), **options)  # type: ignore[arg-type]
    return plain


async def test_me_tells_the_keys_agency_roles_limit_and_expiry(
    db: AsyncConnectionPool, client: httpx.AsyncClient, settings: Settings
) -> None:
    expiry = datetime(2099, 1, 1, 4, tzinfo=UTC)
    responder = await _key(
        db, "dg_eeb", "responder", "reader", label="duty desk", expires_at=expiry, rate_limit=90
    )
    answer = await client.get("/v1/me", headers={"Authorization": f"Bearer {responder}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "key_id": 1, "prefix": responder.split("_")[1], "agency": "dg_eeb",
        "agency_city": "dongguan", "roles": ["reader", "responder"], "label": "duty desk",
        "expires_at": "2099-01-01T12:00:00+08:00", "rate_limit": 90,
    }  # fmt: skip
    reader = await _key(db, "joint_office", "reader")
    answer = await client.get("/v1/me", params={"tz": "UTC"}, headers={"X-API-Key": reader})
    assert answer.json() == {
        "key_id": 2, "prefix": reader.split("_")[1], "agency": "joint_office",
        "agency_city": None, "roles": ["reader"], "label": None, "expires_at": None,
        "rate_limit": settings.rate_limit_per_minute,
    }  # fmt: skip


async def test_me_without_a_key_is_401(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/me")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"


async def test_large_answers_are_gzipped_when_accepted_small_ones_not(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    key = {"X-API-Key": await _key(db, "gz_eeb", "reader")}
    plain = await client.get("/v1/stations", headers={**key, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > 1024
    zipped = await client.get("/v1/stations", headers={**key, "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert zipped.content == plain.content  # httpx decoded it
    small = await client.get("/v1/me", headers={**key, "Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    raw = await client.send(
        client.build_request("GET", "/v1/stations", headers={**key, "Accept-Encoding": "gzip"}),
        stream=True,
    )
    body = b"".join([chunk async for chunk in raw.aiter_raw()])
    assert gzip.decompress(body) == plain.content
