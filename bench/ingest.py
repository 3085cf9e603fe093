"""Benchmark the idempotent bulk write path against a raw binary COPY of the same rows.

Writes N readings (default 1 M: 200 stations × 10 parameters × 500 hourly times every 4 hours,
so three monthly partitions) through store.readings.write_readings twice — as fresh rows into an
empty `reading`, then as a full replay of the same rows — and divides each rate by the rate of a
raw binary COPY of those rows into an empty, identically keyed and partitioned table measured in
the same run. Every figure is the wall time of the call including its commit.

    .venv/bin/python bench/ingest.py [--rows N] [--runs R] [--timescaledb]

The database is a fresh one: with --timescaledb on a throwaway TimescaleDB server (the shared
build's start-cluster), else on the server of ENVLINK_DATABASE_URL when set (a database of its
own, dropped at the end), else on an embedded server started in a temporary directory. Where the
server preloads TimescaleDB, `reading` is a hypertable and so is the raw COPY's table (same
chunk span, no compression).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import fresh_database, server_version, timescaledb_server  # noqa: E402
from schemas.catalogue import Catalogue, StationParameterDef, load_catalogue  # noqa: E402
from schemas.common import QC  # noqa: E402
from store.catalogue import read_catalogue, seed_catalogue  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.partitions import create_partitions, month_of  # noqa: E402
from store.pool import Conn  # noqa: E402
from store.readings import ReadingRow, WriteResult, write_readings  # noqa: E402
from store.sources import ensure_source  # noqa: E402
from store.timescale import is_hypertable, reading_layout  # noqa: E402

STATIONS = 200
# Each synthetic station's hourly parameters: the six AQI pollutants and four weather ones.
PARAMETERS = (
    *("so2", "no2", "co", "o3", "pm10", "pm25"),
    *("air_temp", "humidity", "pressure", "wind_speed"),
)
STEP = timedelta(hours=4)
FIRST = datetime(2025, 1, 1, tzinfo=UTC)
BASELINE = "reading_copy_baseline"
_COPY_TYPES = ["int4", "int2", "int4", "timestamptz", "float8", "int2", "int2", "timestamptz"]


@dataclass
class Figures:
    """Seconds per run of one measurement."""

    seconds: list[float]

    def best(self) -> float:
        return min(self.seconds)

    def median(self) -> float:
        return statistics.median(self.seconds)


def bench_catalogue(config_dir: Path) -> Catalogue:
    """The joint catalogue plus synthetic air stations up to STATIONS, each with PARAMETERS."""
    catalogue = load_catalogue(config_dir)
    template = next(s for s in catalogue.stations if s.medium == "air")
    spec = StationParameterDef(unit="ug/m3", interval_s=3600)
    extra = [
        template.model_copy(update={"code": f"bench-a-{i:04d}", "hj212": None})
        for i in range(STATIONS)
    ]
    links = dict(catalogue.station_parameters)
    links.update({s.code: {p: spec for p in PARAMETERS} for s in extra})
    return catalogue.model_copy(
        update={"stations": [*catalogue.stations, *extra], "station_parameters": links}
    )


def make_rows(
    count: int, station_ids: Sequence[int], parameter_ids: Sequence[int]
) -> list[ReadingRow]:
    """`count` hourly readings in arrival order (time, then station, then parameter)."""
    rng = random.Random(20250101)
    per_time = len(station_ids) * len(parameter_ids)
    rows: list[ReadingRow] = []
    for step in range(math.ceil(count / per_time)):
        moment = FIRST + step * STEP
        for station_id in station_ids:
            for parameter_id in parameter_ids:
                # About one value in 500 missing (device fault) and one in 50 suspect.
                draw = rng.random()
                value = None if draw < 0.002 else round(rng.lognormvariate(3.0, 0.6), 1)
                qc = QC.FAULT if value is None else QC.SUSPECT if draw > 0.98 else QC.VALID
                rows.append(ReadingRow(station_id, parameter_id, 3600, moment, value, qc.code))
    return rows[:count]


async def create_baseline(conn: Conn, months: set[tuple[int, int]]) -> None:
    """An empty copy of `reading`: same columns, checks, primary key and partitions or chunks."""
    if await is_hypertable(conn):
        await conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE reading INCLUDING ALL)").format(sql.Identifier(BASELINE))
        )
        await conn.execute(
            "SELECT create_hypertable(%s::regclass, by_range('time', (SELECT time_interval"
            " FROM timescaledb_information.dimensions WHERE hypertable_name = 'reading')),"
            " create_default_indexes => false)",
            [BASELINE],
        )
        # Compression would rewrite chunks while runs are timed; the write path is measured.
        await conn.execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression'"
        )
        return
    await conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE reading INCLUDING ALL) PARTITION BY RANGE (time)").format(
            sql.Identifier(BASELINE)
        )
    )
    for year, month in sorted(months):
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
        await conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(f"{BASELINE}_p{year:04d}{month:02d}"),
                sql.Identifier(BASELINE),
                sql.Literal(start),
                sql.Literal(end),
            )
        )


async def copy_baseline(conn: Conn, rows: Sequence[tuple[object, ...]]) -> None:
    """The denominator: the rows, complete, straight through one binary COPY."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL(
                "COPY {} (station_id, parameter_id, period_s, time, value, qc, source_id,"
                " received_at) FROM STDIN (FORMAT BINARY)"
            ).format(sql.Identifier(BASELINE))
        ) as copy,
    ):
        copy.set_types(_COPY_TYPES)
        for row in rows:
            await copy.write_row(row)


async def count(conn: Conn, table: str) -> int:
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    found = await cur.fetchone()
    assert found is not None
    return int(found[0])


async def checkpoint(conn: Conn) -> None:
    """Flush dirty pages now, so no timed run pays for the previous one's checkpoint."""
    with suppress(psycopg.errors.InsufficientPrivilege):
        await conn.execute("CHECKPOINT")


async def settle(conn: Conn, *tables: str) -> None:
    """Empty `tables` (and what refers to them) and checkpoint, so each run starts alike."""
    await conn.execute(
        sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables))
    )
    await checkpoint(conn)


async def timed(conn: Conn, work: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    """Wall time of `work` in one transaction, commit included."""
    started = time.perf_counter()
    async with conn.transaction():
        outcome = await work()
    return time.perf_counter() - started, outcome


@dataclass
class Setup:
    """The benchmark's rows and the sources that write them."""

    rows: list[ReadingRow]
    months: set[tuple[int, int]]
    source_id: int
    replay_source_id: int


async def prepare(conn: Conn, rows_wanted: int) -> Setup:
    """Migrate and seed the new database, make the rows, create their partitions and BASELINE."""
    await migrate(conn)
    async with conn.transaction():
        await seed_catalogue(conn, bench_catalogue(ROOT / "config"))
        source_id = await ensure_source(conn, code="bench", kind="bench")
        replay_source_id = await ensure_source(conn, code="bench-replay", kind="bench")
    catalogue = await read_catalogue(conn)
    stations = [s.id for s in catalogue.stations_by_id.values() if s.code.startswith("bench-")]
    parameters = {code: p.id for code, p in catalogue.parameters.items()}
    rows = make_rows(rows_wanted, stations, [parameters[code] for code in PARAMETERS])
    months = {month_of(row.time) for row in rows}
    async with conn.transaction():
        await create_partitions(conn, months)
        await create_baseline(conn, months)
    return Setup(rows, months, source_id, replay_source_id)


async def measure(conn: Conn, setup: Setup, figures: dict[str, Figures]) -> None:
    """One run: the raw COPY, the fresh write and the replay, each from a settled state."""
    rows = setup.rows
    received_at = datetime.now(UTC)
    complete = [(*row, setup.source_id, received_at) for row in rows]
    await settle(conn, BASELINE)
    took, _ = await timed(conn, lambda: copy_baseline(conn, complete))
    assert await count(conn, BASELINE) == len(rows)
    figures["raw COPY"].seconds.append(took)

    await settle(conn, "reading", "reading_latest", "reading_revision")
    took, written = await timed(
        conn,
        lambda: write_readings(conn, rows, source_id=setup.source_id, received_at=received_at),
    )
    assert isinstance(written, WriteResult) and written.accepted == len(rows), written
    assert await count(conn, "reading") == len(rows)
    assert await count(conn, "reading_latest") == len({row[:3] for row in rows})
    figures["fresh"].seconds.append(took)

    await checkpoint(conn)
    took, written = await timed(
        conn,
        lambda: write_readings(
            conn, rows, source_id=setup.replay_source_id, received_at=datetime.now(UTC)
        ),
    )
    assert isinstance(written, WriteResult) and len(written.duplicates) == len(rows), written
    assert await count(conn, "reading") == len(rows)
    assert await count(conn, "reading_revision") == 0
    figures["replay"].seconds.append(took)


async def run(rows_wanted: int, runs: int, server: str | None) -> None:
    """Measure `runs` times on a fresh database (on `server` if given) and print the figures."""
    async with (
        fresh_database(server=server) as database,
        await psycopg.AsyncConnection.connect(database.url, autocommit=True) as conn,
    ):
        setup = await prepare(conn, rows_wanted)
        print(f"server: {await server_version(conn)}")
        print((await reading_layout(conn)).describe())
        print(
            f"rows: {len(setup.rows):,} ({STATIONS} stations × {len(PARAMETERS)} parameters,"
            f" hourly values every {STEP.total_seconds() / 3600:g} h,"
            f" in {len(setup.months)} month{'s' if len(setup.months) != 1 else ''}); runs: {runs}",
            flush=True,
        )
        figures = {name: Figures([]) for name in ("raw COPY", "fresh", "replay")}
        try:
            for number in range(1, runs + 1):
                await measure(conn, setup, figures)
                print(
                    f"run {number}: "
                    + ", ".join(
                        f"{name} {len(setup.rows) / f.seconds[-1]:,.0f} rows/s"
                        for name, f in figures.items()
                    ),
                    flush=True,
                )
        finally:
            await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(BASELINE)))
        report(len(setup.rows), figures)


def report(total: int, figures: dict[str, Figures]) -> None:
    """Rates (best and median over the runs) and each path's ratio to the raw COPY."""
    for name, measured in figures.items():
        print(
            f"{name:>9}: best {total / measured.best():,.0f} rows/s,"
            f" median {total / measured.median():,.0f} rows/s"
        )
    baseline = figures["raw COPY"].seconds
    for name, floor in (("fresh", 0.6), ("replay", 0.5)):
        # Each run's ratio uses that run's own raw COPY, measured minutes apart at most.
        ratios = [b / s for b, s in zip(baseline, figures[name].seconds, strict=True)]
        verdict = "meets" if statistics.median(ratios) >= floor else "MISSES"
        print(
            f"{name} / raw COPY: best {max(ratios):.2f}×, median {statistics.median(ratios):.2f}×"
            f" (runs: {', '.join(f'{r:.2f}' for r in ratios)}; {verdict} the {floor}× target)"
        )


async def measure_on(rows_wanted: int, runs: int, *, timescaledb: bool) -> None:
    """Run on a throwaway TimescaleDB server if asked, else as run() chooses."""
    if not timescaledb:
        await run(rows_wanted, runs, None)
        return
    async with timescaledb_server() as server:
        await run(rows_wanted, runs, server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="readings per run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument(
        "--timescaledb",
        action="store_true",
        help="on a throwaway TimescaleDB server (its build installed first, as .ci/run does)",
    )
    args = parser.parse_args()
    if args.rows < 1 or args.runs < 1:
        parser.error("--rows and --runs must be at least 1")
    asyncio.run(measure_on(args.rows, args.runs, timescaledb=args.timescaledb))


if __name__ == "__main__":
    main()
