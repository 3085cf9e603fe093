"""Raw-reading retention: real-time and minute readings (periods 0 and 60) older than a limit.

A scheduled delete, on plain PostgreSQL and on TimescaleDB alike. TimescaleDB's own retention
policy drops whole chunks, and a chunk holds every period of its time span: it would take the
hourly and daily means, which are kept for good (the standards' statistics are computed from
them), along with the raw data. A hypertable of its own for raw readings would let whole chunks
be dropped, but every query and the write path would then span two tables on TimescaleDB and
one on plain PostgreSQL. The delete goes partition by partition (chunk by chunk), one
transaction each, so it never holds more than one month's (one chunk's) raw rows in a
transaction; on a compressed chunk wholly past the limit it removes the raw segments (segments
are per period) without decompressing them.
"""

from __future__ import annotations

from datetime import datetime

from store.partitions import partition_ranges
from store.pool import Conn
from store.timescale import chunk_ranges, is_hypertable


async def storage_ranges(conn: Conn, *, before: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) of each partition or chunk of `reading` that begins before `before`."""
    ranges = await chunk_ranges(conn) if await is_hypertable(conn) else await partition_ranges(conn)
    return sorted((start, end) for start, end in ranges if start < before)


async def delete_raw_readings(conn: Conn, *, start: datetime, end: datetime) -> int:
    """Delete the real-time and minute readings in [start, end); returns how many."""
    cur = await conn.execute(
        "DELETE FROM reading WHERE period_s IN (0, 60) AND time >= %(start)s AND time < %(end)s",
        {"start": start, "end": end},
    )
    return cur.rowcount
