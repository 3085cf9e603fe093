"""The demo's history over real PostgreSQL: a short load through the function the demo calls.

Each series gets its hourly means, the rollups equal what the alert loop's rollup code makes of
them, a rerun keeps what is there, the live simulator then re-sends duplicates only, and the
loaded past raises no alert and sends no notification, even under a rule every value trips.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.loop import rebuild_rollups
from core.timeutil import CST
from envlink.history import HISTORY_SOURCE, load_history
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.simulator import SimulatorJob
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from schemas.rules import load_rules
from store.catalogue import read_catalogue
from store.rollups import DirtyKey, mark_dirty
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR, worker_loop
from tests.integration.test_engine import _rule, _rules

# 12:00 in Guangzhou: three whole days before today, and today's first 12 hours.
NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
DAYS = 3
HOURS = DAYS * 24 + 12
LOADED_DAYS = [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]
# Trips on every PM2.5 value above 1 ug/m3: evaluating any loaded hour would raise it.
HAIR_TRIGGER = _rule(
    "pm25_hair_trigger",
    parameter="pm25",
    unit="ug/m3",
    statistic="instant",
    scope={"medium": "air"},
    ladders=[
        {
            "standard": "GB 3095-2026",
            "levels": [{"severity": "warning", "trigger": 1, "clear": 0.5, "basis": "test"}],
        }
    ],
)
ALERT_TABLES = ("alert", "alert_event", "notification", "notification_item", "series_dirty")


async def _load(database_url: str, **options: Any) -> Any:
    return await load_history(database_url, days=DAYS, water_min_samples=1, now=NOW, **options)


async def _rows(pool: AsyncConnectionPool, query: str, *args: object) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), args or None)
        return await cur.fetchall()


async def _counts(pool: AsyncConnectionPool, tables: tuple[str, ...]) -> dict[str, int]:
    return {t: (await _rows(pool, f"SELECT count(*) FROM {t}"))[0][0] for t in tables}


async def _pairs(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        return len((await read_catalogue(conn)).station_parameters)


async def test_every_series_gets_its_hours_and_rollups(
    db: AsyncConnectionPool, database_url: str
) -> None:
    progress: list[tuple[int, int]] = []
    report = await _load(database_url, progress=lambda done, total: progress.append((done, total)))
    pairs = await _pairs(db)
    assert (report.loaded, report.kept) == (LOADED_DAYS, [])
    assert (report.readings, report.hourly, report.daily) == (
        pairs * HOURS,
        pairs * HOURS,
        pairs * 4,
    )
    assert progress == [(0, 4), (4, 4)]
    per_series = await _rows(
        db,
        "SELECT station_id, parameter_id, period_s, count(*), min(time), max(time) FROM reading"
        " GROUP BY 1, 2, 3",
    )
    assert len(per_series) == pairs
    first, last = datetime(2026, 11, 23, tzinfo=CST), datetime(2026, 11, 26, 11, tzinfo=CST)
    assert {row[2:] for row in per_series} == {(3600, HOURS, first, last)}
    hourly = await _rows(
        db, "SELECT count(*), count(DISTINCT (station_id, parameter_id)) FROM reading_hourly"
    )
    assert hourly == [(pairs * HOURS, pairs)]
    daily = await _rows(db, "SELECT day, count(*) FROM reading_daily GROUP BY 1 ORDER BY 1")
    assert daily == [(day, pairs) for day in LOADED_DAYS]
    # Today's 12 hours are too few for an air day (20); whole days have a value.
    air_today = await _rows(
        db,
        "SELECT count(*) FILTER (WHERE d.value IS NULL), count(*) FROM reading_daily d"
        " JOIN parameter p ON p.id = d.parameter_id WHERE p.grp = 'air' AND d.day = %s",
        LOADED_DAYS[-1],
    )
    assert air_today[0][0] == air_today[0][1] > 0
    latest = await _rows(db, "SELECT DISTINCT period_s, time FROM reading_latest")
    assert latest == [(3600, last)]
    source = await _rows(db, "SELECT kind, accepted FROM source WHERE code = %s", HISTORY_SOURCE[0])
    assert source == [(HISTORY_SOURCE[1], pairs * HOURS)]


async def test_the_rollups_are_those_the_alert_loop_computes(
    db: AsyncConnectionPool, database_url: str
) -> None:
    await _load(database_url)
    hourly = "SELECT * FROM reading_hourly ORDER BY 1, 2, 3"
    daily = "SELECT * FROM reading_daily ORDER BY 1, 2, 3"
    loaded = (await _rows(db, hourly), await _rows(db, daily))
    async with db.connection() as conn, conn.transaction():
        await rebuild_rollups(conn, water_min_samples=1, now=NOW)
    rebuilt = (await _rows(db, hourly), await _rows(db, daily))
    for ours, theirs in zip(loaded, rebuilt, strict=True):
        assert len(ours) == len(theirs) > 0
        for mine, computed in zip(ours, theirs, strict=True):
            # Same row but computed_at (last column); sums may differ in the last bit.
            assert mine[:3] == computed[:3]
            for ours_field, their_field in zip(mine[3:-1], computed[3:-1], strict=True):
                if isinstance(their_field, float):
                    assert ours_field == pytest.approx(their_field, rel=1e-12)
                else:
                    assert ours_field == their_field
    faulty = [row for row in loaded[0] if row[8] == "computed"]
    assert faulty and all(row[3:8] == (None, 0, 0, None, None) for row in faulty)


async def test_a_rerun_keeps_the_days_holding_data(
    db: AsyncConnectionPool, database_url: str
) -> None:
    # 24 November already holds a reading, not yet rolled up (its key waits in series_dirty).
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    live = ReadingIn(
        station="gz-a-huangpu", parameter="pm25", time=datetime(2026, 11, 24, 9, tzinfo=CST),
        value=40.0, unit="ug/m3", period_s=0, qc=QC.VALID,
    )  # fmt: skip
    batch: list[ReadingIn | Rejection] = [live]
    assert (await pipeline.ingest(batch, source=SourceRef("test", "test"))).summary["accepted"] == 1
    first = await _load(database_url)
    assert first.loaded == [d for d in LOADED_DAYS if d != date(2026, 11, 24)]
    assert first.kept == [date(2026, 11, 24)]
    stored = await _counts(db, ("reading", "reading_hourly", "reading_daily"))
    again = await _load(database_url)
    assert (again.loaded, again.kept, again.readings) == ([], LOADED_DAYS, 0)
    assert await _counts(db, ("reading", "reading_hourly", "reading_daily")) == stored


async def test_no_day_before_the_earliest_accepted_date_is_loaded(
    db: AsyncConnectionPool, database_url: str
) -> None:
    report = await _load(database_url, earliest=date(2026, 11, 25))
    assert (report.first, report.loaded) == (date(2026, 11, 25), LOADED_DAYS[2:])
    first = await _rows(db, "SELECT min(time) FROM reading")
    assert first == [(datetime(2026, 11, 25, tzinfo=CST),)]


async def test_the_live_simulator_re_sends_the_loaded_hours_as_duplicates(
    db: AsyncConnectionPool, database_url: str
) -> None:
    await _load(database_url)
    pairs = await _pairs(db)
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    job = SimulatorJob(pipeline, interval_s=10, history_hours=24, clock=lambda: NOW)
    result = await job.run()
    assert result.summary == {
        "accepted": pairs,
        "duplicate": pairs * 24,
        "revised": 0,
        "rejected": 0,
    }


async def test_the_loaded_past_raises_no_alert_and_sends_nothing(
    db: AsyncConnectionPool, database_url: str
) -> None:
    async with db.connection() as conn, conn.transaction():
        await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=NOW - timedelta(1))
    await _rules(db, HAIR_TRIGGER)
    await _load(database_url)
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    # A worker's round and sweep right after the load, and an hour later.
    for at in (NOW, NOW + timedelta(hours=1)):
        report = await worker_loop(db, pipeline, clock=lambda at=at: at).process(sweep=True)
        assert (report.claimed, report.swept) == ([], True)
    assert await _counts(db, ALERT_TABLES) == dict.fromkeys(ALERT_TABLES, 0)

    # Had the engine been handed the loaded hours, the hair trigger would have fired.
    rows = await _rows(
        db,
        "SELECT station_id, parameter_id, period_s, time FROM reading r"
        " JOIN parameter p ON p.id = r.parameter_id WHERE p.code = 'pm25' AND r.time >= %s",
        NOW - timedelta(hours=6),
    )
    async with db.connection() as conn, conn.transaction():
        await mark_dirty(conn, [DirtyKey(*row) for row in rows])
    await worker_loop(db, pipeline, clock=lambda: NOW).drain()
    raised = await _rows(db, "SELECT DISTINCT rule_id FROM alert")
    assert ("pm25_hair_trigger",) in raised
