"""What the benchmarks share: a scratch database, an `envlink worker`, the breach/clear scenario.

Imported by the scripts in bench/ after they have put the repository root on sys.path.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from schemas.rules import RuleDefinition, Severity
from store.embedded import start_embedded
from store.pool import Conn

ROOT = Path(__file__).resolve().parent.parent

# The alert benchmarks' scenario: one source, an NO2 reading breaching 200 ug/m3 and one clearing
# it (below 180). The clearing value stays close to the breach (within the level around it) so
# that history QC never judges an alternating breach/clear series to be isolated spikes and
# re-flags it suspect (which would retract the alerts instead of resolving them).
BENCH = SourceRef(code="bench", kind="bench")
BREACH, CLEAR = 250.0, 170.0
# Breaches at a station are STEP apart in data time, from LEAD ahead of the wall clock.
STEP = timedelta(minutes=2)
LEAD = timedelta(hours=1)
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ScratchDatabase:
    url: str
    postmaster: int | None  # the embedded server's pid; None on the server of the environment


@asynccontextmanager
async def fresh_database(
    name: str = "envlink_bench", *, server: str | None = None, keep: bool = False
) -> AsyncIterator[ScratchDatabase]:
    """A new database, dropped (or its embedded server stopped) afterwards unless `keep`.

    `keep` applies to a database on a server; an embedded server goes with its directory.

    On `server` or else the server of ENVLINK_DATABASE_URL when set (a database
    `<name>_<pid>_<hex>` of its own), else on an embedded server in a temporary directory.
    """
    server_url = server or os.environ.get("ENVLINK_DATABASE_URL")
    if not server_url:
        prefix = name.replace("_", "-") + "-"
        with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
            server = start_embedded(Path(data_dir), database="envlink_bench")
            try:
                yield ScratchDatabase(server.url, server.pid)
            finally:
                server.stop()
        return
    database = f"{name}_{os.getpid()}_{secrets.token_hex(3)}"
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = database
    try:
        url = psycopg.conninfo.make_conninfo(
            "", **{k: str(v) for k, v in info.items() if v is not None}
        )
        yield ScratchDatabase(url, None)
    finally:
        if not keep:
            async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
                await admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )


@asynccontextmanager
async def timescaledb_server() -> AsyncIterator[str]:
    """A throwaway PostgreSQL 15 server that preloads TimescaleDB; its URL.

    Started with `start-cluster` in a temporary directory on a free port, stopped and removed
    afterwards, by the scripts of the TimescaleDB build CI uses, which must be installed first as
    `.ci/run` does.
    """
    scripts = ROOT.parent / "shared" / "timescaledb"
    with tempfile.TemporaryDirectory(prefix="envlink-bench-timescaledb-") as data_dir:
        started = await asyncio.create_subprocess_exec(
            "bash", str(scripts / "start-cluster"), data_dir, str(free_port()),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        url, _ = await started.communicate()
        if started.returncode != 0:
            raise RuntimeError("start-cluster failed (its message is above)")
        try:
            yield url.decode().strip()
        finally:
            stopped = await asyncio.create_subprocess_exec(
                "bash", str(scripts / "stop-cluster"), data_dir
            )
            await stopped.wait()


async def server_version(conn: Conn) -> str:
    """The server's full version string."""
    cur = await conn.execute("SELECT version()")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


def free_port() -> int:
    """A local TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def envlink_worker(
    url: str, *options: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[None]:
    """`envlink worker *options` on this database (no MQTT), stopped with SIGINT afterwards."""
    environment = {
        **os.environ,
        "ENVLINK_DATABASE_URL": url,
        "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
        "ENVLINK_HJ212_HOST": "127.0.0.1",
        "ENVLINK_HJ212_PORT": str(free_port()),
        "ENVLINK_MQTT_HOST": "",
        "ENVLINK_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from envlink.cli import main; sys.exit(main(sys.argv[1:]))",
        "worker",
        *options,
        cwd=ROOT,
        env=environment,
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


def no2_instant_rule(rule_id: str, *, name: str, severity: Severity, basis: str) -> RuleDefinition:
    """An instant rule on every air station: NO2 above 200 ug/m3 at once, clear at 180."""
    return RuleDefinition.model_validate(
        {
            "id": rule_id,
            "name": {"en": name, "zh": "基准测试"},
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
                        {"severity": severity, "trigger": 200, "clear": 180, "basis": basis}
                    ],
                }
            ],
        }
    )


async def send_reading(pipeline: Pipeline, station: str, moment: datetime, value: float) -> None:
    """One NO2 reading through the ingest pipeline (as POST /v1/readings does); it must pass."""
    item = ReadingIn(station=station, parameter="no2", time=moment, value=value, unit="ug/m3")
    batch: list[ReadingIn | Rejection] = [item]
    result = await pipeline.ingest(batch, source=BENCH)
    if result.summary["accepted"] != 1:
        raise RuntimeError(f"benchmark reading not accepted: {result.summary} {result.rejections}")


def spread(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts that differ by one at most, the larger ones first."""
    counts = [total // parts] * parts
    for index in range(total % parts):
        counts[index] += 1
    return counts


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def print_latencies(what: str, latencies: list[float], after_ingest: list[float]) -> float:
    """Print the latency percentiles from before and from the return of the ingest call; p99."""
    p50, p95, p99 = (percentile(latencies, f) for f in (0.50, 0.95, 0.99))
    print(
        f"{what} (from before ingest): "
        f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms"
    )
    q50, q99 = (percentile(after_ingest, f) for f in (0.50, 0.99))
    print(f"from ingest's return: p50 {q50 * 1000:.1f} ms, p99 {q99 * 1000:.1f} ms")
    return p99


def print_verdict(p99: float, target_s: float, checked: str) -> bool:
    """Print whether the p99 meets the target, and the consistency check; True if it meets it."""
    verdict = "meets" if p99 < target_s else "MISSES"
    print(f"p99 {p99 * 1000:.1f} ms {verdict} the {target_s * 1000:.0f} ms target; {checked}")
    return p99 < target_s
