"""CPU time per request of EnvLink's API against the bare endpoints, in process, per endpoint.

Wall-clock throughput on a shared machine follows whatever else runs there; the CPU time a
process spends on a request much less. This loads a small database of its own (the catalogue
of config/, two days of hourly means and an hour of 10-second readings for every series, and a
year of hourly means and a day of 10-second readings for the series bench/api.py reads), then
serves it from EnvLink's app (`api.app.create_app`, its own pool and listener as
`envlink api` opens them, rate limits on, a reader key) and from bench/bare_api.py's app, in
this process, and calls each endpoint bench/api.py compares through the raw ASGI interface (no
socket, no HTTP parser: what is left is the app's own work and the database driver's).

Each round calls every endpoint N times on EnvLink, then N times on bare, and reads
`time.process_time()` around the N calls: this process's CPU time, the server's not counted
(it runs the same statements for both). It prints the least over the rounds of the CPU
milliseconds per request (other work on the machine only ever adds to a round's CPU time:
cache misses, a shared core), with the median beside it, EnvLink's overhead over bare, and
bare / EnvLink (the share of bare's throughput EnvLink would reach where the API process's CPU
is the bottleneck).

    .venv/bin/python bench/overhead.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/overhead.py --requests 50 --rounds 3      # quicker, noisier
    .venv/bin/python bench/overhead.py --profile "/v1/latest"        # cProfile of EnvLink's calls

--database-url names a server: a database `envlink_bench_overhead_<pid>_<hex>` is made there
and dropped at the end; without it an embedded server runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from bench import bare_api  # noqa: E402
from bench._common import fresh_database  # noqa: E402
from bench.api import (  # noqa: E402
    HOUR,
    REAL_TIME_STEP,
    YEAR_HOURS,
    Plan,
    Target,
    load_series,
    prepare,
    scenario,
)
from core.settings import Settings  # noqa: E402
from envlink.runtime import tune_gc, tune_malloc  # noqa: E402
from store.partitions import create_partitions, month_of  # noqa: E402

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]

# Every series: two days of hourly means (the city AQI reads the last 24 hours) and an hour of
# 10-second readings. The series bench/api.py reads a day and a year of: a year and a day more.
HOURS, SAMPLES = 48, 360
LONG_HOURS, LONG_SAMPLES = YEAR_HOURS + 48, 8640 + 360
# The series bench/api.py chooses (bench.api.scenario): an air station's PM2.5, the first code.
_CHOSEN = """
SELECT s.id, p.id FROM station s JOIN station_parameter sp ON sp.station_id = s.id
JOIN parameter p ON p.id = sp.parameter_id
WHERE s.medium = 'air' ORDER BY p.code <> 'pm25', s.code LIMIT 1
"""


async def load_small(url: str) -> int:
    """Seed the catalogue and the readings described above; the readings loaded."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        plan, source_id = await prepare(conn, 1)
        cur = await conn.execute(_CHOSEN)
        chosen = await cur.fetchone()
        assert chosen is not None
        months = set()
        moment = plan.end - LONG_HOURS * HOUR
        while moment < plan.end:
            months.add(month_of(moment))
            moment += HOUR * 24 * 27
        months.add(month_of(plan.end - REAL_TIME_STEP))
        async with conn.transaction():
            await create_partitions(conn, months)
        short = Plan(plan.series, HOURS, SAMPLES, plan.end)
        long = Plan(plan.series, LONG_HOURS, LONG_SAMPLES, plan.end)
        loaded = 0
        for series in plan.series:
            this = long if (series.station_id, series.parameter_id) == tuple(chosen) else short
            await load_series(conn, this, series, source_id)
            loaded += this.per_series
        await conn.execute("VACUUM (ANALYZE) reading, reading_hourly, reading_daily")
    return loaded


async def call(app: ASGIApp, target: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """One GET through the ASGI interface, as uvicorn would make it; status and body size."""
    path, _, query = target.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status, size, asked = 0, 0, False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if asked:
            return {"type": "http.disconnect"}
        asked = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


async def cpu_per_request(
    app: ASGIApp, target: str, headers: list[tuple[bytes, bytes]], requests: int
) -> float:
    """CPU seconds of this process per request, over `requests` sequential calls."""
    started = time.process_time()
    for _ in range(requests):
        status, _ = await call(app, target, headers)
        if status != 200:
            raise SystemExit(f"{target} answered {status}")
    return (time.process_time() - started) / requests


async def run(args: argparse.Namespace) -> None:
    async with fresh_database("envlink_bench_overhead", server=args.database_url) as database:
        started = time.perf_counter()
        loaded = await load_small(database.url)
        print(f"loaded {loaded:,} readings in {time.perf_counter() - started:.1f} s", flush=True)
        targets, key = await scenario(database.url)
        compared: list[Target] = [t for t in targets if t.bare]
        if args.profile is not None:
            compared = [t for t in compared if t.label == args.profile]
            if not compared:
                raise SystemExit(f"no endpoint labelled {args.profile!r}")
        settings = Settings(database_url=database.url, config_dir=ROOT / "config")
        ours = create_app(settings)
        os.environ["ENVLINK_BENCH_DATABASE_URL"] = database.url
        bare = bare_api.create()
        common = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"overhead"), (b"accept", b"*/*")]
        keyed = [*common, (b"x-api-key", key.encode())]
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(ours.router.lifespan_context(ours))
            await stack.enter_async_context(bare.router.lifespan_context(bare))
            tune_gc()  # the collector and malloc as `envlink api` sets them in each process
            tune_malloc()
            for target in compared:  # warm both up: caches, prepared statements, imports
                for app, headers in ((ours, keyed), (bare, common)):
                    await cpu_per_request(app, target.path, headers, max(5, args.requests // 10))
            if args.profile is not None:
                profile = cProfile.Profile(time.process_time)
                profile.enable()
                await cpu_per_request(ours, compared[0].path, keyed, args.requests)
                profile.disable()
                stats = pstats.Stats(profile).sort_stats(args.sort)
                stats.print_stats(args.lines)
                return
            ms: dict[str, dict[str, list[float]]] = {
                t.label: {"envlink": [], "bare": []} for t in compared
            }
            for _ in range(args.rounds):
                for target in compared:
                    for name, app, headers in (("envlink", ours, keyed), ("bare", bare, common)):
                        cpu = await cpu_per_request(app, target.path, headers, args.requests)
                        ms[target.label][name].append(cpu * 1000)
    load = os.getloadavg()[0]
    print(
        f"CPU ms per request of this process, least (median) of {args.rounds} rounds of"
        f" {args.requests} sequential requests (load average {load:.1f}, {os.cpu_count()} cores)"
    )
    print(f"{'endpoint':<30} {'EnvLink':>15} {'bare':>15} {'overhead':>9} {'bare/EnvLink':>13}")
    for label, by_app in ms.items():
        envlink, bare_ms = min(by_app["envlink"]), min(by_app["bare"])
        medians = statistics.median(by_app["envlink"]), statistics.median(by_app["bare"])
        print(
            f"{label:<30} {envlink:>6.2f} ({medians[0]:>6.2f}) {bare_ms:>6.2f} ({medians[1]:>6.2f})"
            f" {envlink - bare_ms:>9.2f} {bare_ms / envlink:>12.2f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="a server to create the database on (else embedded)")
    parser.add_argument("--requests", type=int, default=40, help="requests per endpoint a round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the least is printed)")
    parser.add_argument("--profile", metavar="LABEL", help="cProfile EnvLink on this endpoint")
    parser.add_argument("--sort", default="cumulative", help="the profile's sort order")
    parser.add_argument("--lines", type=int, default=60, help="the profile's lines")
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be positive")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
