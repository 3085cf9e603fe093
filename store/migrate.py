"""Numbered, forward-only SQL migrations, applied under an advisory lock and recorded.

There is one migration history, the same SQL on plain PostgreSQL and on TimescaleDB: the
servers differ only in how `reading` is stored, and that is not a migration step but a layout
that migrate() brings about after the SQL steps (store/timescale.py: a hypertable where
TimescaleDB is used, else monthly partitions), because its parameters are settings and an
existing database changes layout only when asked (`envlink migrate --to-timescaledb`). A step
that alters `reading` must therefore work on both layouts (ALTER TABLE on a hypertable reaches
its chunks); CI runs the suite on both.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from store.coordination import MIGRATION_LOCK
from store.pool import Conn
from store.timescale import (
    MoveReport,
    Progress,
    TimescaleOptions,
    adopt,
    enable,
    move_to_timescaledb,
    prepare_move,
)

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# ENVLINK_TIMESCALEDB's defaults (auto), for callers without Settings (tests, benchmarks).
DEFAULTS = TimescaleOptions()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped in store/migrations, in order."""
    found = []
    for entry in resources.files("store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def migrate(conn: Conn, *, timescaledb: TimescaleOptions = DEFAULTS) -> list[Migration]:
    """Apply the migrations not yet applied and lay `reading` out; returns those applied now.

    Needs autocommit.
    """
    async with _migration_lock(conn):
        uses_timescaledb = await enable(conn, timescaledb.mode)
        done = await _apply(conn)
        if uses_timescaledb:
            await adopt(conn, timescaledb)
        return done


async def migrate_to_timescaledb(
    conn: Conn, *, timescaledb: TimescaleOptions, progress: Progress | None = None
) -> tuple[list[Migration], MoveReport]:
    """Apply the migrations, then move a partitioned `reading` and its rows onto TimescaleDB.

    Needs autocommit.
    """
    async with _migration_lock(conn):
        await prepare_move(conn, timescaledb)
        done = await _apply(conn)
        return done, await move_to_timescaledb(conn, timescaledb, progress)


@asynccontextmanager
async def _migration_lock(conn: Conn) -> AsyncIterator[None]:
    await conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


async def _apply(conn: Conn) -> list[Migration]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migration ("
        " version int PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    cur = await conn.execute("SELECT version FROM schema_migration")
    applied = {row[0] for row in await cur.fetchall()}
    done = []
    for migration in available_migrations():
        if migration.version in applied:
            continue
        async with conn.transaction():
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migration (version, name) VALUES (%s, %s)",
                [migration.version, migration.name],
            )
        log.info("applied migration %04d_%s", migration.version, migration.name)
        done.append(migration)
    return done


async def applied_versions(conn: Conn) -> list[int]:
    """The versions recorded in schema_migration, ascending."""
    cur = await conn.execute("SELECT version FROM schema_migration ORDER BY version")
    return [row[0] for row in await cur.fetchall()]


async def pending_migrations(conn: Conn) -> list[str]:
    """The shipped migrations (`0033_rate_limits`) the database has not applied, in order."""
    cur = await conn.execute("SELECT to_regclass('schema_migration') IS NOT NULL")
    row = await cur.fetchone()
    applied = set(await applied_versions(conn)) if row is not None and row[0] else set()
    return [f"{v:04d}_{name}" for v, name in _shipped() if v not in applied]


@functools.cache
def _shipped() -> tuple[tuple[int, str], ...]:
    return tuple((m.version, m.name) for m in available_migrations())
