"""The alert loop over real PostgreSQL: NOTIFY wake-up, SKIP LOCKED sharing, crashes, sweeps."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import alerts.loop
from alerts import engine
from alerts.engine import Touched
from alerts.loop import AlertLoop
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from store.catalogue import CatalogueSnapshot
from store.coordination import SWEEP_LOCK
from store.listen import Listener
from store.pool import Conn
from store.rollups import lock_series

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
FEED = SourceRef(code="test", kind="test")
DAY0 = datetime(2026, 11, 20, 0, tzinfo=CST)
HOUR = timedelta(hours=1)
POLLUTANTS = {"so2": 8.0, "no2": 30.0, "co": 0.6, "o3": 60.0, "pm10": 50.0, "pm25": 30.0}
UNITS = {"co": "mg/m3"}


def _hourly_mean(station: str, parameter: str, hour: datetime, value: float) -> ReadingIn:
    return ReadingIn(
        station=station,
        parameter=parameter,
        time=hour,
        value=value,
        unit=UNITS.get(parameter, "ug/m3"),
        period_s=3600,
    )


async def _ingest(pipeline: Pipeline, items: list[ReadingIn]) -> None:
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=FEED)
    assert result.count("accepted") == len(items)


async def _count(pool: AsyncConnectionPool, table: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {table}".encode())
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


class Recorder:
    """Wraps the engine's real functions, noting what each call saw and when."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.evaluated: list[tuple[float, list[Touched]]] = []
        self.sweeps: list[datetime] = []
        self.delay_s = delay_s
        self.changed = asyncio.Event()

    async def evaluate(
        self, conn: Conn, *, catalogue: CatalogueSnapshot, touched: list[Touched], now: datetime
    ) -> None:
        await engine.evaluate(conn, catalogue=catalogue, touched=touched, now=now)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # let a second loop interleave its rounds
        self.evaluated.append((time.perf_counter(), touched))
        self.changed.set()

    async def sweep(self, conn: Conn, *, catalogue: CatalogueSnapshot, now: datetime) -> None:
        await engine.sweep(conn, catalogue=catalogue, now=now)
        self.sweeps.append(now)
        self.changed.set()

    async def wait_for(self, condition: Any, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def running(
    db: AsyncConnectionPool, listener: Listener
) -> AsyncIterator[tuple[AlertLoop, Recorder]]:
    """A loop running as the worker runs it (sweeps every 10 minutes: never during a test)."""
    recorder = Recorder()
    loop = AlertLoop(db, sweep_s=600, evaluate=recorder.evaluate, sweep=recorder.sweep)
    task = asyncio.create_task(loop.run(listener))
    try:
        async with asyncio.timeout(5):
            await loop.listening.wait()
        yield loop, recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_committed_reading_wakes_the_loop_within_a_second(
    db: AsyncConnectionPool, running: tuple[AlertLoop, Recorder]
) -> None:
    _, recorder = running
    await recorder.wait_for(lambda: len(recorder.sweeps) == 1)  # the start-up sweep
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT id FROM station WHERE code = 'gz-a-huangpu'")
        station_id = (await cur.fetchone() or (0,))[0]
    latencies = []
    for n in range(20):
        hour = DAY0 + HOUR * n
        started = time.perf_counter()
        await _ingest(pipeline, [_hourly_mean("gz-a-huangpu", "pm25", hour, 300.0 + n)])
        await recorder.wait_for(lambda n=n: len(recorder.evaluated) == n + 1, within=1.0)
        woke_at, touched = recorder.evaluated[-1]
        assert [(t.station_id, t.times) for t in touched] == [(station_id, [hour])]
        latencies.append(woke_at - started)
    # Upper bounds: from before the ingest call (its commit included) to the engine's call.
    assert max(latencies) < 1.0
    print(
        f"\ncommit -> evaluate: median {statistics.median(latencies) * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms over {len(latencies)} readings"
    )
    assert len(recorder.sweeps) == 1  # woken by NOTIFY, not by the sweep timer
    # The engine runs before the round commits: the series lock waits for that commit.
    async with db.connection() as conn, conn.transaction():
        await lock_series(conn, [(station_id, touched[0].parameter_id)])
    assert await _count(db, "reading_hourly") == 20
    assert await _count(db, "series_dirty") == 0


async def test_after_a_round_the_loop_rests_as_long_as_the_round_took(
    db: AsyncConnectionPool, listener: Listener
) -> None:
    recorder = Recorder(delay_s=0.3)  # every round with readings takes at least 0.3 s
    loop = AlertLoop(db, sweep_s=600, evaluate=recorder.evaluate, sweep=recorder.sweep)
    task = asyncio.create_task(loop.run(listener))
    try:
        await recorder.wait_for(lambda: len(recorder.sweeps) == 1)  # the start-up round
        pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
        await _ingest(pipeline, [_hourly_mean("gz-a-huangpu", "pm25", DAY0, 30.0)])
        await recorder.wait_for(lambda: len(recorder.evaluated) == 1)
        # Committed while the loop rests: taken 0.3 s after the first round, then 0.3 s more.
        await _ingest(pipeline, [_hourly_mean("gz-a-huangpu", "pm25", DAY0 + HOUR, 31.0)])
        await recorder.wait_for(lambda: len(recorder.evaluated) == 2)
        first, second = (at for at, _ in recorder.evaluated)
        assert second - first >= 0.55
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_loop_reconnects_when_its_listener_dies(
    db: AsyncConnectionPool, running: tuple[AlertLoop, Recorder]
) -> None:
    loop, recorder = running
    async with db.connection() as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    # Committed while the listener is down: the round after reconnecting picks it up.
    await _ingest(pipeline, [_hourly_mean("gz-a-huangpu", "pm25", DAY0, 80.0)])
    await recorder.wait_for(lambda: len(recorder.evaluated) == 1, within=5.0)
    assert loop.listening.is_set()
    # And the new listener is woken by NOTIFY again.
    await _ingest(pipeline, [_hourly_mean("gz-a-huangpu", "pm25", DAY0 + HOUR, 81.0)])
    await recorder.wait_for(lambda: len(recorder.evaluated) == 2, within=1.0)
    assert len(recorder.sweeps) == 1  # at start; the 10-minute timer runs on across reconnects


async def test_two_loops_never_process_the_same_dirty_key(db: AsyncConnectionPool) -> None:
    stations = ("gz-a-huangpu", "gz-a-panyu", "dg-a-humen")
    items = [
        _hourly_mean(station, code, DAY0 + HOUR * h, value + h % 3)
        for station in stations
        for code, value in POLLUTANTS.items()
        for h in range(24)
    ]
    await _ingest(Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW), items)
    assert await _count(db, "series_dirty") == 432
    first, second = Recorder(delay_s=0.002), Recorder(delay_s=0.002)
    one = AlertLoop(db, batch=25, evaluate=first.evaluate, sweep=first.sweep)
    two = AlertLoop(db, batch=25, evaluate=second.evaluate, sweep=second.sweep)
    done_one, done_two = await asyncio.gather(one.drain(), two.drain())
    assert len(done_one) > 0 and len(done_two) > 0
    assert set(done_one).isdisjoint(done_two)
    assert len(done_one) + len(done_two) == len(set(done_one) | set(done_two)) == 432
    assert await _count(db, "series_dirty") == 0
    assert await _count(db, "reading_hourly") == 432
    assert await _count(db, "reading_daily") == 18
    # The engine saw each key's time exactly once, from one loop or the other.
    seen = [
        (t.station_id, t.parameter_id, moment)
        for recorder in (first, second)
        for _, touched in recorder.evaluated
        for t in touched
        for moment in t.times
    ]
    assert len(seen) == len(set(seen)) == 432


async def test_a_round_reads_its_hours_a_few_windows_at_a_time_and_rolls_up_every_one(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 stations x 6 pollutants x 24 hours: 432 hour windows, read 25 at a time (the last 7), so
    # that a round's memory does not grow with how many readings its hours hold.
    monkeypatch.setattr(alerts.loop, "HOURS_PER_READ", 25)
    stations = ("gz-a-huangpu", "gz-a-panyu", "dg-a-humen")
    sent = {
        (station, code, DAY0 + HOUR * h): value + h % 5
        for station in stations
        for code, value in POLLUTANTS.items()
        for h in range(24)
    }
    await _ingest(
        Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW),
        [_hourly_mean(station, code, hour, value) for (station, code, hour), value in sent.items()],
    )
    processed = await AlertLoop(db).drain()
    assert len(processed) == 432
    async with db.connection() as conn:
        rows = await (
            await conn.execute(
                """
                SELECT s.code, p.code, h.hour, h.value FROM reading_hourly h
                JOIN station s ON s.id = h.station_id JOIN parameter p ON p.id = h.parameter_id
                """
            )
        ).fetchall()
    assert {(station, code, hour): value for station, code, hour, value in rows} == sent


async def test_a_crash_mid_round_loses_no_dirty_window(db: AsyncConnectionPool) -> None:
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    await _ingest(
        pipeline,
        [_hourly_mean("gz-a-huangpu", "pm25", DAY0 + HOUR * h, 40.0 + h) for h in range(6)],
    )
    killed: list[list[Touched]] = []

    async def dies(conn: Conn, *, touched: list[Touched], **_: object) -> None:
        killed.append(touched)
        # The worker's session dies after the claim and the rollup writes, before the commit.
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(psycopg.OperationalError):
        await AlertLoop(db, evaluate=dies).process()
    assert len(killed) == 1 and len(killed[0][0].times) == 6
    assert await _count(db, "series_dirty") == 6
    assert await _count(db, "reading_hourly") == 0

    async def fails(conn: Conn, **_: object) -> None:
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError, match="engine bug"):
        await AlertLoop(db, evaluate=fails).process()
    assert await _count(db, "series_dirty") == 6

    recorder = Recorder()
    processed = await AlertLoop(db, evaluate=recorder.evaluate).drain()
    assert sorted(key.time for key in processed) == [DAY0 + HOUR * h for h in range(6)]
    assert await _count(db, "series_dirty") == 0
    assert await _count(db, "reading_hourly") == 6
    assert await _count(db, "reading_daily") == 1


async def test_sweeps_run_on_the_timer_and_on_one_worker_at_a_time(
    db: AsyncConnectionPool, listener: Listener
) -> None:
    recorder = Recorder()
    loop = AlertLoop(db, sweep_s=0.1, evaluate=recorder.evaluate, sweep=recorder.sweep)
    task = asyncio.create_task(loop.run(listener))
    try:
        await recorder.wait_for(lambda: len(recorder.sweeps) == 3, within=5.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert recorder.sweeps == sorted(recorder.sweeps)
    assert recorder.evaluated == []  # nothing was dirty
    # While another worker's round holds the sweep, this round skips it.
    async with db.connection() as other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock(%s)", [SWEEP_LOCK])
        report = await AlertLoop(db, sweep=recorder.sweep).process(sweep=True)
    assert (report.swept, len(recorder.sweeps)) == (False, 3)
    report = await AlertLoop(db, sweep=recorder.sweep).process(sweep=True)
    assert (report.swept, len(recorder.sweeps)) == (True, 4)
