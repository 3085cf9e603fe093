"""Migrations, seeding, partitions and the idempotent write path against real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from schemas.catalogue import load_catalogue
from schemas.common import QC
from store.arrays import BinaryArray, BoolArray, Float8Array, Int2Array, Int4Array, Int8Array
from store.catalogue import seed_catalogue, series_ids
from store.intake import QuarantineRow, quarantine, rejected_readings
from store.migrate import applied_versions, available_migrations, migrate
from store.partitions import create_partitions, list_partitions, month_of
from store.pool import Conn, alone
from store.readings import ReadingRow, WriteResult, revisions_of, write_readings
from tests.conftest import CONFIG_DIR, wait_until_blocked

T0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
NOW = datetime(2026, 11, 26, tzinfo=UTC)


async def _table_names(conn: Conn) -> list[str]:
    cur = await conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY relname"
    )
    return [row[0] for row in await cur.fetchall()]


async def test_migrations_apply_once_and_twice_change_nothing(new_database: object) -> None:
    url: str = new_database()  # type: ignore[operator]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        first = await migrate(conn)
        tables = await _table_names(conn)
        second = await migrate(conn)
        assert [m.version for m in first] == [m.version for m in available_migrations()]
        assert second == []
        assert await _table_names(conn) == tables
        assert await applied_versions(conn) == [m.version for m in available_migrations()]
        assert set(tables) >= {
            "agency",
            "api_key",
            "parameter",
            "reach",
            "reading",
            "reading_revision",
            "rejected_reading",
            "schema_migration",
            "source",
            "station",
            "station_parameter",
        }


async def test_seed_is_idempotent(new_database: object) -> None:
    url: str = new_database()  # type: ignore[operator]
    catalogue = load_catalogue(CONFIG_DIR)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        first = await seed_catalogue(conn, catalogue)
        second = await seed_catalogue(conn, catalogue)
        links = sum(len(v) for v in catalogue.station_parameters.values())
        assert first.inserted == {
            "agency": len(catalogue.agencies),
            "parameter": len(catalogue.parameters),
            "reach": len(catalogue.reaches),
            "station": len(catalogue.stations),
            "station_parameter": links,
        }
        assert sum(second.inserted.values()) == 0
        assert sum(second.updated.values()) == 0
        assert second.unchanged == first.inserted
        cur = await conn.execute("SELECT count(*) FROM station_parameter")
        assert await cur.fetchone() == (links,)


def test_catalogue_covers_the_agreement() -> None:
    catalogue = load_catalogue(CONFIG_DIR)
    stations = catalogue.stations
    assert len(stations) >= 16
    combos = {(s.city, s.area, s.medium) for s in stations}
    assert combos == {
        (city, area, medium)
        for city in ("guangzhou", "dongguan")
        for area in ("dongjiang", "shiziyang")
        for medium in ("air", "water")
    }
    water_nine = {
        "water_temp",
        "ph",
        "do",
        "conductivity",
        "turbidity",
        "codmn",
        "nh3n",
        "tp",
        "tn",
    }
    air_six = {"so2", "no2", "co", "o3", "pm10", "pm25"}
    for station in stations:
        measured = set(catalogue.station_parameters[station.code])
        if station.medium == "water":
            assert water_nine <= measured, station.code
            if station.area == "shiziyang":
                assert "salinity" in measured, station.code
        else:
            assert air_six | {"air_temp", "wind_speed"} <= measured, station.code


async def _ids(pool: AsyncConnectionPool, station: str, parameter: str) -> tuple[int, int]:
    async with pool.connection() as conn:
        return await series_ids(conn, station=station, parameter=parameter)


async def _write(pool: AsyncConnectionPool, rows: list[ReadingRow], source_id: int = 1):  # type: ignore[no-untyped-def]
    async with pool.connection() as conn:
        async with conn.transaction():
            await create_partitions(conn, {month_of(r.time) for r in rows})
        async with conn.transaction():
            return await write_readings(conn, rows, source_id=source_id, received_at=NOW)


async def test_duplicates_are_counted_and_change_nothing(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "pm25")
    rows = [
        ReadingRow(sid, pid, 3600, T0 + timedelta(hours=h), 30.0 + h, QC.VALID.code)
        for h in range(5)
    ]
    first = await _write(db, rows)
    again = await _write(db, rows, source_id=2)
    assert (first.accepted, len(first.duplicates), len(first.revisions)) == (5, 0, 0)
    assert (again.accepted, again.duplicates, again.revisions) == (0, {0, 1, 2, 3, 4}, set())
    async with db.connection() as conn:
        cur = await conn.execute("SELECT time, value, source_id FROM reading ORDER BY time")
        stored = await cur.fetchall()
        cur = await conn.execute("SELECT count(*) FROM reading_revision")
        assert await cur.fetchone() == (0,)
    assert [(t, v, s) for t, v, s in stored] == [(r.time, r.value, 1) for r in rows]


async def test_revision_replaces_value_and_keeps_the_old_one(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-w-dadun", "nh3n")
    original = ReadingRow(sid, pid, 3600, T0, 0.42, QC.VALID.code)
    await _write(db, [original])
    corrected = original._replace(value=0.47)
    reflagged = original._replace(value=0.47, qc=QC.SUSPECT.code)
    fresh = original._replace(time=T0 + timedelta(hours=1))
    result = await _write(db, [corrected, fresh], source_id=3)
    assert (result.accepted, result.duplicates, result.revisions) == (1, set(), {0})
    result = await _write(db, [reflagged, fresh], source_id=4)
    assert (result.accepted, result.duplicates, result.revisions) == (0, {1}, {0})
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT value, qc, source_id FROM reading WHERE time = %s AND parameter_id = %s",
            [T0, pid],
        )
        assert await cur.fetchone() == (0.47, QC.SUSPECT.code, 4)
        history = await revisions_of(conn, station_id=sid, parameter_id=pid, period_s=3600, time=T0)
    assert history == [(0.42, QC.VALID), (0.47, QC.VALID)]


async def test_a_key_repeated_in_one_batch_is_applied_in_order(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-w-dadun", "do")
    row = ReadingRow(sid, pid, 0, T0, 6.1, QC.VALID.code)
    result = await _write(db, [row, row, row._replace(value=6.3)])
    assert (result.accepted, result.duplicates, result.revisions) == (1, {1}, {2})
    async with db.connection() as conn:
        cur = await conn.execute("SELECT value FROM reading")
        assert await cur.fetchall() == [(6.3,)]


async def test_partitions_are_created_for_old_and_new_periods(
    db: AsyncConnectionPool, timescaledb: bool
) -> None:
    sid, pid = await _ids(db, "dg-a-humen", "o3")
    old = datetime(2003, 2, 10, 4, tzinfo=UTC)
    rows = [ReadingRow(sid, pid, 3600, old, 50.0, 0), ReadingRow(sid, pid, 3600, T0, 60.0, 0)]
    result = await _write(db, rows)
    assert result.accepted == 2
    async with db.connection() as conn:
        names = await list_partitions(conn)
        cur = await conn.execute("SELECT tableoid::regclass::text FROM reading ORDER BY time")
        homes = [r[0] for r in await cur.fetchall()]
    if timescaledb:
        # A hypertable makes a chunk for each by itself; there are no partitions.
        assert names == []
        assert len(set(homes)) == 2 and all(h.startswith("_timescaledb_internal.") for h in homes)
    else:
        assert homes == ["reading_p200302", "reading_p202611"]
        assert {"reading_p200302", "reading_p202611"} <= set(names)


async def test_creating_partitions_twice_creates_nothing(
    db: AsyncConnectionPool, timescaledb: bool
) -> None:
    async with db.connection() as conn:
        async with conn.transaction():
            first = await create_partitions(conn, {(1999, 12)})
        async with conn.transaction():
            again = await create_partitions(conn, {(1999, 12)})
        names = await list_partitions(conn)
    assert first == ([] if timescaledb else ["reading_p199912"])
    assert again == []
    assert ("reading_p199912" in names) is not timescaledb


@pytest.mark.parametrize("chunk", [2, 3])
async def test_chunks_after_a_conflict_take_the_merge_path(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    import store.readings

    monkeypatch.setattr(store.readings, "CHUNK", chunk)
    sid, pid = await _ids(db, "gz-a-panyu", "no2")
    rows = [ReadingRow(sid, pid, 0, T0 + timedelta(minutes=m), float(m), 0) for m in range(7)]
    await _write(db, rows[2:4])
    result = await _write(db, rows)
    assert (result.accepted, result.duplicates, result.revisions) == (5, {2, 3}, set())
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM reading")
        assert await cur.fetchone() == (7,)


# The bulk path: batches of _FEW rows or more are encoded with numpy, in blocks of _BLOCK rows.
CST = ZoneInfo("Asia/Shanghai")
_Key = tuple[int, int, int, datetime]


def _key(row: ReadingRow) -> _Key:
    return (row.station_id, row.parameter_id, row.period_s, row.time)


async def _stored(pool: AsyncConnectionPool) -> dict[_Key, tuple[float | None, int, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT station_id, parameter_id, period_s, time, value, qc, source_id FROM reading"
        )
        return {(s, p, per, t): (v, qc, src) for s, p, per, t, v, qc, src in await cur.fetchall()}


async def test_bulk_rows_are_stored_exactly(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import store.readings

    monkeypatch.setattr(store.readings, "_BLOCK", 7)
    sid, pid = await _ids(db, "gz-w-dadun", "do")
    values: list[float | None] = [None, -0.0, -1.5, 1e300, 5e-324, 0.1 + 0.2, 7, None, 123.456]
    times = [
        datetime(2003, 2, 10, 4, 30, 15, 123456, tzinfo=CST),
        T0 + timedelta(microseconds=1),
        datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    rows = [
        ReadingRow(sid + n % 3, pid, period, moment, values[n % len(values)], n % 11)
        for n, (period, moment) in enumerate(
            (period, moment + timedelta(hours=h))
            for period in (0, 60, 3600, 86400)
            for moment in times
            for h in range(12)
        )
    ]
    assert len(rows) == 144 >= store.readings._FEW
    result = await _write(db, rows)
    assert (result.accepted, result.duplicates, result.revisions) == (144, set(), set())
    assert await _stored(db) == {_key(r): (r.value, r.qc, 1) for r in rows}
    async with db.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT received_at FROM reading")
        assert await cur.fetchall() == [(NOW,)]
    assert await _latest(db) == _newest_by_series(rows)


async def _latest(pool: AsyncConnectionPool) -> dict[tuple[int, int, int], tuple[object, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT station_id, parameter_id, period_s, time, value, qc FROM reading_latest"
        )
        return {(s, p, per): (t, v, qc) for s, p, per, t, v, qc in await cur.fetchall()}


def _newest_by_series(rows: list[ReadingRow]) -> dict[tuple[int, int, int], tuple[object, ...]]:
    newest: dict[tuple[int, int, int], ReadingRow] = {}
    for row in rows:
        series = (row.station_id, row.parameter_id, row.period_s)
        if series not in newest or row.time >= newest[series].time:
            newest[series] = row
    return {series: (r.time, r.value, r.qc) for series, r in newest.items()}


@pytest.mark.parametrize(("chunk", "size"), [(50_000, 6), (50_000, 150), (4, 30)])
async def test_reading_latest_takes_each_series_newest_row_exactly(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch, chunk: int, size: int
) -> None:
    import store.readings

    monkeypatch.setattr(store.readings, "CHUNK", chunk)
    sid, pid = await _ids(db, "gz-w-dadun", "do")
    values: list[float | None] = [None, -0.0, 1e300, 5e-324, 0.1 + 0.2, 7, float("nan"), -2.5]
    rows = [
        ReadingRow(
            sid + n % 2,
            pid + n % 3,
            (0, 3600)[n % 5 % 2],
            T0 + timedelta(seconds=n * 7919 % 97),
            values[n % len(values)],
            n % 11,
        )
        for n in range(size)
    ]
    await _write(db, rows)
    latest = await _latest(db)
    expected = _newest_by_series(rows)

    # NaN is not equal to itself: compare it by its text.
    def comparable(rows: dict[tuple[int, int, int], tuple[object, ...]]) -> dict[object, object]:
        return {k: (t, repr(v if v is None else float(v)), qc) for k, (t, v, qc) in rows.items()}

    assert comparable(latest) == comparable(expected)
    # A later batch: an older row changes nothing, a newer one and a revision of the newest do.
    series = (sid, pid, 0)
    time = latest[series][0]
    later = [
        ReadingRow(sid, pid, 0, time - timedelta(hours=1), 1.0, 0),
        ReadingRow(sid, pid + 1, 0, latest[(sid, pid + 1, 0)][0], None, 3),
        ReadingRow(sid, pid + 2, 0, T0 + timedelta(days=1), 2.0, 1),
    ]
    await _write(db, later)
    latest = await _latest(db)
    assert latest[(sid, pid, 0)][0] == time
    assert latest[(sid, pid + 1, 0)][1:] == (None, 3)
    assert latest[(sid, pid + 2, 0)] == (T0 + timedelta(days=1), 2.0, 1)


async def test_a_time_without_offset_is_refused_by_name(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "pm25")
    naive = datetime(2026, 11, 1, 8)
    for size in (3, 150):
        rows = [ReadingRow(sid, pid, 0, T0 + timedelta(minutes=m), 1.0, 0) for m in range(size)]
        rows[-1] = rows[-1]._replace(time=naive)
        with pytest.raises(ValueError, match="reading time 2026-11-01T08:00:00 has no UTC offset"):
            async with db.connection() as conn, conn.transaction():
                await write_readings(conn, rows, source_id=1, received_at=NOW)
    assert await _stored(db) == {}


def _applied_in_order(
    stored: dict[_Key, tuple[float | None, int]], rows: list[ReadingRow]
) -> tuple[set[int], set[int], dict[_Key, list[tuple[float | None, int]]]]:
    """docs/conventions.md §2 by hand: duplicates, revisions, replaced values of rows in order."""
    duplicates, revisions = set(), set()
    replaced: dict[_Key, list[tuple[float | None, int]]] = {}
    for position, row in enumerate(rows):
        key, new = _key(row), (row.value, row.qc)
        if key in stored and stored[key] == new:
            duplicates.add(position)
        elif key in stored:
            revisions.add(position)
            replaced.setdefault(key, []).append(stored[key])
        stored[key] = new
    return duplicates, revisions, replaced


@pytest.mark.parametrize(("chunk", "block"), [(50_000, 8_192), (120, 16), (64, 5)])
async def test_a_mixed_replay_sorts_every_row_as_if_applied_in_order(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch, chunk: int, block: int
) -> None:
    import store.readings

    monkeypatch.setattr(store.readings, "CHUNK", chunk)
    monkeypatch.setattr(store.readings, "_BLOCK", block)
    sid, pid = await _ids(db, "gz-a-panyu", "no2")
    first = [
        ReadingRow(sid, pid, period, T0 + timedelta(hours=h), float(h) if h % 9 else None, 0)
        for h in range(150)
        for period in (0, 3600)
    ]
    await _write(db, first)
    again = []
    for n, row in enumerate(first):
        if n % 5 == 1:
            row = row._replace(value=(row.value or 0.0) + 0.5)  # revised value
        elif n % 5 == 2:
            row = row._replace(qc=QC.SUSPECT.code)  # revised QC only
        elif n % 7 == 3:
            row = row._replace(value=None)  # a value withdrawn is a revision too
        again.append(row)
        if n % 13 == 0:
            again.append(row._replace(value=-1.0))  # the same key again within the batch
    again += [
        ReadingRow(sid, pid, 60, T0 + timedelta(minutes=m), float(m), 0) for m in range(40)
    ]  # fresh keys at the end, after every chunk has met a conflict
    again.insert(10, again[-1])  # and a fresh key that repeats later, identical
    expected_dup, expected_rev, replaced = _applied_in_order(
        {_key(r): (r.value, r.qc) for r in first}, again
    )

    result = await _write(db, again, source_id=2)

    assert result.total == len(again) == 365
    assert (result.accepted, len(result.duplicates), len(result.revisions)) == (40, 159, 166)
    assert (result.duplicates, result.revisions) == (expected_dup, expected_rev)
    final = {_key(r): (r.value, r.qc) for r in first} | {_key(r): (r.value, r.qc) for r in again}
    stored = await _stored(db)
    assert {key: (v, qc) for key, (v, qc, _) in stored.items()} == final
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT station_id, parameter_id, period_s, time, value, qc FROM reading_revision"
            " ORDER BY id"
        )
        kept: dict[_Key, list[tuple[float | None, int]]] = {}
        for s, p, per, t, value, qc in await cur.fetchall():
            kept.setdefault((s, p, per, t), []).append((value, qc))
    assert kept == replaced


async def _write_on(conn: Conn, rows: list[ReadingRow], source_id: int) -> WriteResult:
    async with conn.transaction():
        return await write_readings(conn, rows, source_id=source_id, received_at=NOW)


@pytest.mark.parametrize("theirs", [6.0, 6.5])
async def test_a_key_written_meanwhile_by_another_transaction_is_sorted_after_it(
    db: AsyncConnectionPool, theirs: float
) -> None:
    sid, pid = await _ids(db, "dg-w-wanjiang", "ph")
    known = ReadingRow(sid, pid, 3600, T0, 7.1, 0)
    await _write(db, [known])
    ours = ReadingRow(sid, pid, 3600, T0 + timedelta(hours=1), 6.0, 0)
    async with db.connection() as other, db.connection() as mine:
        await other.execute("BEGIN")
        await write_readings(other, [ours._replace(value=theirs)], source_id=3, received_at=NOW)
        # `known` first: the fast path fails at once and the merge, not the COPY, meets `ours`
        # while the other transaction has it uncommitted.
        writing = asyncio.create_task(_write_on(mine, [known, ours], 4))
        await wait_until_blocked(db, mine.info.backend_pid)
        await other.execute("COMMIT")
        result = await asyncio.wait_for(writing, 10)
    if theirs == ours.value:
        assert (result.accepted, result.duplicates, result.revisions) == (0, {0, 1}, set())
        assert (await _stored(db))[_key(ours)] == (6.0, 0, 3)
    else:
        assert (result.accepted, result.duplicates, result.revisions) == (0, {0}, {1})
        assert (await _stored(db))[_key(ours)] == (6.0, 0, 4)
        async with db.connection() as conn:
            history = await revisions_of(
                conn, station_id=sid, parameter_id=pid, period_s=3600, time=ours.time
            )
        assert history == [(6.5, QC.VALID)]


async def test_batches_with_rows_in_common_wait_for_each_other_and_never_deadlock(
    db: AsyncConnectionPool,
) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "pm25")
    first = ReadingRow(sid, pid, 0, T0, 20.0, 0)
    second = ReadingRow(sid, pid, 0, T0 + timedelta(seconds=10), 21.0, 0)
    async with db.connection() as conn, conn.transaction():
        await create_partitions(conn, {month_of(T0)})
    async with db.connection() as other, db.connection() as mine:
        await other.execute("BEGIN")
        await write_readings(other, [first], source_id=3, received_at=NOW)
        # Ours lists `second` first (a device's resend in another order), yet must wait for
        # `first` before it takes `second`: the other transaction then writes `second` freely.
        writing = asyncio.create_task(_write_on(mine, [second, first], 3))
        await wait_until_blocked(db, mine.info.backend_pid)
        await write_readings(other, [second], source_id=3, received_at=NOW)
        await other.execute("COMMIT")
        result = await asyncio.wait_for(writing, 10)
    assert (result.accepted, result.duplicates, result.revisions) == (0, {0, 1}, set())
    stored = await _stored(db)
    assert (stored[_key(first)], stored[_key(second)]) == ((20.0, 0, 3), (21.0, 0, 3))


async def test_a_value_revised_meanwhile_is_kept_before_ours_replaces_it(
    db: AsyncConnectionPool,
) -> None:
    sid, pid = await _ids(db, "dg-w-wanjiang", "nh3n")
    known = ReadingRow(sid, pid, 3600, T0, 0.3, 0)
    original = ReadingRow(sid, pid, 3600, T0 + timedelta(hours=1), 0.40, 0)
    await _write(db, [known, original])
    async with db.connection() as other, db.connection() as mine:
        await other.execute("BEGIN")
        theirs = await write_readings(
            other, [original._replace(value=0.45)], source_id=3, received_at=NOW
        )
        assert theirs.revisions == {0}
        writing = asyncio.create_task(_write_on(mine, [known, original._replace(value=0.5)], 4))
        await wait_until_blocked(db, mine.info.backend_pid)
        await other.execute("COMMIT")
        result = await asyncio.wait_for(writing, 10)
    assert (result.accepted, result.duplicates, result.revisions) == (0, {0}, {1})
    assert (await _stored(db))[_key(original)] == (0.5, 0, 4)
    async with db.connection() as conn:
        history = await revisions_of(
            conn, station_id=sid, parameter_id=pid, period_s=3600, time=original.time
        )
    assert history == [(0.40, QC.VALID), (0.45, QC.VALID)]


async def test_the_merge_leaves_the_callers_planner_settings_as_they_were(
    db: AsyncConnectionPool,
) -> None:
    sid, pid = await _ids(db, "gz-a-huangpu", "o3")
    row = ReadingRow(sid, pid, 0, T0, 80.0, 0)
    await _write(db, [row])
    async with db.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_memoize = off")
        before = await _planner(conn)
        result = await write_readings(conn, [row], source_id=1, received_at=NOW)
        assert result.duplicates == {0}
        assert await _planner(conn) == before == ("on", "off", before[2])


async def _planner(conn: Conn) -> tuple[str, str, str]:
    cur = await conn.execute(
        "SELECT current_setting('enable_mergejoin'), current_setting('enable_memoize'),"
        " current_setting('jit')"
    )
    found = await cur.fetchone()
    assert found is not None
    return found


async def test_quarantine_keeps_what_text_cannot_hold_and_gives_it_back(
    db: AsyncConnectionPool,
) -> None:
    hostile = QuarantineRow(None, "st\x00", "p\ud800", "why \\ \udcff", "a\x00\\x00\udcfe")
    plain = QuarantineRow(None, "gz-a-huangpu", "pm25", "unknown unit 'ppq'", '{"u": "\\u00b5"}')
    async with db.connection() as conn, conn.transaction():
        await quarantine(conn, [hostile, plain], source_id=None, received_at=NOW)
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT escaped, station_code, parameter_code, reason, payload"
            " FROM rejected_reading ORDER BY id"
        )
        assert await cur.fetchall() == [
            (True, "st\\x00", "p\\ud800", "why \\\\ \\xff", "a\\x00\\\\x00\\xfe"),
            (False, "gz-a-huangpu", "pm25", "unknown unit 'ppq'", '{"u": "\\u00b5"}'),
        ]
        back = await rejected_readings(conn)
    assert [(r.station_code, r.parameter_code, r.reason, r.payload) for r in back[::-1]] == [
        (row.station_code, row.parameter_code, row.reason, row.payload) for row in (hostile, plain)
    ]
    assert [r.escaped for r in back[::-1]] == [True, False]


@pytest.mark.parametrize(
    ("array", "sql_type", "values"),
    [
        (BoolArray, "bool", [True, False, None, True]),
        (Int2Array, "int2", [-32768, 0, None, 32767]),
        (Int4Array, "int4", [-(2**31), 7, None, 2**31 - 1]),
        (Int8Array, "int8", [-(2**63), 0, None, 2**63 - 1]),
        (Float8Array, "float8", [-1.5, 0.1, None, 1e300]),
    ],
)
async def test_binary_arrays_reach_the_server_as_their_values(
    db: AsyncConnectionPool, array: type[BinaryArray], sql_type: str, values: list[object]
) -> None:
    missing = np.array([value is None for value in values])
    column = np.array([0 if value is None else value for value in values], dtype=array.kind)
    async with db.connection() as conn:
        cur = await conn.execute(f"SELECT %b::{sql_type}[]", [array.of(column, missing)])
        assert await cur.fetchone() == (values,)
        cur = await conn.execute(f"SELECT %b::{sql_type}[]", [array.of(column[:0])])
        assert await cur.fetchone() == ([],)


async def test_a_statement_alone_sends_no_begin_and_leaves_the_mode_as_it_was(
    db: AsyncConnectionPool,
) -> None:
    idle, busy = psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS
    async with db.connection() as conn:
        assert not conn.autocommit
        async with alone(conn):
            await conn.execute("SELECT 1")
            assert conn.info.transaction_status == idle  # no transaction was opened
        assert not conn.autocommit
        # Within the caller's transaction, the statement is part of it.
        await conn.execute("SELECT 1")
        async with alone(conn):
            await conn.execute("SELECT 2")
            assert conn.info.transaction_status == busy
        await conn.rollback()
        # A statement that fails leaves the connection idle and in a transaction's mode.
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with alone(conn):
                await conn.execute("SELECT 1 / 0")
        assert not conn.autocommit and conn.info.transaction_status == idle
        # A cancelled one: back in a transaction's mode, or busy (the pool discards it).
        with pytest.raises(TimeoutError):
            async with alone(conn):
                await asyncio.wait_for(conn.execute("SELECT pg_sleep(5)"), 0.2)
        assert not conn.autocommit or conn.info.transaction_status != idle
    for _ in range(db.max_size):  # no connection of the pool was left in autocommit
        async with db.connection() as conn:
            assert not conn.autocommit
