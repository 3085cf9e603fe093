"""Raw-reading retention: real-time and minute readings past the limit go, means stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from ingest.jobs import delete_old_raw_readings
from store.catalogue import series_ids
from store.partitions import create_partitions, month_of
from store.readings import ReadingRow, write_readings

NOW = datetime(2026, 11, 26, 4, tzinfo=UTC)
KEEP_DAYS = 90
CUTOFF = NOW - timedelta(days=KEEP_DAYS)


async def test_raw_readings_past_the_limit_are_deleted_and_means_kept(
    db: AsyncConnectionPool, timescaledb: bool
) -> None:
    async with db.connection() as conn:
        sid, pid = await series_ids(conn, station="gz-a-huangpu", parameter="pm25")
    # Times around the limit, in chunks (partitions) far past it, straddling it and within it;
    # daily means start at midnight China Standard Time (16:00 UTC the day before).
    ages = [timedelta(days=300), timedelta(days=120), timedelta(hours=1), timedelta(0)]
    times = [CUTOFF - age for age in ages] + [CUTOFF + timedelta(hours=1), NOW]
    midnights = (CUTOFF + timedelta(days=n) for n in (-301, -121, -1, 1))
    days = [t.replace(hour=16) for t in midnights] + [NOW.replace(hour=16) - timedelta(days=1)]
    rows = [ReadingRow(sid, pid, period, t, 20.0, 0) for period in (0, 60, 3600) for t in times]
    rows += [ReadingRow(sid, pid, 86400, t, 20.0, 0) for t in days]
    async with db.connection() as conn:
        async with conn.transaction():
            await create_partitions(conn, {month_of(r.time) for r in rows})
        async with conn.transaction():
            written = await write_readings(
                conn, rows, source_id=1, received_at=NOW - timedelta(days=400)
            )
        assert written.accepted == 23
        if timescaledb:
            # The delete works on compressed chunks too (per period segments, or decompressed).
            await conn.execute(
                "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('reading') c"
            )
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE is_compressed), count(*)"
                " FROM timescaledb_information.chunks WHERE hypertable_name = 'reading'"
            )
            assert await cur.fetchone() == (6, 6)

    deleted = await delete_old_raw_readings(db, days=KEEP_DAYS, clock=lambda: NOW)
    assert deleted == 6  # periods 0 and 60, at the three times before the cutoff

    async with db.connection() as conn:
        cur = await conn.execute("SELECT period_s, time FROM reading ORDER BY period_s, time")
        kept = await cur.fetchall()
    raw_kept = [t for t in times if t >= CUTOFF]
    assert kept == [
        *[(0, t) for t in raw_kept],
        *[(60, t) for t in raw_kept],
        *[(3600, t) for t in times],
        *[(86400, t) for t in days],
    ]
    assert await delete_old_raw_readings(db, days=KEEP_DAYS, clock=lambda: NOW) == 0
