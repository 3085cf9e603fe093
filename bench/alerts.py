"""Benchmark alert latency: from the commit of a breaching reading to its alert in `firing`.

An instant rule (`for` 0: NO2 above 200 ug/m3, clear at 180) watches every air station. Each of
N alerts (default 1,000) is raised by one breaching reading sent through the ingest pipeline (as
POST /v1/readings does) and cleared by one reading below the clear threshold before the next
breach at that station; the ten air stations run concurrently, one breach/clear sequence each.
Meanwhile a real `envlink worker --simulate` on the same database runs the simulator for every
station × parameter (uploading over HJ 212 TCP, by default every second: ten times the default
rate) and the alert loop (alerts/loop.py: LISTEN, rollups, engine, the 30 s sweep), which
evaluates the whole joint rule set (config/thresholds.yaml) besides the benchmark rule. With
--in-process the simulator and the loop run in this process instead (one event loop for all).

    .venv/bin/python bench/alerts.py                   # 1,000 alerts, embedded server
    .venv/bin/python bench/alerts.py --alerts 200 --simulator-interval 10 --in-process
    ENVLINK_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python bench/alerts.py

Latency of one alert: from just before the breaching reading's `Pipeline.ingest` call (which
commits it and NOTIFYs the loop) to the moment a client listening on `envlink_alert_events`
receives the notification of the transaction that stored the alert's `firing` event — an upper
bound, since it includes the ingest call itself; "from ingest's return" is a lower bound (the
commit happens inside the call). The benchmark's data times lie an hour ahead of the wall clock
(readings up to a day ahead are accepted), so the simulator's current readings never interleave
with them. The database is a fresh one: on the server of ENVLINK_DATABASE_URL when set (a
database of its own, dropped at the end), else on an embedded server in a temporary directory.
At the end it checks that exactly N benchmark alerts exist, each resolved, with exactly one
firing and one resolved event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.loop import AlertLoop  # noqa: E402
from bench._common import (  # noqa: E402
    BREACH,
    CLEAR,
    LEAD,
    STEP,
    TIMEOUT_S,
    envlink_worker,
    fresh_database,
    no2_instant_rule,
    print_latencies,
    print_verdict,
    send_reading,
    server_version,
    spread,
)
from ingest.history import HistoryQc  # noqa: E402
from ingest.jobs import create_partitions_ahead  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from ingest.sources.simulator import SimulatorJob  # noqa: E402
from schemas.catalogue import load_catalogue  # noqa: E402
from schemas.rules import load_rules  # noqa: E402
from store.catalogue import read_catalogue, seed_catalogue  # noqa: E402
from store.coordination import ALERT_EVENTS_CHANNEL  # noqa: E402
from store.listen import Listener  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.rules import seed_rules, write_rule  # noqa: E402

RULE_ID = "bench_no2_instant"
TARGET_P99_S = 0.5
BENCH_RULE = no2_instant_rule(
    RULE_ID,
    name="Benchmark: NO2 instant above the 1-hour limit",
    severity="warning",
    basis="GB 3095-2026 NO2 1-hour Grade II 200 ug/m3 (on single values)",
)


class EventWatcher:
    """Reads alert_event in order (as the notification stage will) on each NOTIFY."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._after = 0
        self._waiting: dict[tuple[int, float, str], asyncio.Future[float]] = {}
        self.ready = asyncio.Event()

    def expect(self, station_id: int, moment: datetime, kind: str) -> asyncio.Future[float]:
        """A future set to the perf_counter time the event's notification arrived."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[(station_id, moment.timestamp(), kind)] = future
        return future

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ALERT_EVENTS_CHANNEL)))
            self.ready.set()
            while True:
                arrived = None
                # The timeout only guards against a lost wake-up; events are read by cursor.
                async for _ in conn.notifies(timeout=0.25, stop_after=1):
                    arrived = time.perf_counter()
                await self._read(conn, arrived if arrived is not None else time.perf_counter())

    async def _read(self, conn: psycopg.AsyncConnection[tuple[object, ...]], at: float) -> None:
        cur = await conn.execute(
            "SELECT e.id, e.kind, a.station_id, a.trigger_time FROM alert_event e"
            " JOIN alert a ON a.id = e.alert_id WHERE e.id > %s AND a.rule_id = %s ORDER BY e.id",
            [self._after, RULE_ID],
        )
        for event_id, kind, station_id, trigger_time in await cur.fetchall():
            self._after = max(self._after, int(event_id))  # type: ignore[call-overload]
            assert isinstance(trigger_time, datetime) and isinstance(station_id, int)
            future = self._waiting.pop((station_id, trigger_time.timestamp(), str(kind)), None)
            if future is not None and not future.done():
                future.set_result(at)


async def station_sequence(
    pipeline: Pipeline,
    watcher: EventWatcher,
    station: tuple[int, str],
    count: int,
    base: datetime,
    latencies: list[float],
    after_ingest: list[float],
) -> None:
    """Breach, wait for firing, clear, wait for resolved; `count` times at one station."""
    station_id, code = station
    for index in range(count):
        moment = base + index * STEP
        fired = watcher.expect(station_id, moment, "firing")
        started = time.perf_counter()
        await send_reading(pipeline, code, moment, BREACH)
        returned = time.perf_counter()
        arrived = await asyncio.wait_for(fired, TIMEOUT_S)
        latencies.append(arrived - started)
        after_ingest.append(arrived - returned)
        resolved = watcher.expect(station_id, moment, "resolved")
        await send_reading(pipeline, code, moment + timedelta(seconds=30), CLEAR)
        await asyncio.wait_for(resolved, TIMEOUT_S)


async def simulate(job: SimulatorJob, interval_s: float, delivered: list[int]) -> None:
    """Tick the simulator every interval until cancelled, counting the readings it delivered."""
    while True:
        started = time.perf_counter()
        result = await job.run()
        delivered.append(sum(result.summary.values()))
        await asyncio.sleep(max(interval_s - (time.perf_counter() - started), 0.0))


async def settle(pool: AsyncConnectionPool, timeout_s: float = 120.0) -> None:
    """Wait until the alert loop has drained the dirty-window queue."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM series_dirty")
            row = await cur.fetchone()
        if row is not None and row[0] == 0:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the alert loop did not drain series_dirty within {timeout_s:.0f} s")


@dataclass
class Load:
    """What produces the background load: `envlink worker --simulate`, or this process."""

    in_process: bool
    simulator_interval_s: float
    history_hours: int
    delivered: list[int] = field(default_factory=list)


async def counted_readings(pool: AsyncConnectionPool, source: str) -> int:
    """Readings a source has delivered so far (its intake counters)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(accepted + duplicate + revised + rejected), 0) FROM source"
            " WHERE code = %s",
            [source],
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def wait_for_simulator(pool: AsyncConnectionPool, timeout_s: float = 120.0) -> int:
    """Wait until the worker's simulator has delivered its first tick (with the history)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        delivered = await counted_readings(pool, "hj212") + await counted_readings(
            pool, "simulator"
        )
        if delivered:
            return delivered
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the worker's simulator delivered nothing within {timeout_s:.0f} s")


async def run(alerts: int, load: Load) -> bool:
    async with fresh_database() as database:
        url = database.url
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            async with conn.transaction():
                await seed_catalogue(conn, load_catalogue(ROOT / "config"))
                await seed_rules(conn, load_rules(ROOT / "config" / "thresholds.yaml"), at=_now())
                await write_rule(conn, BENCH_RULE, via="config", by="bench", at=_now())
            version = await server_version(conn)
            every = (await read_catalogue(conn)).stations_by_id.values()
            stations = [(s.id, s.code) for s in every if s.medium == "air"]
        print(f"server: {version}")
        async with AsyncConnectionPool(url, min_size=4, max_size=16, open=False) as pool:
            await create_partitions_ahead(pool)
            pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
            watcher = EventWatcher(url)
            tasks = [asyncio.create_task(watcher.run(), name="watcher")]
            async with contextlib.AsyncExitStack() as stack:
                warm = time.perf_counter()
                if load.in_process:
                    job = SimulatorJob(
                        pipeline,
                        interval_s=load.simulator_interval_s,
                        history_hours=load.history_hours,
                    )
                    judge = HistoryQc(pipeline).judge  # as a worker runs it
                    loop = AlertLoop(pool, catalogue=pipeline.catalogue_cache, judge=judge)
                    listener = Listener(url, name="bench")
                    await listener.start()
                    stack.push_async_callback(listener.stop)
                    tasks.append(asyncio.create_task(loop.run(listener), name="alert-loop"))
                    await asyncio.wait_for(loop.listening.wait(), 15)
                    first = sum((await job.run()).summary.values())
                    tasks.append(
                        asyncio.create_task(
                            simulate(job, load.simulator_interval_s, load.delivered), name="sim"
                        )
                    )
                    where = "in this process"
                else:
                    interval = {"ENVLINK_SIMULATOR_INTERVAL_S": str(load.simulator_interval_s)}
                    await stack.enter_async_context(envlink_worker(url, "--simulate", env=interval))
                    first = await wait_for_simulator(pool)
                    where = "in `envlink worker --simulate` (HJ 212 over TCP)"
                await asyncio.wait_for(watcher.ready.wait(), 15)
                await settle(pool)
                warm_s = time.perf_counter() - warm
                print(
                    f"load: simulator and alert loop {where}; first tick {first:,} readings"
                    f" (with history) rolled up and evaluated in {warm_s:.1f} s",
                    flush=True,
                )
                per_station = spread(alerts, len(stations))
                base = datetime.now(UTC).replace(second=0, microsecond=0) + LEAD
                latencies: list[float] = []
                after_ingest: list[float] = []
                before = await counted_readings(pool, "hj212") + await counted_readings(
                    pool, "simulator"
                )
                started = time.perf_counter()
                try:
                    await asyncio.gather(
                        *(
                            station_sequence(
                                pipeline, watcher, station, count, base, latencies, after_ingest
                            )
                            for station, count in zip(stations, per_station, strict=True)
                        )
                    )
                    took = time.perf_counter() - started
                    during = (
                        await counted_readings(pool, "hj212")
                        + await counted_readings(pool, "simulator")
                        - before
                    )
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
            checked = await check(pool, alerts)
        print(
            f"alerts: {len(latencies):,} at {len(stations)} air stations in {took:.1f} s;"
            f" simulator: all {len(every)} stations every {load.simulator_interval_s:g} s,"
            f" {during:,} readings stored during the run"
        )
        p99 = print_latencies("commit -> firing", latencies, after_ingest)
        return print_verdict(p99, TARGET_P99_S, checked)


async def check(pool: AsyncConnectionPool, alerts: int) -> str:
    """Exactly `alerts` benchmark alerts, all resolved, each with one firing and one resolved."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'resolved'),"
            " (SELECT count(*) FROM alert_event e JOIN alert a ON a.id = e.alert_id"
            "  WHERE a.rule_id = %(rule)s AND e.kind = 'firing'),"
            " (SELECT count(*) FROM alert_event e JOIN alert a ON a.id = e.alert_id"
            "  WHERE a.rule_id = %(rule)s AND e.kind = 'resolved'),"
            " (SELECT count(*) FROM alert WHERE rule_id <> %(rule)s)"
            " FROM alert WHERE rule_id = %(rule)s",
            {"rule": RULE_ID},
        )
        row = await cur.fetchone()
    assert row is not None
    total, resolved, firing, cleared, others = row
    expected = (alerts, alerts, alerts, alerts)
    if (total, resolved, firing, cleared) != expected:
        raise RuntimeError(
            f"expected {alerts} resolved alerts with one firing and one resolved event each;"
            f" found {total} alerts, {resolved} resolved, {firing} firing events,"
            f" {cleared} resolved events"
        )
    return (
        f"checked: {alerts} alerts, each fired and resolved once ({others} alerts of joint rules)"
    )


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=1000, help="alerts to fire (default 1000)")
    parser.add_argument(
        "--simulator-interval", type=float, default=1.0, help="seconds between simulator ticks"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the simulator and the alert loop in this process instead of a worker",
    )
    parser.add_argument(
        "--history-hours",
        type=int,
        default=24,
        help="simulated history of the first tick (--in-process only; the worker sends 24 h)",
    )
    args = parser.parse_args()
    if args.alerts < 1 or args.simulator_interval <= 0 or args.history_hours < 0:
        parser.error("--alerts must be at least 1, --simulator-interval positive")
    logging.basicConfig(level=logging.WARNING)
    load = Load(args.in_process, args.simulator_interval, args.history_hours)
    sys.exit(0 if asyncio.run(run(args.alerts, load)) else 1)


if __name__ == "__main__":
    main()
