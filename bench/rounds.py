"""Benchmark one alert-loop round over hours already full of real-time data.

N synthetic air stations (bench/hj212.py's catalogue) get `--prefill` seconds of 1-second
real-time readings in one hour, rolled up by a full rebuild; then, `--rounds` times, every series
gets `--step` more seconds through the ingest pipeline and one round (claim, history QC unless
--no-qc, rollups, the engine) runs. Prints each round's keys, its time in its transaction and
the CPU time of this process (the loop's Python side), with the load average. The garbage
collector is tuned as `envlink worker` tunes it (--default-gc: as CPython starts).

    .venv/bin/python bench/rounds.py [--stations 100] [--prefill 3000] [--step 10] [--rounds 4]

The database is a fresh one: on the server of ENVLINK_DATABASE_URL when set, else embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.loop import AlertLoop, rebuild_rollups  # noqa: E402
from bench._common import fresh_database  # noqa: E402
from bench.hj212 import POLLUTANTS, bench_catalogue, items_of  # noqa: E402
from envlink.runtime import tune_gc  # noqa: E402
from ingest.history import HistoryQc  # noqa: E402
from ingest.pipeline import Pipeline, SourceRef  # noqa: E402
from schemas.common import QC  # noqa: E402
from schemas.readings import ReadingIn, Rejection  # noqa: E402
from store.catalogue import read_catalogue, seed_catalogue  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.partitions import create_partitions, month_of  # noqa: E402
from store.readings import ReadingRow, write_readings  # noqa: E402
from store.sources import ensure_source  # noqa: E402

FEED = SourceRef(code="hj212", kind="hj212")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> None:
    async with fresh_database("envlink_bench_rounds") as database:
        url = database.url
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            version = (await (await conn.execute("SHOW server_version")).fetchone() or ["?"])[0]
            async with conn.transaction():
                await seed_catalogue(conn, bench_catalogue(ROOT / "config", args.stations))
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        async with AsyncConnectionPool(url, min_size=2, max_size=4, open=False) as pool:
            series: list[tuple[str, int, int, str, str]] = []
            async with pool.connection() as conn:
                catalogue = await read_catalogue(conn)
                for i in range(args.stations):
                    station = catalogue.stations[f"bench-a-{i:04d}"]
                    for _, code, unit in POLLUTANTS[: items_of(i)]:
                        parameter = catalogue.parameters[code].id
                        series.append((station.code, station.id, parameter, code, unit))
                async with conn.transaction():
                    await create_partitions(conn, {month_of(start)})
                    source_id = await ensure_source(conn, code="prefill", kind="bench")
                began = time.perf_counter()
                for block in range(0, args.prefill, 60):
                    rows = [
                        ReadingRow(
                            sid, pid, 0, start + timedelta(seconds=k), 10.0 + (k + j) % 50, 0
                        )
                        for j, (_, sid, pid, _, _) in enumerate(series)
                        for k in range(block, min(block + 60, args.prefill))
                    ]
                    async with conn.transaction():
                        await write_readings(conn, rows, source_id=source_id, received_at=start)
                async with conn.transaction():
                    await rebuild_rollups(conn, water_min_samples=1, now=start)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("VACUUM ANALYZE")
            print(
                f"PostgreSQL {version}; {len(series)} series, {args.prefill} s of 1-s readings "
                f"each rolled up in {time.perf_counter() - began:.0f} s; "
                f"load average {os.getloadavg()[0]:.2f}"
            )
            if not args.default_gc:
                tune_gc()  # as `envlink worker` does
            pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
            judge = None if args.no_qc else HistoryQc(pipeline).judge
            loop = AlertLoop(pool, catalogue=pipeline.catalogue_cache, judge=judge)
            second = args.prefill
            for number in range(args.rounds):
                items: list[ReadingIn | Rejection] = [
                    ReadingIn(
                        station=code,
                        parameter=parameter,
                        time=start + timedelta(seconds=second + k),
                        value=10.0 + (second + k + j) % 50,
                        unit=unit,
                        period_s=0,
                        qc=QC.VALID,
                    )
                    for j, (code, _, _, parameter, unit) in enumerate(series)
                    for k in range(args.step)
                ]
                second += args.step
                await pipeline.ingest(items, source=FEED)
                cpu = _cpu()
                report = await loop.process()
                print(
                    f"round {number + 1}: {len(report.claimed)} keys, {report.busy_s:.3f} s in "
                    f"its transaction, {_cpu() - cpu:.3f} s CPU of the loop's process; "
                    f"load average {os.getloadavg()[0]:.2f}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--prefill", type=int, default=3000, help="seconds of data per series")
    parser.add_argument("--step", type=int, default=10, help="new seconds per series a round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-qc", action="store_true", help="rounds without history QC")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="CPython's default garbage collection, not the worker's (envlink.runtime.tune_gc)",
    )
    args = parser.parse_args()
    if not 0 < args.prefill + args.step * args.rounds <= 3600:
        parser.error("the prefill and the rounds' data must fit in one hour (3600 s)")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
