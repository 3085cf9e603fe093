"""Benchmark GET /v1/reports/air and /v1/reports/bulletin from the rollups, over loopback HTTP.

Loads two years of rollups (the year and the year before, for `last_year`) for every assessment
station of both cities (10) × the six pollutants into a database of its own: hourly means
(reading_hourly, 3 % of hours missing) and the daily means of the days with 20 valid hours
(reading_daily), made by the server with generate_series. Then it serves that database with
`envlink api` (one process) and asks RUNS times, one request at a time, for the city's year
report (target < 1 s) and for the year's November bulletin (JSON: both cities, the region, every
station, the months so far, the water sections; target < 3 s), printing the median and the
slowest wall time of a request.

    .venv/bin/python bench/reports.py                      # embedded server
    .venv/bin/python bench/reports.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

--database-url names a server: the bench creates a database `envlink_bench_reports_<pid>_<hex>`
there and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import free_port, fresh_database  # noqa: E402
from bench.api import running, wait_ready  # noqa: E402
from schemas.catalogue import load_catalogue  # noqa: E402
from store.catalogue import seed_catalogue  # noqa: E402
from store.keys import create_key  # noqa: E402
from store.migrate import migrate  # noqa: E402

TARGET_S = 1.0
BULLETIN_TARGET_S = 3.0
BULLETIN_MONTH = 11
TYPICAL = {"so2": 8.0, "no2": 40.0, "co": 0.8, "o3": 70.0, "pm10": 50.0, "pm25": 30.0}

_HOURLY = """
INSERT INTO reading_hourly (station_id, parameter_id, hour, value, samples, coverage_s, min, max,
                            origin, computed_at)
SELECT s.id, p.id, h, v, 1, 3600, v, v, 'reported', now()
FROM station s CROSS JOIN parameter p
CROSS JOIN generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
CROSS JOIN LATERAL (SELECT %(typical)s * exp(0.9 * (random() + random() + random() - 1.5))
                           + 0 * extract(epoch FROM h) AS v) AS r
WHERE s.medium = 'air' AND s.background IS NOT TRUE AND p.code = %(code)s
  AND random() >= 0.03
"""
_DAILY = """
INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min, max, origin,
                           computed_at)
SELECT station_id, parameter_id, (hour AT TIME ZONE 'Asia/Shanghai')::date, avg(value), count(*),
       min(value), max(value), 'computed', now()
FROM reading_hourly GROUP BY 1, 2, 3 HAVING count(*) >= 20
"""


async def load(url: str, year: int) -> str:
    """Migrate, seed, load two years of both cities' rollups; a reader key."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, load_catalogue(ROOT / "config"))
        span = {"start": f"{year - 1}-01-01T00:00+08:00", "end": f"{year + 1}-01-01T00:00+08:00"}
        for code, typical in TYPICAL.items():
            await conn.execute(_HOURLY, {**span, "typical": typical, "code": code})
        await conn.execute(_DAILY)
        await conn.execute("VACUUM ANALYZE reading_hourly")
        await conn.execute("VACUUM ANALYZE reading_daily")
        cur = await conn.execute("SELECT count(*) FROM reading_hourly")
        row = await cur.fetchone()
        assert row is not None
        print(f"loaded {row[0]} hourly rollups of both cities, {year - 1}-{year}", flush=True)
        _, key = await create_key(conn, agency="joint_office", roles=["reader"], label="bench")
    return key


def measure(url: str, key: str, city: str, year: int, runs: int) -> dict[str, list[float]]:
    """Wall seconds of each request, one at a time: the city's year report, the bulletin."""
    port = free_port()
    env = {
        "ENVLINK_DATABASE_URL": url,
        "ENVLINK_API_HOST": "127.0.0.1",
        "ENVLINK_API_PORT": str(port),
        "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
        "ENVLINK_MQTT_HOST": "",
        "ENVLINK_LOG_LEVEL": "WARNING",
    }
    cli = "import sys; from envlink.cli import main; sys.exit(main(sys.argv[1:]))"
    base = f"http://127.0.0.1:{port}"
    path = f"/v1/reports/air?scope=city&code={city}&period={year}"
    bulletin = f"/v1/reports/bulletin?month={year}-{BULLETIN_MONTH:02d}"
    headers = {"X-API-Key": key}
    timings: dict[str, list[float]] = {path: [], bulletin: []}
    bodies = {}
    with running([sys.executable, "-c", cli, "api"], env):
        wait_ready(base, path, headers)
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for target, found in timings.items():
                for _ in range(runs):
                    start = time.perf_counter()
                    response = client.get(target)
                    found.append(time.perf_counter() - start)
                    response.raise_for_status()
                bodies[target] = response.json()
    body = bodies[path]
    for part in body.get("parts", [body]):
        print(
            f"{path} {part['period']['label']}: good_day_share {part['good_day_share']},"
            f" composite index {part['composite_index']['value']}",
            flush=True,
        )
    for row in bodies[bulletin]["summary"]:
        print(
            f"{bulletin} {row['unit']}: good_day_share {row['good_day_share']},"
            f" composite index {row['composite_index']}",
            flush=True,
        )
    return timings


async def main_async(args: argparse.Namespace) -> bool:
    async with fresh_database("envlink_bench_reports", server=args.database_url) as database:
        key = await load(database.url, args.year)
        timings = measure(database.url, key, args.city, args.year, args.runs)
    met = True
    for (what, target), found in zip(
        [("city-year air report", TARGET_S), ("monthly bulletin", BULLETIN_TARGET_S)],
        timings.values(),
        strict=True,
    ):
        median, slowest = statistics.median(found), max(found)
        print(
            f"{what} over loopback: median {median * 1000:.0f} ms,"
            f" slowest {slowest * 1000:.0f} ms of {len(found)} (target < {target:.0f} s)"
        )
        met = met and median < target
    return met


def main() -> None:
    """Load, serve, measure; exit 1 when the median misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="a server to create the database on")
    parser.add_argument("--city", default="dongguan", choices=["dongguan", "guangzhou"])
    parser.add_argument("--year", type=int, default=date.today().year - 1)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(main_async(args)) else 1)


if __name__ == "__main__":
    main()
