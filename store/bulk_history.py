"""Bulk history: which days hold data already, and the rollups of days loaded in bulk.

A bulk load (the demo's simulated history) writes whole Asia/Shanghai days that held nothing
before: hourly means by binary COPY (store.readings.copy_new_readings), then their rollups by
one statement per kind over the series loaded, the values the alert loop's rollups would hold
(alerts.rollups, docs/standards.md §3.2): a valid hourly mean is the hour's value ('reported'),
any other an hour without one; a day is the mean of its hours, given enough of them. It marks
nothing dirty and notifies nobody: the alert loop and its engine never see the loaded past.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime

from store.pool import Conn

# A day holds data once it has a daily rollup, or readings the alert loop has yet to roll up
# (every stored reading is one or the other: the loop writes a day's rollup with its hours).
_HELD_DAYS = """
SELECT day FROM reading_daily WHERE day >= %(first)s AND day < %(end)s
UNION
SELECT (time AT TIME ZONE 'Asia/Shanghai')::date FROM series_dirty
WHERE time >= %(start)s AND time < %(stop)s
"""


async def held_days(
    conn: Conn, first: date, end: date, *, start: datetime, stop: datetime
) -> set[date]:
    """The Asia/Shanghai days in [first, end) (instants [start, stop)) holding any data."""
    cur = await conn.execute(
        _HELD_DAYS.encode(), {"first": first, "end": end, "start": start, "stop": stop}
    )
    return {row[0] for row in await cur.fetchall()}


# One primary-key range scan per series (LATERAL ... OFFSET 0, as in store.rollups). The hours
# hold nothing but these hourly means, so each hour's rollup is its mean where usable, and its
# running totals of real-time and minute data are empty.
_HOURLY = """
INSERT INTO reading_hourly (station_id, parameter_id, hour, value, samples, coverage_s, min, max,
                            origin, rt_samples, rt_sum, minute_samples, minute_sum, computed_at)
SELECT s.station_id, s.parameter_id, r.time,
       CASE WHEN r.usable THEN r.value END, CASE WHEN r.usable THEN 1 ELSE 0 END,
       CASE WHEN r.usable THEN 3600 ELSE 0 END, CASE WHEN r.usable THEN r.value END,
       CASE WHEN r.usable THEN r.value END, CASE WHEN r.usable THEN 'reported' ELSE 'computed' END,
       0, 0, 0, 0, %(now)s
FROM unnest(%(station)s::int[], %(parameter)s::int2[]) AS s(station_id, parameter_id)
CROSS JOIN LATERAL (
    SELECT time, value, value IS NOT NULL AND value <> 'NaN' AND qc = ANY(%(usable)s) AS usable
    FROM reading
    WHERE station_id = s.station_id AND parameter_id = s.parameter_id AND period_s = 3600
      AND time >= %(start)s AND time < %(stop)s
    OFFSET 0
) r
"""

# alerts.rollups.daily_rollup over each day's hourly rollups: air, the mean of at least `least`
# valid hourly means, with their extremes; water, the mean of the day's valid samples (at least
# `least`), with the samples' extremes. `hours` counts valid hours (air) or samples (water).
_DAILY = """
INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min, max, origin,
                           computed_at)
SELECT station_id, parameter_id, day, CASE WHEN enough THEN mean END, counted,
       CASE WHEN enough THEN low END, CASE WHEN enough THEN high END, 'computed', %(now)s
FROM (
    SELECT s.station_id, s.parameter_id, (h.hour AT TIME ZONE 'Asia/Shanghai')::date AS day,
           CASE WHEN s.water THEN coalesce(sum(h.samples) FILTER (WHERE h.value IS NOT NULL), 0)
                ELSE count(h.value) END AS counted,
           CASE WHEN s.water THEN sum(h.value * h.samples) FILTER (WHERE h.value IS NOT NULL)
                                  / nullif(sum(h.samples) FILTER (WHERE h.value IS NOT NULL), 0)
                ELSE avg(h.value) END AS mean,
           CASE WHEN s.water THEN min(h.min) FILTER (WHERE h.value IS NOT NULL)
                ELSE min(h.value) END AS low,
           CASE WHEN s.water THEN max(h.max) FILTER (WHERE h.value IS NOT NULL)
                ELSE max(h.value) END AS high,
           s.least
    FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(water)s::bool[], %(least)s::int[])
         AS s(station_id, parameter_id, water, least)
    CROSS JOIN LATERAL (
        SELECT hour, value, samples, min, max FROM reading_hourly
        WHERE station_id = s.station_id AND parameter_id = s.parameter_id
          AND hour >= %(start)s AND hour < %(stop)s
        OFFSET 0
    ) h
    GROUP BY s.station_id, s.parameter_id, 3, s.water, s.least
) days, LATERAL (SELECT counted >= least AS enough) judged
"""


async def roll_up_loaded_hours(
    conn: Conn,
    series: Sequence[tuple[int, int]],
    *,
    start: datetime,
    stop: datetime,
    usable_qc: Collection[int],
    now: datetime,
) -> int:
    """The hourly rollups of hours [start, stop) of these (station, parameter) series, which
    hold only hourly means (a bulk load's); the rows written."""
    cur = await conn.execute(
        _HOURLY.encode(),
        {
            "station": [s for s, _ in series],
            "parameter": [p for _, p in series],
            "usable": sorted(usable_qc),
            "start": start,
            "stop": stop,
            "now": now,
        },
    )
    return cur.rowcount


async def roll_up_loaded_days(
    conn: Conn,
    series: Sequence[tuple[int, int, bool, int]],
    *,
    start: datetime,
    stop: datetime,
    now: datetime,
) -> int:
    """The daily rollups of the whole days [start, stop) of these (station, parameter, water,
    least valid hours or samples) series, from their hourly rollups; the rows written."""
    cur = await conn.execute(
        _DAILY.encode(),
        {
            "station": [s[0] for s in series],
            "parameter": [s[1] for s in series],
            "water": [s[2] for s in series],
            "least": [s[3] for s in series],
            "start": start,
            "stop": stop,
            "now": now,
        },
    )
    return cur.rowcount
