"""Migrations, seeding, partitions and the idempotent write path against real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from schemas.catalogue import load_catalogue
from schemas.common import QC
from store.catalogue import seed_catalogue, series_ids
from store.migrate import applied_versions, available_migrations, migrate
from store.partitions import create_partitions, list_partitions, month_of
from store.pool import Conn
from store.readings import ReadingRow, revisions_of, write_readings
from tests.conftest import CONFIG_DIR

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


async def test_partitions_are_created_for_old_and_new_periods(db: AsyncConnectionPool) -> None:
    sid, pid = await _ids(db, "dg-a-humen", "o3")
    old = datetime(2003, 2, 10, 4, tzinfo=UTC)
    rows = [ReadingRow(sid, pid, 3600, old, 50.0, 0), ReadingRow(sid, pid, 3600, T0, 60.0, 0)]
    result = await _write(db, rows)
    assert result.accepted == 2
    async with db.connection() as conn:
        names = await list_partitions(conn)
        cur = await conn.execute("SELECT tableoid::regclass::text FROM reading ORDER BY time")
        assert [r[0] for r in await cur.fetchall()] == ["reading_p200302", "reading_p202611"]
    assert {"reading_p200302", "reading_p202611"} <= set(names)


async def test_creating_partitions_twice_creates_nothing(db: AsyncConnectionPool) -> None:
    async with db.connection() as conn:
        async with conn.transaction():
            await create_partitions(conn, {(1999, 12)})
        async with conn.transaction():
            again = await create_partitions(conn, {(1999, 12)})
    assert again == []


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
