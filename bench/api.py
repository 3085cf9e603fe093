"""Benchmark the HTTP API on 50 M readings: EnvLink against bare endpoints running the same SQL.

Loads N readings (default 50 M) into a database of its own: for every series of the catalogue
(232), hourly means up to the last complete hour (a fifth of N, at least a year, at most five
years: 5 years at 50 M) and 10-second real-time data up to the same hour for the rest (20 days
at 50 M, 1.5 days at 5 M). Rows are made by the server (generate_series INSERTs, one
transaction per series, two connections); the rollups by bulk SQL over what was loaded
(store/rollups.py's shapes, the values the app's rollups would hold: every hour's valid
reported mean wins, docs/conventions.md §5); `reading_latest` from each series' last rows; then
VACUUM ANALYZE. A progress bar shows the load.

Then it serves that database twice at once, `envlink api --workers 2` (with a reader key) and
bench/bare_api.py (uvicorn, 2 processes, the same statements, no auth, no models, orjson), and
loads each endpoint in turn from loopback, EnvLink then bare, back to back:

- throughput at 64 connections: req/s of each, and EnvLink / bare (target 0.6x, goal 0.8x);
- latency at 8 connections: p50 and p99 (target p99 < 50 ms; the year of hourly means 150 ms).

The load generator is `wrk` (Debian: `apt-get install wrk`) when installed, else
bench/_load.py in a process of its own (far slower than wrk: install wrk to compare).

    .venv/bin/python bench/api.py                            # 50 M readings, embedded server
    .venv/bin/python bench/api.py --readings 5000000 --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/api.py --quick                    # 200k readings, 2 s runs
    .venv/bin/python bench/api.py --readings 5000000 --database-url URL --keep
    .venv/bin/python bench/api.py --loaded URL_OF_THE_KEPT_DATABASE   # measure again, no load
    .venv/bin/python bench/api.py --database-url URL --keep --load-only     # load only

--database-url names a server: the bench creates a database `envlink_bench_api_<pid>_<hex>`
there and drops it at the end unless --keep (then it prints its URL for --loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.rollups import hour_start, is_water  # noqa: E402
from alerts.windows import MIN_VALID_HOURS_DAY  # noqa: E402
from bench._common import free_port, fresh_database, percentile, server_version  # noqa: E402
from core.settings import Settings  # noqa: E402
from schemas.catalogue import load_catalogue  # noqa: E402
from schemas.common import QC  # noqa: E402
from store.catalogue import seed_catalogue  # noqa: E402
from store.keys import create_key  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.partitions import create_partitions, month_of  # noqa: E402
from store.pool import Conn  # noqa: E402
from store.sources import ensure_source  # noqa: E402
from store.timescale import reading_layout  # noqa: E402

HOUR = timedelta(hours=1)
REAL_TIME_STEP = timedelta(seconds=10)
YEAR_HOURS = 8760
MAX_HOURS = 5 * YEAR_HOURS
WORKERS = 2
THROUGHPUT_CONNECTIONS = 64
LATENCY_CONNECTIONS = 8
RATIO_TARGET, RATIO_GOAL = 0.6, 0.8
# Readings exported over HTTP against a raw COPY TO of the same rows (fewer where fewer are held).
EXPORT_ROWS, EXPORT_RATIO_GOAL = 10_000_000, 0.5
P99_TARGET_S, P99_YEAR_TARGET_S = 0.050, 0.150
START_S = 120.0
# The daily rollup's minimums: the app's default setting for water, GB 3095 Table 4 for air.
WATER_MIN_SAMPLES: int = Settings.model_fields["water_daily_min_samples"].default
# Typical levels the synthetic values swing around (daily cycle ±30 %, noise ±10 %); other
# parameters take 5 % of their valid range above its minimum.
TYPICAL = {
    "so2": 10.0, "no2": 35.0, "co": 0.8, "o3": 60.0, "pm10": 50.0, "pm25": 30.0,
    "air_temp": 24.0, "humidity": 75.0, "pressure": 1010.0, "wind_speed": 2.5,
    "wind_dir": 180.0, "water_temp": 25.0, "ph": 7.4, "do": 6.5, "conductivity": 400.0,
    "turbidity": 20.0, "codmn": 3.0, "nh3n": 0.5, "tp": 0.1, "tn": 1.5,
}  # fmt: skip

# One series' rows, made by the server in key order (the primary key's B-tree is appended to).
_ROWS = """
INSERT INTO reading (station_id, parameter_id, period_s, time, value, qc, source_id, received_at)
SELECT %(station)s, %(parameter)s, %(period)s, t,
       round(%(typical)s * (1 + 0.3 * sin(extract(epoch FROM t) * pi() / 43200 + %(station)s)
                              + 0.2 * (random() - 0.5)) * 1000) / 1000,
       CASE WHEN random() < %(suspect_share)s THEN %(suspect)s ELSE %(valid)s END,
       %(source)s, now()
FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, %(step)s::interval) AS t
"""
# Every hour holds a valid reported mean, which wins over real-time data (docs/conventions.md §5).
_HOURLY_ROLLUPS = """
INSERT INTO reading_hourly (station_id, parameter_id, hour, value, samples, coverage_s, min, max,
                            origin, computed_at)
SELECT station_id, parameter_id, time, value, 1, 3600, value, value, 'reported', now()
FROM reading
WHERE station_id = %(station)s AND parameter_id = %(parameter)s AND period_s = 3600
  AND time BETWEEN %(first)s AND %(last)s AND qc = %(valid)s AND value IS NOT NULL
"""
# alerts.rollups.daily_rollup over each Asia/Shanghai day's hourly rollups: air, the mean of at
# least 20 valid hourly means; water, the mean of the day's valid samples (at least `least`).
_DAILY_ROLLUPS = """
INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min, max, origin,
                           computed_at)
SELECT station_id, parameter_id, day, CASE WHEN enough THEN mean END, counted,
       CASE WHEN enough THEN low END, CASE WHEN enough THEN high END, 'computed', now()
FROM (
    SELECT station_id, parameter_id, (hour AT TIME ZONE 'Asia/Shanghai')::date AS day,
           CASE WHEN %(water)s THEN coalesce(sum(samples) FILTER (WHERE value IS NOT NULL), 0)
                ELSE count(value) END AS counted,
           CASE WHEN %(water)s
                THEN sum(value * samples) / nullif(sum(samples) FILTER (WHERE value IS NOT NULL), 0)
                ELSE avg(value) END AS mean,
           CASE WHEN %(water)s THEN min(min) FILTER (WHERE value IS NOT NULL)
                ELSE min(value) END AS low,
           CASE WHEN %(water)s THEN max(max) FILTER (WHERE value IS NOT NULL)
                ELSE max(value) END AS high
    FROM reading_hourly
    WHERE station_id = %(station)s AND parameter_id = %(parameter)s
    GROUP BY station_id, parameter_id, 3
) days, LATERAL (SELECT counted >= %(least)s AS enough) judged
"""
_LATEST_ROWS = """
INSERT INTO reading_latest (station_id, parameter_id, period_s, time, value, qc)
SELECT station_id, parameter_id, period_s, time, value, qc FROM reading
WHERE station_id = %(station)s AND parameter_id = %(parameter)s
  AND ((period_s = 3600 AND time = %(last_hour)s) OR (period_s = 0 AND time = %(last_sample)s))
"""


@dataclass(frozen=True)
class Series:
    station_id: int
    parameter_id: int
    parameter: str
    water: bool
    typical: float


@dataclass(frozen=True)
class Plan:
    """What to load: per series, `hours` hourly means and `samples` real-time readings to `end`."""

    series: list[Series]
    hours: int
    samples: int
    end: datetime

    @property
    def per_series(self) -> int:
        return self.hours + self.samples

    @property
    def total(self) -> int:
        return len(self.series) * self.per_series


def sizes(readings: int, series: int) -> tuple[int, int]:
    """Hourly means and real-time readings per series for about `readings` in all (not fewer)."""
    hourly = max(readings // 5, min(readings // 2, series * YEAR_HOURS))
    hours = max(1, min(hourly // series, MAX_HOURS))
    samples = max(1, math.ceil((readings - hours * series) / series))
    return hours, samples


class Progress:
    """A one-line progress bar on stderr: readings loaded, rate and time left."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total, self.width, self.done = total, width, 0
        self.started = self.shown = time.perf_counter()

    def add(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.shown < 1.0 and self.done < self.total:
            return
        self.shown = now
        took = now - self.started
        rate = self.done / took if took else 0.0
        left = (self.total - self.done) / rate if rate else 0.0
        filled = round(self.width * self.done / self.total)
        print(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done:,}/{self.total:,}"
            f" readings, {rate:,.0f}/s, {took / 60:.1f} min, about {left / 60:.1f} min left ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        print(file=sys.stderr, flush=True)


async def prepare(conn: Conn, readings: int) -> tuple[Plan, int]:
    """Migrate and seed the new database; the plan and the bench's source id."""
    await migrate(conn)
    catalogue = load_catalogue(ROOT / "config")
    async with conn.transaction():
        await seed_catalogue(conn, catalogue)
        source_id = await ensure_source(conn, code="bench", kind="bench")
    parameters = {p.code: p for p in catalogue.parameters}
    cur = await conn.execute(
        "SELECT sp.station_id, sp.parameter_id, p.code, p.grp FROM station_parameter sp"
        " JOIN parameter p ON p.id = sp.parameter_id ORDER BY 1, 2"
    )
    series = []
    for station_id, parameter_id, code, group in await cur.fetchall():
        known = parameters[code]
        spread = (known.valid_max or 100.0) - (known.valid_min or 0.0)
        typical = TYPICAL.get(code, (known.valid_min or 0.0) + 0.05 * spread)
        series.append(Series(station_id, parameter_id, code, is_water(group), typical))
    hours, samples = sizes(readings, len(series))
    return Plan(series, hours, samples, hour_start(datetime.now(UTC))), source_id


async def load_series(conn: Conn, plan: Plan, series: Series, source_id: int) -> None:
    """One series' readings, rollups and current values, in one transaction."""
    last_hour = plan.end - HOUR
    last_sample = plan.end - REAL_TIME_STEP
    common = {
        "station": series.station_id,
        "parameter": series.parameter_id,
        "typical": series.typical,
        "suspect": QC.SUSPECT.code,
        "valid": QC.VALID.code,
        "source": source_id,
    }
    hourly = {
        **common,
        "period": 3600,
        "first": plan.end - plan.hours * HOUR,
        "last": last_hour,
        "step": HOUR,
        "suspect_share": 0.0,
    }
    real_time = {
        **common,
        "period": 0,
        "first": plan.end - plan.samples * REAL_TIME_STEP,
        "last": last_sample,
        "step": REAL_TIME_STEP,
        "suspect_share": 0.01,
    }
    least = WATER_MIN_SAMPLES if series.water else MIN_VALID_HOURS_DAY
    async with conn.transaction():
        await conn.execute(_ROWS.encode(), hourly)
        await conn.execute(_ROWS.encode(), real_time)
        await conn.execute(_HOURLY_ROLLUPS.encode(), hourly)
        await conn.execute(
            _DAILY_ROLLUPS.encode(), {**common, "water": series.water, "least": least}
        )
        await conn.execute(
            _LATEST_ROWS.encode(),
            {**common, "last_hour": last_hour, "last_sample": last_sample},
        )


async def load(url: str, readings: int, jobs: int) -> None:
    """Fill the empty database at `url` with about `readings` readings; print what it took."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        plan, source_id = await prepare(conn, readings)
        print(f"server: {await server_version(conn)}")
        print((await reading_layout(conn)).describe())
        months = set()
        moment = plan.end - plan.hours * HOUR
        while moment < plan.end:
            months.add(month_of(moment))
            moment += timedelta(days=27)
        months.add(month_of(plan.end - REAL_TIME_STEP))
        async with conn.transaction():
            await create_partitions(conn, months)
    print(
        f"loading {plan.total:,} readings: {len(plan.series)} series × ({plan.hours:,} hourly"
        f" means, {plan.hours / YEAR_HOURS:.2f} years + {plan.samples:,} real-time readings"
        f" every 10 s, {plan.samples * 10 / 86400:.2f} days) up to {plan.end.isoformat()};"
        f" {jobs} connections",
        flush=True,
    )
    progress = Progress(plan.total)
    queue: asyncio.Queue[Series] = asyncio.Queue()
    for series in plan.series:
        queue.put_nowait(series)

    async def work() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            # Losing the last commits to a crash loses nothing here; waiting for each flush does.
            await conn.execute("SET synchronous_commit = off")
            while not queue.empty():
                series = queue.get_nowait()
                await load_series(conn, plan, series, source_id)
                progress.add(plan.per_series)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(work() for _ in range(jobs)))
    finally:
        progress.close()
    loaded = time.perf_counter() - started
    print(f"loaded in {loaded / 60:.1f} min ({plan.total / loaded:,.0f} readings/s)", flush=True)
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "VACUUM (ANALYZE) reading, reading_hourly, reading_daily, reading_latest"
        )
        with suppress(psycopg.errors.InsufficientPrivilege):
            await conn.execute("CHECKPOINT")
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM reading_hourly), (SELECT count(*) FROM reading_daily),"
            " (SELECT count(*) FROM reading_latest),"
            " pg_size_pretty(pg_database_size(current_database()))"
        )
        counted = await cur.fetchone()
        assert counted is not None
    print(
        f"VACUUM ANALYZE and CHECKPOINT in {(time.perf_counter() - started) / 60:.1f} min;"
        f" reading_hourly {counted[0]:,} rows, reading_daily {counted[1]:,},"
        f" reading_latest {counted[2]:,}; database {counted[3]}",
        flush=True,
    )


@dataclass(frozen=True)
class Target:
    """An endpoint as measured: its label, path and query, its p99 target (None: reported
    only), and whether bench/bare_api.py serves it too (else EnvLink's figures stand alone)."""

    label: str
    path: str
    p99_target_s: float | None = P99_TARGET_S
    bare: bool = True


async def scenario(url: str) -> tuple[list[Target], str]:
    """The endpoints to load, chosen from what the database holds, and a new reader key."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # A database kept by an earlier run may predate the latest migrations.
        await migrate(conn)
        cur = await conn.execute(
            "SELECT s.code, s.city, s.area, p.code, max(l.time) FILTER (WHERE l.period_s = 0)"
            " FROM reading_latest l JOIN station s ON s.id = l.station_id"
            " JOIN parameter p ON p.id = l.parameter_id"
            " WHERE s.medium = 'air' GROUP BY 1, 2, 3, 4 ORDER BY p.code <> 'pm25', 1 LIMIT 1"
        )
        found = await cur.fetchone()
        if found is None:
            raise SystemExit("the database holds no air readings: was it loaded by bench/api.py?")
        station, city, area, parameter, last_sample = found
        cur = await conn.execute("SELECT code FROM agency ORDER BY code LIMIT 1")
        agency = await cur.fetchone()
        assert agency is not None
        # Rate limits stay on, as in production; the key's own rate is far above the load.
        _, key = await create_key(
            conn,
            agency=agency[0],
            roles=["reader", "admin"],
            label="bench/api.py",
            rate_limit=10_000_000,
        )
    end = last_sample + REAL_TIME_STEP
    series = {"station": station, "parameter": parameter, "limit": 10000}
    day = {**series, "period_s": 0, "start": (end - timedelta(days=1)).isoformat(),
           "end": end.isoformat()}  # fmt: skip
    year = {**series, "period_s": 3600, "start": (end - timedelta(days=365)).isoformat(),
            "end": end.isoformat()}  # fmt: skip
    rollups = {**year, "interval": "1h"}
    del rollups["period_s"]
    targets = [
        Target("/v1/latest", "/v1/latest"),
        Target(f"/v1/latest?area={area}", f"/v1/latest?area={area}"),
        Target("/v1/stations", "/v1/stations"),
        Target(f"/v1/aqi?city={city}", f"/v1/aqi?city={city}"),
        Target("/v1/readings, 1 day raw", f"/v1/readings?{urlencode(day)}"),
        Target("/v1/readings, 1 year hourly", f"/v1/readings?{urlencode(year)}", P99_YEAR_TARGET_S),
        # Endpoints with no bare counterpart: EnvLink's own figures, p99 against the target
        # where one applies (the situation assesses every station of an area: reported only).
        Target(
            "/v1/readings?interval=1h, 1 year",
            f"/v1/readings?{urlencode(rollups)}",
            P99_YEAR_TARGET_S,
            bare=False,
        ),
        Target(f"/v1/situation?area={area}", f"/v1/situation?area={area}", None, bare=False),
        Target("/v1/stations GeoJSON", "/v1/stations?format=geojson", bare=False),
        Target("/v1/rivers", "/v1/rivers", bare=False),
        Target("/v1/keys", "/v1/keys", bare=False),
        Target("/v1/audit", "/v1/audit", bare=False),
    ]
    return targets, key


@contextmanager
def running(command: Sequence[str], env: dict[str, str]) -> Iterator[None]:
    """A server process, stopped with SIGINT (then killed) afterwards."""
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(base: str, path: str, headers: dict[str, str]) -> None:
    """Wait until `path` answers 200 (the server's processes have started)."""
    deadline = time.monotonic() + START_S
    while True:
        with suppress(httpx.HTTPError):
            if httpx.get(base + path, headers=headers, timeout=10).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{base} did not answer {path} within {START_S:.0f} s")
        time.sleep(0.5)


@dataclass(frozen=True)
class Run:
    """One timed run of the load generator."""

    requests: int
    seconds: float
    p50_s: float
    p99_s: float
    failed: int  # non-200 responses and socket errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


_DURATION = re.compile(r"([\d.]+)(us|ms|s|m)\b")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found[1]) * _UNIT_S[found[2]]


def run_wrk(url: str, connections: int, seconds: int, headers: dict[str, str]) -> Run:
    """One wrk run (2 threads, 30 s request timeout so slow answers are timed, not dropped)."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    p50 = re.search(r"^\s+50%\s+(\S+)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)\s*$", output, re.MULTILINE)
    if not (done and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return Run(int(done[1]), _seconds(done[2]), _seconds(p50[1]), _seconds(p99[1]), failed)


def run_python(url: str, connections: int, seconds: int, headers: dict[str, str]) -> Run:
    """One run of bench/_load.py in a process of its own."""
    command = [sys.executable, str(ROOT / "bench" / "_load.py"), url]
    command += ["--connections", str(connections), "--seconds", str(seconds)]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    tally = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    latencies: list[float] = tally["latencies"] or [math.nan]
    return Run(
        len(tally["latencies"]),
        tally["seconds"],
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        tally["non_200"] + tally["errors"],
    )


def settle(url: str, base: str, path: str, headers: dict[str, str]) -> None:
    """Wait until the requests a run left queued are done: no query of the database active,
    then one request answered. A 64-connection run can leave a minute of work behind on a
    loaded machine, which the next run would otherwise pay for."""
    deadline = time.monotonic() + START_S
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            active = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND pid <> pg_backend_pid()"
            ).fetchone()
            if active is not None and active[0] == 0:
                break
            time.sleep(0.2)
    with suppress(httpx.HTTPError):
        httpx.get(base + path, headers=headers, timeout=START_S)


@dataclass
class Measured:
    throughput: Run
    latency: Run


def _median_run(runs: Sequence[Run]) -> Run:
    """Each figure the median of the runs' (failures summed)."""
    return Run(
        round(statistics.median(r.rate for r in runs)),
        1.0,
        statistics.median(r.p50_s for r in runs),
        statistics.median(r.p99_s for r in runs),
        sum(r.failed for r in runs),
    )


def check_answers(base: str, targets: Sequence[Target], headers: dict[str, str]) -> list[str]:
    """One request to each endpoint must answer 200; its number of items, for the record."""
    notes = []
    for target in targets:
        answer = httpx.get(base + target.path, headers=headers, timeout=60)
        if answer.status_code != 200:
            raise SystemExit(f"{base}{target.path} answered {answer.status_code}: {answer.text}")
        body = answer.json()
        items = body.get("items", body.get("features"))
        notes.append(f"{len(items):,} items" if isinstance(items, list) else "one report")
    return notes


def measure(
    url: str, targets: Sequence[Target], key: str, seconds: int, warm_s: int, repeat: int
) -> tuple[dict[str, dict[str, Measured]], tuple[Exported, Exported]]:
    """Serve the database with EnvLink and bare, load every target of each in turn, then export
    from EnvLink against a raw COPY TO."""
    envlink_port, bare_port = free_port(), free_port()
    envlink = f"http://127.0.0.1:{envlink_port}"
    bare = f"http://127.0.0.1:{bare_port}"
    envlink_env = {
        "ENVLINK_DATABASE_URL": url,
        "ENVLINK_API_HOST": "127.0.0.1",
        "ENVLINK_API_PORT": str(envlink_port),
        "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
        "ENVLINK_MQTT_HOST": "",
        "ENVLINK_LOG_LEVEL": "WARNING",
    }
    cli = "import sys; from envlink.cli import main; sys.exit(main(sys.argv[1:]))"
    envlink_command = [sys.executable, "-c", cli, "api", "--workers", str(WORKERS)]
    bare_command = [
        sys.executable, "-m", "uvicorn", "bench.bare_api:create", "--factory",
        "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(bare_port),
        "--log-level", "warning",
    ]  # fmt: skip
    bare_env = {"ENVLINK_BENCH_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    auth = {"X-API-Key": key}
    servers = {"EnvLink": (envlink, auth), "bare": (bare, {})}
    generator = run_wrk if shutil.which("wrk") else run_python
    results: dict[str, dict[str, Measured]] = {}
    with running(envlink_command, envlink_env), running(bare_command, bare_env):
        for name, (base, headers) in servers.items():
            wait_ready(base, targets[0].path, headers)
            served = [t for t in targets if t.bare or name == "EnvLink"]
            print(f"{name}: {', '.join(check_answers(base, served, headers))}", flush=True)
        for target in targets:
            results[target.label] = {}
            names = [n for n in servers if n == "EnvLink" or target.bare]
            runs: dict[str, list[tuple[Run, Run]]] = {name: [] for name in names}
            for name in names:
                base, headers = servers[name]
                if warm_s:
                    generator(base + target.path, THROUGHPUT_CONNECTIONS, warm_s, headers)
                    settle(url, base, target.path, headers)
            # The servers take turns, each run with new connections: how the kernel deals a
            # run's connections out to a server's two processes (4 and 4, or 6 and 2) moves a
            # run's figures by a quarter either way; the median of the runs is reported.
            for _ in range(repeat):
                for name in names:
                    base, headers = servers[name]
                    busy = generator(base + target.path, THROUGHPUT_CONNECTIONS, seconds, headers)
                    settle(url, base, target.path, headers)
                    calm = generator(base + target.path, LATENCY_CONNECTIONS, seconds, headers)
                    settle(url, base, target.path, headers)
                    runs[name].append((busy, calm))
            for name in names:
                busy = _median_run([b for b, _ in runs[name]])
                calm = _median_run([c for _, c in runs[name]])
                results[target.label][name] = Measured(busy, calm)
                rates = ", ".join(f"{b.rate:,.0f}" for b, _ in runs[name])
                p99s = ", ".join(f"{c.p99_s * 1000:.1f}" for _, c in runs[name])
                print(
                    f"  {target.label} {name} (load {os.getloadavg()[0]:.1f}):"
                    f" {busy.rate:,.0f} req/s at"
                    f" {THROUGHPUT_CONNECTIONS}; p50 {calm.p50_s * 1000:.1f} ms,"
                    f" p99 {calm.p99_s * 1000:.1f} ms at {LATENCY_CONNECTIONS}"
                    + (f"; {busy.failed + calm.failed} FAILED" if busy.failed + calm.failed else "")
                    + (f" (runs: {rates} req/s; p99 {p99s} ms)" if repeat > 1 else ""),
                    flush=True,
                )
        exported = measure_export(url, envlink, auth)
    return results, exported


@dataclass(frozen=True)
class Exported:
    """One export's figures: rows (lines), bytes and seconds."""

    rows: int
    size: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def export_range(url: str) -> tuple[datetime, datetime, int]:
    """The latest stored readings, about EXPORT_ROWS of them: [start, end) and their count."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT max(time) FROM reading_latest WHERE period_s = 0").fetchone()
        assert found is not None and found[0] is not None
        end = found[0] + REAL_TIME_STEP
        day = conn.execute(
            "SELECT count(*) FROM reading WHERE time >= %s AND time < %s",
            (end - timedelta(days=1), end),
        ).fetchone()
        assert day is not None
        start = end - timedelta(days=EXPORT_ROWS / max(day[0], 1))
        counted = conn.execute(
            "SELECT count(*) FROM reading WHERE time >= %s AND time < %s", (start, end)
        ).fetchone()
        assert counted is not None
    return start, end, counted[0]


def raw_copy_out(url: str, start: datetime, end: datetime) -> Exported:
    """The denominator: the same rows straight out of PostgreSQL, `COPY (SELECT *) TO STDOUT`
    as text, unordered and unformatted."""
    rows = size = 0
    began = time.perf_counter()
    with (
        psycopg.connect(url, autocommit=True) as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY (SELECT * FROM reading WHERE time >= %s AND time < %s) TO STDOUT", (start, end)
        ) as copy,
    ):
        for chunk in copy:
            rows += bytes(chunk).count(b"\n")
            size += len(chunk)
    return Exported(rows, size, time.perf_counter() - began)


def export_over_http(
    base: str, headers: dict[str, str], start: datetime, end: datetime
) -> Exported:
    """GET /v1/export (CSV, every station and parameter, uncompressed) read to its end; rows
    without the header line."""
    query = urlencode({"format": "csv", "start": start.isoformat(), "end": end.isoformat()})
    lines = size = 0
    began = time.perf_counter()
    plain = {**headers, "Accept-Encoding": "identity"}
    with httpx.stream("GET", f"{base}/v1/export?{query}", headers=plain, timeout=600) as answer:
        if answer.status_code != 200:
            raise SystemExit(f"/v1/export answered {answer.status_code}: {answer.read()!r}")
        for chunk in answer.iter_raw():
            lines += chunk.count(b"\n")
            size += len(chunk)
    return Exported(lines - 1, size, time.perf_counter() - began)


def measure_export(url: str, base: str, headers: dict[str, str]) -> tuple[Exported, Exported]:
    """Export about EXPORT_ROWS readings over HTTP and raw, twice each in turn; the better of
    each. The counts must agree."""
    start, end, count = export_range(url)
    print(
        f"export: {count:,} readings, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
        flush=True,
    )
    best: dict[str, Exported] = {}
    for _ in range(2):
        for name in ("raw COPY", "EnvLink"):
            if name == "raw COPY":
                figures = raw_copy_out(url, start, end)
            else:
                figures = export_over_http(base, headers, start, end)
            if figures.rows != count:
                raise SystemExit(f"{name} exported {figures.rows:,} rows, not {count:,}")
            print(
                f"  {name}: {figures.rows:,} rows, {figures.size / 2**20:,.0f} MiB in"
                f" {figures.seconds:.1f} s, {figures.rate:,.0f} rows/s"
                f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if name not in best or figures.seconds < best[name].seconds:
                best[name] = figures
    return best["EnvLink"], best["raw COPY"]


def report_export(ours: Exported, raw: Exported) -> bool:
    """Print the export's line; True when it meets the goal (EXPORT_RATIO_GOAL of raw COPY)."""
    ratio = ours.rate / raw.rate
    print(
        f"\nexport of {ours.rows:,} readings as CSV over HTTP: {ours.rate:,.0f} rows/s,"
        f" raw COPY TO {raw.rate:,.0f} rows/s: {ratio:.2f}× (goal {EXPORT_RATIO_GOAL}×)"
    )
    return ratio >= EXPORT_RATIO_GOAL


def report(targets: Sequence[Target], results: dict[str, dict[str, Measured]]) -> bool:
    """Print the table; True when every target is met."""
    print(
        f"\n| endpoint | EnvLink req/s ({THROUGHPUT_CONNECTIONS} conn.) | bare req/s"
        f" | EnvLink/bare | EnvLink p50 / p99 ({LATENCY_CONNECTIONS} conn.) | bare p50 / p99"
        " | p99 target | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|")
    met = True
    for target in targets:
        ours, bare = results[target.label]["EnvLink"], results[target.label].get("bare")
        failed = ours.throughput.failed + ours.latency.failed
        problems = []
        if bare is not None:
            rate = bare.throughput.rate
            ratio = ours.throughput.rate / rate if rate else math.nan
            if not ratio >= RATIO_TARGET:
                problems.append(f"ratio < {RATIO_TARGET}" if ratio == ratio else "no bare figure")
        if target.p99_target_s is not None and ours.latency.p99_s >= target.p99_target_s:
            problems.append("p99 over target")
        if failed:
            problems.append(f"{failed} failed requests")
        met = met and not problems
        if problems:
            verdict = "; ".join(problems)
        elif bare is None:
            verdict = "meets target" if target.p99_target_s is not None else "reported"
        else:
            verdict = "meets goal" if ratio >= RATIO_GOAL else "meets target"
        bare_figures = (
            (
                f"{bare.throughput.rate:,.0f} | {ratio:.2f}×",
                f"{bare.latency.p50_s * 1000:.1f} / {bare.latency.p99_s * 1000:.1f} ms",
            )
            if bare is not None
            else ("— | —", "—")
        )
        p99_target = (
            f"< {target.p99_target_s * 1000:.0f} ms" if target.p99_target_s is not None else "—"
        )
        print(
            f"| {target.label} | {ours.throughput.rate:,.0f} | {bare_figures[0]}"
            f" | {ours.latency.p50_s * 1000:.1f} / {ours.latency.p99_s * 1000:.1f} ms"
            f" | {bare_figures[1]} | {p99_target} | {verdict} |"
        )
    return met


async def loaded_and_measured(args: argparse.Namespace) -> bool:
    """Load a new database (or take --loaded), measure it; True when every target is met."""
    seconds, warm_s = (2, 1) if args.quick else (args.seconds, 2)
    repeat = 1 if args.quick else args.repeat
    generator = (
        "wrk" if shutil.which("wrk") else "bench/_load.py (install wrk: apt-get install wrk)"
    )
    print(
        f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f};"
        f" load generator: {generator}; {seconds:g} s per run, the median of {repeat}"
    )
    if args.loaded:
        return measured(args.loaded, *await scenario(args.loaded), seconds, warm_s, repeat)
    async with fresh_database(
        "envlink_bench_api", server=args.database_url, keep=args.keep
    ) as database:
        if args.keep:
            print(f"database (kept): {database.url}")
        await load(database.url, args.readings, args.jobs)
        if args.load_only:
            return True
        return measured(database.url, *await scenario(database.url), seconds, warm_s, repeat)


def measured(
    url: str, targets: Sequence[Target], key: str, seconds: int, warm_s: int, repeat: int
) -> bool:
    """Measure, print the tables; True when every target is met (the export's is a goal)."""
    results, (ours, raw) = measure(url, targets, key, seconds, warm_s, repeat)
    met = report(targets, results)
    report_export(ours, raw)
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--readings", type=int, help="readings to load (default 50 M; --quick 200k)"
    )
    parser.add_argument("--database-url", help="a server to create the database on (else embedded)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (with --database-url)"
    )
    parser.add_argument("--loaded", metavar="URL", help="measure this database a --keep run loaded")
    parser.add_argument("--load-only", action="store_true", help="load, then stop (with --keep)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per timed run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per endpoint and server (the median)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="connections loading in parallel")
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 200k, 2 s runs")
    args = parser.parse_args()
    if args.readings is None:
        args.readings = 200_000 if args.quick else 50_000_000
    if args.readings < 1 or args.jobs < 1 or args.seconds <= 0 or args.repeat < 1:
        parser.error("--readings, --jobs and --seconds must be positive")
    if args.keep and not args.database_url:
        parser.error("--keep needs --database-url (an embedded server goes with its directory)")
    if args.load_only and not args.keep:
        parser.error("--load-only needs --keep (else the loaded database is dropped at once)")
    sys.exit(0 if asyncio.run(loaded_and_measured(args)) else 1)


if __name__ == "__main__":
    main()
