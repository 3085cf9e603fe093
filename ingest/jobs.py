"""Ingest's scheduled upkeep: partitions made ahead, raw readings deleted past their retention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from core.timeutil import utcnow
from store.partitions import create_partitions, month_of
from store.retention import delete_raw_readings, storage_ranges

log = logging.getLogger(__name__)


async def create_partitions_ahead(pool: AsyncConnectionPool, *, months: int = 2) -> list[str]:
    """Make sure the partitions for this month and the next `months` exist."""
    now = utcnow()
    wanted = {month_of(now + timedelta(days=31 * n)) for n in range(months + 1)}
    async with pool.connection() as conn, conn.transaction():
        created = await create_partitions(conn, wanted)
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created


async def delete_old_raw_readings(
    pool: AsyncConnectionPool, *, days: int, clock: Callable[[], datetime] = utcnow
) -> int:
    """Delete real-time and minute readings older than `days`; returns how many."""
    cutoff = clock() - timedelta(days=days)
    deleted = 0
    async with pool.connection() as conn:
        for start, end in await storage_ranges(conn, before=cutoff):
            async with conn.transaction():
                deleted += await delete_raw_readings(conn, start=start, end=min(end, cutoff))
    if deleted:
        log.info("deleted %d real-time and minute readings older than %d days", deleted, days)
    return deleted
