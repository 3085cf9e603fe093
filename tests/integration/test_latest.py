"""The current-value table: every write path keeps reading_latest equal to the newest reading."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import store.migrate
from schemas.common import QC
from store.catalogue import series_ids
from store.migrate import available_migrations, migrate
from store.partitions import create_partitions, month_of
from store.pool import Conn
from store.qc import QcFlag, reflag_suspect
from store.readings import ReadingRow, WriteResult, keep_latest, latest_readings, write_readings
from tests.conftest import wait_until_blocked

T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
NOW = datetime(2026, 11, 26, tzinfo=UTC)
HOUR = timedelta(hours=1)
ROUNDS = 4

Series = tuple[int, int, int]
Current = tuple[datetime, float | None, int]


async def _ids(pool: AsyncConnectionPool, station: str, parameter: str) -> tuple[int, int]:
    async with pool.connection() as conn:
        return await series_ids(conn, station=station, parameter=parameter)


async def _write(
    pool: AsyncConnectionPool, rows: list[ReadingRow], source_id: int = 1
) -> WriteResult:
    async with pool.connection() as conn:
        async with conn.transaction():
            await create_partitions(conn, {month_of(r.time) for r in rows})
        async with conn.transaction():
            return await write_readings(conn, rows, source_id=source_id, received_at=NOW)


async def _latest(pool: AsyncConnectionPool) -> dict[Series, Current]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT station_id, parameter_id, period_s, time, value, qc FROM reading_latest"
        )
        return {(s, p, per): (t, v, qc) for s, p, per, t, v, qc in await cur.fetchall()}


async def _newest_in_reading(pool: AsyncConnectionPool) -> dict[Series, Current]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT ON (station_id, parameter_id, period_s)"
            " station_id, parameter_id, period_s, time, value, qc FROM reading"
            " ORDER BY station_id, parameter_id, period_s, time DESC"
        )
        return {(s, p, per): (t, v, qc) for s, p, per, t, v, qc in await cur.fetchall()}


async def test_fresh_rows_set_the_newest_of_each_period(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "pm25")
    rows = [
        ReadingRow(sid, pid, 3600, T0 + 2 * HOUR, 31.0, 0),
        ReadingRow(sid, pid, 3600, T0, 30.0, 0),
        ReadingRow(sid, pid, 0, T0 + HOUR, 29.5, QC.SUSPECT.code),
        ReadingRow(sid, pid, 3600, T0 + HOUR, None, QC.FAULT.code),
    ]
    await _write(db, rows)
    assert await _latest(db) == {
        (sid, pid, 3600): (T0 + 2 * HOUR, 31.0, 0),
        (sid, pid, 0): (T0 + HOUR, 29.5, QC.SUSPECT.code),
    }


async def test_a_duplicate_changes_nothing(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "pm25")
    row = ReadingRow(sid, pid, 3600, T0, 30.0, 0)
    await _write(db, [row])
    result = await _write(db, [row], source_id=2)
    assert result.duplicates == {0}
    assert await _latest(db) == {(sid, pid, 3600): (T0, 30.0, 0)}


async def test_a_revision_of_the_latest_value_replaces_it(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-w-dadun", "nh3n")
    rows = [
        ReadingRow(sid, pid, 3600, T0 + h * HOUR, v, 0) for h, v in enumerate((0.4, 0.41, 0.42))
    ]
    await _write(db, rows)
    result = await _write(db, [rows[2]._replace(value=0.5)], source_id=2)
    assert result.revisions == {0}
    assert await _latest(db) == {(sid, pid, 3600): (T0 + 2 * HOUR, 0.5, 0)}
    result = await _write(db, [rows[2]._replace(value=0.5, qc=QC.INVALID.code)], source_id=2)
    assert result.revisions == {0}
    assert await _latest(db) == {(sid, pid, 3600): (T0 + 2 * HOUR, 0.5, QC.INVALID.code)}


async def test_a_revision_of_an_older_value_leaves_the_latest(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-w-dadun", "nh3n")
    rows = [
        ReadingRow(sid, pid, 3600, T0 + h * HOUR, v, 0) for h, v in enumerate((0.4, 0.41, 0.42))
    ]
    await _write(db, rows)
    result = await _write(db, [rows[0]._replace(value=0.9)], source_id=2)
    assert result.revisions == {0}
    assert await _latest(db) == {(sid, pid, 3600): (T0 + 2 * HOUR, 0.42, 0)}


@pytest.mark.parametrize("alongside", [False, True])
async def test_a_late_older_reading_leaves_the_latest(
    db: AsyncConnectionPool, alongside: bool
) -> None:
    sid, pid = await _ids(db, "dg-a-humen", "o3")
    await _write(db, [ReadingRow(sid, pid, 3600, T0 + 5 * HOUR, 80.0, 0)])
    late = [ReadingRow(sid, pid, 3600, T0 + h * HOUR, 60.0 + h, 0) for h in range(5)]
    if alongside:  # a batch that meets a conflict takes the merge path
        late.append(ReadingRow(sid, pid, 3600, T0 + 5 * HOUR, 80.0, 0))
    result = await _write(db, late, source_id=2)
    assert result.accepted == 5
    assert await _latest(db) == {(sid, pid, 3600): (T0 + 5 * HOUR, 80.0, 0)}


async def test_a_qc_reflag_of_the_latest_reading_reflags_it(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "pm25")
    other, _ = await _ids(db, "gz-a-panyu", "pm25")
    rows = [ReadingRow(sid, pid, 3600, T0 + h * HOUR, 30.0 + h, 0) for h in range(3)]
    rows.append(ReadingRow(other, pid, 3600, T0, 40.0, 0))
    await _write(db, rows)
    flags = [
        QcFlag(sid, pid, 3600, T0 + 2 * HOUR, 32.0, "flat_line", "the latest"),
        QcFlag(other, pid, 3600, T0, 40.0, "spike", "the latest of another station"),
        QcFlag(sid, pid, 3600, T0, 30.0, "spike", "an older one"),
    ]
    async with db.connection() as conn, conn.transaction():
        assert await reflag_suspect(conn, flags, source_id=1, at=NOW) == 3
    assert await _latest(db) == {
        (sid, pid, 3600): (T0 + 2 * HOUR, 32.0, QC.SUSPECT.code),
        (other, pid, 3600): (T0, 40.0, QC.SUSPECT.code),
    }
    assert await _latest(db) == await _newest_in_reading(db)


async def _write_on(conn: Conn, rows: list[ReadingRow], source_id: int) -> WriteResult:
    async with conn.transaction():
        return await write_readings(conn, rows, source_id=source_id, received_at=NOW)


@pytest.mark.parametrize("newer_first", [True, False])
async def test_concurrent_writers_of_a_series_end_with_the_newest(
    db: AsyncConnectionPool, newer_first: bool
) -> None:
    sid, pid = await _ids(db, "dg-w-wanjiang", "ph")
    older = ReadingRow(sid, pid, 0, T0, 7.1, 0)
    newer = ReadingRow(sid, pid, 0, T0 + timedelta(minutes=5), 7.3, 0)
    first, second = (newer, older) if newer_first else (older, newer)
    async with db.connection() as conn, conn.transaction():
        await create_partitions(conn, {month_of(T0)})
    async with db.connection() as one, db.connection() as two:
        await one.execute("BEGIN")
        await write_readings(one, [first], source_id=1, received_at=NOW)
        # The second writer's upsert meets the first's uncommitted row and waits for it.
        writing = asyncio.create_task(_write_on(two, [second], 2))
        await wait_until_blocked(db, two.info.backend_pid)
        await one.execute("COMMIT")
        result = await asyncio.wait_for(writing, 10)
    assert result.accepted == 1
    assert await _latest(db) == {(sid, pid, 0): (newer.time, 7.3, 0)}


@pytest.mark.parametrize("few", [100, 1_000_000])
async def test_concurrent_writers_of_many_series_neither_deadlock_nor_lose_the_newest(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    import store.readings

    # With `few` above the batch size, rows take the row-by-row path and stay in batch order.
    monkeypatch.setattr(store.readings, "_FEW", few)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT s.id, p.id FROM station s, parameter p ORDER BY 1, 2")
        series = [(s, p, period) for s, p in await cur.fetchall() for period in (0, 3600)]
        async with conn.transaction():
            await create_partitions(conn, {month_of(T0)})
    # Round after round, each writer sends every series in an order of its own, and holds the
    # newest of half of them; both update rows the other is updating.
    async with db.connection() as one, db.connection() as two:
        for step in range(ROUNDS):
            batches = []
            for writer in range(2):
                rows = [
                    ReadingRow(
                        s, p, per, T0 + (2 * step + (n + writer) % 2) * HOUR, float(writer), 0
                    )
                    for n, (s, p, per) in enumerate(series)
                ]
                random.Random(step * 2 + writer).shuffle(rows)
                batches.append(rows)
            results = await asyncio.wait_for(
                asyncio.gather(_write_on(one, batches[0], 1), _write_on(two, batches[1], 2)), 30
            )
            assert [r.accepted for r in results] == [len(series), len(series)]
    assert await _latest(db) == {
        (s, p, per): (T0 + (2 * ROUNDS - 1) * HOUR, float((n + 1) % 2), 0)
        for n, (s, p, per) in enumerate(series)
    }


@pytest.mark.parametrize(("chunk", "block"), [(50_000, 8_192), (120, 16), (64, 5)])
async def test_mixed_batches_keep_the_latest_equal_to_the_newest_reading(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch, chunk: int, block: int
) -> None:
    import store.readings

    monkeypatch.setattr(store.readings, "CHUNK", chunk)
    monkeypatch.setattr(store.readings, "_BLOCK", block)
    sid, pid = await _ids(db, "gz-a-panyu", "no2")
    rng = random.Random(chunk)
    for batch in range(6):
        rows = [
            ReadingRow(
                sid + rng.randrange(3),
                pid,
                rng.choice((0, 3600)),
                T0 + rng.randrange(40) * HOUR,
                None if rng.random() < 0.1 else float(rng.randrange(5)),
                rng.choice((0, 0, 0, QC.SUSPECT.code)),
            )
            for _ in range(rng.choice((3, 150, 400)))
        ]
        await _write(db, rows, source_id=batch + 1)
        assert await _latest(db) == await _newest_in_reading(db), f"after batch {batch}"


async def test_the_latest_api_query_picks_the_newest_by_period_end(
    db: AsyncConnectionPool,
) -> None:
    sid, pid = await _ids(db, "dg-w-humen", "do")
    rows = [
        ReadingRow(sid, pid, 3600, T0, 5.5, 0),  # ends T0 + 1 h
        ReadingRow(sid, pid, 0, T0 + HOUR, 5.1, 0),  # the same end: the instant wins
        ReadingRow(sid, pid, 86400, T0 - 24 * HOUR, 5.0, 0),  # ends at T0
    ]
    await _write(db, rows)
    async with db.connection() as conn:
        found = await latest_readings(conn, city=None, area=None, medium=None)
    assert [(r.station, r.parameter, r.time, r.period_s, r.value) for r in found] == [
        ("dg-w-humen", "do", T0 + HOUR, 0, 5.1)
    ]


async def test_the_migration_fills_the_table_from_existing_readings(
    new_database: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    url: str = new_database()  # type: ignore[operator]
    before = [m for m in available_migrations() if m.version < 30]
    monkeypatch.setattr(store.migrate, "available_migrations", lambda: before)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await create_partitions(conn, {month_of(T0)})
            for hour, value in ((0, 1.0), (2, 3.0), (1, 2.0)):
                await conn.execute(
                    "INSERT INTO reading VALUES (7, 3, 3600, %s, %s, 0, 1, %s)",
                    [T0 + hour * HOUR, value, NOW],
                )
            await conn.execute(
                "INSERT INTO reading VALUES (7, 3, 0, %s, NULL, 14, 1, %s)", [T0, NOW]
            )
        monkeypatch.undo()
        applied = await migrate(conn)
        assert [m.version for m in applied][:1] == [30]
        cur = await conn.execute(
            "SELECT station_id, parameter_id, period_s, time, value, qc FROM reading_latest"
            " ORDER BY period_s"
        )
        assert await cur.fetchall() == [
            (7, 3, 0, T0, None, 14),
            (7, 3, 3600, T0 + 2 * HOUR, 3.0, 0),
        ]


async def test_latest_readings_are_updated_in_place_while_another_transaction_holds_old_rows(
    db: AsyncConnectionPool, database_url: str
) -> None:
    # Every new reading updates its series' row. While a long transaction runs (the alert
    # loop's round) the versions it replaced cannot be reclaimed, so each page needs room for
    # several versions of its rows: without it an update moves its row to another page and
    # adds an index entry.
    at = datetime(2026, 11, 26, 4, tzinfo=UTC)
    series = [(station, parameter) for station in range(1, 41) for parameter in range(1, 6)]
    pages = (
        "SELECT station_id, parameter_id, (ctid::text::point)[0]::int FROM reading_latest"
        " ORDER BY 1, 2"
    )
    async with db.connection() as conn:
        await keep_latest(conn, [ReadingRow(s, p, 0, at, 1.0, QC.VALID.code) for s, p in series])
        before = await (await conn.execute(pages)).fetchall()
    assert len(before) == 200 and len({page for *_, page in before}) > 2
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute("SELECT txid_current()")  # an open transaction with an xid
        async with db.connection() as conn, conn.transaction():
            for step in range(1, 6):
                newer = at + timedelta(seconds=step)
                await keep_latest(
                    conn, [ReadingRow(s, p, 0, newer, float(step), 0) for s, p in series]
                )
            assert await (await conn.execute(pages)).fetchall() == before
            cur = await conn.execute("SELECT DISTINCT time, value FROM reading_latest")
            assert await cur.fetchall() == [(at + timedelta(seconds=5), 5.0)]
