"""History QC through the real pipeline and PostgreSQL: flat lines, spikes, audited re-flags."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

import ingest.history
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import IntakeResult, ReadingIn, Rejection
from store.qc import QcFlag, WindowReadings, WindowSpec, qc_audit_entries, reflag_suspect
from store.readings import revisions_of
from store.sources import source_statuses
from tests.conftest import worker_loop

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 25, 0, tzinfo=CST)
PUSH = SourceRef(code="push:test", kind="push")


def _pipeline(pool: AsyncConnectionPool) -> Pipeline:
    return Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)


def _hourly(
    values: Sequence[float | None],
    *,
    start: int = 0,
    parameter: str = "pm25",
    unit: str = "ug/m3",
    qc: QC = QC.VALID,
) -> list[ReadingIn | Rejection]:
    return [
        ReadingIn(
            station="gz-a-huangpu",
            parameter=parameter,
            time=T0 + timedelta(hours=start + i),
            value=value,
            unit=unit,
            period_s=3600,
            qc=qc,
        )
        for i, value in enumerate(values)
    ]


async def _ingest(
    pool: AsyncConnectionPool, pipeline: Pipeline, items: list[ReadingIn | Rejection]
) -> IntakeResult:
    """Ingest, then let a worker's alert loop judge what changed."""
    result = await pipeline.ingest(items, source=PUSH)
    assert sum(result.summary.values()) == len(items)
    await worker_loop(pool, pipeline, clock=lambda: NOW).drain()
    return result


async def _states(pool: AsyncConnectionPool, parameter: str = "pm25") -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT extract(hour FROM r.time AT TIME ZONE 'Asia/Shanghai')::int, r.value, r.qc,"
            " src.code FROM reading r JOIN parameter p ON p.id = r.parameter_id"
            " JOIN source src ON src.id = r.source_id WHERE p.code = %s ORDER BY r.time",
            [parameter],
        )
        return [(h, v, QC.from_code(q).value, s) for h, v, q, s in await cur.fetchall()]


async def _ids(pool: AsyncConnectionPool, parameter: str = "pm25") -> tuple[int, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT s.id, p.id FROM station s, parameter p WHERE s.code = 'gz-a-huangpu'"
            " AND p.code = %s",
            [parameter],
        )
        found = await cur.fetchone()
    assert found is not None
    return found[0], found[1]


async def test_a_spike_stays_valid_until_the_next_reading_shows_it_isolated(
    db: AsyncConnectionPool,
) -> None:
    pipeline = _pipeline(db)
    await _ingest(db, pipeline, _hourly([30.0, 31.0, 150.0]))
    assert [state for _, _, state, _ in await _states(db)] == ["valid"] * 3

    result = await _ingest(db, pipeline, _hourly([32.0], start=3))
    assert result.summary == {"accepted": 1, "duplicate": 0, "revised": 0, "rejected": 0}
    assert await _states(db) == [
        (0, 30.0, "valid", "push:test"),
        (1, 31.0, "valid", "push:test"),
        (2, 150.0, "suspect", "qc"),
        (3, 32.0, "valid", "push:test"),
    ]
    station_id, parameter_id = await _ids(db)
    async with db.connection() as conn:
        before = await revisions_of(
            conn,
            station_id=station_id,
            parameter_id=parameter_id,
            period_s=3600,
            time=T0 + timedelta(hours=2),
        )
        audit = await qc_audit_entries(conn, station_id=station_id)
        statuses = {s.code: (s.accepted, s.revised) for s in await source_statuses(conn)}
    assert before == [(150.0, QC.VALID)]
    assert [(a.check_name, a.value, a.qc_before, a.qc_after, a.replaced_source) for a in audit] == [
        ("spike", 150.0, QC.VALID.code, QC.SUSPECT.code, "push:test")
    ]
    assert audit[0].reason == (
        "isolated spike: 150 ug/m3 between 31 and 32 (a jump of 118, at least 40,"
        " and straight back)"
    )
    assert audit[0].time == T0 + timedelta(hours=2)
    assert audit[0].flagged_at == NOW
    assert statuses == {"push:test": (4, 0), "qc": (0, 1)}


async def test_a_step_change_is_never_hidden_as_a_spike(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    for hour, value in enumerate([30.0, 31.0, 150.0, 152.0, 151.0, 149.0]):
        await _ingest(db, pipeline, _hourly([value], start=hour))
    assert [state for _, _, state, _ in await _states(db)] == ["valid"] * 6
    async with db.connection() as conn:
        assert await qc_audit_entries(conn) == []


async def test_a_spike_is_found_when_the_following_reading_was_already_stored(
    db: AsyncConnectionPool,
) -> None:
    pipeline = _pipeline(db)
    await _ingest(db, pipeline, _hourly([30.0, 31.0]) + _hourly([32.0, 33.0], start=3))
    await _ingest(db, pipeline, _hourly([160.0], start=2))  # late delivery of the missing hour
    assert [(h, state) for h, _, state, _ in await _states(db)] == [
        (0, "valid"),
        (1, "valid"),
        (2, "suspect"),
        (3, "valid"),
        (4, "valid"),
    ]


async def test_a_flat_line_flags_the_whole_run_with_its_history(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    await _ingest(db, pipeline, _hourly([20.0, 35.0, 35.0, 35.0, 35.0, 35.0]))
    assert [state for _, _, state, _ in await _states(db)] == ["valid"] * 6
    await _ingest(db, pipeline, _hourly([35.0], start=6))
    assert [(h, state) for h, _, state, _ in await _states(db)] == [
        (0, "valid"),
        *[(h, "suspect") for h in range(1, 7)],
    ]
    # The sensor stays stuck: each new identical reading is flagged as it arrives.
    await _ingest(db, pipeline, _hourly([35.0], start=7))
    await _ingest(db, pipeline, _hourly([41.0], start=8))
    states = await _states(db)
    assert [(h, state) for h, _, state, _ in states][7:] == [(7, "suspect"), (8, "valid")]
    async with db.connection() as conn:
        audit = await qc_audit_entries(conn)
    assert [(a.time.astimezone(CST).hour, a.check_name) for a in audit] == [
        (h, "flat_line") for h in range(1, 8)
    ]
    assert audit[0].reason == (
        "flat line: 35 ug/m3 unchanged over 6 readings in a row (6 h);"
        " 6 readings over 6 h mean a stuck sensor"
    )
    assert audit[-1].reason == (
        "flat line: 35 ug/m3 unchanged over 7 readings in a row (7 h);"
        " 6 readings over 6 h mean a stuck sensor"
    )


async def test_calm_wind_and_device_states_are_not_flat_lines(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    await _ingest(db, pipeline, _hourly([0.0] * 8, parameter="wind_speed", unit="m/s"))
    await _ingest(db, pipeline, _hourly([35.0] * 8, qc=QC.MAINTENANCE))
    assert {state for _, _, state, _ in await _states(db, "wind_speed")} == {"valid"}
    assert {state for _, _, state, _ in await _states(db)} == {"maintenance"}
    async with db.connection() as conn:
        assert await qc_audit_entries(conn) == []


async def test_device_states_are_no_evidence_for_a_spike(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    await _ingest(db, pipeline, _hourly([30.0, 150.0]))
    await _ingest(db, pipeline, _hourly([31.0], start=2, qc=QC.CALIBRATION))
    assert [state for _, _, state, _ in await _states(db)] == ["valid", "valid", "calibration"]
    # The next valid reading is two steps away and agrees with the one before the jump.
    await _ingest(db, pipeline, _hourly([32.0], start=3))
    assert [state for _, _, state, _ in await _states(db)] == [
        "valid",
        "suspect",
        "calibration",
        "valid",
    ]


async def test_real_time_data_is_judged_by_its_own_spacing(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    moments = [NOW - timedelta(minutes=10) + timedelta(seconds=30 * i) for i in range(8)]
    values = [35.0, 35.0, 35.0, 35.0, 35.0, 35.0, 180.0, 36.0]
    items: list[ReadingIn | Rejection] = [
        ReadingIn(
            station="gz-a-huangpu",
            parameter="pm25",
            time=moment,
            value=value,
            unit="ug/m3",
            period_s=0,
        )
        for moment, value in zip(moments, values, strict=True)
    ]
    await _ingest(db, pipeline, items[:7])
    await _ingest(db, pipeline, items[7:])
    # Six equal values 30 s apart are no stuck sensor; the isolated 180 is an outlier.
    assert [state for _, _, state, _ in await _states(db)] == ["valid"] * 6 + ["suspect", "valid"]


async def test_one_window_query_per_batch(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[WindowSpec]] = []
    fetch = ingest.history.fetch_windows

    async def counting(conn: Any, specs: Sequence[WindowSpec]) -> WindowReadings:
        calls.append(list(specs))
        return await fetch(conn, specs)

    monkeypatch.setattr(ingest.history, "fetch_windows", counting)
    pipeline = _pipeline(db)
    items: list[ReadingIn | Rejection] = []
    for parameter, unit in [("pm25", "ug/m3"), ("pm10", "ug/m3"), ("no2", "ug/m3")]:
        items += _hourly([float(20 + h % 5) for h in range(24)], parameter=parameter, unit=unit)
    items += _hourly([1.0] * 24, parameter="wind_dir", unit="deg")  # no history rules
    result = await _ingest(db, pipeline, items)
    assert result.count("accepted") == 96
    assert [len(specs) for specs in calls] == [3]
    await _ingest(db, pipeline, items)  # a replay: all duplicates, nothing to judge
    assert [len(specs) for specs in calls] == [3]


async def test_the_intake_never_waits_for_history_qc(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    calls: list[int] = []
    fetch = ingest.history.fetch_windows

    async def gated(conn: Any, specs: Sequence[WindowSpec]) -> WindowReadings:
        calls.append(len(specs))
        await gate.wait()
        return await fetch(conn, specs)

    monkeypatch.setattr(ingest.history, "fetch_windows", gated)
    pipeline = _pipeline(db)
    await pipeline.ingest(_hourly([30.0, 150.0]), source=PUSH)
    judging = asyncio.create_task(worker_loop(db, pipeline, clock=lambda: NOW).drain())
    for _ in range(500):  # the loop's round reaches the gate and waits there
        if calls:
            break
        await asyncio.sleep(0.01)
    await pipeline.ingest(_hourly([31.0], start=2), source=PUSH)
    await pipeline.ingest(_hourly([40.0], parameter="pm10", unit="ug/m3"), source=PUSH)
    # Both answered while QC was held up: everything is stored, nothing judged yet.
    assert [state for _, _, state, _ in await _states(db)] == ["valid"] * 3
    gate.set()
    await judging
    await worker_loop(db, pipeline, clock=lambda: NOW).drain()
    # One pass for the first batch, one for the two batches that came while it ran.
    assert calls == [1, 2]
    assert [state for _, _, state, _ in await _states(db)] == ["valid", "suspect", "valid"]


async def test_a_qc_failure_loses_neither_the_intake_nor_the_rollups(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(conn: Any, specs: Sequence[WindowSpec]) -> WindowReadings:
        raise RuntimeError("window query failed")

    monkeypatch.setattr(ingest.history, "fetch_windows", broken)
    result = await _ingest(db, _pipeline(db), _hourly([30.0, 150.0, 31.0]))
    assert result.summary == {"accepted": 3, "duplicate": 0, "revised": 0, "rejected": 0}
    assert [state for _, _, state, _ in await _states(db)] == ["valid"] * 3
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM reading_hourly), (SELECT count(*) FROM series_dirty)"
        )
        assert await cur.fetchone() == (3, 0)


async def test_redelivering_a_flagged_reading_does_not_launder_it(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    items = _hourly([30.0, 150.0, 31.0])
    await _ingest(db, pipeline, items)
    assert [state for _, _, state, _ in await _states(db)] == ["valid", "suspect", "valid"]
    # The station re-sends its hour as valid: the audited re-flag stands, so the replay is a
    # duplicate and leaves no revision behind.
    result = await _ingest(db, pipeline, items[1:2])
    assert result.summary == {"accepted": 0, "duplicate": 1, "revised": 0, "rejected": 0}
    assert [state for _, _, state, _ in await _states(db)] == ["valid", "suspect", "valid"]
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM reading_revision")
        assert await cur.fetchone() == (1,)  # the re-flag's own revision only
    # A corrected value is still a revision.
    corrected = [items[1].model_copy(update={"value": 35.0})]
    result = await _ingest(db, pipeline, corrected)
    assert result.summary == {"accepted": 0, "duplicate": 0, "revised": 1, "rejected": 0}


async def test_a_reflag_skips_a_reading_revised_meanwhile(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    await _ingest(db, pipeline, _hourly([30.0, 40.0, 31.0]))
    station_id, parameter_id = await _ids(db)
    moment = T0 + timedelta(hours=1)
    stale = QcFlag(station_id, parameter_id, 3600, moment, 150.0, "spike", "judged on 150")
    fresh = QcFlag(station_id, parameter_id, 3600, moment, 40.0, "spike", "judged on 40")
    async with db.connection() as conn, conn.transaction():
        assert await reflag_suspect(conn, [stale], source_id=1, at=NOW) == 0
        assert await reflag_suspect(conn, [fresh], source_id=1, at=NOW) == 1
        assert await reflag_suspect(conn, [fresh], source_id=1, at=NOW) == 0
    assert [state for _, _, state, _ in await _states(db)] == ["valid", "suspect", "valid"]
