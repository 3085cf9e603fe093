"""Rollups kept from dirty windows over real PostgreSQL: equal to a full recomputation, with the
validity minimums at the edge, reported means winning and the Asia/Shanghai natural day."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from psycopg_pool import AsyncConnectionPool

import alerts.loop as loop_module
from alerts.assessment.water import standing
from alerts.loop import AlertLoop, rebuild_rollups
from core.timeutil import CST
from ingest.history import HistoryQc
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from store.readings import ReadingRow
from store.rollups import Claim, DirtyKey, DirtyRow, claim_dirty, newest_hourly_rollups_within

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
FEED = SourceRef(code="test", kind="test")
DAY0 = datetime(2026, 11, 20, 0, tzinfo=CST)
UNITS = {"pm25": "ug/m3", "o3": "ug/m3", "nh3n": "mg/L", "do": "mg/L"}
HOUR = timedelta(hours=1)


def _pipeline(pool: AsyncConnectionPool) -> Pipeline:
    return Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)


def _loop(pool: AsyncConnectionPool, *, batch: int = 5000, water_min_samples: int = 1) -> AlertLoop:
    """A worker's loop: its history QC re-flags are revisions the rollups must follow."""
    judge = HistoryQc(_pipeline(pool), clock=lambda: NOW).judge
    return AlertLoop(pool, batch=batch, water_min_samples=water_min_samples, judge=judge)


def _item(
    station: str,
    parameter: str,
    time: datetime,
    value: float | None,
    *,
    period_s: int = 0,
    qc: QC = QC.VALID,
) -> ReadingIn:
    return ReadingIn(
        station=station,
        parameter=parameter,
        time=time,
        value=value,
        unit=UNITS[parameter],
        period_s=period_s,
        qc=qc,
    )


async def _ingest(pool: AsyncConnectionPool, items: Iterable[ReadingIn]) -> dict[str, int]:
    batch: list[ReadingIn | Rejection] = list(items)
    pipeline = _pipeline(pool)
    result = await pipeline.ingest(batch, source=FEED)
    assert sum(result.summary.values()) == len(batch)
    return result.summary


async def _query(pool: AsyncConnectionPool, text: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(text.encode())
        return await cur.fetchall()


async def _hourly(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await _query(
        pool,
        "SELECT s.code, p.code, h.hour, h.value, h.samples, h.coverage_s, h.min, h.max, h.origin"
        " FROM reading_hourly h JOIN station s ON s.id = h.station_id"
        " JOIN parameter p ON p.id = h.parameter_id ORDER BY 1, 2, 3",
    )


async def _daily(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await _query(
        pool,
        "SELECT s.code, p.code, d.day, d.value, d.hours, d.min, d.max, d.origin"
        " FROM reading_daily d JOIN station s ON s.id = d.station_id"
        " JOIN parameter p ON p.id = d.parameter_id ORDER BY 1, 2, 3",
    )


def _minutes(hour: datetime, count: int, base: float = 10.0) -> list[ReadingIn]:
    return [
        _item("gz-a-huangpu", "pm25", hour + timedelta(minutes=m), base + m, period_s=60)
        for m in range(count)
    ]


async def test_ingest_marks_stored_readings_dirty_and_nothing_else(db: AsyncConnectionPool) -> None:
    first = [
        _item("gz-a-huangpu", "pm25", DAY0 + HOUR * h, 30.0 + h, period_s=3600) for h in range(3)
    ]
    assert await _ingest(db, first) == {"accepted": 3, "duplicate": 0, "revised": 0, "rejected": 0}
    await _loop(db).drain()
    assert await _query(db, "SELECT count(*) FROM series_dirty") == [(0,)]
    again = [
        first[0],  # duplicate: marks nothing
        _item("gz-a-huangpu", "pm25", DAY0 + HOUR, 33.0, period_s=3600),  # revision
        _item("gz-a-huangpu", "pm25", DAY0 + HOUR * 5, 40.0, period_s=3600),  # new
        _item("gz-a-nowhere", "pm25", DAY0, 40.0),  # quarantined
    ]
    assert await _ingest(db, again) == {"accepted": 1, "duplicate": 1, "revised": 1, "rejected": 1}
    dirty = await _query(
        db, "SELECT station_id, parameter_id, period_s, time FROM series_dirty ORDER BY time"
    )
    assert [(row[2], row[3]) for row in dirty] == [(3600, DAY0 + HOUR), (3600, DAY0 + HOUR * 5)]


async def test_a_claim_reads_the_readings_stored_under_its_keys_now(
    db: AsyncConnectionPool,
) -> None:
    """Claimed with the readings stored now, as history QC judges them: a key queued twice (the
    new reading, then its revision) comes back once with the revised value; a reading between
    claimed ones but not queued does not come back; a key whose reading is gone comes back with
    none."""
    moment = DAY0 + HOUR * 3
    between, later = moment + timedelta(minutes=10), moment + timedelta(minutes=20)
    await _ingest(db, [_item("gz-a-huangpu", "pm25", between, 31.0)])
    await _loop(db).drain()
    await _ingest(db, [_item("gz-a-huangpu", "pm25", moment, 30.0)])
    await _ingest(db, [_item("gz-a-huangpu", "pm25", moment, 33.0, qc=QC.SUSPECT)])
    await _ingest(db, [_item("gz-a-huangpu", "pm25", later, 32.0)])
    ((station_id, parameter_id),) = await _query(
        db,
        "SELECT station_id, parameter_id FROM series_dirty GROUP BY 1, 2",
    )
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO series_dirty (station_id, parameter_id, period_s, time)"
            " VALUES (%s, %s, 0, %s)",
            [station_id, parameter_id, moment + HOUR],
        )
        claim = await claim_dirty(conn, limit=10, stored=True)
        plain = await claim_dirty(conn, limit=10)
    key = DirtyKey(station_id, parameter_id, 0, moment)
    last = DirtyKey(station_id, parameter_id, 0, later)
    gone = DirtyKey(station_id, parameter_id, 0, moment + HOUR)
    assert sorted(claim.rows, key=lambda row: (row.key.time, row.qc is None)) == [
        DirtyRow(key, 30.0, QC.VALID.code),
        DirtyRow(key, None, None),
        DirtyRow(last, 32.0, QC.VALID.code),
        DirtyRow(gone, None, None),
    ]
    assert sorted(claim.stored) == [
        ReadingRow(*key, 33.0, QC.SUSPECT.code),
        ReadingRow(*last, 32.0, QC.VALID.code),
    ]
    assert plain == Claim([], [])


async def test_hourly_mean_needs_45_minutes(db: AsyncConnectionPool) -> None:
    short, enough = DAY0 + HOUR * 8, DAY0 + HOUR * 9
    await _ingest(db, _minutes(short, 44) + _minutes(enough, 45))
    await _loop(db).drain()
    assert await _hourly(db) == [
        ("gz-a-huangpu", "pm25", short, None, 44, 2640, None, None, "computed"),
        ("gz-a-huangpu", "pm25", enough, 32.0, 45, 2700, 10.0, 54.0, "computed"),
    ]


async def test_reported_mean_wins_and_a_revision_to_invalid_falls_back(
    db: AsyncConnectionPool,
) -> None:
    hour = DAY0 + HOUR * 8
    await _ingest(
        db, [*_minutes(hour, 50), _item("gz-a-huangpu", "pm25", hour, 61.0, period_s=3600)]
    )
    loop = _loop(db)
    await loop.drain()
    assert await _hourly(db) == [
        ("gz-a-huangpu", "pm25", hour, 61.0, 1, 3600, 61.0, 61.0, "reported")
    ]
    revised = _item("gz-a-huangpu", "pm25", hour, 61.0, period_s=3600, qc=QC.MAINTENANCE)
    assert (await _ingest(db, [revised]))["revised"] == 1
    await loop.drain()
    assert await _hourly(db) == [
        ("gz-a-huangpu", "pm25", hour, 34.5, 50, 3000, 10.0, 59.0, "computed")
    ]


async def test_natural_day_is_asia_shanghai_and_needs_20_hours(db: AsyncConnectionPool) -> None:
    # 2026-11-21 +08:00 runs from 2026-11-20T16:00Z: its first eight hours are the UTC 20th.
    day = DAY0 + timedelta(days=1)
    hours = [
        _item("gz-a-huangpu", "pm25", day + HOUR * h, 40.0 + (h % 2), period_s=3600)
        for h in range(19)
    ]
    evening = _item("gz-a-huangpu", "pm25", day - timedelta(minutes=30), 500.0, period_s=3600)
    await _ingest(db, [*hours, evening])
    loop = _loop(db)
    await loop.drain()
    assert await _daily(db) == [
        ("gz-a-huangpu", "pm25", date(2026, 11, 20), None, 1, None, None, "computed"),
        ("gz-a-huangpu", "pm25", date(2026, 11, 21), None, 19, None, None, "computed"),
    ]
    # The 20th valid hour arrives late (23:00-24:00 +08:00): now the day has a mean.
    await _ingest(db, [_item("gz-a-huangpu", "pm25", day + HOUR * 23, 40.5, period_s=3600)])
    await loop.drain()
    assert (await _daily(db))[1] == (
        "gz-a-huangpu",
        "pm25",
        date(2026, 11, 21),
        (sum(40.0 + (h % 2) for h in range(19)) + 40.5) / 20,
        20,
        40.0,
        41.0,
        "computed",
    )


async def test_reported_daily_mean_wins(db: AsyncConnectionPool) -> None:
    day = DAY0 + timedelta(days=2)
    await _ingest(
        db,
        [
            *[
                _item("gz-a-huangpu", "pm25", day + HOUR * h, 40.0 + h % 3, period_s=3600)
                for h in range(24)
            ],
            _item("gz-a-huangpu", "pm25", day, 77.0, period_s=86400),
        ],
    )
    await _loop(db).drain()
    assert await _daily(db) == [
        ("gz-a-huangpu", "pm25", date(2026, 11, 22), 77.0, 24, 77.0, 77.0, "reported")
    ]


async def test_water_day_is_the_mean_of_its_valid_samples(db: AsyncConnectionPool) -> None:
    samples = [0.4, 0.6, 0.9, 0.5, 0.7, 0.3]
    items = [_item("gz-w-dadun", "nh3n", DAY0 + HOUR * (4 * k), v) for k, v in enumerate(samples)]
    items[5] = _item("gz-w-dadun", "nh3n", DAY0 + HOUR * 20, 9.0, qc=QC.CALIBRATION)
    await _ingest(db, items)
    await _loop(db).drain()
    assert await _daily(db) == [
        ("gz-w-dadun", "nh3n", date(2026, 11, 20), sum(samples[:5]) / 5, 5, 0.4, 0.9, "computed")
    ]
    # Two required: a day with one valid sample is insufficient data.
    await _ingest(db, [_item("gz-w-dadun", "nh3n", DAY0 + timedelta(days=1), 0.5)])
    await _loop(db, water_min_samples=2).drain()
    assert (await _daily(db))[1] == (
        "gz-w-dadun",
        "nh3n",
        date(2026, 11, 21),
        None,
        1,
        None,
        None,
        "computed",
    )


def _random_readings(rng: random.Random) -> list[ReadingIn]:
    """Three days of four series: minute and real-time data, reported means, mixed QC."""

    def qc() -> QC:
        return rng.choices(
            [QC.VALID, QC.SUSPECT, QC.BELOW_DETECTION, QC.MAINTENANCE, QC.INVALID],
            [85, 4, 4, 4, 3],
        )[0]

    items: list[ReadingIn] = []
    for h in range(72):
        hour = DAY0 + HOUR * h
        # Minute data in a third of the hours keeps the test fast; the edge is 45 minutes.
        if rng.random() < 0.3:
            minutes = rng.sample(range(60), rng.randint(40, 50))
            items += [
                _item(
                    "gz-a-huangpu",
                    "pm25",
                    hour + timedelta(minutes=m),
                    round(rng.uniform(20, 60), 1),
                    period_s=60,
                    qc=qc(),
                )
                for m in minutes
            ]
        if rng.random() < 0.6:
            items.append(
                _item("gz-a-huangpu", "pm25", hour, rng.uniform(20, 60), period_s=3600, qc=qc())
            )
        if rng.random() < 0.9:
            moment = hour + timedelta(minutes=rng.randrange(60))
            items.append(_item("gz-a-huangpu", "o3", moment, rng.uniform(40, 90), qc=qc()))
        if rng.random() < 0.9:
            items.append(_item("gz-w-dadun", "do", hour, rng.uniform(5, 8), qc=qc()))
        if rng.random() < 0.2:
            items.append(_item("gz-w-dadun", "do", hour, rng.uniform(5, 8), period_s=3600, qc=qc()))
        if h % 4 == 0 and rng.random() < 0.9:
            items.append(_item("gz-w-dadun", "nh3n", hour, rng.uniform(0.2, 1.2), qc=qc()))
    for d in range(3):
        if rng.random() < 0.5:
            day = DAY0 + timedelta(days=d)
            items.append(
                _item("gz-w-dadun", "nh3n", day, rng.uniform(0.2, 1.2), period_s=86400, qc=qc())
            )
            items.append(
                _item("gz-a-huangpu", "pm25", day, rng.uniform(20, 60), period_s=86400, qc=qc())
            )
    return items


Row = tuple[Any, ...]


def _oracle(
    readings: list[Row], intervals: dict[tuple[int, int], int], water: set[int]
) -> tuple[dict[Row, Row], dict[Row, Row]]:
    """The rollups straight from the rules, written independently of alerts/rollups.py."""
    usable = {QC.VALID.code, QC.BELOW_DETECTION.code}
    by_hour: defaultdict[tuple[int, int, datetime], list[tuple[int, float | None, int]]]
    by_hour = defaultdict(list)
    reported_day: dict[tuple[int, int, date], tuple[float | None, int]] = {}
    for sid, pid, period, time, value, qc in readings:
        if period == 86400:
            reported_day[(sid, pid, time.astimezone(CST).date())] = (value, qc)
            continue
        hour = time.replace(minute=0, second=0, microsecond=0)
        by_hour[(sid, pid, hour)].append((period, value, qc))
    hourly: dict[Row, Row] = {}
    for (sid, pid, hour), rows in by_hour.items():
        good = [(p, v) for p, v, q in rows if q in usable and v is not None]
        reported = [v for p, v in good if p == 3600]
        if reported:
            hourly[(sid, pid, hour)] = (reported[0], 1, 3600, reported[0], reported[0], "reported")
            continue
        minute = [v for p, v in good if p == 60]
        real_time = [v for p, v in good if p == 0]
        minute_cover = min(len(minute) * 60, 3600)
        real_cover = min(len(real_time) * intervals[(sid, pid)], 3600)
        chosen, cover = (minute, minute_cover)
        if real_time and (not minute or real_cover > minute_cover):
            chosen, cover = (real_time, real_cover)
        if chosen and (pid in water or cover >= 2700):
            mean = sum(chosen) / len(chosen)
            hourly[(sid, pid, hour)] = (
                mean,
                len(chosen),
                cover,
                min(chosen),
                max(chosen),
                "computed",
            )
        else:
            hourly[(sid, pid, hour)] = (None, len(chosen), cover, None, None, "computed")
    days: defaultdict[tuple[int, int, date], list[Row]] = defaultdict(list)
    for (sid, pid, hour), row in hourly.items():
        days[(sid, pid, hour.astimezone(CST).date())].append(row)
    for key in reported_day:
        days.setdefault(key, [])
    daily: dict[Row, Row] = {}
    for (sid, pid, day), rows in days.items():
        valid = [r for r in rows if r[0] is not None]
        count = sum(int(r[1]) for r in valid) if pid in water else len(valid)
        value, qc = reported_day.get((sid, pid, day), (None, -1))
        if value is not None and qc in usable:
            daily[(sid, pid, day)] = (value, count, value, value, "reported")
        elif pid in water and count >= 1:
            total = sum(float(r[0]) * int(r[1]) for r in valid)
            low = min(float(r[3]) for r in valid)
            high = max(float(r[4]) for r in valid)
            daily[(sid, pid, day)] = (total / count, count, low, high, "computed")
        elif pid not in water and count >= 20:
            means = [float(r[0]) for r in valid]
            daily[(sid, pid, day)] = (sum(means) / count, count, min(means), max(means), "computed")
        else:
            daily[(sid, pid, day)] = (None, count, None, None, "computed")
    return hourly, daily


def _close(left: Row, right: Row) -> bool:
    return len(left) == len(right) and all(
        math.isclose(a, b, rel_tol=1e-12)
        if isinstance(a, float) and isinstance(b, float)
        else a == b
        for a, b in zip(left, right, strict=True)
    )


async def test_incremental_rollups_equal_a_full_recomputation(db: AsyncConnectionPool) -> None:
    rng = random.Random(20261120)
    items = _random_readings(rng)
    rng.shuffle(items)  # late data: hours arrive in any order, days complete late
    loop = _loop(db, batch=97)
    delivered = 0
    while delivered < len(items):
        size = rng.randint(1, 400)
        await _ingest(db, items[delivered : delivered + size])
        delivered += size
        if rng.random() < 0.6:
            await loop.drain()
    # Revisions (value or QC) and re-deliveries, interleaved with rounds.
    changed = []
    for item in rng.sample(items, len(items) // 8):
        if rng.random() < 0.5:
            changed.append(
                item.model_copy(update={"qc": QC.VALID if item.qc != QC.VALID else QC.FAULT})
            )
        else:
            changed.append(item.model_copy(update={"value": (item.value or 0.0) + 1.5}))
    resent = rng.sample(items, len(items) // 20)
    again = changed + resent
    rng.shuffle(again)
    counts = {"accepted": 0, "duplicate": 0, "revised": 0, "rejected": 0}
    for start in range(0, len(again), 150):
        summary = await _ingest(db, again[start : start + 150])
        counts = {k: counts[k] + summary[k] for k in counts}
        if start % 300 == 0:
            await loop.drain()
    assert counts["rejected"] == 0
    await loop.drain()
    assert await _query(db, "SELECT count(*) FROM series_dirty") == [(0,)]

    incremental_hourly, incremental_daily = await _hourly(db), await _daily(db)
    async with db.connection() as conn, conn.transaction():
        hours = await rebuild_rollups(conn, water_min_samples=1, now=NOW, chunk=500)
    assert hours == len(incremental_hourly)
    assert await _hourly(db) == incremental_hourly
    assert await _daily(db) == incremental_daily

    readings = await _query(
        db, "SELECT station_id, parameter_id, period_s, time, value, qc FROM reading"
    )
    links = await _query(db, "SELECT station_id, parameter_id, interval_s FROM station_parameter")
    water_ids = await _query(db, "SELECT id FROM parameter WHERE grp IN ('water', 'lab')")
    hourly, daily = _oracle(readings, {(s, p): i for s, p, i in links}, {p for (p,) in water_ids})
    stored_hourly = await _query(
        db,
        "SELECT station_id, parameter_id, hour, value, samples, coverage_s, min, max, origin"
        " FROM reading_hourly",
    )
    stored_daily = await _query(
        db,
        "SELECT station_id, parameter_id, day, value, hours, min, max, origin FROM reading_daily",
    )
    assert len(stored_hourly) == len(hourly) and len(stored_daily) == len(daily)
    for row in stored_hourly:
        assert _close(row[3:], hourly[row[:3]]), row
    for row in stored_daily:
        assert _close(row[3:], daily[row[:3]]), row
    # The random data did exercise every rule: both origins, both sides of each minimum.
    origins = {row[8] for row in stored_hourly} | {row[7] for row in stored_daily}
    assert origins == {"reported", "computed"}
    assert {row[3] is None for row in stored_hourly} == {True, False}
    assert {row[3] is None for row in stored_daily} == {True, False}


async def test_a_qc_reflag_after_intake_reaches_the_rollups(db: AsyncConnectionPool) -> None:
    values = [30.0, 31.0, 99.0, 32.0, 30.0, 31.0]
    items = [
        _item("gz-a-huangpu", "pm25", DAY0 + HOUR * h, v, period_s=3600)
        for h, v in enumerate(values)
    ]
    loop = _loop(db)
    await _ingest(db, items[:3])
    await loop.drain()
    assert (await _hourly(db))[2][3:5] == (99.0, 1)
    # The readings after it show hour 2 was an isolated spike: the loop's QC re-flags it as
    # suspect and rolls hour 2 up again in the same round, although no intake touched it now.
    await _ingest(db, items[3:])
    assert await _query(db, "SELECT count(*) FROM qc_audit") == [(0,)]
    await loop.drain()
    assert await _query(db, "SELECT count(*) FROM qc_audit") == [(1,)]
    spike = (await _hourly(db))[2]
    assert spike == ("gz-a-huangpu", "pm25", DAY0 + HOUR * 2, None, 0, 0, None, None, "computed")


_ALL_HOURLY = (
    "SELECT station_id, parameter_id, hour, value, samples, coverage_s, min, max, origin,"
    " rt_samples, rt_sum, rt_min, rt_max, rt_last, minute_samples, minute_sum, minute_min,"
    " minute_max, minute_last FROM reading_hourly ORDER BY 1, 2, 3"
)


def _count_rereads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The hours the alert loop rereads from their readings, as it rereads them."""
    reread: list[Any] = []
    hour_readings = loop_module.hour_readings

    async def counting(conn: Any, hours: Any) -> Any:
        reread.extend(hours)
        return await hour_readings(conn, hours)

    monkeypatch.setattr(loop_module, "hour_readings", counting)
    return reread


async def test_extended_hours_equal_a_recomputation_bit_for_bit(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random interleavings of new readings (mostly in time order, some late), revisions and
    QC re-flags, rolled up round by round (rounds that leave keys queued among them): the
    stored hours, running totals included, and days are exactly what a full recomputation
    gives, and hours were both extended and reread many times."""
    recomputed = _count_rereads(monkeypatch)
    extended: list[Any] = []
    extend = loop_module.extended_hour

    def extending(*args: Any, **kwargs: Any) -> Any:
        row = extend(*args, **kwargs)
        extended.extend([row] if row is not None else [])
        return row

    monkeypatch.setattr(loop_module, "extended_hour", extending)
    rng = random.Random(20261204)

    def qc() -> QC:
        return rng.choices([QC.VALID, QC.SUSPECT, QC.BELOW_DETECTION, QC.INVALID], [90, 4, 3, 3])[0]

    def value(base: float) -> float | None:
        if rng.random() < 0.02:
            return None
        if rng.random() < 0.01:
            return base * 8  # an isolated spike: history QC may re-flag it
        return rng.uniform(0.8, 1.2) * base

    stream: list[ReadingIn] = []
    for step in range(6 * 120):  # six hours, a real-time sample every 30 s
        moment = DAY0 + timedelta(seconds=30 * step)
        stream.append(_item("gz-a-huangpu", "pm25", moment, value(35.0), qc=qc()))
        stream.append(_item("gz-a-huangpu", "o3", moment, value(60.0), qc=qc()))
        if step % 2 == 0 and (step // 120) % 2 == 1:  # minute data in every other hour
            stream.append(_item("gz-a-huangpu", "pm25", moment, value(35.0), period_s=60, qc=qc()))
        if step % 40 == 0:
            stream.append(_item("gz-w-dadun", "do", moment, value(6.5), qc=qc()))
    held = [item for item in stream if rng.random() < 0.02]  # late: sent at random moments
    late = set(map(id, held))
    in_order = [item for item in stream if id(item) not in late]
    sent: list[ReadingIn] = []
    loop = _loop(db, batch=rng.choice([20, 50, 200]))
    counts = {"accepted": 0, "duplicate": 0, "revised": 0, "rejected": 0}
    while in_order or held:
        choice = rng.random()
        if choice < 0.9 and in_order:
            size = rng.randint(1, 40)
            batch, in_order = in_order[:size], in_order[size:]
        elif choice < 0.95 and held:
            batch = [held.pop(rng.randrange(len(held)))]
        elif sent:
            batch = [
                item.model_copy(update={"value": (item.value or 1.0) * 1.25})
                if rng.random() < 0.5
                else item.model_copy(update={"qc": QC.INVALID if item.qc == QC.VALID else QC.VALID})
                for item in rng.sample(sent, min(len(sent), rng.randint(1, 5)))
            ]
        else:
            continue
        summary = await _ingest(db, batch)
        counts = {k: counts[k] + summary[k] for k in counts}
        sent += [item for item in batch if item in stream]
        if rng.random() < 0.4:
            # A single round leaves keys queued whose readings its recomputations already see.
            await (loop.drain() if rng.random() < 0.3 else loop.process())
    await loop.drain()
    assert counts["rejected"] == 0 and counts["revised"] >= 10
    assert (await _query(db, "SELECT count(*) FROM qc_audit"))[0][0] > 0

    incremental_hourly = await _query(db, _ALL_HOURLY)
    incremental_daily = await _daily(db)
    assert incremental_hourly and all(row[9] is not None for row in incremental_hourly)
    reread_hours, extended_hours = len(recomputed), len(extended)
    async with db.connection() as conn, conn.transaction():
        await rebuild_rollups(conn, water_min_samples=1, now=NOW)
    assert await _query(db, _ALL_HOURLY) == incremental_hourly
    assert await _daily(db) == incremental_daily
    # Both paths ran many times.
    assert reread_hours >= 20 and extended_hours >= 20, (reread_hours, extended_hours)


async def test_a_recomputed_hour_leaves_readings_still_queued_to_extend_it(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revision recomputes its hour while newer readings of it wait in the queue: it counts
    only up to what the hour had taken in, so the queued ones then extend it, not reread it."""
    reread = _count_rereads(monkeypatch)
    hour = DAY0 + HOUR * 10

    def sample(k: int, value: float) -> ReadingIn:
        return _item("gz-a-huangpu", "pm25", hour + timedelta(seconds=60 * k), value)

    loop = AlertLoop(db, batch=1)
    await _ingest(db, [sample(k, 30.0 + k) for k in range(10)])
    await loop.drain()
    await _ingest(db, [sample(5, 90.0)])  # a revision, queued first
    await _ingest(db, [sample(k, 30.0 + k) for k in range(10, 20)])
    reread.clear()
    assert len((await loop.process()).claimed) == 1
    assert len(reread) == 1  # the revision's hour, read up to minute 9
    (row,) = await _query(db, "SELECT rt_samples, rt_last FROM reading_hourly")
    assert row == (10, hour + timedelta(minutes=9))
    reread.clear()
    assert len(await loop.drain()) == 10
    assert reread == []  # minutes 10-19 extended the hour
    incremental = await _query(db, _ALL_HOURLY)
    assert incremental[0][9:11] == (20, Decimal(sum(30 + k for k in range(20)) + 90 - 35))
    async with db.connection() as conn, conn.transaction():
        await rebuild_rollups(conn, water_min_samples=1, now=NOW)
    assert await _query(db, _ALL_HOURLY) == incremental


def _sample_stands(
    rows: Iterable[tuple[datetime, float | None]], hour: datetime, hours: int
) -> tuple[float | None, datetime | None, bool]:
    """What stands in `hour`'s sample of a series of hourly rollups (hour, value), with an
    interval of `hours` hours: the value, the hour it is from, and whether any was received."""
    first = hour - (hours - 1) * HOUR
    values, held = np.full(hours, np.nan), np.zeros(hours, dtype=bool)
    for time, value in rows:
        slot = (time - first) // HOUR
        if 0 <= slot < hours:
            held[slot] = True
            values[slot] = np.nan if value is None else value
    stands = standing(values, held, hours=hours)
    source = int(stands.source[-1])
    value = float(stands.values[-1])
    return (
        None if math.isnan(value) else value,
        None if source < 0 else first + source * HOUR,
        bool(stands.received[-1]),
    )


async def test_the_newest_rollups_of_a_window_decide_its_sample_as_every_hour_of_it_does(
    db: AsyncConnectionPool,
) -> None:
    """A sample reads each series' newest rollup and newest valid rollup of its interval: what
    stands is what stands over every hourly rollup of the interval (random series of gaps and
    insufficient hours, intervals of 1 to 720 hours, rollups on both sides of the window)."""
    random_ = random.Random(3838)
    hour = datetime(2026, 11, 20, 12, tzinfo=UTC)
    series = await _query(
        db, "SELECT s.id, p.id FROM station s CROSS JOIN parameter p ORDER BY 1, 2 LIMIT 60"
    )
    windows: list[tuple[int, int, int]] = []
    stored: dict[tuple[int, int], list[tuple[datetime, float | None]]] = defaultdict(list)
    for index, (station_id, parameter_id) in enumerate(series):
        hours = (1, 4, 24, 720)[index % 4]
        windows.append((station_id, parameter_id, hours * 3600))
        kept = random_.choice((0.0, 0.05, 0.5, 1.0))  # a share of the hours with a rollup
        insufficient = random_.choice((0.0, 0.3, 1.0))  # of those, a share without a value
        for back in range(-2, hours + 3):
            if random_.random() < kept:
                value = None if random_.random() < insufficient else random_.uniform(0, 10)
                stored[(station_id, parameter_id)].append((hour - back * HOUR, value))
    async with db.connection() as conn:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO reading_hourly (station_id, parameter_id, hour, value, samples,"
                " coverage_s, min, max, origin, computed_at)"
                " VALUES (%s, %s, %s, %s, 1, 3600, %s, %s, 'computed', %s)",
                [
                    (station_id, parameter_id, time, value, value, value, NOW)
                    for (station_id, parameter_id), rows in stored.items()
                    for time, value in rows
                ],
            )
        newest = await newest_hourly_rollups_within(conn, hour=hour, windows=windows)
    read: dict[tuple[int, int], list[tuple[datetime, float | None]]] = defaultdict(list)
    for row in newest:
        read[(row.station_id, row.parameter_id)].append((row.hour, row.value))
    assert newest == sorted(newest, key=lambda row: (row.station_id, row.parameter_id, row.hour))
    outcomes = set()
    for station_id, parameter_id, window_s in windows:
        hours = window_s // 3600
        every = _sample_stands(stored[(station_id, parameter_id)], hour, hours)
        assert _sample_stands(read[(station_id, parameter_id)], hour, hours) == every
        assert len(read[(station_id, parameter_id)]) <= 2
        outcomes.add((every[0] is not None, every[2]))
    # Valid values, insufficient data and nothing received all occurred.
    assert outcomes == {(True, True), (False, True), (False, False)}
