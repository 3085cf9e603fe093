"""500 live alert streams on one `envlink api` process hold no extra database connection.

The process keeps one listening connection and its pool; every open stream follows the
process's alert feed in memory (api/stream.py), so the connection count it holds before the
streams open is the count it holds with 500 open and after an event has reached them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from store.keys import create_key
from tests.conftest import CONFIG_DIR, ROOT
from tests.e2e.test_notify_e2e import _read_events
from tests.integration.test_engine import T0, Feed, _air, _rule, _rules

pytestmark = pytest.mark.slow

STREAMS = 500
DEADLINE_S = 120  # start-up on a busy 2-core machine included


@pytest.fixture
def api(database_url: str) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": database_url,
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_API_PORT": str(port),
        # 500 streams opened at once with one key are far over its default burst.
        "ENVLINK_RATE_LIMITS": "off",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "envlink.cli", "api"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _api_connections(database_url: str) -> int:
    """Connections the API process holds: its pool's and its listener's."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'envlink api%'"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_500_streams_on_one_process_hold_no_extra_connection(
    db: AsyncConnectionPool, database_url: str, api: str
) -> None:
    await _rules(db, _rule("no2_instant"))
    async with db.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    headers = {"Authorization": f"Bearer {plain}"}
    started = time.monotonic()
    limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=STREAMS + 10)
    async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:
        while True:
            try:
                # Once up, this also puts the key in the process's key cache.
                if (await client.get("/v1/parameters", headers=headers)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - started < DEADLINE_S, "the API did not come up"
            await asyncio.sleep(0.2)
        before = await _api_connections(database_url)
        assert before == 2  # the pool's first connection and the listener's

        async def open_stream() -> httpx.Response:
            request = client.build_request("GET", "/v1/alerts/stream", headers=headers)
            return await client.send(request, stream=True)

        opening = time.monotonic()
        streams = await asyncio.gather(*(open_stream() for _ in range(STREAMS)))
        try:
            assert [s.status_code for s in streams] == [200] * STREAMS
            lines = [s.aiter_lines() for s in streams]
            firsts = await asyncio.gather(*(anext(line) for line in lines))
            assert firsts == ["retry: 2000"] * STREAMS
            opened_s = time.monotonic() - opening
            assert await _api_connections(database_url) == before
            await Feed(db).send(_air(250, T0), at=T0)  # alert 1, event 1
            received = await asyncio.gather(*(_read_events(line, 1) for line in lines))
            assert [[(i, d["alert_id"]) for i, _, d in got] for got in received] == [
                [(1, 1)]
            ] * STREAMS
            assert await _api_connections(database_url) == before
        finally:
            await asyncio.gather(*(s.aclose() for s in streams))
    print(f"\n{STREAMS} streams opened in {opened_s:.1f} s; {before} API connections throughout")
