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
import math
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.loop import AlertLoop  # noqa: E402
from ingest.jobs import SimulatorJob, create_partitions_ahead  # noqa: E402
from ingest.pipeline import Pipeline, Source  # noqa: E402
from schemas.catalogue import load_catalogue  # noqa: E402
from schemas.readings import ReadingIn, Rejection  # noqa: E402
from schemas.rules import RuleDefinition, load_rules  # noqa: E402
from store.alerts import ALERT_EVENTS_CHANNEL  # noqa: E402
from store.catalogue import seed_catalogue, station_refs  # noqa: E402
from store.embedded import start_embedded  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.rules import seed_rules, write_rule  # noqa: E402

BENCH = Source(code="bench", kind="bench")
RULE_ID = "bench_no2_instant"
# The clearing value stays close to the breach (within the level around it) so that history QC
# never judges an alternating breach/clear series to be isolated spikes and re-flags it suspect
# (which would retract the alerts instead of resolving them).
BREACH, CLEAR = 250.0, 170.0
STEP = timedelta(minutes=2)
LEAD = timedelta(hours=1)
TIMEOUT_S = 30.0
TARGET_P99_S = 0.5

BENCH_RULE = RuleDefinition.model_validate(
    {
        "id": RULE_ID,
        "name": {"en": "Benchmark: NO2 instant above the 1-hour limit", "zh": "基准测试"},
        "kind": "threshold",
        "parameter": "no2",
        "unit": "ug/m3",
        "statistic": "instant",
        "scope": {"medium": "air"},
        "for_s": 0,
        "ladders": [
            {
                "standard": "GB 3095-2026",
                "levels": [
                    {
                        "severity": "warning",
                        "trigger": 200,
                        "clear": 180,
                        "basis": "GB 3095-2026 NO2 1-hour Grade II 200 ug/m3 (on single values)",
                    }
                ],
            }
        ],
    }
)


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new database, dropped (or its embedded server stopped) afterwards."""
    server_url = os.environ.get("ENVLINK_DATABASE_URL")
    if server_url is None:
        with tempfile.TemporaryDirectory(prefix="envlink-bench-") as data_dir:
            server = start_embedded(Path(data_dir), database="envlink_bench")
            try:
                yield server.url
            finally:
                server.stop()
        return
    name = f"envlink_bench_{os.getpid()}_{secrets.token_hex(3)}"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(
            "", **{k: str(v) for k, v in info.items() if v is not None}
        )
    finally:
        async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
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
        await _send(pipeline, code, moment, BREACH)
        returned = time.perf_counter()
        arrived = await asyncio.wait_for(fired, TIMEOUT_S)
        latencies.append(arrived - started)
        after_ingest.append(arrived - returned)
        resolved = watcher.expect(station_id, moment, "resolved")
        await _send(pipeline, code, moment + timedelta(seconds=30), CLEAR)
        await asyncio.wait_for(resolved, TIMEOUT_S)


async def _send(pipeline: Pipeline, station: str, moment: datetime, value: float) -> None:
    item = ReadingIn(station=station, parameter="no2", time=moment, value=value, unit="ug/m3")
    batch: list[ReadingIn | Rejection] = [item]
    result = await pipeline.ingest(batch, source=BENCH)
    if result.summary["accepted"] != 1:
        raise RuntimeError(f"benchmark reading not accepted: {result.summary} {result.rejections}")


async def simulate(job: SimulatorJob, interval_s: float, delivered: list[int]) -> None:
    """Tick the simulator every interval until cancelled, counting the readings it delivered."""
    while True:
        started = time.perf_counter()
        result = await job.tick()
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


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


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


@asynccontextmanager
async def worker_process(url: str, load: Load) -> AsyncIterator[None]:
    """`envlink worker --simulate` on this database: simulator over HJ 212 and the alert loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": url,
        "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
        "ENVLINK_HJ212_HOST": "127.0.0.1",
        "ENVLINK_HJ212_PORT": str(port),
        "ENVLINK_SIMULATOR_INTERVAL_S": str(load.simulator_interval_s),
        "ENVLINK_MQTT_HOST": "",
        "ENVLINK_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from envlink.cli import main; sys.exit(main(sys.argv[1:]))",
        "worker",
        "--simulate",
        cwd=ROOT,
        env=env,
    )
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


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
    async with fresh_database() as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            async with conn.transaction():
                await seed_catalogue(conn, load_catalogue(ROOT / "config"))
                await seed_rules(conn, load_rules(ROOT / "config" / "thresholds.yaml"), at=_now())
                await write_rule(conn, BENCH_RULE, via="config", by="bench", at=_now())
            cur = await conn.execute("SELECT version()")
            version = await cur.fetchone()
            every = await station_refs(conn)
            stations = [(s.id, s.code) for s in every if s.medium == "air"]
        assert version is not None
        print(f"server: {version[0]}")
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
                    loop = AlertLoop(pool, listen_url=url)
                    tasks.append(asyncio.create_task(loop.run(), name="alert-loop"))
                    await asyncio.wait_for(loop.listening.wait(), 15)
                    first = sum((await job.tick()).summary.values())
                    tasks.append(
                        asyncio.create_task(
                            simulate(job, load.simulator_interval_s, load.delivered), name="sim"
                        )
                    )
                    where = "in this process"
                else:
                    await stack.enter_async_context(worker_process(url, load))
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
                per_station = [alerts // len(stations)] * len(stations)
                for index in range(alerts % len(stations)):
                    per_station[index] += 1
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
        p50, p95, p99 = (percentile(latencies, f) for f in (0.50, 0.95, 0.99))
        print(
            "commit -> firing (from before ingest): "
            f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
            f" max {max(latencies) * 1000:.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms"
        )
        q50, q99 = (percentile(after_ingest, f) for f in (0.50, 0.99))
        print(f"from ingest's return: p50 {q50 * 1000:.1f} ms, p99 {q99 * 1000:.1f} ms")
        verdict = "meets" if p99 < TARGET_P99_S else "MISSES"
        print(
            f"p99 {p99 * 1000:.1f} ms {verdict} the {TARGET_P99_S * 1000:.0f} ms target; {checked}"
        )
        return p99 < TARGET_P99_S


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
