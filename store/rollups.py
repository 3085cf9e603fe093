"""Rollups: the dirty-window queue, hourly and daily rollup rows, and the series the API reads.

Ingest marks the keys it stored as dirty (a new reading with its value and QC) and notifies
`envlink_readings` in its own transaction; the alert loop claims dirty keys, brings the rollups
of their hours and days up to date, and deletes the keys in one transaction of its own
(docs/architecture.md, store/).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from psycopg.rows import args_row, class_row

from store.arrays import (
    PG_EPOCH_UNIX_US,
    Float8Array,
    Int2Array,
    Int4Array,
    TimeColumns,
    TimestamptzArray,
    fetch_records,
    micros,
    unix_time,
)
from store.coordination import READINGS_CHANNEL, SWEEP_LOCK, rollup_lock_key
from store.pool import Conn, alone
from store.readings import ReadingRow

RowT = TypeVar("RowT")


class ReadingKey(Protocol):
    """Anything carrying a reading's key, such as store.readings.ReadingRow."""

    @property
    def station_id(self) -> int: ...
    @property
    def parameter_id(self) -> int: ...
    @property
    def period_s(self) -> int: ...
    @property
    def time(self) -> datetime: ...


class NewReading(ReadingKey, Protocol):
    """A reading just inserted, such as store.readings.ReadingRow."""

    @property
    def value(self) -> float | None: ...
    @property
    def qc(self) -> int: ...


class DirtyKey(NamedTuple):
    """The key of a stored reading whose hour and day need their rollups brought up to date."""

    station_id: int
    parameter_id: int
    period_s: int
    time: datetime


class DirtyRow(NamedTuple):
    """A claimed dirty key; for a new reading, its value and QC as inserted (qc None: a change
    of a stored reading, or a key queued without them)."""

    key: DirtyKey
    value: float | None
    qc: int | None


# Revisions first, then new readings: one statement, and with `notify` the NOTIFY in it.
_MARK_DIRTY = """
INSERT INTO series_dirty (station_id, parameter_id, period_s, time, value, qc)
SELECT * FROM unnest(%(station)s::int4[], %(parameter)s::int2[], %(period)s::int4[],
                     %(time)s::timestamptz[], %(value)s::float8[], %(qc)s::int2[])
"""
_MARK_DIRTY_AND_NOTIFY = f"""
WITH queued AS ({_MARK_DIRTY})
SELECT pg_notify('{READINGS_CHANNEL}', '')
"""


async def mark_dirty(
    conn: Conn,
    rows: Sequence[ReadingKey],
    *,
    new: Sequence[NewReading] = (),
    notify: bool = False,
) -> None:
    """Queue the hours and days of these readings for their rollups: one statement per batch.

    `rows` changed readings already stored (revisions), whose hours are recomputed; `new` are
    readings inserted now, queued with their value and QC so that their hours can be extended.
    With `notify`, the alert loops are woken when the caller's transaction commits.
    """
    if not rows and not new:
        return
    keys = [*rows, *new]
    changed = len(rows)
    values = np.array([None] * changed + [reading.value for reading in new], dtype=np.float64)
    # numpy turns None into NaN: only those positions need a look at the Python value.
    no_value = np.zeros(len(keys), dtype=np.bool_)
    candidates = np.flatnonzero(np.isnan(values))
    no_value[candidates] = [
        index < changed or new[index - changed].value is None for index in candidates.tolist()
    ]
    no_qc = np.arange(len(keys)) < changed
    statement = _MARK_DIRTY_AND_NOTIFY if notify else _MARK_DIRTY
    await conn.execute(
        statement.encode(),
        {
            "station": Int4Array.of(np.array([key.station_id for key in keys], dtype=np.int32)),
            "parameter": Int2Array.of(np.array([key.parameter_id for key in keys], dtype=np.int16)),
            "period": Int4Array.of(np.array([key.period_s for key in keys], dtype=np.int32)),
            "time": TimestamptzArray.of(np.array(micros(key.time for key in keys), dtype=np.int64)),
            "value": Float8Array.of(values, no_value),
            "qc": Int2Array.of(
                np.array([0] * changed + [reading.qc for reading in new], dtype=np.int16), no_qc
            ),
        },
    )


# The rows are never updated, so a locked row keeps its ctid until this statement deletes it.
_CLAIM = """
DELETE FROM series_dirty
WHERE ctid = ANY(ARRAY(SELECT ctid FROM series_dirty LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
RETURNING station_id, parameter_id, period_s, time, value, qc
"""
# The same, followed by the readings stored under the claimed keys now, in the same round trip:
# reading them afterwards meant sending every key back to the server. The lookups go an hour of
# a series at a time, one index range scan over its claimed times (so at worst over the hour's
# readings): a LATERAL lookup per key cost twice as much on TimescaleDB, where each rescan of
# the hypertable excludes its chunks anew. A key is in one hour, so each reading comes once;
# the two parts are told apart by the first column, not joined (the planner cannot know how
# many rows either holds).
_CLAIM_STORED = """
WITH claimed AS (
    DELETE FROM series_dirty
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM series_dirty LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
    RETURNING station_id, parameter_id, period_s, time, value, qc
), spans AS (
    SELECT station_id, parameter_id, period_s, array_agg(time) AS times, min(time) AS first,
           max(time) AS last
    FROM claimed GROUP BY station_id, parameter_id, period_s, date_trunc('hour', time)
)
SELECT false, station_id, parameter_id, period_s, time, value, qc FROM claimed
UNION ALL
SELECT true, r.* FROM spans s
CROSS JOIN LATERAL (
    SELECT station_id, parameter_id, period_s, time, value, qc FROM reading
    WHERE station_id = s.station_id AND parameter_id = s.parameter_id
      AND period_s = s.period_s AND time >= s.first AND time <= s.last
      AND time = ANY(s.times)
    OFFSET 0
) r
"""


class Claim(NamedTuple):
    """Dirty keys a round took, and (when asked for) the readings stored under them now."""

    rows: list[DirtyRow]
    stored: list[ReadingRow]  # each key once; none for a key whose reading is gone


async def claim_dirty(conn: Conn, *, limit: int, stored: bool = False) -> Claim:
    """Take up to `limit` dirty keys no other transaction holds; they return if this one aborts.

    With `stored`, the claim also reads the readings stored under the keys (as history QC
    judges them).
    """
    if not stored:
        cur = await conn.execute(_CLAIM.encode(), {"limit": limit})
        return Claim(
            [
                DirtyRow(DirtyKey(s, p, period, t), v, q)
                for s, p, period, t, v, q in await cur.fetchall()
            ],
            [],
        )
    # Binary results: tens of thousands of rows load faster than from text.
    async with conn.cursor(binary=True) as cur:
        await cur.execute(_CLAIM_STORED.encode(), {"limit": limit})
        fetched = await cur.fetchall()
    rows: list[DirtyRow] = []
    found: list[ReadingRow] = []
    for reading, s, p, period, t, v, q in fetched:
        if reading:
            found.append(ReadingRow(s, p, period, t, v, q))
        else:
            rows.append(DirtyRow(DirtyKey(s, p, period, t), v, q))
    return Claim(rows, found)


async def pending_dirty(conn: Conn) -> int:
    """How many dirty keys wait to be processed."""
    cur = await conn.execute("SELECT count(*) FROM series_dirty")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def lock_series(conn: Conn, series: Iterable[tuple[int, int]]) -> None:
    """Hold the rollups of these (station, parameter) series until the transaction ends.

    Two loops that claimed different keys of one hour would otherwise both recompute it, and the
    one that read the raw readings first could commit last, over the newer result. Locks are
    taken in key order, so two loops never wait on each other in a cycle.
    """
    keys = sorted({rollup_lock_key(s, p) for s, p in series})
    if keys:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%b::int8[]) AS k", [keys]
        )


async def try_sweep_lock(conn: Conn) -> bool:
    """Whether this transaction may run the periodic sweep (no other worker is running it)."""
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", [SWEEP_LOCK])
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0])


class HourWindow(NamedTuple):
    """One hour of one series, by its start."""

    station_id: int
    parameter_id: int
    hour: datetime


class DayWindow(NamedTuple):
    """One Asia/Shanghai natural day of one series, with its start instant."""

    station_id: int
    parameter_id: int
    day: date
    start: datetime


@dataclass(frozen=True, slots=True)
class WindowReading:
    """A raw reading of a window; `window` is the window's index in the request."""

    window: int
    period_s: int
    time: datetime
    value: float | None
    qc: int


# Each window is one short primary-key range scan in the partition it falls in. OFFSET 0 keeps
# the planner from flattening the LATERAL into a merge join over whole partitions (13x slower
# for 5000 windows on 100k readings, and growing with the table).
_HOUR_READINGS = """
SELECT (w.ord - 1)::int8, r.period_s::int8, extract(epoch FROM r.time)::float8,
       coalesce(r.value, 'NaN'::float8), r.qc::int8
FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(hour)b::timestamptz[])
     WITH ORDINALITY AS w(station_id, parameter_id, hour, ord)
CROSS JOIN LATERAL (
    SELECT period_s, time, value, qc FROM reading
    WHERE station_id = w.station_id AND parameter_id = w.parameter_id
      AND period_s IN (0, 60, 3600)
      AND time >= w.hour AND time < w.hour + interval '1 hour'
    OFFSET 0
) r
ORDER BY w.ord, r.period_s, r.time
"""


@dataclass(frozen=True, slots=True)
class HourColumns:
    """The raw readings of hour windows as columns, ordered by window, then period and time.

    Columns, not row objects: a round under a stream of real-time data rereads millions of
    readings, and one array per column costs a fraction of a Python object per reading.
    """

    window: npt.NDArray[np.int64]  # the window's index in the request
    period_s: npt.NDArray[np.int64]
    time_s: npt.NDArray[np.float64]  # seconds since the epoch
    value: npt.NDArray[np.float64]  # NaN where the reading has no value
    qc: npt.NDArray[np.int64]

    def of(self, windows: int) -> list[slice]:
        """Where each of the first `windows` windows' readings lie in the columns."""
        bounds = np.searchsorted(self.window, np.arange(windows + 1)).tolist()
        return [slice(low, high) for low, high in itertools.pairwise(bounds)]


async def hour_readings(conn: Conn, hours: Sequence[HourWindow]) -> HourColumns:
    """Every real-time, minute and hourly reading (any QC) inside each hour window."""
    rows: list[tuple[int, int, float, float, int]] = []
    if hours:
        async with conn.cursor(binary=True) as cur:
            await cur.execute(
                _HOUR_READINGS.encode(),
                {
                    "station": [h.station_id for h in hours],
                    "parameter": [h.parameter_id for h in hours],
                    "hour": [h.hour for h in hours],
                },
            )
            rows = await cur.fetchall()
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return HourColumns(
        window=table[:, 0].astype(np.int64),
        period_s=table[:, 1].astype(np.int64),
        time_s=table[:, 2].copy(),
        value=table[:, 3].copy(),
        qc=table[:, 4].astype(np.int64),
    )


class HourlyRow(NamedTuple):
    """A reading_hourly row (without computed_at), with its running totals (rt_: real-time,
    minute_: minute data; see the migration 0044_incremental_hourly)."""

    station_id: int
    parameter_id: int
    hour: datetime
    value: float | None
    samples: int
    coverage_s: int
    min: float | None
    max: float | None
    origin: str
    rt_samples: int | None = None
    rt_sum: Decimal | None = None
    rt_min: float | None = None
    rt_max: float | None = None
    rt_last: datetime | None = None
    minute_samples: int | None = None
    minute_sum: Decimal | None = None
    minute_min: float | None = None
    minute_max: float | None = None
    minute_last: datetime | None = None


_TOTALS = (
    "rt_samples, rt_sum, rt_min, rt_max, rt_last,"
    " minute_samples, minute_sum, minute_min, minute_max, minute_last"
)


# computed_at says when the value last changed: a row whose rollup is unchanged keeps it, and
# is only rewritten when its running totals moved.
_UPSERT_HOURLY = """
INSERT INTO reading_hourly AS h (station_id, parameter_id, hour, value, samples, coverage_s, min,
                                 max, origin, rt_samples, rt_sum, rt_min, rt_max, rt_last,
                                 minute_samples, minute_sum, minute_min, minute_max, minute_last,
                                 computed_at)
SELECT *, %(now)s FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(hour)b::timestamptz[],
                             %(value)b::float8[], %(samples)b::int[], %(coverage)b::int[],
                             %(min)b::float8[], %(max)b::float8[], %(origin)b::text[],
                             %(rt_samples)b::int[], %(rt_sum)b::numeric[], %(rt_min)b::float8[],
                             %(rt_max)b::float8[], %(rt_last)b::timestamptz[],
                             %(minute_samples)b::int[], %(minute_sum)b::numeric[],
                             %(minute_min)b::float8[], %(minute_max)b::float8[],
                             %(minute_last)b::timestamptz[])
ON CONFLICT (station_id, parameter_id, hour) DO UPDATE
SET value = EXCLUDED.value, samples = EXCLUDED.samples, coverage_s = EXCLUDED.coverage_s,
    min = EXCLUDED.min, max = EXCLUDED.max, origin = EXCLUDED.origin,
    rt_samples = EXCLUDED.rt_samples, rt_sum = EXCLUDED.rt_sum, rt_min = EXCLUDED.rt_min,
    rt_max = EXCLUDED.rt_max, rt_last = EXCLUDED.rt_last,
    minute_samples = EXCLUDED.minute_samples, minute_sum = EXCLUDED.minute_sum,
    minute_min = EXCLUDED.minute_min, minute_max = EXCLUDED.minute_max,
    minute_last = EXCLUDED.minute_last,
    computed_at = CASE WHEN (h.value, h.samples, h.coverage_s, h.min, h.max, h.origin)
                            IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.samples,
                                              EXCLUDED.coverage_s, EXCLUDED.min, EXCLUDED.max,
                                              EXCLUDED.origin)
                       THEN EXCLUDED.computed_at ELSE h.computed_at END
WHERE (h.value, h.samples, h.coverage_s, h.min, h.max, h.origin, h.rt_samples, h.rt_sum,
       h.rt_min, h.rt_max, h.rt_last, h.minute_samples, h.minute_sum, h.minute_min,
       h.minute_max, h.minute_last)
      IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.samples, EXCLUDED.coverage_s, EXCLUDED.min,
                        EXCLUDED.max, EXCLUDED.origin, EXCLUDED.rt_samples, EXCLUDED.rt_sum,
                        EXCLUDED.rt_min, EXCLUDED.rt_max, EXCLUDED.rt_last,
                        EXCLUDED.minute_samples, EXCLUDED.minute_sum, EXCLUDED.minute_min,
                        EXCLUDED.minute_max, EXCLUDED.minute_last)
"""


async def upsert_hourly(conn: Conn, rows: Sequence[HourlyRow], *, now: datetime) -> None:
    """Write hourly rollups in one statement."""
    if not rows:
        return
    await conn.execute(
        _UPSERT_HOURLY.encode(),
        {
            "station": [r.station_id for r in rows],
            "parameter": [r.parameter_id for r in rows],
            "hour": [r.hour for r in rows],
            "value": [r.value for r in rows],
            "samples": [r.samples for r in rows],
            "coverage": [r.coverage_s for r in rows],
            "min": [r.min for r in rows],
            "max": [r.max for r in rows],
            "origin": [r.origin for r in rows],
            "rt_samples": [r.rt_samples for r in rows],
            "rt_sum": [r.rt_sum for r in rows],
            "rt_min": [r.rt_min for r in rows],
            "rt_max": [r.rt_max for r in rows],
            "rt_last": [r.rt_last for r in rows],
            "minute_samples": [r.minute_samples for r in rows],
            "minute_sum": [r.minute_sum for r in rows],
            "minute_min": [r.minute_min for r in rows],
            "minute_max": [r.minute_max for r in rows],
            "minute_last": [r.minute_last for r in rows],
            "now": now,
        },
    )


# One primary-key lookup per hour window, in the windows' order (None where there is no row).
_HOURLY_OF = """
SELECT (w.ord - 1)::int, h.station_id, h.parameter_id, h.hour, h.value, h.samples,
       h.coverage_s, h.min, h.max, h.origin, h.rt_samples, h.rt_sum, h.rt_min, h.rt_max,
       h.rt_last, h.minute_samples, h.minute_sum, h.minute_min, h.minute_max, h.minute_last
FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(hour)b::timestamptz[])
     WITH ORDINALITY AS w(station_id, parameter_id, hour, ord)
CROSS JOIN LATERAL (
    SELECT * FROM reading_hourly
    WHERE station_id = w.station_id AND parameter_id = w.parameter_id AND hour = w.hour
    OFFSET 0
) h
"""


async def hourly_rows(conn: Conn, hours: Sequence[HourWindow]) -> list[HourlyRow | None]:
    """The stored hourly rollup of each hour window, with its running totals, or None."""
    found: list[HourlyRow | None] = [None] * len(hours)
    if not hours:
        return found
    async with conn.cursor(binary=True) as cur:
        await cur.execute(
            _HOURLY_OF.encode(),
            {
                "station": [h.station_id for h in hours],
                "parameter": [h.parameter_id for h in hours],
                "hour": [h.hour for h in hours],
            },
        )
        for index, *row in await cur.fetchall():
            found[index] = HourlyRow(*row)
    return found


async def delete_hourly(conn: Conn, hours: Sequence[HourWindow]) -> None:
    """Drop the hourly rollups of windows that no longer hold any reading."""
    if not hours:
        return
    await conn.execute(
        "DELETE FROM reading_hourly h"
        " USING unnest(%b::int[], %b::int2[], %b::timestamptz[]) AS w(station_id, parameter_id,"
        " hour)"
        " WHERE h.station_id = w.station_id AND h.parameter_id = w.parameter_id"
        " AND h.hour = w.hour",
        [
            [h.station_id for h in hours],
            [h.parameter_id for h in hours],
            [h.hour for h in hours],
        ],
    )


@dataclass(frozen=True, slots=True)
class WindowHourly:
    """An hourly rollup inside a day window; `window` is the day's index in the request."""

    window: int
    hour: datetime
    value: float | None
    samples: int
    min: float | None
    max: float | None


# LATERAL ... OFFSET 0 as above: one primary-key range scan per day window.
_DAY_HOURLY = """
SELECT (w.ord - 1)::int AS window, h.hour, h.value, h.samples, h.min, h.max
FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(start)b::timestamptz[])
     WITH ORDINALITY AS w(station_id, parameter_id, start, ord)
CROSS JOIN LATERAL (
    SELECT hour, value, samples, min, max FROM reading_hourly
    WHERE station_id = w.station_id AND parameter_id = w.parameter_id
      AND hour >= w.start AND hour < w.start + interval '24 hours'
    OFFSET 0
) h
ORDER BY w.ord, h.hour
"""


async def day_hourly(conn: Conn, days: Sequence[DayWindow]) -> list[WindowHourly]:
    """The hourly rollups of each day window (the day's 24 hours from its 00:00 +08:00)."""
    return await _per_day(conn, _DAY_HOURLY, WindowHourly, days)


_DAY_READINGS = """
SELECT (w.ord - 1)::int AS window, r.period_s, r.time, r.value, r.qc
FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(start)b::timestamptz[])
     WITH ORDINALITY AS w(station_id, parameter_id, start, ord)
CROSS JOIN LATERAL (
    SELECT period_s, time, value, qc FROM reading
    WHERE station_id = w.station_id AND parameter_id = w.parameter_id
      AND period_s = 86400 AND time = w.start
    OFFSET 0
) r
ORDER BY w.ord
"""


async def day_readings(conn: Conn, days: Sequence[DayWindow]) -> list[WindowReading]:
    """The station-reported daily mean (any QC) of each day window, where there is one."""
    return await _per_day(conn, _DAY_READINGS, WindowReading, days)


async def _per_day(
    conn: Conn, query: str, row: type[RowT], days: Sequence[DayWindow]
) -> list[RowT]:
    """Run a per-day-window query (station, parameter, start arrays) into `row` objects."""
    if not days:
        return []
    async with conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(
            query.encode(),
            {
                "station": [d.station_id for d in days],
                "parameter": [d.parameter_id for d in days],
                "start": [d.start for d in days],
            },
        )
        return await cur.fetchall()


class DailyRow(NamedTuple):
    """A reading_daily row (without computed_at)."""

    station_id: int
    parameter_id: int
    day: date
    value: float | None
    hours: int
    min: float | None
    max: float | None
    origin: str


_UPSERT_DAILY = """
INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min, max, origin,
                           computed_at)
SELECT *, %(now)s FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(day)b::date[],
                             %(value)b::float8[], %(hours)b::int[], %(min)b::float8[],
                             %(max)b::float8[], %(origin)b::text[])
ON CONFLICT (station_id, parameter_id, day) DO UPDATE
SET value = EXCLUDED.value, hours = EXCLUDED.hours, min = EXCLUDED.min, max = EXCLUDED.max,
    origin = EXCLUDED.origin, computed_at = EXCLUDED.computed_at
WHERE (reading_daily.value, reading_daily.hours, reading_daily.min, reading_daily.max,
       reading_daily.origin)
      IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.hours, EXCLUDED.min, EXCLUDED.max,
                        EXCLUDED.origin)
"""


async def upsert_daily(conn: Conn, rows: Sequence[DailyRow], *, now: datetime) -> None:
    """Write daily rollups in one statement."""
    if not rows:
        return
    await conn.execute(
        _UPSERT_DAILY.encode(),
        {
            "station": [r.station_id for r in rows],
            "parameter": [r.parameter_id for r in rows],
            "day": [r.day for r in rows],
            "value": [r.value for r in rows],
            "hours": [r.hours for r in rows],
            "min": [r.min for r in rows],
            "max": [r.max for r in rows],
            "origin": [r.origin for r in rows],
            "now": now,
        },
    )


async def delete_daily(conn: Conn, days: Sequence[DayWindow]) -> None:
    """Drop the daily rollups of days that no longer hold an hourly rollup or a reported mean."""
    if not days:
        return
    await conn.execute(
        "DELETE FROM reading_daily d"
        " USING unnest(%b::int[], %b::int2[], %b::date[]) AS w(station_id, parameter_id, day)"
        " WHERE d.station_id = w.station_id AND d.parameter_id = w.parameter_id"
        " AND d.day = w.day",
        [
            [d.station_id for d in days],
            [d.parameter_id for d in days],
            [d.day for d in days],
        ],
    )


async def reading_hours(conn: Conn) -> list[DirtyKey]:
    """One key per series, period and hour holding readings: a full rebuild's dirty set."""
    cur = await conn.execute(
        "SELECT DISTINCT station_id, parameter_id, period_s,"
        " to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600) FROM reading"
    )
    return [DirtyKey(*row) for row in await cur.fetchall()]


async def clear_rollups(conn: Conn) -> None:
    """Empty both rollup tables (before a full rebuild)."""
    await conn.execute("DELETE FROM reading_hourly")
    await conn.execute("DELETE FROM reading_daily")


# The rollup rows are built positionally (args_row): /v1/aqi?city= reads a thousand of them per
# request, and building each from keywords (class_row) cost a tenth of its time. The queries
# select the fields in the classes' order.
class HourlyRollupRow(NamedTuple):
    """A stored hourly rollup as the API and the engine read it. A tuple: /v1/aqi?city= reads
    hundreds per request, and a frozen dataclass's constructor cost several times a tuple's."""

    station_id: int
    parameter_id: int
    hour: datetime
    value: float | None
    samples: int
    coverage_s: int
    min: float | None
    max: float | None
    origin: str
    computed_at: datetime


async def hourly_rollups(
    conn: Conn,
    *,
    station_ids: Sequence[int],
    parameter_ids: Sequence[int],
    start: datetime,
    end: datetime,
) -> list[HourlyRollupRow]:
    """Hourly rollups of these stations × parameters with hour in [start, end), by hour."""
    async with conn.cursor(row_factory=args_row(HourlyRollupRow)) as cur:
        await cur.execute(
            "SELECT station_id, parameter_id, hour, value, samples, coverage_s, min, max, origin,"
            " computed_at FROM reading_hourly"
            " WHERE station_id = ANY(%(stations)s) AND parameter_id = ANY(%(parameters)s)"
            " AND hour >= %(start)s AND hour < %(end)s"
            " ORDER BY station_id, parameter_id, hour",
            {
                "stations": list(station_ids),
                "parameters": list(parameter_ids),
                "start": start,
                "end": end,
            },
        )
        return await cur.fetchall()


# Hourly rollups placed on a grid of hours: station id, parameter id, whole hours since the
# grid's start, value, origin. /v1/aqi?city= places hundreds of them per request.
_HOURLY_SLOTS = (
    b"SELECT station_id, parameter_id,"
    b" floor(extract(epoch FROM hour - %(start)s::timestamptz) / 3600)::int4 AS slot, value, origin"
    b" FROM reading_hourly"
    b" WHERE station_id = ANY(%(stations)s::int4[]) AND parameter_id = ANY(%(parameters)s::int2[])"
    b" AND hour >= %(start)s AND hour < %(end)s"
    b" ORDER BY station_id, parameter_id, hour"
)
# The same rows as one bytea of fixed-width binary records, which numpy reads whole (as a page
# of readings, store.readings._records_of): no Python object per rollup. A missing value is NaN,
# which no stored value is.
_HOURLY_SLOT_RECORDS = (
    b"SELECT string_agg(int4send(s.station_id) || int2send(s.parameter_id) || int4send(s.slot)"
    b" || float8send(coalesce(s.value, 'NaN')) || boolsend(s.origin = 'reported'), '')"
    b" FROM (" + _HOURLY_SLOTS + b") s"
)
_HOURLY_SLOT = np.dtype(
    [("station_id", ">i4"), ("parameter_id", ">i2"), ("slot", ">i4"), ("value", ">f8"),
     ("reported", "?")]
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HourlySlots:
    """Hourly rollups on a grid of hours, column by column, by station, parameter and hour."""

    station_id: npt.NDArray[np.int64]
    parameter_id: npt.NDArray[np.int64]
    slot: npt.NDArray[np.int64]  # whole hours since the grid's start
    value: npt.NDArray[np.float64]  # NaN where the rollup has no value
    reported: npt.NDArray[np.bool_]  # origin 'reported' (else 'computed')


async def hourly_slots(
    conn: Conn,
    *,
    station_ids: Sequence[int],
    parameter_ids: Sequence[int],
    start: datetime,
    end: datetime,
) -> HourlySlots:
    """Hourly values and origins of these stations × parameters with hour in [start, end), each
    with its hour as whole hours since `start`, by station, parameter and hour."""
    params = {
        "stations": list(station_ids),
        "parameters": list(parameter_ids),
        "start": start,
        "end": end,
    }
    records = await fetch_records(conn, _HOURLY_SLOT_RECORDS, params, _HOURLY_SLOT)
    return HourlySlots(
        records["station_id"].astype(np.int64),
        records["parameter_id"].astype(np.int64),
        records["slot"].astype(np.int64),
        records["value"].astype(np.float64),
        records["reported"].copy(),
    )


@dataclass(frozen=True, slots=True)
class DailyRollupRow:
    """A stored daily rollup as the API and the engine read it."""

    station_id: int
    parameter_id: int
    day: date
    value: float | None
    hours: int
    min: float | None
    max: float | None
    origin: str
    computed_at: datetime


async def daily_rollups(
    conn: Conn,
    *,
    station_ids: Sequence[int],
    parameter_ids: Sequence[int],
    first: date,
    last: date,
) -> list[DailyRollupRow]:
    """Daily rollups of these stations × parameters for the days first..last, by day."""
    async with conn.cursor(row_factory=args_row(DailyRollupRow)) as cur:
        await cur.execute(
            "SELECT station_id, parameter_id, day, value, hours, min, max, origin, computed_at"
            " FROM reading_daily"
            " WHERE station_id = ANY(%(stations)s) AND parameter_id = ANY(%(parameters)s)"
            " AND day >= %(first)s AND day <= %(last)s"
            " ORDER BY station_id, parameter_id, day",
            {
                "stations": list(station_ids),
                "parameters": list(parameter_ids),
                "first": first,
                "last": last,
            },
        )
        return await cur.fetchall()


# Per series, of its hourly rollups in (hour - window, hour], the newest and the newest with a
# value: all that decides which value stands in the hour's sample (alerts/assessment/water.py:
# the newest valid hour within the window, else the newest hour received). Two short backward
# index scans each, however long the window: a monthly lab item's window is 720 hours, and
# reading every hour of each cost the situation of an area 8,000 rows a request. The constant
# bound (the longest window) tells the planner how few rows there are: without it, on a large
# table it hashed a parallel scan of every hour ever stored (1.8 s at 10 M rollups).
_NEWEST_HOURLY = """
    SELECT hour, value, samples, coverage_s, min, max, origin, computed_at FROM reading_hourly
    WHERE station_id = w.station_id AND parameter_id = w.parameter_id
      AND hour <= %(hour)s AND hour > %(hour)s - make_interval(secs => w.window_s)
      AND hour > %(hour)s - make_interval(secs => %(longest)s){valid}
    ORDER BY hour DESC LIMIT 1
"""
_NEWEST_HOURLY_WITHIN = f"""
SELECT w.station_id, w.parameter_id, h.hour, h.value, h.samples, h.coverage_s,
       h.min, h.max, h.origin, h.computed_at
FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(window)b::int[])
     AS w(station_id, parameter_id, window_s)
CROSS JOIN LATERAL (
    ({_NEWEST_HOURLY.format(valid="")})
    UNION
    ({_NEWEST_HOURLY.format(valid=" AND value IS NOT NULL")})
) h
ORDER BY w.station_id, w.parameter_id, h.hour
"""


async def newest_hourly_rollups_within(
    conn: Conn, *, hour: datetime, windows: Sequence[tuple[int, int, int]]
) -> list[HourlyRollupRow]:
    """For each (station id, parameter id, window_s), of its hourly rollups in (hour -
    window_s, hour] the newest and the newest with a value (one row where they are the same),
    in (station id, parameter id, hour) order."""
    if not windows:
        return []
    async with conn.cursor(row_factory=args_row(HourlyRollupRow)) as cur:
        await cur.execute(
            _NEWEST_HOURLY_WITHIN.encode(),
            {
                "hour": hour,
                "station": [s for s, _, _ in windows],
                "parameter": [p for _, p, _ in windows],
                "window": [w for _, _, w in windows],
                "longest": max(w for _, _, w in windows),
            },
        )
        return await cur.fetchall()


class RollupPoint(NamedTuple):
    """An hourly or daily rollup of one series as the API shows it; `time` starts its period.
    A tuple, built positionally: a page holds up to 10,000 of them, and a frozen dataclass
    built from keywords cost more than the rest of the page's items.

    `coverage` is the share of the period the value stands on: for an hour, its valid sampling
    time over 3600 s; for a day, its valid hourly values over 24 (air, weather) or its valid
    samples over those the station's interval gives a day (water, lab); 1 for a station's own
    reported mean; null where the station no longer lists the parameter (no interval).
    """

    time: datetime
    value: float | None
    count: int  # type: ignore[assignment]  # the field, in place of tuple.count()
    coverage: float | None
    origin: str
    unit: str
    decimals: int | None


# A series' rollups, in time order: time, value, count, coverage, origin (the RollupPoint's
# fields but its parameter's unit and decimals). A coverage in seconds is divided as a double:
# exact to the last bit, where numeric division cost more than the rest of a page.
_HOURLY_SERIES = """
SELECT h.hour AS time, h.value, h.samples AS count, h.coverage_s / 3600::float8 AS coverage,
       h.origin
FROM reading_hourly h
WHERE h.station_id = %(station)s AND h.parameter_id = %(parameter)s
  AND h.hour >= coalesce(%(start)s::timestamptz, '-infinity')
  AND h.hour < coalesce(%(end)s::timestamptz, 'infinity')
  AND h.hour > coalesce(%(after)s::timestamptz, '-infinity')
ORDER BY h.hour LIMIT %(limit)s
"""
# The groups are alerts.rollups.WATER_GROUPS: their day counts samples, the others hours.
_DAILY_SERIES = """
SELECT d.start AS time, d.value, d.hours AS count,
       CASE WHEN d.origin = 'reported' THEN 1.0
            WHEN p.grp IN ('water', 'lab') THEN least(1.0, d.hours * sp.interval_s / 86400.0)
            ELSE least(1.0, d.hours / 24.0) END::float8 AS coverage,
       d.origin
FROM (SELECT *, day::timestamp AT TIME ZONE 'Asia/Shanghai' AS start FROM reading_daily
      WHERE station_id = %(station)s AND parameter_id = %(parameter)s) d
JOIN parameter p ON p.id = d.parameter_id
LEFT JOIN station_parameter sp ON sp.station_id = d.station_id AND sp.parameter_id = d.parameter_id
WHERE (%(start)s::timestamptz IS NULL OR d.start >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR d.start < %(end)s)
  AND (%(after)s::timestamptz IS NULL OR d.start > %(after)s)
ORDER BY d.day LIMIT %(limit)s
"""


# A page of rollups as one bytea of fixed-width binary records (_ROLLUP_RECORD), as
# store.readings writes a page of readings: a missing value or coverage is NaN (no stored one
# is), and the page's unit and decimals (its parameter's) come beside it.
_SERIES_RECORDS = """
SELECT (SELECT string_agg(timestamptz_send(s.time) || float8send(coalesce(s.value, 'NaN'))
                          || int4send(s.count::int4) || float8send(coalesce(s.coverage, 'NaN'))
                          || boolsend(s.origin = 'reported'), '')
        FROM ({series}) s),
       p.unit, p.decimals
FROM parameter p WHERE p.id = %(parameter)s
"""
_HOURLY_SERIES_RECORDS = _SERIES_RECORDS.format(series=_HOURLY_SERIES).encode()
_DAILY_SERIES_RECORDS = _SERIES_RECORDS.format(series=_DAILY_SERIES).encode()
_ROLLUP_RECORD = np.dtype(
    [("time", ">i8"), ("value", ">f8"), ("count", ">i4"), ("coverage", ">f8"), ("reported", "?")]
)


@dataclass(frozen=True, slots=True)
class RollupColumns(TimeColumns):
    """A page of one series' hourly or daily rollups, column by column, in time order (as
    RollupPoint: `time` starts each period). Up to 10,001 rollups: numpy columns."""

    time_us: npt.NDArray[np.int64]  # microseconds since 1970-01-01 UTC
    value: npt.NDArray[np.float64]  # NaN where missing
    count: npt.NDArray[np.int64]
    coverage: npt.NDArray[np.float64]  # NaN where missing
    reported: npt.NDArray[np.bool_]  # origin: reported, else computed
    unit: str
    decimals: int | None

    def rows(self) -> list[RollupPoint]:
        """The rollups as RollupPoints (times aware in UTC; None for a missing number)."""
        return [
            RollupPoint(
                unix_time(time),
                None if math.isnan(value) else value,
                count,
                None if math.isnan(coverage) else coverage,
                "reported" if reported else "computed",
                self.unit,
                self.decimals,
            )
            for time, value, count, coverage, reported in zip(
                self.time_us.tolist(),
                self.value.tolist(),
                self.count.tolist(),
                self.coverage.tolist(),
                self.reported.tolist(),
                strict=True,
            )
        ]


async def rollup_series(
    conn: Conn,
    *,
    station_id: int,
    parameter_id: int,
    period_s: int,
    start: datetime | None,
    end: datetime | None,
    after: datetime | None,
    limit: int,
) -> RollupColumns:
    """Hourly (period_s 3600) or daily (86400) rollups starting in [start, end), after `after`."""
    query = {3600: _HOURLY_SERIES_RECORDS, 86400: _DAILY_SERIES_RECORDS}[period_s]
    async with alone(conn), conn.cursor(binary=True) as cur:
        await cur.execute(
            query,
            {
                "station": station_id,
                "parameter": parameter_id,
                "start": start,
                "end": end,
                "after": after,
                "limit": limit,
            },
        )
        found = await cur.fetchone()
    records, unit, decimals = found or (None, "", None)  # no such parameter: no rollup
    columns = np.frombuffer(records or b"", dtype=_ROLLUP_RECORD)
    return RollupColumns(
        columns["time"].astype(np.int64) + PG_EPOCH_UNIX_US,
        columns["value"].astype(np.float64),
        columns["count"].astype(np.int64),
        columns["coverage"].astype(np.float64),
        columns["reported"].copy(),
        unit or "",
        decimals,
    )
