"""Shared fixtures: one real PostgreSQL database per test session, clean tables per test.

ENVLINK_TEST_DATABASE_URL points at a server (a fresh database is created on it and dropped at
the end); without it the embedded server is started in a temporary directory. Where the server
preloads TimescaleDB (a `start-cluster` server), migrate() installs it in each database and
`reading` is a hypertable: the same tests then run against TimescaleDB.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from subprocess import PIPE, CompletedProcess

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from alerts.loop import AlertLoop
from core.settings import Settings
from core.timeutil import utcnow
from ingest.history import HistoryQc
from ingest.pipeline import Pipeline
from ingest.sources.hj212.server import Hj212Server
from schemas.catalogue import load_catalogue
from store.catalogue import seed_catalogue
from store.embedded import start_embedded
from store.listen import Listener
from store.migrate import migrate
from store.timescale import is_hypertable, server_offers_timescaledb

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
# Tables whose rows a test may leave behind; the catalogue is seeded once and kept.
# The HJ 212 tests' wall clock: 12:00 China Standard Time.
HJ212_NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
MUTABLE_TABLES = ("reading", "reading_revision", "rejected_reading", "api_key", "source")
MUTABLE_TABLES += ("reading_latest",)
MUTABLE_TABLES += ("qc_audit", "job_status", "scheduler_leader")
MUTABLE_TABLES += ("series_dirty", "reading_hourly", "reading_daily")
MUTABLE_TABLES += ("episode", "alert_event", "alert_ack", "alert", "maintenance_window")
MUTABLE_TABLES += ("rule_version", "rule")
MUTABLE_TABLES += ("subscription", "silence", "notification_cursor", "notification_cursor_gap")
MUTABLE_TABLES += ("notification_group", "notification_group_member", "notification")
MUTABLE_TABLES += ("notification_item", "delivery_attempt", "audit_log", "stream_token")
MUTABLE_TABLES += ("rate_bucket", "backfill_request")
MUTABLE_TABLES += ("bulletin",)


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v is not None})


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server's admin URL: the configured test server, or an embedded one."""
    configured = os.environ.get("ENVLINK_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    # A folder of its own, not pytest's numbered tmp dirs, which a concurrent pytest session
    # may prune while this server still uses it.
    data_dir = Path(tempfile.mkdtemp(prefix="envlink-test-"))
    server = start_embedded(data_dir, database="postgres")
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def _databases(server: str) -> Iterator[Callable[[], str]]:
    """A factory of empty databases on `server`, all dropped at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"envlink_test_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_database(server, name)

    yield make
    with psycopg.connect(server, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def new_database(server_url: str) -> Iterator[object]:
    """A factory of empty databases on the test server, all dropped at the end."""
    with _databases(server_url) as make:
        yield make


async def _offers_timescaledb(server: str) -> bool:
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        return await server_offers_timescaledb(conn)


@pytest.fixture(scope="session")
async def timescaledb_database(server_url: str) -> AsyncIterator[Callable[[], str]]:
    """Empty databases on a server that preloads TimescaleDB, for tests that need one.

    The test server when it does; else a private `start-cluster` server (the TimescaleDB build
    CI installs, see .ci/run), or the tests that need one are skipped with the reason.
    """
    if await _offers_timescaledb(server_url):
        with _databases(server_url) as make:
            yield make
        return
    scripts = ROOT.parent / "shared" / "timescaledb"
    data_dir = Path(tempfile.mkdtemp(prefix="envlink-timescaledb-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = await _script(scripts / "start-cluster", data_dir, port)
    try:
        if started.returncode != 0:
            pytest.skip(f"no TimescaleDB server: start-cluster says {started.stderr!r}")
        with _databases(started.stdout) as make:
            yield make
    finally:
        if started.returncode == 0:
            await _script(scripts / "stop-cluster", data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


async def _script(path: Path, *args: object) -> CompletedProcess[str]:
    """Run a shell script; its exit status and its outputs, stripped."""
    process = await asyncio.create_subprocess_exec(
        "bash", str(path), *map(str, args), stdout=PIPE, stderr=PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return CompletedProcess(path, process.returncode, out.decode().strip(), err.decode().strip())


@pytest.fixture(scope="session")
async def plain_database(server_url: str) -> AsyncIterator[Callable[[], str]]:
    """Empty databases on a server without TimescaleDB: the test server, else an embedded one."""
    if not await _offers_timescaledb(server_url):
        with _databases(server_url) as make:
            yield make
        return
    data_dir = Path(tempfile.mkdtemp(prefix="envlink-plain-"))
    server = start_embedded(data_dir, database="postgres")
    try:
        with _databases(server.url) as make:
            yield make
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(new_database: object) -> str:
    """The session's database, migrated and seeded with config/."""
    url: str = new_database()  # type: ignore[operator]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, load_catalogue(CONFIG_DIR))
    return url


@pytest.fixture(scope="session")
async def timescaledb(database_url: str) -> bool:
    """Whether the session's database keeps readings in a TimescaleDB hypertable."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await is_hypertable(conn)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    async with AsyncConnectionPool(database_url, min_size=1, max_size=8, open=False) as opened:
        yield opened


@pytest.fixture
async def db(pool: AsyncConnectionPool) -> AsyncConnectionPool:
    """The session pool, with every mutable table emptied before the test."""
    async with pool.connection() as conn:
        await conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in MUTABLE_TABLES)
            )
        )
    return pool


@pytest.fixture
async def listener(database_url: str) -> AsyncIterator[Listener]:
    """A started listening connection on the session's database, as every process keeps one."""
    started = Listener(database_url, name="test")
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The session database's settings. Rate limits off: tests fire hundreds of requests with
    one key; tests/integration/test_rate_limits.py turns them on."""
    return Settings(database_url=database_url, config_dir=CONFIG_DIR, rate_limits="off")


def worker_loop(
    pool: AsyncConnectionPool, pipeline: Pipeline, *, clock: Callable[[], datetime] = utcnow
) -> AlertLoop:
    """An alert loop as a worker runs it: history QC of what it claims, rollups, the engine."""
    return AlertLoop(pool, clock=clock, judge=HistoryQc(pipeline, clock=clock).judge)


@pytest.fixture
async def start_server(
    db: AsyncConnectionPool,
) -> AsyncIterator[Callable[..., Awaitable[Hj212Server]]]:
    """HJ 212 servers on free ports, clock and pipeline at HJ212_NOW unless given; stopped after."""
    started: list[Hj212Server] = []

    async def start(pipeline: Pipeline | None = None, **options: object) -> Hj212Server:
        pipeline = pipeline or Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: HJ212_NOW)
        server = Hj212Server(pipeline, host="127.0.0.1", port=0, clock=lambda: HJ212_NOW, **options)  # type: ignore[arg-type]
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


# A test still running after this long is stuck; pytest-timeout ends the run at 300 s.
STUCK_AFTER_S = 120.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Watch the async tests for getting stuck (a plain function cannot wait on a task)."""
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.function):
            item.fixturenames.append("_stuck_test_report")


@pytest.fixture
async def _stuck_test_report(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Print where every asyncio task waits when a test gets stuck, past pytest's capture.

    pytest-timeout's dump shows threads only, and in an async test every thread waits in the
    event loop; the tasks' stacks say which await never returns.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")

    async def report() -> None:
        await asyncio.sleep(STUCK_AFTER_S)
        with capture.global_and_fixture_disabled():
            print(f"\n{request.node.nodeid} stuck for {STUCK_AFTER_S:.0f} s; its tasks:")
            for task in asyncio.all_tasks():
                print(f"--- {task!r}")
                task.print_stack(file=sys.stdout)

    watch = asyncio.create_task(report(), name="stuck-test-report")
    yield
    watch.cancel()


async def wait_until_blocked(pool: AsyncConnectionPool, pid: int) -> None:
    """Until backend `pid` waits for a lock (at most 5 s)."""
    async with pool.connection() as conn:
        for _ in range(500):
            cur = await conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            )
            if await cur.fetchone() == ("Lock",):
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")
