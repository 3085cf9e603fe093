"""Numbered, forward-only SQL migrations, applied under an advisory lock and recorded."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from store.coordination import MIGRATION_LOCK
from store.pool import Conn

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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


async def migrate(conn: Conn) -> list[Migration]:
    """Apply the migrations not yet applied; returns those applied now. Needs autocommit."""
    await conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
    try:
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
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])


async def applied_versions(conn: Conn) -> list[int]:
    """The versions recorded in schema_migration, ascending."""
    cur = await conn.execute("SELECT version FROM schema_migration ORDER BY version")
    return [row[0] for row in await cur.fetchall()]
