"""GET /v1/situation latency: sequential requests over loopback to `envlink api`.

The demo's catalogue and data: the simulator's 24 hours of hourly history and 3 hours of its
real-time rounds (every --interval seconds, 10 as in the demo), with the demo's story as its
first start plays it (the plume under way on the Dongjiang, a flat-lined sensor: the alerts and
arrivals a situation reports), rolled up and judged by the alert loop with the joint rule set.
Then, per selection, --requests sequential requests (after 10 unmeasured ones) to an `envlink
api` process, each answer checked (200, every station); prints p50 / p95 / p99 / max, the
answer's size, and the CPU time per request of the API process and of the database server
processes serving it (from /proc, so with the server on this machine): on a busy machine the
latencies grow with the load average, the CPU time much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts.loop import AlertLoop
from bench._common import ROOT, free_port, fresh_database, percentile
from core.timeutil import utcnow
from ingest.history import HistoryQc
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.simulator import hourly_history, simulate
from ingest.sources.story import Story
from schemas.catalogue import load_catalogue
from schemas.readings import ReadingIn, Rejection
from schemas.rules import load_rules
from store.catalogue import seed_catalogue
from store.keys import create_key
from store.migrate import migrate
from store.rules import seed_rules

FEED = SourceRef(code="bench", kind="bench")
SELECTIONS = ({"area": "dongjiang"}, {"area": "shiziyang"}, {"city": "dongguan"})
CHUNK = 20_000


async def _fill(pool: AsyncConnectionPool, interval_s: int) -> int:
    """The demo's data: 24 h of hourly history and 3 h of real-time rounds with the story of a
    demo started now, rolled up."""
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
    catalogue = await pipeline.catalogue()
    now = utcnow()
    story = Story(now)
    readings: list[ReadingIn] = hourly_history(catalogue, now, hours=24, story=story)
    at = now - timedelta(hours=3)
    while at <= now:
        readings += simulate(catalogue, at.replace(microsecond=0), story=story)
        at += timedelta(seconds=interval_s)
    for start in range(0, len(readings), CHUNK):
        batch: list[ReadingIn | Rejection] = list(readings[start : start + CHUNK])
        await pipeline.ingest(batch, source=FEED)
    loop = AlertLoop(pool, judge=HistoryQc(pipeline).judge)
    await loop.drain(sweep=True)
    return len(readings)


async def _api(url: str, port: int) -> asyncio.subprocess.Process:
    environment = {
        **os.environ,
        "ENVLINK_DATABASE_URL": url,
        "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
        "ENVLINK_API_HOST": "127.0.0.1",
        "ENVLINK_API_PORT": str(port),
        "ENVLINK_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from envlink.cli import main; sys.exit(main(sys.argv[1:]))",
        "api",
        cwd=ROOT,
        env=environment,
    )


def _cpu_s(pids: list[int]) -> float | None:
    """CPU time (user + system) these processes have used, or None if one cannot be read."""
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


async def _backends(url: str) -> list[int]:
    """The server processes serving this database (the API's connections)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return [pid for (pid,) in await cur.fetchall()]


async def _measure(
    client: httpx.AsyncClient, params: dict[str, str], requests: int, url: str, api_pid: int
) -> None:
    latencies = []
    size = stations = series = alerts = arrivals = 0
    for index in range(10 + requests):
        started = time.perf_counter()
        response = await client.get("/v1/situation", params=params)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"/v1/situation {params}: {response.status_code} {response.text}")
        if index == 9:
            backends = await _backends(url)
            cpu_before = (_cpu_s([api_pid]), _cpu_s(backends))
        if index >= 10:
            latencies.append(elapsed)
        body = response.json()
        size, stations = len(response.content), len(body["stations"])
        series = sum(len(s["series"]) for s in body["stations"])
        alerts, arrivals = len(body["alerts"]), len(body["arrivals"])
    cpu_after = (_cpu_s([api_pid]), _cpu_s(backends))
    p50, p95, p99 = (percentile(latencies, f) * 1000 for f in (0.50, 0.95, 0.99))
    what = ",".join(f"{k}={v}" for k, v in params.items())
    used = [
        "n/a" if before is None or after is None else f"{(after - before) / requests * 1000:.1f}"
        for before, after in zip(cpu_before, cpu_after, strict=True)
    ]
    print(
        f"{what}: {stations} stations, {series} series, {alerts} alerts, {arrivals} arrivals,"
        f" {size / 1024:.0f} KiB; {requests} requests: p50 {p50:.1f} ms, p95 {p95:.1f} ms,"
        f" p99 {p99:.1f} ms, max {max(latencies) * 1000:.1f} ms; CPU per request: API process"
        f" {used[0]} ms, database {used[1]} ms; load average {os.getloadavg()[0]:.1f}"
    )


async def main(requests: int, interval_s: int) -> None:
    async with fresh_database("envlink_bench_situation") as database:
        async with AsyncConnectionPool(database.url, min_size=1, max_size=4, open=False) as pool:
            async with pool.connection() as conn:
                await conn.set_autocommit(True)
                await migrate(conn)
                async with conn.transaction():
                    await seed_catalogue(conn, load_catalogue(ROOT / "config"))
                    await seed_rules(
                        conn, load_rules(ROOT / "config" / "thresholds.yaml"), at=utcnow()
                    )
                    # Rate limits stay on, as in production; the key's own rate is far above
                    # the load (600 requests a minute, the default, is 10 a second).
                    _, key = await create_key(
                        conn, agency="joint_office", roles=["reader"], rate_limit=10_000_000
                    )
            filled = time.perf_counter()
            count = await _fill(pool, interval_s)
            print(
                f"data: {count:,} readings (24 h hourly, 3 h real-time every {interval_s} s),"
                f" ingested and rolled up in {time.perf_counter() - filled:.0f} s"
            )
        port = free_port()
        process = await _api(database.url, port)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30
            ) as client:
                for _ in range(600):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                for params in SELECTIONS:
                    await _measure(client, dict(params), requests, database.url, process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            await process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--interval", type=int, default=10, help="seconds between real-time rounds")
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.interval))
