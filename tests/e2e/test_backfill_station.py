"""`envlink backfill --station` against a real `envlink worker` holding the station's connection.

A simulated data logger (a real TCP client) connects to the worker's HJ 212 server and answers
history requests from what it holds: 9011, the packets, 9012. The command leaves a request row;
the worker claims it, asks the device, stores what comes back (duplicates and revisions as for
any upload) and completes the row, while the command shows its progress and exits with 0 — or 1
when the station is not connected or does not answer in time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from bench.faults import EnvlinkProcess, free_port
from core.timeutil import CST, floor_to_period, utcnow
from ingest.sources.hj212.client import Hj212Client, Values
from schemas.catalogue import load_catalogue
from store.catalogue import seed_catalogue
from store.migrate import migrate
from tests.conftest import CONFIG_DIR, ROOT
from tests.e2e.test_hj212_server import Device, framed

pytestmark = pytest.mark.slow

HUANGPU_MN = "44010010000086"  # gz-a-huangpu: air, no PW checked, the standard's CRC
ZENGCHENG_MN = "44010010000087"  # gz-a-zengcheng, the same
PM25, NO2 = "a34004", "a21004"
# Yesterday's 08:00 to 10:00, China time: three hours a device has stored.
BASE = floor_to_period(utcnow(), 3600).astimezone(CST).replace(hour=8) - timedelta(days=1)
HOURS = [BASE + timedelta(hours=n) for n in range(3)]


@dataclass
class Worker:
    url: str
    port: int


@pytest.fixture(scope="module")
async def worker(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Worker]:
    """A migrated, seeded database of its own and an `envlink worker` serving HJ 212 on it."""
    url = new_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, load_catalogue(CONFIG_DIR))
    folder = tmp_path_factory.mktemp("backfill")
    process = EnvlinkProcess("worker", url, free_port(), folder / "worker.log")
    process.env |= {
        "ENVLINK_HEARTBEAT_FILE": str(folder / "heartbeat"),
        "ENVLINK_ALERT_LOOP_ENABLED": "false",
        "ENVLINK_NOTIFY_ENABLED": "false",
    }
    await process.start(timeout_s=20)
    try:
        yield Worker(url, process.port)
    finally:
        assert await process.stop(timeout_s=10) == 0
        assert process.errors() == []


async def backfill(worker: Worker, *args: str) -> tuple[int, str, str]:
    """Run `envlink backfill` (without blocking the devices' event loop); status, out, err."""
    env = {**os.environ, "ENVLINK_DATABASE_URL": worker.url, "ENVLINK_CONFIG_DIR": str(CONFIG_DIR)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envlink.cli", "backfill", *args,
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        # A bound against a hang only: the command takes a few seconds to start.
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class HourlyStore:
    """What a data logger holds of HOURS: PM2.5 as set, NO2 fixed."""

    pm25: list[float]

    def __call__(self, cn: str, begin: datetime, end: datetime) -> list[tuple[datetime, Values]]:
        assert cn == "2061"
        return [
            (hour, {PM25: (value, "N"), NO2: (20.0, "N")})
            for hour, value in zip(HOURS, self.pm25, strict=True)
            if begin <= hour <= end
        ]


async def connected(worker: Worker, mn: str, history: HourlyStore) -> Hj212Client:
    """A device connected and known to the server (its first upload answered)."""
    client = Hj212Client(mn=mn, pw="123456", history=history)
    await client.connect("127.0.0.1", worker.port)
    await client.upload("2011", utcnow(), {PM25: (30.0, "N")}, timeout_s=10)
    return client


async def stored(worker: Worker, station: str) -> list[tuple[datetime, str, float]]:
    async with await psycopg.AsyncConnection.connect(worker.url) as conn:
        cur = await conn.execute(
            "SELECT r.time, p.code, r.value FROM reading r JOIN station s ON s.id = r.station_id"
            " JOIN parameter p ON p.id = r.parameter_id"
            " WHERE s.code = %s AND r.period_s = 3600 ORDER BY r.time, p.code",
            [station],
        )
        return [(t.astimezone(CST), p, v) for t, p, v in await cur.fetchall()]


async def requests(worker: Worker, station: str) -> list[tuple[Any, ...]]:
    """A station's request rows, oldest first; the last column is the row's id."""
    async with await psycopg.AsyncConnection.connect(worker.url) as conn:
        cur = await conn.execute(
            "SELECT s.code, b.state, b.packets, b.accepted, b.duplicate, b.revised, b.rejected,"
            " b.detail, b.begin_time, b.end_time, b.worker IS NOT NULL, b.id"
            " FROM backfill_request b JOIN station s ON s.id = b.station_id"
            " WHERE s.code = %s ORDER BY b.id",
            [station],
        )
        return await cur.fetchall()


RANGE = ["--from", HOURS[0].isoformat(), "--to", (HOURS[-1] + timedelta(minutes=30)).isoformat()]


async def test_a_connected_station_is_asked_and_its_answer_stored(worker: Worker) -> None:
    logger = HourlyStore([11.0, 12.0, 13.0])
    device = await connected(worker, HUANGPU_MN, logger)
    try:
        status, out, err = await backfill(worker, "--station", "gz-a-huangpu", *RANGE)
        assert status == 0, err
        number = int(out.split(":")[0].removeprefix("backfill request "))
        assert out.splitlines() == [
            f"backfill request {number}: hourly data of gz-a-huangpu, 3 periods from"
            f" {HOURS[0].isoformat()} to {HOURS[-1].isoformat()}",
            "gz-a-huangpu: completed, 3 packets, 6 accepted, 0 duplicate, 0 revised, 0 rejected",
        ]
        # The progress bar's last redraw: every period in, the request completed.
        assert err.split("\r")[-1].startswith(
            "backfill gz-a-huangpu [##############################] 100% 3/3 periods, "
        )
        assert err.endswith(" s: completed, 6 readings\n")
        assert len(device.requests) == 1
        assert device.requests[0].cp.fields == {
            "BeginTime": HOURS[0].strftime("%Y%m%d%H%M%S"),
            "EndTime": HOURS[-1].strftime("%Y%m%d%H%M%S"),
        }
        expected = [
            (hour, code, value)
            for hour, pm25 in zip(HOURS, (11.0, 12.0, 13.0), strict=True)
            for code, value in (("no2", 20.0), ("pm25", pm25))
        ]
        assert await stored(worker, "gz-a-huangpu") == expected

        # Asked again, the station's answer is all duplicates but one value it has since revised.
        logger.pm25 = [11.0, 12.5, 13.0]
        status, out, err = await backfill(worker, "--station", "gz-a-huangpu", *RANGE)
        assert status == 0, err
        assert out.splitlines()[1] == (
            "gz-a-huangpu: completed, 3 packets, 0 accepted, 5 duplicate, 1 revised, 0 rejected"
        )
        expected[3] = (HOURS[1], "pm25", 12.5)
        assert await stored(worker, "gz-a-huangpu") == expected
        async with await psycopg.AsyncConnection.connect(worker.url) as conn:
            cur = await conn.execute("SELECT value FROM reading_revision")
            assert await cur.fetchall() == [(12.0,)]
    finally:
        await device.close()

    span = (HOURS[0], HOURS[-1])
    assert [
        (*row[:8], *(t.astimezone(CST) for t in row[8:10]), row[10])
        for row in await requests(worker, "gz-a-huangpu")
    ] == [
        ("gz-a-huangpu", "completed", 3, 6, 0, 0, 0, None, *span, True),
        ("gz-a-huangpu", "completed", 3, 0, 5, 1, 0, None, *span, True),
    ]


async def test_a_station_not_connected_or_not_answering_fails(worker: Worker) -> None:
    # gz-a-zengcheng: a raw device, known to the server by its upload, deaf to requests.
    device = Device(*await asyncio.open_connection("127.0.0.1", worker.port))
    await device.send(
        framed(
            f"QN=20261126113000001;ST=22;CN=2011;PW=123456;MN={ZENGCHENG_MN};Flag=5;"
            f"CP=&&DataTime={utcnow().astimezone(CST):%Y%m%d%H%M%S};{PM25}-Rtd=35.5&&"
        )
    )
    await device.frames(1)
    try:
        # Both at once (each command takes seconds to start on a busy machine).
        (absent, _, absent_err), (deaf, deaf_out, deaf_err) = await asyncio.gather(
            backfill(worker, "--station", "gz-a-maofengshan", *RANGE, "--connected-within", "1"),
            backfill(worker, "--station", "gz-a-zengcheng", *RANGE, "--timeout", "3"),
        )
        assert (absent, deaf) == (1, 1)
        number = int(deaf_out.split(":")[0].removeprefix("backfill request "))
        assert deaf_err.endswith(
            f"envlink: backfill request {number} of gz-a-zengcheng failed: not finished by its"
            " deadline (0 packets stored by then) (0 packets, 0 accepted, 0 duplicate,"
            " 0 revised, 0 rejected)\n"
        )
        # The one request the device got, as the standard frames it.
        [frame] = await device.frames(1)
        assert frame.startswith(b"##0")
        assert (
            b";CN=2061;PW=123456;MN=" + ZENGCHENG_MN.encode() + b";Flag=5;CP=&&BeginTime=" in frame
        )
    finally:
        await device.close()
    [absent_row] = await requests(worker, "gz-a-maofengshan")
    assert absent_err.endswith(
        "envlink: station gz-a-maofengshan is not connected to any running HJ 212 server"
        f" (no worker took backfill request {absent_row[-1]} within 1 s)\n"
    )
    assert absent_row[:8] == (
        "gz-a-maofengshan", "failed", 0, 0, 0, 0, 0,
        "not connected to any running HJ 212 server (nobody took the request)",
    )  # fmt: skip
    assert [row[:8] for row in await requests(worker, "gz-a-zengcheng")] == [
        ("gz-a-zengcheng", "failed", 0, 0, 0, 0, 0,
         "not finished by its deadline (0 packets stored by then)"),
    ]  # fmt: skip
