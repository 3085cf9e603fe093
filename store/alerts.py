"""Alerts, their event timeline, acknowledgements and maintenance windows; how stages read them.

Data times (pending_since, trigger_time, last_point_at, clear_point_at) are statistic times;
*_at wall-clock times say when EnvLink decided. The caller owns every transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from core.errors import Forbidden, InvalidInput, NotFound, StationNotFound
from schemas.common import QC
from store.coordination import ALERT_EVENTS_CHANNEL
from store.pool import Conn

# Only these QC states feed statistics and alerts (docs/conventions.md §4).
_FEEDING_QC = [QC.VALID.code, QC.BELOW_DETECTION.code]
RowT = TypeVar("RowT")


async def lock_subjects(conn: Conn, keys: Sequence[tuple[str, int]]) -> None:
    """Serialise evaluation of each (rule, subject) across workers until the transaction ends.

    Locks are taken in one sorted pass, so two workers with overlapping sets cannot deadlock.
    """
    if not keys:
        return
    await conn.execute(
        "SELECT pg_advisory_xact_lock(k.rule_key, k.subject)"
        " FROM (SELECT hashtext(rule_id) AS rule_key, subject"
        "       FROM unnest(%(rules)s::text[], %(subjects)s::int[]) AS s(rule_id, subject)"
        "       GROUP BY 1, 2 ORDER BY 1, 2) AS k",
        {"rules": [rule for rule, _ in keys], "subjects": [subject for _, subject in keys]},
    )


@dataclass
class NewAlert:
    """An alert to insert (the engine's decision, already mapped to columns)."""

    rule_id: str
    rule_version: int
    station_id: int | None
    city: str | None
    parameter_id: int | None
    kind: str
    state: str
    severity: str
    value: float | None
    opened_at: datetime
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None
    last_evaluated_at: datetime
    trigger_time: datetime | None
    trigger_period_s: int | None
    last_point_at: datetime | None
    clear_point_at: datetime | None
    details: dict[str, Any]
    addressed_to: list[int]
    source_alert_id: int | None = None


@dataclass(slots=True)
class AlertRow(NewAlert):
    """One row of `alert`: its columns and its id."""

    id: int = field(kw_only=True)


_ALERT_COLUMNS = (
    "a.id, a.rule_id, a.rule_version, a.station_id, a.city, a.parameter_id, a.kind, a.state,"
    " a.severity, a.value, a.opened_at, a.pending_since, a.fired_at, a.resolved_at,"
    " a.retracted_at, a.last_evaluated_at, a.trigger_time, a.trigger_period_s, a.last_point_at,"
    " a.clear_point_at, a.details, a.addressed_to, a.source_alert_id"
)

# The open alert of each (rule, station|city) subject, and the resolved ones whose episode ends
# at or after `since` (late data inside them belongs to them; a revision may retract them).
# Both branches are short scans of alert_by_subject, however many alerts a subject has had.
_SUBJECT_ALERTS = (
    "SELECT " + _ALERT_COLUMNS + " FROM unnest(%(rules)s::text[], %(stations)s::int[],"
    " %(cities)s::text[]) AS s(rule_id, station_id, city)"
    " CROSS JOIN LATERAL ("
    "  SELECT * FROM alert WHERE rule_id = s.rule_id"
    "  AND coalesce(station_id, 0) = coalesce(s.station_id, 0)"
    "  AND coalesce(city, '') = coalesce(s.city, '')"
    "  AND clear_point_at IS NULL AND state IN ('pending', 'firing')"
    "  UNION ALL"
    "  SELECT * FROM alert WHERE rule_id = s.rule_id"
    "  AND coalesce(station_id, 0) = coalesce(s.station_id, 0)"
    "  AND coalesce(city, '') = coalesce(s.city, '')"
    "  AND clear_point_at >= %(since)s AND state = 'resolved'"
    " ) a"
    " ORDER BY a.id"
)


async def subject_alerts(
    conn: Conn,
    subjects: Sequence[tuple[str, int | None, str | None]],
    *,
    since: datetime,
) -> list[AlertRow]:
    """Open alerts of the (rule, station, city) subjects, and those resolved since `since`."""
    if not subjects:
        return []
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            _SUBJECT_ALERTS.encode(),
            {
                "rules": [rule for rule, _, _ in subjects],
                "stations": [station for _, station, _ in subjects],
                "cities": [city for _, _, city in subjects],
                "since": since,
            },
        )
        return await cur.fetchall()


async def open_alerts(
    conn: Conn,
    *,
    states: Sequence[str] = ("pending", "firing"),
    kinds: Sequence[str] | None = None,
    source_alert_ids: Sequence[int] | None = None,
    rule_ids: Sequence[str] | None = None,
) -> list[AlertRow]:
    """Alerts in the given states, optionally of some kinds, raised by some source alerts or of
    some rules."""
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            "SELECT " + _ALERT_COLUMNS + " FROM alert a WHERE a.state = ANY(%(states)s)"
            " AND (%(kinds)s::text[] IS NULL OR a.kind = ANY(%(kinds)s))"
            " AND (%(sources)s::bigint[] IS NULL OR a.source_alert_id = ANY(%(sources)s))"
            " AND (%(rules)s::text[] IS NULL OR a.rule_id = ANY(%(rules)s))"
            " ORDER BY a.id",
            {
                "states": list(states),
                "kinds": list(kinds) if kinds is not None else None,
                "sources": list(source_alert_ids) if source_alert_ids is not None else None,
                "rules": list(rule_ids) if rule_ids is not None else None,
            },
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class SeriesSince:
    """One series to read from `since` on."""

    station_id: int
    parameter_id: int
    since: datetime


@dataclass(frozen=True, slots=True)
class RawPoint:
    station_id: int
    parameter_id: int
    time: datetime
    period_s: int
    value: float


# Sample and period values (not daily means: those are statistics of their own) that feed rules.
# One short primary-key range scan per series. OFFSET 0 keeps each LATERAL subquery a
# parameterised index scan: flattened into a join, a freshly loaded partition without
# statistics was planned as a nested loop over a sequential scan (100 ms instead of 1).
_RAW_POINTS = """
SELECT s.station_id, s.parameter_id, r.time, r.period_s, r.value
FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(since)s::timestamptz[])
     AS s(station_id, parameter_id, since)
CROSS JOIN LATERAL (
    SELECT time, period_s, value FROM reading
    WHERE station_id = s.station_id AND parameter_id = s.parameter_id
      AND period_s IN (0, 60, 3600) AND time >= s.since AND time < %(until)s
      AND qc = ANY(%(qc)s) AND value IS NOT NULL
    OFFSET 0
) r
ORDER BY s.station_id, s.parameter_id, r.time, r.period_s
"""


async def raw_points(
    conn: Conn, series: Sequence[SeriesSince], *, until: datetime
) -> list[RawPoint]:
    """Valid sample and period readings of each series in [since, until), in time order."""
    return await _per_series(conn, _RAW_POINTS, RawPoint, series, until=until, qc=_FEEDING_QC)


@dataclass(frozen=True, slots=True)
class HourlyValue:
    station_id: int
    parameter_id: int
    hour: datetime
    value: float


_HOURLY = """
SELECT s.station_id, s.parameter_id, h.hour, h.value
FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(since)s::timestamptz[])
     AS s(station_id, parameter_id, since)
CROSS JOIN LATERAL (
    SELECT hour, value FROM reading_hourly
    WHERE station_id = s.station_id AND parameter_id = s.parameter_id
      AND hour >= s.since AND hour < %(until)s AND value IS NOT NULL
    OFFSET 0
) h
ORDER BY s.station_id, s.parameter_id, h.hour
"""


async def hourly_values(
    conn: Conn, series: Sequence[SeriesSince], *, until: datetime
) -> list[HourlyValue]:
    """Valid hourly means (reading_hourly) of each series in [since, until)."""
    return await _per_series(conn, _HOURLY, HourlyValue, series, until=until)


async def _per_series(
    conn: Conn, query: str, row: type[RowT], series: Sequence[SeriesSince], **params: object
) -> list[RowT]:
    """Run a per-series query (station, parameter, since arrays, and `params`) into `row`s."""
    if not series:
        return []
    async with conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(
            query.encode(),
            {
                "station": [s.station_id for s in series],
                "parameter": [s.parameter_id for s in series],
                "since": [s.since for s in series],
                **params,
            },
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class DailyValue:
    station_id: int
    parameter_id: int
    day: date
    value: float


_DAILY = """
SELECT s.station_id, s.parameter_id, d.day, d.value
FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(since)s::date[])
     AS s(station_id, parameter_id, since)
CROSS JOIN LATERAL (
    SELECT day, value FROM reading_daily
    WHERE station_id = s.station_id AND parameter_id = s.parameter_id
      AND day >= s.since AND value IS NOT NULL
    OFFSET 0
) d
ORDER BY s.station_id, s.parameter_id, d.day
"""


async def daily_values(conn: Conn, series: Sequence[tuple[int, int, date]]) -> list[DailyValue]:
    """Valid natural-day means (reading_daily) of each (station, parameter) from a day on."""
    if not series:
        return []
    async with conn.cursor(row_factory=class_row(DailyValue)) as cur:
        await cur.execute(
            _DAILY.encode(),
            {
                "station": [s[0] for s in series],
                "parameter": [s[1] for s in series],
                "since": [s[2] for s in series],
            },
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class SeriesSilence:
    """A series' reporting interval and the end of the period of its newest reading (any QC)."""

    station_id: int
    parameter_id: int
    interval_s: int
    last_end: datetime


# A station that sends maintenance- or fault-flagged data is not silent, so any QC counts here.
# Each series × period is one short backward index scan.
_SILENCE = """
SELECT sp.station_id, sp.parameter_id, sp.interval_s, last.end_at AS last_end
FROM station_parameter sp
CROSS JOIN LATERAL (
    SELECT max(r.time + make_interval(secs => r.period_s)) AS end_at
    FROM unnest(ARRAY[0, 60, 3600, 86400]) AS period(s)
    CROSS JOIN LATERAL (
        SELECT time, period_s FROM reading
        WHERE station_id = sp.station_id AND parameter_id = sp.parameter_id
          AND period_s = period.s
        ORDER BY time DESC LIMIT 1
    ) r
) last
WHERE sp.interval_s <= %(max_interval)s AND last.end_at IS NOT NULL
  AND (%(stations)s::int[] IS NULL OR sp.station_id = ANY(%(stations)s))
ORDER BY sp.station_id, sp.parameter_id
"""


async def series_silence(
    conn: Conn, *, max_interval_s: int, station_ids: Sequence[int] | None = None
) -> list[SeriesSilence]:
    """For every series that has reported at all: its interval and its newest period end."""
    async with conn.cursor(row_factory=class_row(SeriesSilence)) as cur:
        await cur.execute(
            _SILENCE.encode(),
            {
                "max_interval": max_interval_s,
                "stations": list(station_ids) if station_ids is not None else None,
            },
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: int
    station_id: int
    station: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    applied_at: datetime | None
    closed_at: datetime | None


_WINDOW_COLUMNS = (
    "w.id, w.station_id, s.code AS station, w.starts_at, w.ends_at, w.reason, w.created_by,"
    " w.created_at, w.applied_at, w.closed_at"
    " FROM maintenance_window w JOIN station s ON s.id = w.station_id"
)


async def maintenance_windows(
    conn: Conn, *, station_ids: Sequence[int] | None = None, ending_after: datetime | None = None
) -> list[MaintenanceWindow]:
    """Maintenance windows of some stations (or all) that end after a time (or any), by start."""
    async with conn.cursor(row_factory=class_row(MaintenanceWindow)) as cur:
        await cur.execute(
            "SELECT " + _WINDOW_COLUMNS + " WHERE (%(stations)s::int[] IS NULL"
            " OR w.station_id = ANY(%(stations)s))"
            " AND (%(after)s::timestamptz IS NULL OR w.ends_at > %(after)s)"
            " ORDER BY w.starts_at, w.id",
            {
                "stations": list(station_ids) if station_ids is not None else None,
                "after": ending_after,
            },
        )
        return await cur.fetchall()


async def create_maintenance_window(
    conn: Conn,
    *,
    station_id: int,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    created_by: str,
    at: datetime,
) -> MaintenanceWindow:
    """Record planned work at a station; its data inside [starts_at, ends_at) raises no alert."""
    if ends_at <= starts_at:
        raise InvalidInput("ends_at must be after starts_at (the window is [starts_at, ends_at))")
    cur = await conn.execute(
        "INSERT INTO maintenance_window (station_id, starts_at, ends_at, reason, created_by,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        [station_id, starts_at, ends_at, reason, created_by, at],
    )
    row = await cur.fetchone()
    assert row is not None
    async with conn.cursor(row_factory=class_row(MaintenanceWindow)) as fetch:
        await fetch.execute("SELECT " + _WINDOW_COLUMNS + " WHERE w.id = %s", [row[0]])
        created = await fetch.fetchone()
    assert created is not None
    return created


async def windows_to_apply(conn: Conn, *, now: datetime) -> list[MaintenanceWindow]:
    """Windows new since the last sweep, or ended and not yet closed; locked for this sweep."""
    async with conn.cursor(row_factory=class_row(MaintenanceWindow)) as cur:
        await cur.execute(
            "SELECT " + _WINDOW_COLUMNS + " WHERE w.applied_at IS NULL"
            " OR (w.closed_at IS NULL AND w.ends_at <= %s)"
            " ORDER BY w.id FOR UPDATE OF w SKIP LOCKED",
            [now],
        )
        return await cur.fetchall()


async def mark_windows_applied(
    conn: Conn, windows: Sequence[MaintenanceWindow], *, at: datetime
) -> None:
    """Record that the sweep applied these windows (and closed those that have ended)."""
    if windows:
        await conn.execute(
            "UPDATE maintenance_window SET applied_at = coalesce(applied_at, %(at)s),"
            " closed_at = CASE WHEN ends_at <= %(at)s THEN %(at)s END WHERE id = ANY(%(ids)s)",
            {"at": at, "ids": [w.id for w in windows]},
        )


@dataclass(frozen=True, slots=True)
class NewEvent:
    kind: str
    state: str
    severity: str
    value: float | None
    details: dict[str, Any] = field(default_factory=dict)


_INSERT_ALERT = """
INSERT INTO alert (rule_id, rule_version, station_id, city, parameter_id, kind, state, severity,
                   value, opened_at, pending_since, fired_at, resolved_at, retracted_at,
                   last_evaluated_at, trigger_time, trigger_period_s, last_point_at,
                   clear_point_at, details, addressed_to, source_alert_id)
VALUES (%(rule_id)s, %(rule_version)s, %(station_id)s, %(city)s, %(parameter_id)s, %(kind)s,
        %(state)s, %(severity)s, %(value)s, %(opened_at)s, %(pending_since)s, %(fired_at)s,
        %(resolved_at)s, %(retracted_at)s, %(last_evaluated_at)s, %(trigger_time)s,
        %(trigger_period_s)s, %(last_point_at)s, %(clear_point_at)s, %(details)s,
        %(addressed_to)s, %(source_alert_id)s)
RETURNING id
"""


async def insert_alerts(conn: Conn, alerts: Sequence[NewAlert]) -> list[int]:
    """Insert alerts in one pipelined round trip; returns their ids in the order given."""
    if not alerts:
        return []
    ids = []
    async with conn.cursor() as cur:
        await cur.executemany(
            _INSERT_ALERT.encode(),
            [{**_as_params(a), "details": Jsonb(a.details)} for a in alerts],
            returning=True,
        )
        while True:
            row = await cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))
            if not cur.nextset():
                break
    return ids


_UPDATE_ALERT = """
UPDATE alert SET state = %(state)s, severity = %(severity)s, value = %(value)s,
    pending_since = %(pending_since)s, fired_at = %(fired_at)s, resolved_at = %(resolved_at)s,
    retracted_at = %(retracted_at)s, last_evaluated_at = %(last_evaluated_at)s,
    trigger_time = %(trigger_time)s, trigger_period_s = %(trigger_period_s)s,
    last_point_at = %(last_point_at)s, clear_point_at = %(clear_point_at)s,
    details = %(details)s, source_alert_id = %(source_alert_id)s
WHERE id = %(id)s
"""


async def update_alerts(conn: Conn, alerts: Sequence[tuple[int, NewAlert]]) -> None:
    """Write alerts' new states in one pipelined round trip (rule, subject and kind stay)."""
    if alerts:
        async with conn.cursor() as cur:
            await cur.executemany(
                _UPDATE_ALERT.encode(),
                [
                    {**_as_params(a), "details": Jsonb(a.details), "id": alert_id}
                    for alert_id, a in alerts
                ],
            )


_INSERT_EVENTS = """
INSERT INTO alert_event (alert_id, at, kind, state, severity, value, details)
SELECT e.alert_id, %(at)s, e.kind, e.state, e.severity, e.value, e.details
FROM unnest(%(alert)s::bigint[], %(kind)s::text[], %(state)s::text[], %(severity)s::text[],
            %(value)s::float8[], %(details)s::jsonb[])
     WITH ORDINALITY AS e(alert_id, kind, state, severity, value, details, ord)
ORDER BY e.ord
"""


async def insert_events(
    conn: Conn, events: Sequence[tuple[int, NewEvent]], *, at: datetime
) -> None:
    """Append (alert id, event) pairs in the order given: event ids follow that order."""
    if not events:
        return
    await conn.execute(
        _INSERT_EVENTS.encode(),
        {
            "at": at,
            "alert": [alert_id for alert_id, _ in events],
            "kind": [e.kind for _, e in events],
            "state": [e.state for _, e in events],
            "severity": [e.severity for _, e in events],
            "value": [e.value for _, e in events],
            "details": [Jsonb(e.details) for _, e in events],
        },
    )


async def notify_alert_events(conn: Conn) -> None:
    """Wake the notification stage; delivered when the transaction commits."""
    await conn.execute("SELECT pg_notify(%s, '')", [ALERT_EVENTS_CHANNEL])


def _as_params(alert: NewAlert) -> dict[str, Any]:
    return {name: getattr(alert, name) for name in NewAlert.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class AlertListing:
    """An alert with the codes the API shows."""

    id: int
    rule_id: str
    rule_version: int
    kind: str
    state: str
    severity: str
    station: str | None
    station_city: str | None
    area: str | None
    city: str | None
    parameter: str | None
    value: float | None
    opened_at: datetime
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None
    last_evaluated_at: datetime
    trigger_time: datetime | None
    details: dict[str, Any]
    addressed_to: list[str]
    acknowledged_by: list[str]
    source_alert_id: int | None


_LISTING = """
SELECT a.id, a.rule_id, a.rule_version, a.kind, a.state, a.severity, s.code AS station,
       s.city AS station_city, s.area, a.city, p.code AS parameter, a.value, a.opened_at,
       a.pending_since, a.fired_at, a.resolved_at, a.retracted_at, a.last_evaluated_at,
       a.trigger_time, a.details,
       array(SELECT g.code FROM agency g WHERE g.id = ANY(a.addressed_to) ORDER BY g.code)
           AS addressed_to,
       array(SELECT g.code FROM alert_ack k JOIN agency g ON g.id = k.agency_id
             WHERE k.alert_id = a.id ORDER BY g.code) AS acknowledged_by,
       a.source_alert_id
FROM alert a
LEFT JOIN station s ON s.id = a.station_id
LEFT JOIN parameter p ON p.id = a.parameter_id
"""
# City-wide alerts have no station: their city is the alert's own, and they cover both areas.
# A regional episode has neither: it concerns the cities its points name (details.cities).
_LIST_ALERTS = (
    _LISTING + " WHERE (%(id)s::bigint IS NULL OR a.id = %(id)s)"
    " AND (%(states)s::text[] IS NULL OR a.state = ANY(%(states)s))"
    " AND (%(kind)s::text IS NULL OR a.kind = %(kind)s)"
    " AND (%(station)s::text IS NULL OR s.code = %(station)s)"
    " AND (%(city)s::text IS NULL OR coalesce(s.city, a.city) = %(city)s"
    "      OR (a.station_id IS NULL AND a.city IS NULL AND a.details->'cities' ? %(city)s))"
    " AND (%(area)s::text IS NULL OR s.area = %(area)s OR a.station_id IS NULL)"
    " AND (%(since)s::timestamptz IS NULL OR a.opened_at >= %(since)s"
    "      OR a.state IN ('pending', 'firing')"
    "      OR coalesce(a.resolved_at, a.retracted_at) >= %(since)s)"
    " AND (%(before)s::bigint IS NULL OR a.id < %(before)s)"
    " ORDER BY a.id DESC LIMIT %(limit)s"
)


async def list_alerts(
    conn: Conn,
    *,
    states: Sequence[str] | None = None,
    kind: str | None = None,
    station: str | None = None,
    city: str | None = None,
    area: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AlertListing]:
    """Alerts newest first; `since` keeps those live at or after it (open, or ended since)."""
    return await _listing(
        conn,
        {
            "id": None,
            "states": list(states) if states else None,
            "kind": kind,
            "station": station,
            "city": city,
            "area": area,
            "since": since,
            "before": before_id,
            "limit": limit,
        },
    )


async def get_alert(conn: Conn, alert_id: int) -> AlertListing:
    """One alert, or NotFound."""
    found = await _listing(
        conn,
        {
            "id": alert_id,
            "states": None,
            "kind": None,
            "station": None,
            "city": None,
            "area": None,
            "since": None,
            "before": None,
            "limit": 1,
        },
    )
    if not found:
        raise NotFound(f"no alert with id {alert_id}")
    return found[0]


async def _listing(conn: Conn, params: dict[str, Any]) -> list[AlertListing]:
    async with conn.cursor(row_factory=class_row(AlertListing)) as cur:
        await cur.execute(_LIST_ALERTS.encode(), params)
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class AlertEventRow:
    id: int
    alert_id: int
    at: datetime
    kind: str
    state: str
    severity: str
    value: float | None
    details: dict[str, Any]


async def alert_events(
    conn: Conn, *, alert_id: int | None = None, after_id: int = 0, limit: int = 1000
) -> list[AlertEventRow]:
    """Alert events in order (id), of one alert or all, after an event id."""
    async with conn.cursor(row_factory=class_row(AlertEventRow)) as cur:
        await cur.execute(
            "SELECT id, alert_id, at, kind, state, severity, value, details FROM alert_event"
            " WHERE (%(alert)s::bigint IS NULL OR alert_id = %(alert)s) AND id > %(after)s"
            " ORDER BY id LIMIT %(limit)s",
            {"alert": alert_id, "after": after_id, "limit": limit},
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class AckRow:
    alert_id: int
    agency: str
    key_id: int
    at: datetime
    comment: str | None


async def alert_acks(conn: Conn, alert_id: int) -> list[AckRow]:
    """An alert's acknowledgements, oldest first."""
    async with conn.cursor(row_factory=class_row(AckRow)) as cur:
        await cur.execute(
            "SELECT k.alert_id, g.code AS agency, k.key_id, k.at, k.comment FROM alert_ack k"
            " JOIN agency g ON g.id = k.agency_id WHERE k.alert_id = %s ORDER BY k.at, g.code",
            [alert_id],
        )
        return await cur.fetchall()


# The ack and its event are written together; an agency acknowledging again changes nothing.
_ACK = """
WITH target AS (
    SELECT a.id, a.state, a.severity, a.value, g.id AS agency_id, g.code AS agency,
           g.id = ANY(a.addressed_to) AS addressed
    FROM alert a, agency g WHERE a.id = %(alert)s AND g.code = %(agency)s
    FOR UPDATE OF a
), acked AS (
    INSERT INTO alert_ack (alert_id, agency_id, key_id, at, comment)
    SELECT id, agency_id, %(key)s, %(at)s, %(comment)s FROM target WHERE addressed
    ON CONFLICT (alert_id, agency_id) DO NOTHING
    RETURNING alert_id
), logged AS (
    INSERT INTO alert_event (alert_id, at, kind, state, severity, value, details)
    SELECT t.id, %(at)s, 'acknowledged', t.state, t.severity, t.value,
           jsonb_build_object('agency', t.agency, 'key_id', %(key)s::int,
                              'comment', %(comment)s::text)
    FROM target t JOIN acked ON acked.alert_id = t.id
    RETURNING id
)
SELECT t.addressed, EXISTS (SELECT 1 FROM acked) FROM target t
"""


async def acknowledge(
    conn: Conn, *, alert_id: int, agency: str, key_id: int, at: datetime, comment: str | None
) -> bool:
    """Record an agency's ack (once per agency); True if new. NotFound / InvalidInput otherwise."""
    cur = await conn.execute(
        _ACK.encode(),
        {"alert": alert_id, "agency": agency, "key": key_id, "at": at, "comment": comment},
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    addressed, created = row
    if not addressed:
        raise Forbidden(
            f"alert {alert_id} is not addressed to {agency}, so {agency} cannot acknowledge it"
        )
    if created:
        await notify_alert_events(conn)
    return bool(created)


@dataclass(frozen=True, slots=True)
class StationOwner:
    id: int
    code: str
    agency: str


async def station_owner(conn: Conn, code: str) -> StationOwner:
    """A station's id and owning agency by code, or StationNotFound."""
    async with conn.cursor(row_factory=class_row(StationOwner)) as cur:
        await cur.execute(
            "SELECT s.id, s.code, a.code AS agency FROM station s"
            " JOIN agency a ON a.id = s.agency_id WHERE s.code = %s",
            [code],
        )
        found = await cur.fetchone()
    if found is None:
        raise StationNotFound(f"no station with code {code!r}")
    return found


@dataclass(frozen=True, slots=True)
class AlertNow:
    """An alert as it stands: what subscriptions and silences match, what a message freezes."""

    id: int
    rule_id: str
    kind: str
    state: str
    severity: str
    value: float | None
    station: str | None
    city: str | None  # None for a regional alert
    area: str | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None


async def alerts_now(conn: Conn, alert_ids: Iterable[int]) -> list[AlertNow]:
    """The current state and labels of some alerts."""
    async with conn.cursor(row_factory=class_row(AlertNow)) as cur:
        await cur.execute(
            "SELECT a.id, a.rule_id, a.kind, a.state, a.severity, a.value, s.code AS station,"
            " coalesce(s.city, a.city) AS city, s.area, a.fired_at, a.resolved_at, a.retracted_at"
            " FROM alert a LEFT JOIN station s ON s.id = a.station_id WHERE a.id = ANY(%s)",
            [sorted(set(alert_ids))],
        )
        return await cur.fetchall()


async def acks_of(conn: Conn, alert_ids: Iterable[int]) -> set[tuple[int, int]]:
    """(alert id, agency id) of every acknowledgement of some alerts."""
    cur = await conn.execute(
        "SELECT alert_id, agency_id FROM alert_ack WHERE alert_id = ANY(%s)",
        [sorted(set(alert_ids))],
    )
    return {(int(a), int(g)) for a, g in await cur.fetchall()}


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a message says about an alert besides its state: rule, station, parameter."""

    id: int
    rule_id: str
    rule_version: int
    definition: dict[str, Any]
    kind: str
    state: str
    severity: str
    value: float | None
    city: str | None
    opened_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None
    trigger_time: datetime | None
    details: dict[str, Any]
    station: dict[str, Any] | None
    source_station: dict[str, Any] | None
    parameter: dict[str, Any] | None


_STATION_JSON = (
    "jsonb_build_object('code', {s}.code, 'name', {s}.name, 'name_zh', {s}.name_zh,"
    " 'city', {s}.city, 'area', {s}.area, 'medium', {s}.medium, 'lat', {s}.lat, 'lon', {s}.lon)"
)
_ALERT_FACTS = (
    "SELECT a.id, a.rule_id, a.rule_version, v.definition, a.kind, a.state, a.severity, a.value,"
    " a.city, a.opened_at, a.fired_at, a.resolved_at, a.retracted_at, a.trigger_time, a.details,"
    " CASE WHEN s.id IS NOT NULL THEN " + _STATION_JSON.format(s="s") + " END AS station,"
    " CASE WHEN us.id IS NOT NULL THEN " + _STATION_JSON.format(s="us") + " END"
    " AS source_station,"
    " CASE WHEN p.id IS NOT NULL THEN jsonb_build_object('code', p.code, 'name', p.name,"
    " 'name_zh', p.name_zh, 'unit', p.unit) END AS parameter"
    " FROM alert a"
    " JOIN rule_version v ON v.rule_id = a.rule_id AND v.version = a.rule_version"
    " LEFT JOIN station s ON s.id = a.station_id"
    " LEFT JOIN parameter p ON p.id = a.parameter_id"
    " LEFT JOIN alert src ON src.id = a.source_alert_id"
    " LEFT JOIN station us ON us.id = src.station_id"
    " WHERE a.id = ANY(%s) ORDER BY a.id"
)


async def alert_facts(conn: Conn, alert_ids: Iterable[int]) -> list[AlertFacts]:
    """Rule, station, parameter and upstream station of some alerts."""
    async with conn.cursor(row_factory=class_row(AlertFacts)) as cur:
        await cur.execute(_ALERT_FACTS.encode(), [sorted(set(alert_ids))])
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An alert event with the alert's rule, place and parameter, for the live stream."""

    id: int
    alert_id: int
    at: datetime
    kind: str
    state: str
    severity: str
    value: float | None
    details: dict[str, Any]
    rule_id: str
    alert_kind: str
    station: str | None
    city: str | None
    area: str | None
    parameter: str | None


async def stream_events(conn: Conn, *, after_id: int, limit: int) -> list[StreamEvent]:
    """Events after an id, in id order."""
    async with conn.cursor(row_factory=class_row(StreamEvent)) as cur:
        await cur.execute(
            "SELECT e.id, e.alert_id, e.at, e.kind, e.state, e.severity, e.value, e.details,"
            " a.rule_id, a.kind AS alert_kind, s.code AS station,"
            " coalesce(s.city, a.city) AS city, s.area, p.code AS parameter"
            " FROM alert_event e JOIN alert a ON a.id = e.alert_id"
            " LEFT JOIN station s ON s.id = a.station_id"
            " LEFT JOIN parameter p ON p.id = a.parameter_id"
            " WHERE e.id > %s ORDER BY e.id LIMIT %s",
            [after_id, limit],
        )
        return await cur.fetchall()


async def last_event_id(conn: Conn) -> int:
    """The newest alert event's id (0 when there is none)."""
    cur = await conn.execute("SELECT coalesce(max(id), 0) FROM alert_event")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
