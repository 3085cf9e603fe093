"""Monthly range partitions of `reading`, created ahead of time and on demand for backfills.

On TimescaleDB `reading` is a hypertable that makes its chunks by itself (store/timescale.py):
there is nothing to create and creating partitions does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from psycopg import sql

from store.coordination import PARTITION_LOCK
from store.pool import Conn

_NAME = re.compile(r"^reading_p(\d{4})(\d{2})$")


def month_of(moment: datetime) -> tuple[int, int]:
    """The UTC (year, month) whose partition holds `moment`."""
    utc = moment.astimezone(UTC)
    return utc.year, utc.month


def partition_name(year: int, month: int) -> str:
    return f"reading_p{year:04d}{month:02d}"


def _bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


async def missing_partitions(
    conn: Conn, months: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The months among `months` that have no partition yet."""
    wanted = sorted(set(months))
    if not wanted:
        return []
    cur = await conn.execute(
        "SELECT m FROM unnest(%s::text[]) AS m WHERE to_regclass(m) IS NULL",
        [[partition_name(y, m) for y, m in wanted]],
    )
    absent = {row[0] for row in await cur.fetchall()}
    return [(y, m) for y, m in wanted if partition_name(y, m) in absent]


async def create_partitions(conn: Conn, months: Iterable[tuple[int, int]]) -> list[str]:
    """Create the partitions for `months` that do not exist; returns the names created.

    Run it in a short transaction of its own: creating a partition locks the parent table,
    so doing it inside a long ingest transaction would stall every other writer.
    """
    if not await is_partitioned(conn):
        return []
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITION_LOCK])
    created = []
    for year, month in await missing_partitions(conn, months):
        start, end = _bounds(year, month)
        name = partition_name(year, month)
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF reading FOR VALUES FROM ({}) TO ({})"
            ).format(sql.Identifier(name), sql.Literal(start), sql.Literal(end))
        )
        created.append(name)
    return created


async def is_partitioned(conn: Conn) -> bool:
    """Whether `reading` is partitioned (plain PostgreSQL) rather than a hypertable."""
    cur = await conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = 'reading'::regclass")
    row = await cur.fetchone()
    return bool(row and row[0])


async def list_partitions(conn: Conn) -> list[str]:
    """Names of the partitions of `reading`, in order (none on a hypertable)."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'reading'::regclass AND c.relispartition ORDER BY c.relname"
    )
    return [row[0] for row in await cur.fetchall()]


async def partition_ranges(conn: Conn) -> list[tuple[datetime, datetime]]:
    """[start, end) of each partition of `reading`, in order."""
    months = [_NAME.match(name) for name in await list_partitions(conn)]
    return [_bounds(int(m[1]), int(m[2])) for m in months if m]
