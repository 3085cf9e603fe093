"""Ingest's scheduled upkeep: partitions made ahead of the readings that will need them."""

from __future__ import annotations

import logging
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from core.timeutil import utcnow
from store.partitions import create_partitions, month_of

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
