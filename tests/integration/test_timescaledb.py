"""TimescaleDB: `reading` as a compressed hypertable, late data on compressed chunks, the move.

The late-data tests run on the session's database, whichever server it is on: on TimescaleDB
they compress the chunks first, and the assertions are the same as on plain PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from schemas.catalogue import load_catalogue
from schemas.common import QC
from store import readings
from store.catalogue import seed_catalogue, series_ids
from store.migrate import migrate, migrate_to_timescaledb
from store.partitions import create_partitions, list_partitions, month_of
from store.pool import Conn
from store.readings import ReadingRow, WriteResult, store_new_readings, write_readings
from store.timescale import (
    MoveReport,
    ReadingLayout,
    TimescaleOptions,
    is_hypertable,
    reading_layout,
)
from tests.conftest import CONFIG_DIR

NOW = datetime(2026, 11, 26, 4, tzinfo=UTC)
# A day 60 days back, past the 30 days after which chunks are compressed.
DAY = datetime(2026, 9, 27, tzinfo=UTC)
GAP = DAY + timedelta(hours=10)
KEY = "station_id, parameter_id, period_s, time"


async def _compress_all(conn: Conn) -> None:
    """Compress every chunk of `reading`, and check the chunk holding DAY is compressed."""
    await conn.execute(
        "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('reading') c"
    )
    cur = await conn.execute(
        "SELECT is_compressed FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'reading' AND range_start <= %(t)s AND %(t)s < range_end",
        {"t": DAY},
    )
    assert await cur.fetchall() == [(True,)]


async def _write(
    pool: AsyncConnectionPool, rows: Sequence[ReadingRow], source_id: int
) -> WriteResult:
    async with pool.connection() as conn:
        async with conn.transaction():
            await create_partitions(conn, {month_of(r.time) for r in rows})
        async with conn.transaction():
            return await write_readings(conn, rows, source_id=source_id, received_at=NOW)


def _hour(sid: int, pids: Sequence[int], start: datetime, shift: float = 0.0) -> list[ReadingRow]:
    """One hour of a station: each parameter's hourly mean and its six 10-minute values."""
    rows = []
    for pid in pids:
        base = pid + start.hour + shift
        rows.append(ReadingRow(sid, pid, 3600, start, base, QC.VALID.code))
        rows += [
            ReadingRow(sid, pid, 0, start + timedelta(minutes=10 * m), base + m, QC.VALID.code)
            for m in range(6)
        ]
    return rows


async def _stored(pool: AsyncConnectionPool) -> dict[tuple[int, int, int, datetime], float]:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT {KEY}, value FROM reading ORDER BY {KEY}")
        return {(s, p, period, t): v for s, p, period, t, v in await cur.fetchall()}


async def test_a_gap_recovered_on_a_compressed_chunk_is_stored_deduplicated_and_revised(
    db: AsyncConnectionPool, timescaledb: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.connection() as conn:
        sid, pm25 = await series_ids(conn, station="gz-a-huangpu", parameter="pm25")
        _, no2 = await series_ids(conn, station="gz-a-huangpu", parameter="no2")
    pids = [pm25, no2]
    day = [row for h in range(24) if h != 10 for row in _hour(sid, pids, DAY + timedelta(hours=h))]
    assert (await _write(db, day, source_id=1)).accepted == 23 * 14
    if timescaledb:
        async with db.connection() as conn:
            await _compress_all(conn)
    merges: list[int] = []
    merge = readings._merge

    async def counted(conn: Conn, rows: Sequence[ReadingRow], *args: object) -> object:
        merges.append(len(rows))
        return await merge(conn, rows, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(readings, "_merge", counted)

    # The missing hour alone goes in by COPY: no key of it exists.
    gap = _hour(sid, pids, GAP)
    fresh = await _write(db, gap, source_id=2)
    assert (fresh.accepted, fresh.duplicates, fresh.revisions, merges) == (14, set(), set(), [])

    # The station re-sends 09:00-12:00: 09:00 and 10:00 unchanged, 11:00 audited (new values).
    resent = [
        *_hour(sid, pids, GAP - timedelta(hours=1)),
        *gap,
        *_hour(sid, pids, GAP + timedelta(hours=1), shift=0.5),
    ]
    result = await _write(db, resent, source_id=3)
    assert (result.accepted, result.duplicates, result.revisions) == (
        0,
        set(range(28)),
        set(range(28, 42)),
    )
    assert merges == [42]
    expected = {(r.station_id, r.parameter_id, r.period_s, r.time): r.value for r in day + gap}
    expected |= {(r.station_id, r.parameter_id, r.period_s, r.time): r.value for r in resent}
    assert await _stored(db) == expected

    async with db.connection() as conn:
        cur = await conn.execute(
            f"SELECT {KEY}, value, source_id, replaced_by FROM reading_revision ORDER BY {KEY}"
        )
        kept = await cur.fetchall()
    before = sorted(_hour(sid, pids, GAP + timedelta(hours=1)))
    assert kept == [(*row[:4], row.value, 1, 3) for row in before]

    again = await _write(db, resent, source_id=4)
    assert (again.accepted, again.duplicates, again.revisions) == (0, set(range(42)), set())
    assert await _stored(db) == expected


async def test_copy_of_a_key_on_a_compressed_chunk_raises_unique_violation(
    db: AsyncConnectionPool, timescaledb: bool
) -> None:
    """The fresh path's COPY fails on an existing key, so write_readings falls back to merging.

    TimescaleDB checks a unique key on a compressed chunk by decompressing the segment that
    may hold it.
    """
    async with db.connection() as conn:
        sid, pid = await series_ids(conn, station="dg-w-shilong", parameter="do")
    stored = ReadingRow(sid, pid, 3600, GAP, 7.2, QC.VALID.code)
    await _write(db, [stored, stored._replace(time=GAP + timedelta(hours=1))], source_id=1)
    copy_sql = (
        "COPY reading (station_id, parameter_id, period_s, time, value, qc, source_id,"
        " received_at) FROM STDIN"
    )
    async with db.connection() as conn:
        if timescaledb:
            await _compress_all(conn)
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                await copy.write_row((*stored._replace(value=7.9), 1, NOW))
        fresh = stored._replace(time=GAP + timedelta(minutes=30))
        async with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
            await copy.write_row((*fresh, 1, NOW))
        cur = await conn.execute(f"SELECT time, value FROM reading ORDER BY {KEY}")
        assert await cur.fetchall() == [
            (GAP, 7.2),
            (GAP + timedelta(minutes=30), 7.2),
            (GAP + timedelta(hours=1), 7.2),
        ]


async def test_one_statement_of_a_key_on_a_compressed_chunk_fails_and_writes_nothing(
    db: AsyncConnectionPool, timescaledb: bool
) -> None:
    """The one-statement path of a batch of new readings fails on a stored key as COPY does,
    with nothing of the batch written, so the pipeline takes the full path."""
    async with db.connection() as conn:
        sid, pid = await series_ids(conn, station="dg-w-shilong", parameter="do")
    stored = ReadingRow(sid, pid, 3600, GAP, 7.2, QC.VALID.code)
    await _write(db, [stored, stored._replace(time=GAP + timedelta(hours=1))], source_id=1)
    fresh = stored._replace(time=GAP + timedelta(minutes=30))
    async with db.connection() as conn:
        if timescaledb:
            await _compress_all(conn)
        await conn.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            await store_new_readings(
                conn, [fresh, stored._replace(value=7.9)], source_id=1, received_at=NOW
            )
        cur = await conn.execute("SELECT count(*) FROM series_dirty")
        assert await cur.fetchone() == (0,)
        await conn.commit()
        await store_new_readings(conn, [fresh], source_id=1, received_at=NOW)
        cur = await conn.execute(f"SELECT time, value FROM reading ORDER BY {KEY}")
        assert await cur.fetchall() == [
            (GAP, 7.2),
            (GAP + timedelta(minutes=30), 7.2),
            (GAP + timedelta(hours=1), 7.2),
        ]
        cur = await conn.execute("SELECT time, value FROM series_dirty")
        assert await cur.fetchall() == [(GAP + timedelta(minutes=30), 7.2)]


async def test_revisions_in_many_compressed_segments_are_stored(
    db: AsyncConnectionPool, timescaledb: bool
) -> None:
    """One revision in each of 101 full segments decompresses 101,000 readings in one batch.

    TimescaleDB's default refuses a transaction that decompresses more than 100,000; EnvLink's
    database allows any number, so the batch is stored like any other.
    """
    stations = range(90_001, 90_102)  # series of their own; `reading` does not check them
    minutes = [DAY + timedelta(minutes=m) for m in range(1000)]
    rows = [ReadingRow(s, 1, 0, t, 1.0, QC.VALID.code) for s in stations for t in minutes]
    assert (await _write(db, rows, source_id=1)).accepted == 101_000
    if timescaledb:
        async with db.connection() as conn:
            await _compress_all(conn)
    revised = [ReadingRow(s, 1, 0, minutes[500], 2.0, QC.VALID.code) for s in stations]
    result = await _write(db, revised, source_id=2)
    assert (result.accepted, result.duplicates, result.revisions) == (0, set(), set(range(101)))
    async with db.connection() as conn:
        cur = await conn.execute("SELECT value, count(*) FROM reading GROUP BY value ORDER BY 1")
        assert await cur.fetchall() == [(1.0, 100_899), (2.0, 101)]


async def test_the_session_database_uses_timescaledb_exactly_where_the_server_offers_it(
    pool: AsyncConnectionPool, timescaledb: bool, server_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(server_url) as admin:
        cur = await admin.execute("SHOW shared_preload_libraries")
        row = await cur.fetchone()
    assert row is not None
    assert timescaledb == ("timescaledb" in row[0])
    async with pool.connection() as conn:
        layout = await reading_layout(conn)
        cur = await conn.execute(
            "SELECT current_setting('timescaledb.max_tuples_decompressed_per_dml_transaction',"
            " true)"
        )
        limit = await cur.fetchone()
    if timescaledb:
        assert (layout.hypertable, layout.chunk_interval, layout.compress_after) == (
            True,
            timedelta(days=7),
            timedelta(days=30),
        )
        # A late batch may decompress any number of rows.
        assert limit == ("0",)
    else:
        assert layout == ReadingLayout(None, False, None, None)


async def _plain_database_with_readings(
    url: str,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], dict[tuple[int, int], int]]:
    """A plain-layout database with five months of readings and some revisions.

    Returns the readings, the revisions and the row count per partition month.
    """
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn, timescaledb=TimescaleOptions(mode="off"))
        await seed_catalogue(conn, load_catalogue(CONFIG_DIR))
        sid, pid = await series_ids(conn, station="gz-w-dadun", parameter="nh3n")
        sid2, pid2 = await series_ids(conn, station="dg-a-humen", parameter="o3")
        start = datetime(2026, 5, 1, tzinfo=UTC)
        rows = [
            ReadingRow(s, p, period, start + timedelta(hours=6 * n), 0.25 + n / 1000, 0)
            for n in range(4 * 153)
            for s, p in ((sid, pid), (sid2, pid2))
            for period in (0, 3600)
        ]
        async with conn.transaction():
            await create_partitions(conn, {month_of(r.time) for r in rows})
        async with conn.transaction():
            await write_readings(conn, rows, source_id=1, received_at=NOW)
        revised = [r._replace(value=r.value + 1, qc=QC.SUSPECT.code) for r in rows[::50]]
        async with conn.transaction():
            written = await write_readings(conn, revised, source_id=2, received_at=NOW)
        assert len(written.revisions) == len(revised)
        assert not await is_hypertable(conn)
        cur = await conn.execute(f"SELECT * FROM reading ORDER BY {KEY}")
        stored = await cur.fetchall()
        cur = await conn.execute("SELECT * FROM reading_revision ORDER BY id")
        revisions = await cur.fetchall()
        cur = await conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM reading GROUP BY 1 ORDER BY 1"
        )
        per_month = {(int(n[9:13]), int(n[13:15])): c for n, c in await cur.fetchall()}
    assert len(stored) == len(rows) == 2448 and len(revisions) == 49
    return stored, revisions, per_month


async def test_a_plain_database_with_readings_moves_onto_timescaledb_intact(
    timescaledb_database: Callable[[], str],
) -> None:
    url = timescaledb_database()
    stored, revisions, per_month = await _plain_database_with_readings(url)
    progress: list[tuple[int, int]] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        applied, report = await migrate_to_timescaledb(
            conn,
            timescaledb=TimescaleOptions(chunk_days=14, compress_after_days=45),
            progress=lambda done, total: progress.append((done, total)),
        )
        assert (applied, report) == ([], MoveReport(moved=2448, already=False))
        done, steps = 0, [(0, 2448)]
        for month in sorted(per_month):
            done += per_month[month]
            steps.append((done, 2448))
        assert progress == steps
        assert len(steps) == 6  # before the first partition, then May to September

        assert await is_hypertable(conn)
        layout = await reading_layout(conn)
        assert (layout.chunk_interval, layout.compress_after) == (
            timedelta(days=14),
            timedelta(days=45),
        )
        cur = await conn.execute(f"SELECT * FROM reading ORDER BY {KEY}")
        assert await cur.fetchall() == stored
        cur = await conn.execute("SELECT * FROM reading_revision ORDER BY id")
        assert await cur.fetchall() == revisions
        assert await list_partitions(conn) == []
        cur = await conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relname ~ '^reading_(p[0-9]{6}|move)$'"
        )
        assert await cur.fetchall() == []
        cur = await conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'reading'::regclass"
        )
        assert await cur.fetchall() == [("reading_pkey",)]
        cur = await conn.execute(
            "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
            " WHERE hypertable = 'reading'::regclass"
        )
        assert await cur.fetchall() == [("station_id,parameter_id,period_s", '"time"')]

        # The write path works on the moved table: a re-sent reading and a revision.
        first = stored[0]
        again = ReadingRow(*first[:4], first[4], first[5])  # type: ignore[arg-type]
        async with conn.transaction():
            result = await write_readings(
                conn, [again, again._replace(value=9.0)], source_id=3, received_at=NOW
            )
        assert (result.duplicates, result.revisions) == ({0}, {1})

        assert await migrate_to_timescaledb(conn, timescaledb=TimescaleOptions()) == (
            [],
            MoveReport(moved=0, already=True),
        )
