"""The API under load through a real uvicorn server: one connection per request at most.

Every request used to hold a pooled connection and ask the same pool for a second one to check
its key; with more requests in flight than connections, each waited for a connection only
another waiting request could give back. These tests fire 4 × the pool's size at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.deps import ApiDatabase, KeyDep
from core.settings import Settings
from envlink.runtime import ApiServer
from store.keys import create_key, revoke_key
from store.pool import Conn
from tests.integration.test_engine import T0, Feed, _air, _rule, _rules

POOL_SIZE = 4
BURST = 4 * POOL_SIZE


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` behind a real uvicorn server on a free loopback port (its lifespan runs), as
    `envlink api` serves it (open alert streams end as the server stops)."""
    server = ApiServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=1
        ),
        app,
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                assert not serving.done(), "uvicorn stopped during start-up"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


def pool_settings(settings: Settings, **changes: Any) -> Settings:
    """The test settings with an API pool of POOL_SIZE connections (the app opens it)."""
    return settings.model_copy(
        update={"api_pool_min_size": 1, "api_pool_max_size": POOL_SIZE, **changes}
    )


def database_of(app: FastAPI) -> ApiDatabase:
    database: ApiDatabase = app.state.database
    return database


async def _key(pool: AsyncConnectionPool, *roles: str) -> tuple[int, dict[str, str]]:
    async with pool.connection() as conn:
        key, plain = await create_key(conn, agency="gz_eeb", roles=list(roles))
    return key.id, {"Authorization": f"Bearer {plain}"}


@contextlib.asynccontextmanager
async def holding_every_connection(pool: AsyncConnectionPool) -> AsyncIterator[list[Conn]]:
    """Every connection the pool may open, taken out of it for the block."""
    held = [await pool.getconn() for _ in range(pool.max_size)]
    try:
        yield held
    finally:
        for conn in held:
            await pool.putconn(conn)


def _push_body(minute: int) -> dict[str, Any]:
    time_ = (T0 + timedelta(minutes=1 + minute)).isoformat()
    return {
        "readings": [
            {"station": "gz-a-huangpu", "parameter": "no2", "time": time_, "value": 40.0}
            | {"unit": "ug/m3"}
        ]
    }


async def test_every_kind_of_endpoint_answers_four_times_the_pool_at_once(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    await _rules(db, _rule("no2_instant"))
    await Feed(db).send(_air(250, T0), _air(30, T0, parameter="pm25", period_s=3600), at=T0)
    _, headers = await _key(db, "reader", "writer", "responder")
    day = f"start={T0.date().isoformat()}&end={(T0 + timedelta(days=1)).date().isoformat()}"
    gets = {
        "catalogue": "/v1/stations",
        "latest": "/v1/latest",
        "readings": f"/v1/readings?station=gz-a-huangpu&parameter=no2&{day}",
        "aqi": f"/v1/aqi?station=gz-a-huangpu&at={T0:%Y-%m-%dT%H:%M}",  # China time
        "alerts": "/v1/alerts",
        "health": "/healthz",
    }
    app = create_app(pool_settings(settings))
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        for kind, path in gets.items():
            answers = await asyncio.gather(
                *(client.get(path, headers=headers) for _ in range(BURST))
            )
            assert Counter(a.status_code for a in answers) == {200: BURST}, kind
        pushed = await asyncio.gather(
            *(
                client.post("/v1/readings", json=_push_body(m), headers=headers)
                for m in range(BURST)
            )
        )
        assert Counter(a.status_code for a in pushed) == {200: BURST}
        assert Counter(a.json()["summary"]["accepted"] for a in pushed) == {1: BURST}
        acked = await asyncio.gather(
            *(client.post("/v1/alerts/1/ack", headers=headers) for _ in range(BURST))
        )
        assert Counter(a.status_code for a in acked) == {200: BURST}
        assert Counter(a.json()["created"] for a in acked) == {True: 1, False: BURST - 1}
        # And all kinds at once: 7 × 16 requests on 4 connections.
        mixed = [client.get(path, headers=headers) for path in gets.values() for _ in range(BURST)]
        mixed += [client.post("/v1/alerts/1/ack", headers=headers) for _ in range(BURST)]
        answers = await asyncio.gather(*mixed)
        assert Counter(a.status_code for a in answers) == {200: len(mixed)}
        assert database_of(app).pool.get_stats()["pool_max"] == POOL_SIZE


async def test_with_every_connection_taken_a_request_gets_503_overloaded_in_time(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    _, headers = await _key(db, "reader")
    timeout_s = 1.0
    app = create_app(pool_settings(settings, pool_timeout_s=timeout_s))
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with holding_every_connection(database_of(app).pool):
            for path in ("/v1/stations", "/healthz"):
                started = time.monotonic()
                answer = await client.get(path, headers=headers)
                took = time.monotonic() - started
                assert (answer.status_code, answer.json()["error"]["code"]) == (503, "overloaded")
                assert answer.headers["retry-after"] == "1"
                assert timeout_s <= took < timeout_s + 1.0, path
        assert (await client.get("/v1/stations", headers=headers)).status_code == 200


def _probe(app: FastAPI) -> None:
    """A route that needs the caller's key and nothing else from the database."""

    @app.get("/probe")
    async def probe(key: KeyDep) -> dict[str, str]:
        return {"agency": key.agency}


async def test_a_key_the_cache_knows_takes_no_connection(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    _, headers = await _key(db, "reader")
    app = create_app(pool_settings(settings, pool_timeout_s=0.5))
    _probe(app)
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        assert (await client.get("/probe", headers=headers)).status_code == 200  # now cached
        async with holding_every_connection(database_of(app).pool):
            answers = await asyncio.gather(
                *(client.get("/probe", headers=headers) for _ in range(BURST))
            )
            assert Counter(a.status_code for a in answers) == {200: BURST}
            # A key not seen before needs the database, which has no connection to spare.
            _, stranger = await _key(db, "reader")
            refused = await client.get("/probe", headers=stranger)
            assert (refused.status_code, refused.json()["error"]["code"]) == (503, "overloaded")


async def test_a_revocation_reaches_every_process_within_a_second(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    key_id, headers = await _key(db, "reader")
    first, second = (create_app(pool_settings(settings, pool_timeout_s=0.5)) for _ in range(2))
    for app in (first, second):
        _probe(app)
    async with (
        served(first) as first_base,
        served(second) as second_base,
        httpx.AsyncClient(timeout=30) as client,
    ):
        assert database_of(first).pool is not database_of(second).pool
        for base in (first_base, second_base):
            assert (await client.get(f"{base}/probe", headers=headers)).status_code == 200
        # The second process answers from its cache: it needs no connection for the key.
        async with holding_every_connection(database_of(second).pool):
            cached = await client.get(f"{second_base}/probe", headers=headers)
            assert cached.status_code == 200
        async with db.connection() as conn, conn.transaction():
            await revoke_key(conn, key_id)
        revoked_at = time.monotonic()
        refused_after: dict[str, float] = {}
        while len(refused_after) < 2 and time.monotonic() - revoked_at < 5:
            for base in (first_base, second_base):
                if base not in refused_after:
                    answer = await client.get(f"{base}/probe", headers=headers)
                    if answer.status_code == 401:
                        refused_after[base] = time.monotonic() - revoked_at
            await asyncio.sleep(0.02)
        assert sorted(refused_after) == sorted((first_base, second_base))
        assert max(refused_after.values()) < 1.0


async def test_an_open_event_stream_holds_no_connection_and_ends_cleanly_without_one(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    _, headers = await _key(db, "reader")
    app = create_app(pool_settings(settings, pool_timeout_s=0.5))
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        streams = [
            await client.send(
                client.build_request("GET", "/v1/alerts/stream", headers=headers), stream=True
            )
            for _ in range(BURST)
        ]
        try:
            assert [s.status_code for s in streams] == [200] * BURST
            # BURST streams open on a pool of POOL_SIZE: none holds a connection between reads.
            answer = await client.get("/v1/stations", headers=headers)
            assert answer.status_code == 200
            first = streams[0].aiter_lines()
            assert await anext(first) == "retry: 2000"
            async with holding_every_connection(database_of(app).pool):
                async with db.connection() as conn:
                    await conn.execute("SELECT pg_notify('envlink_alert_events', '')")
                started = time.monotonic()
                # Woken, the stream finds no connection within the pool timeout and ends: a
                # clean end of the body, after which EventSource reconnects with Last-Event-ID.
                rest = [line async for line in first]
                assert rest == [""]
                assert time.monotonic() - started < 0.5 + 1.0
        finally:
            for stream in streams:
                await stream.aclose()
