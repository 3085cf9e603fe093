"""GET /v1/export from a real `envlink api` process: 200 k readings stream in constant memory, on
the one connection of a pool of one, which a client leaving mid-stream gives back at once."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from store.keys import create_key
from store.partitions import create_partitions, is_partitioned
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.slow

FIRST_HOUR = datetime(2026, 6, 1, tzinfo=UTC)
HOURS = 1000
SERIES = 200  # station × parameter pairs of the catalogue: 200 × 1000 = 200 k readings
RANGE = {"start": "2026-06-01T00:00:00Z", "end": "2026-08-01T00:00:00Z"}
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def readings(db: AsyncConnectionPool) -> int:
    """200 k hourly readings of 200 catalogued series, loaded by COPY."""
    async with db.connection() as conn:
        if await is_partitioned(conn):
            await create_partitions(conn, [(2026, 5), (2026, 6), (2026, 7)])
        cur = await conn.execute(
            "INSERT INTO source (code, kind) VALUES ('export-test', 'test')"
            " ON CONFLICT (code) DO UPDATE SET kind = 'test' RETURNING id"
        )
        source = (await cur.fetchone() or [0])[0]
        cur = await conn.execute(
            "SELECT station_id, parameter_id FROM station_parameter"
            " ORDER BY station_id, parameter_id LIMIT %s",
            [SERIES],
        )
        series = await cur.fetchall()
        assert len(series) == SERIES
        text = io.StringIO()
        for hour in range(HOURS):
            moment = (FIRST_HOUR + timedelta(hours=hour)).isoformat()
            for station_id, parameter_id in series:
                value = (station_id * 7 + parameter_id * 3 + hour) % 97 + 0.25
                text.write(f"{station_id}\t{parameter_id}\t3600\t{moment}\t{value}\t0\t{source}")
                text.write(f"\t{moment}\n")
        async with (
            conn.transaction(),
            conn.cursor() as copy_cursor,
            copy_cursor.copy(
                "COPY reading (station_id, parameter_id, period_s, time, value, qc, source_id,"
                " received_at) FROM STDIN"
            ) as copy,
        ):
            await copy.write(text.getvalue())
    return SERIES * HOURS


@pytest.fixture
def api(database_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`envlink api` with a pool of ONE connection, waiting at most 2 s for it."""
    port = _free_port()
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": database_url,
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_API_PORT": str(port),
        "ENVLINK_API_POOL_MAX_SIZE": "1",
        "ENVLINK_POOL_TIMEOUT_S": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "envlink.cli", "api"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
async def client(
    api: tuple[subprocess.Popen[str], str], database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    process, base = api
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": plain}, timeout=60) as client:
        deadline = time.monotonic() + 120  # a busy 2-core machine
        while True:
            assert process.poll() is None, "the API process ended"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            await asyncio.sleep(0.2)
        yield client


async def _peak_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        await asyncio.sleep(0.02)


async def test_200k_readings_stream_in_constant_memory_on_one_connection(
    readings: int,
    api: tuple[subprocess.Popen[str], str],
    client: httpx.AsyncClient,
    database_url: str,
) -> None:
    warm_up = await client.get("/v1/export", params=RANGE | {"station": "gz-a-huangpu"})
    assert warm_up.status_code == 200, warm_up.text
    pid = api[0].pid
    before = psutil.Process(pid).memory_info().rss
    peak, stop = [before], asyncio.Event()
    sampler = asyncio.create_task(_peak_rss(pid, peak, stop))
    lines = size = 0
    started = time.monotonic()
    async with client.stream("GET", "/v1/export", params=RANGE) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            lines += chunk.count(b"\n")
            size += len(chunk)
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    growth = peak[0] - before
    print(
        f"\nexported {readings:,} readings ({size / MIB:.1f} MiB CSV) in {elapsed:.1f} s;"
        f" API process RSS {before / MIB:.0f} MiB, peak +{growth / MIB:.1f} MiB"
    )
    assert lines == readings + 1  # and the header
    assert growth < 50 * MIB

    # A client leaving mid-stream gives the connection back at once.
    async with client.stream("GET", "/v1/export", params=RANGE) as response:
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            break  # one chunk, then leave
    # The pool holds one connection: the next export gets it only if the first gave it back
    # (within the 2 s the API waits for a connection).
    again = await client.get(
        "/v1/export", params=RANGE | {"station": "gz-a-huangpu", "parameter": "so2"}
    )
    assert again.status_code == 200, again.text
    assert len(again.text.splitlines()) == 1 + HOURS
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'envlink api' AND state <> 'idle'"
        )
        assert await cur.fetchone() == (0,)
