"""Quality control over history: the recent windows of touched series, and audited re-flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from psycopg.rows import class_row

from schemas.common import QC
from store.arrays import (
    BinaryArray,
    BoolArray,
    Int2Array,
    Int4Array,
    Int8Array,
    TimestamptzArray,
    micros,
)
from store.pool import Conn
from store.readings import ReadingRow
from store.rollups import ReadingKey


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A stretch [first, last] of one series and how many readings to fetch around it.

    With `inside`, the readings within the stretch are fetched too; without, the caller already
    has them (a batch's own rows on a regular grid leave no room for others in between). Nothing
    further than `horizon` from the stretch is fetched: older data is no evidence, and the bound
    lets each scan visit only the partitions near the stretch.
    """

    station_id: int
    parameter_id: int
    period_s: int
    first: datetime
    last: datetime
    before: int
    after: int
    inside: bool
    horizon: timedelta


FETCH_WINDOWS = 200


@dataclass(frozen=True, slots=True)
class WindowReadings:
    """The fetched readings of all windows as columns, by window then time.

    `window` indexes the WindowSpec; times are microseconds since the epoch (exact, and cheap to
    turn into numpy arrays for a batch of thousands of windows).
    """

    window: tuple[int, ...]
    times_us: tuple[int, ...]
    values: tuple[float, ...]
    qc: tuple[int, ...]


# One round trip for the whole batch (its columns sent as binary arrays built with numpy: psycopg
# dumps Python lists element by element, 0.4 against 0.2 ms of CPU per 200 stretches, and a
# round of 12,000 keys sends about 85 such parts): each stretch is one row of the unnest, and
# each of its three parts is a short index scan on the primary key (partitions visited in time
# order). The horizon goes as microseconds. Only readings QC may look at come back: valid and
# suspect ones with a value.
_WINDOWS = """
SELECT (w.ord - 1 + %(offset)s)::int, (extract(epoch FROM r.time) * 1000000)::int8, r.value, r.qc
FROM unnest(%(station)b::int[], %(parameter)b::int2[], %(period)b::int[],
            %(first)b::timestamptz[], %(last)b::timestamptz[], %(before)b::int[],
            %(after)b::int[], %(inside)b::bool[], %(horizon_us)b::int8[])
     WITH ORDINALITY AS w(station_id, parameter_id, period_s, first, last, before, after,
                          inside, horizon_us, ord)
CROSS JOIN LATERAL (
    (SELECT time, value, qc FROM reading
     WHERE station_id = w.station_id AND parameter_id = w.parameter_id
       AND period_s = w.period_s AND time < w.first
       AND time >= w.first - w.horizon_us * interval '1 microsecond'
       AND qc IN (%(valid)s, %(suspect)s) AND value IS NOT NULL
     ORDER BY time DESC LIMIT w.before)
    UNION ALL
    (SELECT time, value, qc FROM reading
     WHERE w.inside AND station_id = w.station_id AND parameter_id = w.parameter_id
       AND period_s = w.period_s AND time >= w.first AND time <= w.last
       AND qc IN (%(valid)s, %(suspect)s) AND value IS NOT NULL)
    UNION ALL
    (SELECT time, value, qc FROM reading
     WHERE station_id = w.station_id AND parameter_id = w.parameter_id
       AND period_s = w.period_s AND time > w.last
       AND time <= w.last + w.horizon_us * interval '1 microsecond'
       AND qc IN (%(valid)s, %(suspect)s) AND value IS NOT NULL
     ORDER BY time LIMIT w.after)
) r
ORDER BY w.ord, r.time
"""
_MICROSECOND = timedelta(microseconds=1)


def _window_columns(part: Sequence[WindowSpec]) -> dict[str, BinaryArray]:
    """The stretches' columns as binary array parameters."""
    return {
        "station": Int4Array.of(np.array([s.station_id for s in part], dtype=np.int32)),
        "parameter": Int2Array.of(np.array([s.parameter_id for s in part], dtype=np.int16)),
        "period": Int4Array.of(np.array([s.period_s for s in part], dtype=np.int32)),
        "first": TimestamptzArray.of(np.array(micros(s.first for s in part), dtype=np.int64)),
        "last": TimestamptzArray.of(np.array(micros(s.last for s in part), dtype=np.int64)),
        "before": Int4Array.of(np.array([s.before for s in part], dtype=np.int32)),
        "after": Int4Array.of(np.array([s.after for s in part], dtype=np.int32)),
        "inside": BoolArray.of(np.array([s.inside for s in part], dtype=np.bool_)),
        "horizon_us": Int8Array.of(
            np.array([s.horizon // _MICROSECOND for s in part], dtype=np.int64)
        ),
    }


async def fetch_windows(conn: Conn, specs: Sequence[WindowSpec]) -> WindowReadings:
    """The valid and suspect readings around (and, if asked, within) each stretch, by time."""
    rows: list[tuple[int, int, float, int]] = []
    async with conn.cursor(binary=True) as cur:
        # A few hundred windows per query: turning a big result into Python objects holds the
        # event loop, and the stations waiting for their replies share it.
        for offset in range(0, len(specs), FETCH_WINDOWS):
            part = specs[offset : offset + FETCH_WINDOWS]
            await cur.execute(
                _WINDOWS.encode(),
                {
                    **_window_columns(part),
                    "offset": offset,
                    "valid": QC.VALID.code,
                    "suspect": QC.SUSPECT.code,
                },
            )
            rows += await cur.fetchall()
    if not rows:
        return WindowReadings((), (), (), ())
    window, times_us, values, qc = zip(*rows, strict=True)
    return WindowReadings(window, times_us, values, qc)


_STORED = """
SELECT r.station_id, r.parameter_id, r.period_s, r.time, r.value, r.qc
FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(period)s::int[],
            %(time)s::timestamptz[]) AS k(station_id, parameter_id, period_s, time)
JOIN reading r USING (station_id, parameter_id, period_s, time)
"""


async def stored_readings(conn: Conn, keys: Sequence[ReadingKey]) -> list[ReadingRow]:
    """The readings stored under these keys now (a key given twice comes back once)."""
    unique = list({(k.station_id, k.parameter_id, k.period_s, k.time) for k in keys})
    if not unique:
        return []
    station, parameter, period, time = (list(column) for column in zip(*unique, strict=True))
    async with conn.cursor(binary=True) as cur:
        await cur.execute(
            _STORED.encode(),
            {"station": station, "parameter": parameter, "period": period, "time": time},
        )
        return [ReadingRow(*row) for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class QcFlag:
    """A valid reading QC found suspect: its key, the value it was judged on, the check and why."""

    station_id: int
    parameter_id: int
    period_s: int
    time: datetime
    value: float
    check: str
    reason: str


# The UPDATE re-checks that the reading is still valid with the value QC judged, and still from
# the delivery it saw: a revision that landed meanwhile wins, and its new state is judged by
# the next batch that touches the series. The replaced state goes to reading_revision and the
# reason to qc_audit, joined on the revision; the `qc` source counts its re-flags as revisions.
# A re-flagged reading that is its series' latest is re-flagged in reading_latest too. Those
# rows are locked in key order, as writers lock them, so the two never deadlock; a row a writer
# moved on to a newer time meanwhile no longer matches and is left alone.
_REFLAG = """
WITH flag AS (
    SELECT * FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(period)s::int[],
                         %(time)s::timestamptz[], %(value)s::float8[], %(check)s::text[],
                         %(reason)s::text[])
         AS f(station_id, parameter_id, period_s, time, value, check_name, reason)
), live AS (
    SELECT f.*, r.source_id AS old_source, r.received_at AS old_received_at
    FROM flag f
    JOIN reading r ON r.station_id = f.station_id AND r.parameter_id = f.parameter_id
                  AND r.period_s = f.period_s AND r.time = f.time
    WHERE r.qc = %(valid)s AND r.value = f.value
), flagged AS (
    UPDATE reading r SET qc = %(suspect)s, source_id = %(source)s, received_at = %(now)s
    FROM live c
    WHERE r.station_id = c.station_id AND r.parameter_id = c.parameter_id
      AND r.period_s = c.period_s AND r.time = c.time
      AND r.qc = %(valid)s AND r.value = c.value AND r.source_id = c.old_source
      AND r.received_at = c.old_received_at
    RETURNING c.*
), latest AS MATERIALIZED (
    SELECT l.station_id, l.parameter_id, l.period_s, l.time
    FROM reading_latest l
    JOIN flagged f ON l.station_id = f.station_id AND l.parameter_id = f.parameter_id
                  AND l.period_s = f.period_s AND l.time = f.time
    ORDER BY l.station_id, l.parameter_id, l.period_s
    FOR UPDATE OF l
), relatest AS (
    UPDATE reading_latest l SET qc = %(suspect)s
    FROM latest k
    WHERE l.station_id = k.station_id AND l.parameter_id = k.parameter_id
      AND l.period_s = k.period_s AND l.time = k.time
), kept AS (
    INSERT INTO reading_revision (station_id, parameter_id, period_s, time, value, qc, source_id,
                                  received_at, replaced_at, replaced_by)
    SELECT station_id, parameter_id, period_s, time, value, %(valid)s, old_source,
           old_received_at, %(now)s, %(source)s
    FROM flagged
    RETURNING id, station_id, parameter_id, period_s, time
), audited AS (
    INSERT INTO qc_audit (revision_id, station_id, parameter_id, period_s, time, check_name,
                          qc_before, qc_after, reason, flagged_at)
    SELECT k.id, k.station_id, k.parameter_id, k.period_s, k.time, f.check_name, %(valid)s,
           %(suspect)s, f.reason, %(now)s
    FROM kept k
    JOIN flagged f ON f.station_id = k.station_id AND f.parameter_id = k.parameter_id
                  AND f.period_s = k.period_s AND f.time = k.time
    RETURNING 1
), counted AS (
    UPDATE source SET revised = revised + (SELECT count(*) FROM kept) WHERE id = %(source)s
)
SELECT count(*) FROM audited
"""


async def reflag_suspect(
    conn: Conn, flags: Sequence[QcFlag], *, source_id: int, at: datetime
) -> int:
    """Re-flag valid readings as suspect, keeping the old state and the reason; how many changed.

    Each key must appear once in `flags`. The caller owns the transaction.
    """
    if not flags:
        return 0
    cur = await conn.execute(
        _REFLAG.encode(),
        {
            "station": [f.station_id for f in flags],
            "parameter": [f.parameter_id for f in flags],
            "period": [f.period_s for f in flags],
            "time": [f.time for f in flags],
            "value": [f.value for f in flags],
            "check": [f.check for f in flags],
            "reason": [f.reason for f in flags],
            "valid": QC.VALID.code,
            "suspect": QC.SUSPECT.code,
            "source": source_id,
            "now": at,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True, slots=True)
class QcAuditEntry:
    """Why QC changed a reading's state, with the value and source it replaced."""

    station: str
    parameter: str
    period_s: int
    time: datetime
    check_name: str
    reason: str
    value: float | None
    qc_before: int
    qc_after: int
    replaced_source: str
    flagged_at: datetime


async def qc_audit_entries(
    conn: Conn, *, station_id: int | None = None, parameter_id: int | None = None
) -> list[QcAuditEntry]:
    """QC's re-flags, oldest first, optionally of one station and parameter."""
    async with conn.cursor(row_factory=class_row(QcAuditEntry)) as cur:
        await cur.execute(
            "SELECT s.code AS station, p.code AS parameter, a.period_s, a.time, a.check_name,"
            " a.reason, v.value, a.qc_before, a.qc_after, src.code AS replaced_source,"
            " a.flagged_at"
            " FROM qc_audit a"
            " JOIN reading_revision v ON v.id = a.revision_id"
            " JOIN station s ON s.id = a.station_id"
            " JOIN parameter p ON p.id = a.parameter_id"
            " JOIN source src ON src.id = v.source_id"
            " WHERE (%(station)s::int IS NULL OR a.station_id = %(station)s)"
            " AND (%(parameter)s::int IS NULL OR a.parameter_id = %(parameter)s)"
            " ORDER BY a.time, a.id",
            {"station": station_id, "parameter": parameter_id},
        )
        return await cur.fetchall()
