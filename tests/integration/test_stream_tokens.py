"""Stream tokens: EventSource's way in (no headers), valid 10 minutes, dying with their key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from core.timeutil import utcnow
from store.keys import create_key, revoke_key
from tests.e2e.test_notify_e2e import _read_events
from tests.integration.test_api_pool import database_of, pool_settings, served
from tests.integration.test_engine import T0, Feed, _air, _rule, _rules

REFUSED = (
    "the stream token is unknown or expired, or its key was revoked;"
    " get a new one from POST /v1/stream-tokens"
)


async def _key(pool: AsyncConnectionPool, **options: object) -> tuple[int, dict[str, str]]:
    async with pool.connection() as conn:
        key, plain = await create_key(conn, agency="gz_eeb", roles=["reader"], **options)  # type: ignore[arg-type]
    return key.id, {"Authorization": f"Bearer {plain}"}


@pytest.fixture
async def base(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[str]:
    async with served(create_app(pool_settings(settings))) as url:
        yield url


async def test_a_token_opens_the_stream_and_resumes_it(db: AsyncConnectionPool, base: str) -> None:
    await _rules(db, _rule("no2_instant"))
    _, headers = await _key(db)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        issued = await client.post("/v1/stream-tokens", headers=headers)
        assert issued.status_code == 201
        token, expires_at = issued.json()["token"], issued.json()["expires_at"]
        assert token.startswith("elt_") and expires_at.endswith("+08:00")
        lifetime = datetime.fromisoformat(expires_at) - utcnow()
        assert timedelta(minutes=9, seconds=50) < lifetime <= timedelta(minutes=10)
        async with client.stream("GET", f"/v1/alerts/stream?token={token}") as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            await Feed(db).send(_air(250, T0), at=T0)  # event 1
            [(event_id, _, data)] = await _read_events(lines, 1)
            assert (event_id, data["kind"]) == (1, "firing")
        await Feed(db).send(_air(450, T0 + timedelta(minutes=1)), at=T0 + timedelta(minutes=1))
        resume = {"Last-Event-ID": "1"}
        async with client.stream(
            "GET", "/v1/alerts/stream", params={"token": token}, headers=resume
        ) as response:
            assert response.status_code == 200
            missed = await _read_events(response.aiter_lines(), 1)
        assert [(i, d["alert_id"]) for i, _, d in missed] == [(2, 1)]


async def test_a_token_dies_with_its_key_and_its_streams_end(
    db: AsyncConnectionPool, base: str
) -> None:
    key_id, headers = await _key(db)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        token = (await client.post("/v1/stream-tokens", headers=headers)).json()["token"]
        async with client.stream("GET", f"/v1/alerts/stream?token={token}") as response:
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            async with db.connection() as conn:
                await revoke_key(conn, key_id)
            rest = [line async for line in lines]  # the stream ends at once
            assert rest == [""]
        refused = await client.get(f"/v1/alerts/stream?token={token}")
        assert (refused.status_code, refused.json()["error"]["message"]) == (401, REFUSED)


async def test_an_expired_or_unknown_token_is_refused(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    # The key expires well within a token's 10 minutes, and not before its request is served
    # on a busy machine.
    soon = utcnow() + timedelta(minutes=1)
    _, headers = await _key(db, expires_at=soon)
    transport = httpx.ASGITransport(app=create_app(settings, pool=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as client:
        issued = await client.post("/v1/stream-tokens?tz=UTC", headers=headers)
        # Never past the key's expiry.
        assert issued.json()["expires_at"] == soon.isoformat().replace("+00:00", "Z")
        async with db.connection() as conn:
            await conn.execute("UPDATE stream_token SET expires_at = now() - interval '1 s'")
        for token in (issued.json()["token"], "elt_nope"):
            refused = await client.get(f"/v1/alerts/stream?token={token}")
            assert (refused.status_code, refused.json()["error"]["message"]) == (401, REFUSED)
        assert (await client.post("/v1/stream-tokens")).status_code == 401


async def test_many_streams_cost_one_read_per_event(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    await _rules(db, _rule("no2_instant"))
    _, headers = await _key(db)
    app = create_app(pool_settings(settings))
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        streams = [
            await client.send(
                client.build_request("GET", "/v1/alerts/stream", headers=headers), stream=True
            )
            for _ in range(20)
        ]
        try:
            lines = [stream.aiter_lines() for stream in streams]
            for line in lines:
                assert await anext(line) == "retry: 2000"
            feed = app.state.feed
            assert feed.subscribers == 20
            reads = feed.reads
            await Feed(db).send(_air(250, T0), at=T0)
            for line in lines:
                [(event_id, _, _)] = await _read_events(line, 1)
                assert event_id == 1
            assert feed.reads - reads <= 2  # one wake-up (two if the NOTIFY came mid-read)
        finally:
            for stream in streams:
                await stream.aclose()
        assert database_of(app).pool.get_stats()["pool_size"] == 1
