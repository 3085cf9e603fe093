"""Alert engine: evaluate rules for touched series and sweep timers, writing alerts and events.

The alert loop (alerts/loop.py) calls `evaluate` after each batch of dirty series and `sweep`
periodically, both inside its transaction. The engine keeps no state in memory: every alert,
pending timer and episode boundary is in the database, so a restarted worker neither re-fires
nor forgets. Each (rule, subject) is evaluated under a transaction-scoped advisory lock, so
several workers can share the work.

Statistics come from the rollups (reading_hourly, reading_daily) and, for instant, rate-of-change
and per-sample water rules, from raw readings; only QC valid and below-detection data feeds them,
and a station's data inside a maintenance window is left out. Points older than LOOKBACK are
history: late data that old is stored but raises nothing.
"""

from __future__ import annotations

import bisect
import functools
import math
import time as monotonic
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, cast

import numpy as np

from alerts.propagation import Arrival, Reach, RiverStation, arrivals
from alerts.rules import (
    Alert,
    Event,
    Point,
    Track,
    promote_due,
    reassess_trigger,
    replay,
)
from alerts.standards import (
    assess_sea_water,
    assess_surface_water,
    daily_aqi,
    edition_for,
    hourly_aqi,
)
from alerts.standards.tables import (
    SEA_WATER_ITEMS,
    SURFACE_WATER_ITEMS,
    SURFACE_WATER_NOT_EVALUATED,
)
from alerts.windows import moving_8h_mean, moving_24h_mean, o3_daily_max_8h
from core.timeutil import CST
from schemas.alerts import AlertEventKind, AlertState
from schemas.rules import Level, RuleDefinition, Severity, severity_rank
from store.alerts import (
    AlertRow,
    DailyValue,
    EngineSeries,
    EngineStation,
    HourlyValue,
    MaintenanceWindow,
    NewAlert,
    NewEvent,
    RawPoint,
    SeriesSince,
    agency_ids,
    daily_values,
    engine_series,
    engine_stations,
    hourly_values,
    insert_alerts,
    insert_events,
    lock_subjects,
    maintenance_windows,
    mark_windows_applied,
    notify_alert_events,
    open_alerts,
    raw_points,
    reach_rows,
    series_silence,
    subject_alerts,
    update_alerts,
    windows_to_apply,
)
from store.pool import Conn
from store.rules import active_rule_texts

LOOKBACK = timedelta(days=2)
# Readings up to a day ahead are accepted (DESIGN §9), so reads run that far.
AHEAD = timedelta(days=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
AQI_POLLUTANTS = ("so2", "no2", "co", "o3", "pm10", "pm25")
# A water item's latest sample stands for the station's water for two reporting intervals
# (the staleness cadence), so 4-hourly nutrients count in every hourly snapshot between them.
SAMPLE_VALID_INTERVALS = 2
_CITY_SUBJECT = {"guangzhou": -1, "dongguan": -2}

# (rule id, station id, city): a station's alert, or a city-wide alert (station None).
Subject = tuple[str, int | None, str | None]


@dataclass(frozen=True, slots=True)
class Touched:
    """A series that received accepted or revised readings, with the data times touched."""

    station_id: int
    parameter_id: int
    times: list[datetime] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ActiveRule:
    """A rule's version in force, as the engine evaluates it."""

    id: str
    version: int
    definition: RuleDefinition


@dataclass(frozen=True)
class _Catalogue:
    stations: dict[int, EngineStation]
    series: dict[tuple[int, int], EngineSeries]
    by_station: dict[int, list[EngineSeries]]
    parameter_ids: dict[str, int]
    reaches: dict[str, Reach]
    agencies: list[int]
    rules: dict[str, ActiveRule]

    def station_series(self, station_id: int, codes: Iterable[str]) -> list[EngineSeries]:
        wanted = set(codes)
        return [s for s in self.by_station.get(station_id, ()) if s.parameter in wanted]


@dataclass
class _Job:
    """One (rule, subject) to evaluate from `start`; touched data spans [first, last]."""

    rule: ActiveRule
    subject: Subject
    start: datetime
    first: datetime
    last: datetime
    fetch_from: datetime = field(init=False)
    stations: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fetch_from = self.start

    @property
    def definition(self) -> RuleDefinition:
        return self.rule.definition


@dataclass
class _Data:
    raw: dict[tuple[int, int], list[RawPoint]] = field(default_factory=dict)
    hourly: dict[tuple[int, int], dict[datetime, float]] = field(default_factory=dict)
    daily: dict[tuple[int, int], dict[date, float]] = field(default_factory=dict)


@dataclass
class _Written:
    """A stored track with what the propagation step needs to know about it."""

    track: Track
    rule: ActiveRule
    subject: Subject
    parameter_id: int | None


async def evaluate(conn: Conn, *, touched: list[Touched], now: datetime) -> None:
    """Re-evaluate every rule that watches the touched series, inside the caller's transaction."""
    if not touched:
        return
    catalogue = await _load(conn)
    events = await _evaluate(conn, catalogue, touched, now)
    stations = sorted({t.station_id for t in touched})
    stale = [
        row for row in await open_alerts(conn, kinds=["staleness"]) if row.station_id in stations
    ]
    if stale:
        events += await _staleness(
            conn, catalogue, now, station_ids=[r.station_id for r in stale if r.station_id]
        )
    if events:
        await notify_alert_events(conn)


async def sweep(conn: Conn, *, now: datetime) -> None:
    """Run the periodic checks: staleness, pending timers coming due, maintenance windows."""
    catalogue = await _load(conn)
    events = 0
    windows = await windows_to_apply(conn, now=now)
    if windows:
        # A new window retracts what its station's data inside it raised; an ended one lets the
        # station's data after it be judged again.
        touched = [
            Touched(w.station_id, s.parameter_id, [w.starts_at, min(w.ends_at, now)])
            for w in windows
            for s in catalogue.by_station.get(w.station_id, ())
        ]
        events += await _evaluate(conn, catalogue, touched, now)
        await mark_windows_applied(conn, windows, at=now)
    events += await _promote_pending(conn, catalogue, now)
    events += await _staleness(conn, catalogue, now, station_ids=None)
    if events:
        await notify_alert_events(conn)


# The catalogue changes only with `envlink seed`; like the ingest pipeline, the engine picks a
# change up within CATALOGUE_TTL_S. Parsed rule definitions are cached by their JSON text, so a
# rule changed through the API applies from the next round. Neither cache holds alert state.
CATALOGUE_TTL_S = 30.0
_catalogues: dict[str, tuple[float, _Catalogue]] = {}
_definitions: dict[str, RuleDefinition] = {}


async def _load(conn: Conn) -> _Catalogue:
    database = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    cached = _catalogues.get(database)
    if cached is None or monotonic.monotonic() - cached[0] > CATALOGUE_TTL_S:
        cached = (monotonic.monotonic(), await _load_catalogue(conn))
        _catalogues[database] = cached
    if len(_definitions) > 10_000:
        _definitions.clear()
    rules = {}
    for text in await active_rule_texts(conn):
        definition = _definitions.get(text.definition)
        if definition is None:
            definition = RuleDefinition.model_validate_json(text.definition)
            _definitions[text.definition] = definition
        if definition.enabled:
            rules[text.id] = ActiveRule(text.id, text.version, definition)
    return replace(cached[1], rules=rules)


async def _load_catalogue(conn: Conn) -> _Catalogue:
    stations = await engine_stations(conn)
    series = await engine_series(conn)
    by_station: dict[int, list[EngineSeries]] = defaultdict(list)
    for entry in series:
        by_station[entry.station_id].append(entry)
    reaches = {
        r.code: Reach(
            r.code, tuple(r.downstream), r.length_km, r.velocity_m_s, r.tidal, r.tidal_factor
        )
        for r in await reach_rows(conn)
    }
    return _Catalogue(
        stations={s.id: s for s in stations},
        series={(s.station_id, s.parameter_id): s for s in series},
        by_station=dict(by_station),
        parameter_ids={s.parameter: s.parameter_id for s in series},
        reaches=reaches,
        agencies=await agency_ids(conn),
        rules={},
    )


def _in_scope(rule: RuleDefinition, station: EngineStation) -> bool:
    scope = rule.scope
    if scope.medium is not None and station.medium != scope.medium:
        return False
    if scope.city is not None and station.city != scope.city:
        return False
    if scope.area is not None and station.area != scope.area:
        return False
    if scope.stations is not None and station.code not in scope.stations:
        return False
    # Background stations never speak for a city; other rules may leave them out too.
    return not ((scope.exclude_background or scope.city_wide) and station.background)


def _class_items(station: EngineStation) -> frozenset[str]:
    if station.medium != "water":
        return frozenset()
    return _items_of(station.water_standard, station.water_body)


@functools.cache
def _items_of(standard: str | None, water_body: str | None) -> frozenset[str]:
    """The items a station's class is judged on (GB 3097 or GB 3838 for its water body)."""
    if standard == "gb3097":
        return frozenset(SEA_WATER_ITEMS)
    excluded = SURFACE_WATER_NOT_EVALUATED.get(water_body or "river", frozenset())
    return frozenset(item for item in SURFACE_WATER_ITEMS if item not in excluded)


def _watches(rule: RuleDefinition, station: EngineStation, parameter: str) -> bool:
    if not _in_scope(rule, station):
        return False
    if rule.kind in ("threshold", "rate_of_change"):
        return parameter == rule.parameter
    if rule.kind == "aqi":
        return station.medium == "air" and parameter in AQI_POLLUTANTS
    if rule.kind == "water_class":
        return parameter in _class_items(station)
    return False


def _subject(rule: RuleDefinition, station: EngineStation) -> Subject:
    if rule.scope.city_wide:
        return (rule.id, None, station.city)
    return (rule.id, station.id, None)


def _granularity(rule: RuleDefinition) -> str:
    """What a rule's points are: one per sample ('instant'), per hour or per natural day."""
    if rule.kind == "aqi":
        return "hour" if rule.statistic == "mean_1h" else "day"
    if rule.statistic in ("mean_1h", "mean_8h", "mean_24h"):
        return "hour"
    if rule.statistic in ("day_mean", "o3_max_8h", "water_day"):
        return "day"
    return "instant"


def _floor(granularity: str, moment: datetime) -> datetime:
    if granularity == "hour":
        return _hour(moment)
    if granularity == "day":
        return _day_start(moment)
    return moment


def _reach_after(rule: RuleDefinition) -> timedelta:
    """How far after a touched point later points still depend on it."""
    if rule.statistic == "mean_8h":
        return timedelta(hours=8)
    if rule.statistic == "mean_24h" or (rule.kind == "aqi" and rule.statistic == "mean_1h"):
        return timedelta(hours=24)
    if rule.rate is not None:
        return timedelta(seconds=rule.rate.window_s)
    if rule.kind == "water_class" and rule.statistic == "water_sample":
        return timedelta(days=2 * SAMPLE_VALID_INTERVALS)
    if rule.statistic in ("day_mean", "o3_max_8h", "water_day"):
        return DAY
    return timedelta(0)


def _hour(moment: datetime) -> datetime:
    local = moment.astimezone(CST)
    return local.replace(minute=0, second=0, microsecond=0)


def _day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(CST).date(), time(0), tzinfo=CST)


def _jobs(catalogue: _Catalogue, touched: Sequence[Touched], now: datetime) -> dict[Subject, _Job]:
    floor = now - LOOKBACK
    watchers: dict[str, list[ActiveRule]] = defaultdict(list)
    for stored in catalogue.rules.values():
        rule = stored.definition
        if rule.parameter is not None:
            codes: Iterable[str] = (rule.parameter,)
        elif rule.kind == "aqi":
            codes = AQI_POLLUTANTS
        elif rule.kind == "water_class":
            codes = {*SURFACE_WATER_ITEMS, *SEA_WATER_ITEMS}
        else:
            codes = ()
        for code in codes:
            watchers[code].append(stored)
    jobs: dict[Subject, _Job] = {}
    for entry in touched:
        station = catalogue.stations.get(entry.station_id)
        series = catalogue.series.get((entry.station_id, entry.parameter_id))
        times = [t for t in entry.times if t >= floor]
        if station is None or series is None or not times:
            continue
        earliest, latest = min(times), max(times)
        bounds: dict[str, tuple[datetime, datetime, datetime]] = {}
        for stored in watchers.get(series.parameter, ()):
            rule = stored.definition
            if not _watches(rule, station, series.parameter):
                continue
            granularity = _granularity(rule)
            if granularity not in bounds:
                bounds[granularity] = (
                    _floor(granularity, earliest),
                    _floor(granularity, latest),
                    _floor(granularity, floor),
                )
            first, last, oldest = bounds[granularity]
            subject = _subject(rule, station)
            job = jobs.get(subject)
            if job is None:
                jobs[subject] = _Job(stored, subject, max(first, oldest), first, last)
            else:
                job.start = min(job.start, max(first, oldest))
                job.first = min(job.first, first)
                job.last = max(job.last, last)
    return jobs


async def _evaluate(
    conn: Conn, catalogue: _Catalogue, touched: Sequence[Touched], now: datetime
) -> int:
    jobs = _jobs(catalogue, touched, now)
    if not jobs:
        return 0
    await lock_subjects(conn, [(s[0], _subject_key(s)) for s in jobs])
    floor = now - LOOKBACK
    rows = await subject_alerts(conn, list(jobs), since=min(job.start for job in jobs.values()))
    by_subject: dict[Subject, list[AlertRow]] = defaultdict(list)
    for row in rows:
        by_subject[(row.rule_id, row.station_id, row.city)].append(row)
    for subject, job in jobs.items():
        horizon = _reach_after(job.definition)
        for row in by_subject.get(subject, ()):
            if _span_touched(row, job.first, job.last + horizon) and row.trigger_time is not None:
                job.fetch_from = min(job.fetch_from, max(row.trigger_time, floor))
        job.stations = _job_stations(catalogue, job)
    windows = await maintenance_windows(
        conn,
        station_ids=sorted({sid for job in jobs.values() for sid in job.stations}),
        ending_after=min(job.fetch_from for job in jobs.values()) - DAY,
    )
    data = await _fetch(conn, catalogue, list(jobs.values()), windows, now)
    written: list[tuple[_Written, NewAlert]] = []
    for subject, job in jobs.items():
        points = _points(catalogue, job, data)
        tracks = _decide(job, by_subject.get(subject, []), points, now)
        written += _written(catalogue, job.rule, subject, tracks, now)
    events = await _store(conn, written, now)
    return events + await _propagate(conn, catalogue, [w for w, _ in written], now)


def _span_touched(row: AlertRow, first: datetime, last: datetime) -> bool:
    if row.trigger_time is None:
        return False
    end = row.clear_point_at if row.clear_point_at is not None else row.last_point_at
    end = end if end is not None else row.trigger_time
    return row.trigger_time <= last and first <= end


def _job_stations(catalogue: _Catalogue, job: _Job) -> list[int]:
    _, station_id, city = job.subject
    if station_id is not None:
        return [station_id]
    return [
        s.id for s in catalogue.stations.values() if s.city == city and _in_scope(job.definition, s)
    ]


def _decide(job: _Job, rows: Sequence[AlertRow], points: list[Point], now: datetime) -> list[Track]:
    rule = job.definition
    merged: dict[int, Track] = {}
    order: list[Track] = []

    def keep(track: Track) -> None:
        key = id(track.alert)
        if key in merged:
            merged[key].events += track.events
            merged[key].changed = merged[key].changed or track.changed
        else:
            merged[key] = track
            order.append(track)

    open_alert: Alert | None = None
    closed: list[Alert] = []
    horizon = _reach_after(rule)
    for row in rows:
        alert = _pure(row)
        if (
            _span_touched(row, job.first, job.last + horizon)
            and alert.trigger_time >= job.fetch_from
        ):
            reassessed = reassess_trigger(alert, points, direction=rule.direction, now=now)
            if reassessed is not None:
                keep(reassessed)
                alert = reassessed.alert
        if alert.is_open:
            open_alert = alert
        elif alert.state == "resolved":
            closed.append(alert)
    covered = [(a.trigger_time, a.clear_point_at) for a in closed if a.clear_point_at is not None]
    for track in replay(
        open_alert,
        [p for p in points if p.time >= job.start],
        direction=rule.direction,
        for_s=rule.for_s,
        now=now,
        covered=covered,
    ):
        keep(track)
    return order


def _pure(row: AlertRow) -> Alert:
    trigger = row.trigger_time if row.trigger_time is not None else row.opened_at
    return Alert(
        id=row.id,
        state=cast(AlertState, row.state),
        severity=cast(Severity, row.severity),
        value=row.value,
        opened_at=row.opened_at,
        pending_since=row.pending_since,
        trigger_time=trigger,
        trigger_period_s=row.trigger_period_s or 0,
        last_point_at=row.last_point_at if row.last_point_at is not None else trigger,
        clear_point_at=row.clear_point_at,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        retracted_at=row.retracted_at,
        details=dict(row.details),
    )


def _subject_key(subject: Subject) -> int:
    _, station_id, city = subject
    return station_id if station_id is not None else _CITY_SUBJECT[city or ""]


async def _fetch(
    conn: Conn,
    catalogue: _Catalogue,
    jobs: Sequence[_Job],
    windows: Sequence[MaintenanceWindow],
    now: datetime,
) -> _Data:
    raw: dict[tuple[int, int], datetime] = {}
    hourly: dict[tuple[int, int], datetime] = {}
    daily: dict[tuple[int, int], date] = {}

    def need(table: dict[tuple[int, int], Any], key: tuple[int, int], since: Any) -> None:
        table[key] = min(table[key], since) if key in table else since

    for job in jobs:
        rule = job.definition
        start = job.fetch_from
        if rule.kind in ("threshold", "rate_of_change"):
            assert rule.parameter is not None
            parameter_id = catalogue.parameter_ids.get(rule.parameter)
            if parameter_id is None:
                continue
            key = (job.stations[0], parameter_id)
            if rule.statistic == "instant":
                back = timedelta(seconds=rule.rate.window_s) if rule.rate else timedelta(0)
                need(raw, key, start - back)
            elif rule.statistic == "mean_1h":
                need(hourly, key, _hour(start))
            elif rule.statistic == "mean_8h":
                need(hourly, key, _hour(start) - timedelta(hours=7))
            elif rule.statistic == "mean_24h":
                need(hourly, key, _hour(start) - timedelta(hours=23))
            elif rule.statistic == "o3_max_8h":
                need(hourly, key, _day_start(start))
            else:
                need(daily, key, start.astimezone(CST).date())
        elif rule.kind == "aqi":
            for station_id in job.stations:
                for s in catalogue.station_series(station_id, AQI_POLLUTANTS):
                    key = (station_id, s.parameter_id)
                    if rule.statistic == "mean_1h":
                        need(hourly, key, _hour(start) - _aqi_history(start, s.parameter))
                    else:
                        need(daily, key, start.astimezone(CST).date())
                        if s.parameter == "o3":
                            need(hourly, key, _day_start(start))
        elif rule.kind == "water_class":
            station = catalogue.stations[job.stations[0]]
            for s in catalogue.station_series(station.id, _class_items(station)):
                key = (station.id, s.parameter_id)
                if rule.statistic == "water_sample":
                    need(raw, key, start - timedelta(seconds=SAMPLE_VALID_INTERVALS * s.interval_s))
                else:
                    need(daily, key, start.astimezone(CST).date())
    until = now + AHEAD
    data = _Data()
    by_station: dict[int, list[MaintenanceWindow]] = defaultdict(list)
    for window in windows:
        by_station[window.station_id].append(window)

    def inside(station_id: int, begin: datetime, end: datetime) -> bool:
        # A sample is inside a window that holds its instant; a period, one it overlaps.
        for window in by_station.get(station_id, ()):
            if end > begin and window.starts_at < end and begin < window.ends_at:
                return True
            if end <= begin and window.starts_at <= begin < window.ends_at:
                return True
        return False

    for point in await raw_points(
        conn, [SeriesSince(k[0], k[1], v) for k, v in raw.items()], until=until
    ):
        end = point.time + timedelta(seconds=point.period_s)
        if not inside(point.station_id, point.time, end):
            data.raw.setdefault((point.station_id, point.parameter_id), []).append(point)
    hours: list[HourlyValue] = await hourly_values(
        conn, [SeriesSince(k[0], k[1], v) for k, v in hourly.items()], until=until
    )
    for hour in hours:
        if not inside(hour.station_id, hour.hour, hour.hour + HOUR):
            data.hourly.setdefault((hour.station_id, hour.parameter_id), {})[
                hour.hour.astimezone(CST)
            ] = hour.value
    days: list[DailyValue] = await daily_values(conn, [(k[0], k[1], v) for k, v in daily.items()])
    for day in days:
        begin = datetime.combine(day.day, time(0), tzinfo=CST)
        if not inside(day.station_id, begin, begin + DAY):
            data.daily.setdefault((day.station_id, day.parameter_id), {})[day.day] = day.value
    return data


_ladders: dict[tuple[int, date], tuple[RuleDefinition, tuple[tuple[Level, ...], str | None]]] = {}


def _levels(rule: RuleDefinition, moment: datetime) -> tuple[tuple[Level, ...], str | None]:
    """The levels and standard in force on the point's day (memoised: points share few days)."""
    day = moment.astimezone(CST).date()
    cached = _ladders.get((id(rule), day))
    # The rule itself is kept in the entry, so a reused id can never return another's ladder.
    if cached is not None and cached[0] is rule:
        return cached[1]
    ladder = rule.ladder_for(day)
    found: tuple[tuple[Level, ...], str | None] = (
        ((), None) if ladder is None else (tuple(ladder.levels), ladder.standard)
    )
    if len(_ladders) > 4096:
        _ladders.clear()
    _ladders[(id(rule), day)] = (rule, found)
    return found


def _point(
    rule: RuleDefinition,
    moment: datetime,
    value: float | None,
    *,
    span_s: int,
    period_s: int,
    details: Mapping[str, Any] | None = None,
) -> Point:
    levels, standard = _levels(rule, moment)
    extra: dict[str, Any] = {"standard": standard} if standard else {}
    extra.update(details or {})
    if value is not None and not math.isfinite(value):
        value = None
    return Point(moment, value, levels, span_s=span_s, period_s=period_s, details=extra)


def _points(catalogue: _Catalogue, job: _Job, data: _Data) -> list[Point]:
    rule = job.definition
    if rule.kind in ("threshold", "rate_of_change"):
        assert rule.parameter is not None
        parameter_id = catalogue.parameter_ids.get(rule.parameter)
        if parameter_id is None:
            return []
        key = (job.stations[0], parameter_id)
        if rule.kind == "rate_of_change":
            return _rate_points(rule, data.raw.get(key, []), job.fetch_from)
        return _threshold_points(rule, key, data, job.fetch_from)
    if rule.kind == "aqi":
        return _aqi_points(catalogue, rule, job, data)
    if rule.kind == "water_class":
        return _water_points(catalogue, rule, job, data)
    return []


def _threshold_points(
    rule: RuleDefinition, key: tuple[int, int], data: _Data, since: datetime
) -> list[Point]:
    statistic = rule.statistic
    if statistic == "instant":
        return [
            _point(rule, r.time, r.value, span_s=r.period_s, period_s=r.period_s)
            for r in data.raw.get(key, [])
            if r.time >= since
        ]
    if statistic == "mean_1h":
        return [
            _point(rule, hour, value, span_s=3600, period_s=3600)
            for hour, value in sorted(data.hourly.get(key, {}).items())
            if hour >= _hour(since)
        ]
    if statistic in ("mean_8h", "mean_24h"):
        window = 8 if statistic == "mean_8h" else 24
        first = _hour(since) - timedelta(hours=window - 1)
        hours, series = _hourly_array(data.hourly.get(key, {}), first)
        means = moving_8h_mean(series) if window == 8 else moving_24h_mean(series)
        return [
            _point(rule, hour, float(mean), span_s=3600, period_s=3600)
            for hour, mean in zip(hours, means, strict=True)
            if hour >= _hour(since) and math.isfinite(mean)
        ]
    if statistic == "o3_max_8h":
        values = data.hourly.get(key, {})
        points = []
        for day_start in _days(values, since):
            day = _day_hours(values, day_start)
            maximum = o3_daily_max_8h(day)
            points.append(_point(rule, day_start, maximum, span_s=86400, period_s=86400))
        return points
    # day_mean and water_day: the natural-day rollup.
    return [
        _point(
            rule, datetime.combine(day, time(0), tzinfo=CST), value, span_s=86400, period_s=86400
        )
        for day, value in sorted(data.daily.get(key, {}).items())
        if day >= since.astimezone(CST).date()
    ]


def _hourly_array(
    values: Mapping[datetime, float], first: datetime
) -> tuple[list[datetime], np.ndarray]:
    """Contiguous hours from `first` to the newest valid hour, NaN where an hour has no mean."""
    last = max(values, default=None)
    if last is None or last < first:
        return [], np.empty(0)
    count = int((last - first) / HOUR) + 1
    hours = [first + i * HOUR for i in range(count)]
    return hours, np.array([values.get(h, np.nan) for h in hours], dtype=np.float64)


def _days(values: Mapping[datetime, float], since: datetime) -> list[datetime]:
    starts = sorted({_day_start(hour) for hour in values if hour >= _day_start(since)})
    return starts


def _day_hours(values: Mapping[datetime, float], day_start: datetime) -> np.ndarray:
    return np.array(
        [values.get((day_start + i * HOUR).astimezone(CST), np.nan) for i in range(24)],
        dtype=np.float64,
    )


def _rate_points(
    rule: RuleDefinition, readings: Sequence[RawPoint], since: datetime
) -> list[Point]:
    assert rule.rate is not None
    window = timedelta(seconds=rule.rate.window_s)
    times = [r.time for r in readings]
    points = []
    for index, reading in enumerate(readings):
        if reading.time < since:
            continue
        begin = bisect.bisect_left(times, reading.time - window)
        earlier = [r.value for r in readings[begin:index] if r.time < reading.time]
        change: float | None = None
        if earlier:
            if rule.rate.direction == "fall":
                change = max(earlier) - reading.value
            else:
                change = reading.value - min(earlier)
        points.append(
            _point(
                rule,
                reading.time,
                change,
                span_s=0,
                period_s=reading.period_s,
                details={"reading": reading.value, "window_s": rule.rate.window_s},
            )
        )
    return points


def _aqi_history(moment: datetime, pollutant: str) -> timedelta:
    """Hours before the first point the real-time AQI needs: only HJ 633-2012 looks back (the
    SO2 24-hour and O3 8-hour moving means); the 2026 edition uses the hour's own means."""
    if edition_for(_hour(moment)) != "2012":
        return timedelta(0)
    return {"so2": timedelta(hours=23), "o3": timedelta(hours=7)}.get(pollutant, timedelta(0))


def _aqi_points(catalogue: _Catalogue, rule: RuleDefinition, job: _Job, data: _Data) -> list[Point]:
    ids = {code: catalogue.parameter_ids.get(code) for code in AQI_POLLUTANTS}
    stations = job.stations
    if rule.statistic == "mean_1h":
        first = _hour(job.fetch_from) - max(_aqi_history(job.fetch_from, p) for p in ids)
        last_seen = [
            hour
            for station_id in stations
            for code, pid in ids.items()
            if pid is not None
            for hour in data.hourly.get((station_id, pid), {})
        ]
        if not last_seen:
            return []
        hours = [first + i * HOUR for i in range(int((max(last_seen) - first) / HOUR) + 1)]
        per_station = []
        for station_id in stations:
            arrays = {
                code: np.array(
                    [data.hourly.get((station_id, pid), {}).get(h, np.nan) for h in hours]
                    if pid is not None
                    else [np.nan] * len(hours),
                    dtype=np.float64,
                )
                for code, pid in ids.items()
            }
            arrays["o3_8h"] = moving_8h_mean(arrays["o3"])
            arrays["so2_24h"] = moving_24h_mean(arrays["so2"])
            per_station.append(arrays)
        city = _mean_over_stations(per_station)
        points = []
        for index, hour in enumerate(hours):
            if hour < _hour(job.fetch_from):
                continue
            concentrations = {code: _finite(city[code][index]) for code in AQI_POLLUTANTS}
            if all(value is None for value in concentrations.values()):
                continue
            result = hourly_aqi(
                concentrations,
                hour,
                so2_24h_moving=_finite(city["so2_24h"][index]),
                o3_8h_moving=_finite(city["o3_8h"][index]),
            )
            points.append(
                _point(
                    rule,
                    hour,
                    None if result.aqi is None else float(result.aqi),
                    span_s=3600,
                    period_s=3600,
                    details=_aqi_details(result, len(stations)),
                )
            )
        return points
    # Daily AQI: natural-day means and the O3 daily maximum 8-hour and 1-hour means.
    first_day = job.fetch_from.astimezone(CST).date()
    days = sorted(
        {
            day
            for station_id in stations
            for pid in ids.values()
            if pid is not None
            for day in data.daily.get((station_id, pid), {})
            if day >= first_day
        }
    )
    points = []
    for day in days:
        day_start = datetime.combine(day, time(0), tzinfo=CST)
        per_station = []
        for station_id in stations:
            values: dict[str, np.ndarray] = {}
            for code in ("so2", "no2", "co", "pm10", "pm25"):
                pid = ids[code]
                mean = data.daily.get((station_id, pid), {}).get(day) if pid is not None else None
                values[code] = np.array([np.nan if mean is None else mean])
            o3 = _day_hours(data.hourly.get((station_id, ids["o3"] or -1), {}), day_start)
            maximum_8h = o3_daily_max_8h(o3)
            values["o3_8h_max"] = np.array([np.nan if maximum_8h is None else maximum_8h])
            finite = o3[np.isfinite(o3)]
            values["o3_1h_max"] = np.array([float(finite.max()) if finite.size else np.nan])
            per_station.append(values)
        city = _mean_over_stations(per_station)
        concentrations = {code: _finite(array[0]) for code, array in city.items()}
        if all(value is None for value in concentrations.values()):
            continue
        result = daily_aqi(concentrations, day)
        points.append(
            _point(
                rule,
                day_start,
                None if result.aqi is None else float(result.aqi),
                span_s=86400,
                period_s=86400,
                details=_aqi_details(result, len(stations)),
            )
        )
    return points


def _mean_over_stations(per_station: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per key, the mean over stations of the values each has (city AQI: mean, then index)."""
    keys = per_station[0].keys() if per_station else ()
    result = {}
    for key in keys:
        stacked = np.vstack([values[key] for values in per_station])
        counts = np.isfinite(stacked).sum(axis=0)
        sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
        result[key] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return result


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _aqi_details(result: Any, stations: int) -> dict[str, Any]:
    return {
        "aqi_edition": f"HJ 633-{result.edition}",
        "category": result.category,
        "level": result.level,
        "primary_pollutants": list(result.primary_pollutants),
        "sub_indices": dict(result.sub_indices),
        "stations": stations,
    }


def _water_points(
    catalogue: _Catalogue, rule: RuleDefinition, job: _Job, data: _Data
) -> list[Point]:
    station = catalogue.stations[job.stations[0]]
    target = station.target_class
    if target is None:
        return []
    items = catalogue.station_series(station.id, _class_items(station))
    snapshots: list[tuple[datetime, dict[str, float]]] = []
    if rule.statistic == "water_sample":
        readings = {s.parameter: data.raw.get((station.id, s.parameter_id), []) for s in items}
        ages = {
            s.parameter: timedelta(seconds=SAMPLE_VALID_INTERVALS * s.interval_s) for s in items
        }
        moments = sorted(
            {r.time for rows in readings.values() for r in rows if r.time >= job.fetch_from}
        )
        times = {code: [r.time for r in rows] for code, rows in readings.items()}
        for moment in moments:
            values = {}
            for code, rows in readings.items():
                position = bisect.bisect_right(times[code], moment) - 1
                if position >= 0 and moment - rows[position].time < ages[code]:
                    values[code] = rows[position].value
            snapshots.append((moment, values))
        span = 0
    else:
        first = job.fetch_from.astimezone(CST).date()
        days: dict[date, dict[str, float]] = defaultdict(dict)
        for s in items:
            for day, value in data.daily.get((station.id, s.parameter_id), {}).items():
                if day >= first:
                    days[day][s.parameter] = value
        snapshots = [
            (datetime.combine(day, time(0), tzinfo=CST), values)
            for day, values in sorted(days.items())
        ]
        span = 86400
    points = []
    for moment, values in snapshots:
        if station.water_standard == "gb3097":
            assessment = assess_sea_water(values, target_class=min(target, 4))
        else:
            assessment = assess_surface_water(
                values, water_body=station.water_body or "river", target_class=target
            )
        worse = None
        if assessment.overall_class is not None:
            worse = float(assessment.overall_class - target)
        details = {
            "water_standard": assessment.standard,
            "class": assessment.label,
            "target_class": target,
            "limiting": [
                {
                    "item": item.item,
                    "class": item.item_class,
                    "value": item.value,
                    "exceedance": item.exceedance,
                }
                for item in assessment.limiting
            ],
        }
        points.append(_point(rule, moment, worse, span_s=span, period_s=span, details=details))
    return points


def _written(
    catalogue: _Catalogue,
    rule: ActiveRule,
    subject: Subject,
    tracks: Sequence[Track],
    now: datetime,
) -> list[tuple[_Written, NewAlert]]:
    definition = rule.definition
    parameter_id = (
        catalogue.parameter_ids.get(definition.parameter) if definition.parameter else None
    )
    return [
        (
            _Written(track, rule, subject, parameter_id),
            _row(rule, subject, parameter_id, track.alert, catalogue.agencies, now),
        )
        for track in tracks
    ]


async def _store(conn: Conn, items: Sequence[tuple[_Written, NewAlert]], now: datetime) -> int:
    """Write tracks in three round trips (new alerts, updates, events); returns the events."""
    new = [(w.track, row) for w, row in items if w.track.is_new]
    for (track, _), alert_id in zip(
        new, await insert_alerts(conn, [r for _, r in new]), strict=True
    ):
        track.alert.id = alert_id
    await update_alerts(conn, [(_id(w.track.alert), row) for w, row in items if not w.track.is_new])
    events = [(_id(w.track.alert), _event_row(e)) for w, _ in items for e in w.track.events]
    await insert_events(conn, events, at=now)
    return len(events)


def _id(alert: Alert) -> int:
    assert alert.id is not None
    return alert.id


def _row(
    rule: ActiveRule,
    subject: Subject,
    parameter_id: int | None,
    alert: Alert,
    addressed_to: list[int],
    now: datetime,
    *,
    source_alert_id: int | None = None,
) -> NewAlert:
    _, station_id, city = subject
    return NewAlert(
        rule_id=rule.id,
        rule_version=rule.version,
        station_id=station_id,
        city=city,
        parameter_id=parameter_id,
        kind=rule.definition.kind,
        state=alert.state,
        severity=alert.severity,
        value=alert.value,
        opened_at=alert.opened_at,
        pending_since=alert.pending_since,
        fired_at=alert.fired_at,
        resolved_at=alert.resolved_at,
        retracted_at=alert.retracted_at,
        last_evaluated_at=now,
        trigger_time=alert.trigger_time,
        trigger_period_s=alert.trigger_period_s,
        last_point_at=alert.last_point_at,
        clear_point_at=alert.clear_point_at,
        details=_jsonable(alert.details),
        addressed_to=list(addressed_to),
        source_alert_id=source_alert_id,
    )


def _event_row(event: Event) -> NewEvent:
    return NewEvent(event.kind, event.state, event.severity, event.value, _jsonable(event.details))


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, np.floating | np.integer):
            return clean(value.item())
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return {str(k): clean(v) for k, v in details.items()}


async def _promote_pending(conn: Conn, catalogue: _Catalogue, now: datetime) -> int:
    """Pending alerts whose `for` duration has passed become firing (not during maintenance)."""
    due = []
    for row in await open_alerts(conn, states=["pending"]):
        rule = catalogue.rules.get(row.rule_id)
        if rule is None or row.pending_since is None:
            continue
        if now - row.pending_since >= timedelta(seconds=rule.definition.for_s):
            due.append(row)
    if not due:
        return 0
    busy = {
        w.station_id
        for w in await maintenance_windows(
            conn, station_ids=sorted({r.station_id for r in due if r.station_id}), ending_after=now
        )
        if w.starts_at <= now
    }
    subjects: list[Subject] = [
        (r.rule_id, r.station_id, r.city) for r in due if r.station_id not in busy
    ]
    if not subjects:
        return 0
    await lock_subjects(conn, [(s[0], _subject_key(s)) for s in subjects])
    written: list[tuple[_Written, NewAlert]] = []
    for row in await subject_alerts(conn, subjects, since=now):
        rule = catalogue.rules.get(row.rule_id)
        if rule is None or row.state != "pending":
            continue
        track = promote_due(_pure(row), for_s=rule.definition.for_s, now=now)
        if track is None:
            continue
        subject = (row.rule_id, row.station_id, row.city)
        new_row = _row(rule, subject, row.parameter_id, track.alert, list(row.addressed_to), now)
        written.append((_Written(track, rule, subject, row.parameter_id), new_row))
    events = await _store(conn, written, now)
    return events + await _propagate(conn, catalogue, [w for w, _ in written], now)


async def _staleness(
    conn: Conn, catalogue: _Catalogue, now: datetime, *, station_ids: Sequence[int] | None
) -> int:
    """Silence per station: the largest silence of its series in multiples of their intervals."""
    rules = [r for r in catalogue.rules.values() if r.definition.kind == "staleness"]
    if not rules:
        return 0
    in_maintenance = {
        w.station_id
        for w in await maintenance_windows(conn, station_ids=station_ids, ending_after=now)
        if w.starts_at <= now
    }
    events = 0
    for stored in rules:
        rule = stored.definition
        assert rule.staleness is not None
        watched = set(rule.staleness.parameters or ())
        worst: dict[int, tuple[float, list[tuple[float, dict[str, Any]]]]] = {}
        for series in await series_silence(
            conn, max_interval_s=rule.staleness.max_interval_s, station_ids=station_ids
        ):
            station = catalogue.stations.get(series.station_id)
            entry = catalogue.series.get((series.station_id, series.parameter_id))
            if station is None or entry is None or not _in_scope(rule, station):
                continue
            if watched and entry.parameter not in watched:
                continue
            ratio = max((now - series.last_end).total_seconds(), 0.0) / series.interval_s
            best, silent = worst.get(station.id, (0.0, []))
            silent.append(
                (
                    ratio,
                    {
                        "parameter": entry.parameter,
                        "intervals": round(ratio, 3),
                        "last_end": series.last_end.isoformat(),
                        "interval_s": series.interval_s,
                    },
                )
            )
            worst[station.id] = (max(best, ratio), silent)
        subjects: dict[Subject, Point] = {}
        for station_id, (ratio, silent) in worst.items():
            if station_id in in_maintenance:
                continue
            levels, standard = _levels(rule, now)
            trigger = min((lv.trigger for lv in levels), default=math.inf)
            late = sorted((s for s in silent if s[0] > trigger), key=lambda s: -s[0])
            details = {"standard": standard, "silent": [entry for _, entry in late]}
            subjects[(rule.id, station_id, None)] = Point(now, ratio, levels, details=details)
        if not subjects:
            continue
        await lock_subjects(conn, [(s[0], _subject_key(s)) for s in subjects])
        rows = await subject_alerts(conn, list(subjects), since=now)
        open_by_subject = {
            (r.rule_id, r.station_id, r.city): _pure(r)
            for r in rows
            if r.state in ("pending", "firing")
        }
        written: list[tuple[_Written, NewAlert]] = []
        for subject, point in subjects.items():
            tracks = replay(
                open_by_subject.get(subject), [point], direction="above", for_s=rule.for_s, now=now
            )
            written += _written(catalogue, stored, subject, tracks, now)
        events += await _store(conn, written, now)
    return events


async def _propagate(
    conn: Conn, catalogue: _Catalogue, written: Sequence[_Written], now: datetime
) -> int:
    """Pre-alert the stations downstream of water breaches; end them with their source."""
    rules = [r for r in catalogue.rules.values() if r.definition.propagation is not None]
    if not rules or not written:
        return 0
    events = 0
    for stored in rules:
        spec = stored.definition.propagation
        assert spec is not None
        wanted: list[tuple[_Written, Severity]] = []
        ended: dict[int, AlertState] = {}
        for item in written:
            if item.rule.id not in spec.from_rules or item.subject[1] is None:
                continue
            alert = item.track.alert
            assert alert.id is not None
            kinds = {e.kind for e in item.track.events}
            mapped = spec.pre_alert_severity.get(alert.severity)
            loud_enough = (
                severity_rank(alert.severity) >= severity_rank(spec.min_severity)
                and mapped is not None
            )
            if alert.state == "firing" and loud_enough:
                if kinds & {"firing", "escalated", "deescalated"}:
                    assert mapped is not None
                    wanted.append((item, mapped))
            elif alert.state in ("resolved", "retracted") or kinds & {"deescalated"}:
                ended[alert.id] = "retracted" if alert.state == "retracted" else "resolved"
        if ended:
            events += await _end_pre_alerts(conn, catalogue, stored, ended, now)
        if wanted:
            events += await _raise_pre_alerts(conn, catalogue, stored, wanted, now)
    return events


def _river_stations(catalogue: _Catalogue) -> list[RiverStation]:
    return [
        RiverStation(s.id, s.code, s.agency_id, s.reach_code, s.river_km)
        for s in catalogue.stations.values()
        if s.medium == "water" and s.reach_code is not None and s.river_km is not None
    ]


async def _raise_pre_alerts(
    conn: Conn,
    catalogue: _Catalogue,
    rule: ActiveRule,
    wanted: Sequence[tuple[_Written, Severity]],
    now: datetime,
) -> int:
    spec = rule.definition.propagation
    assert spec is not None
    river = _river_stations(catalogue)
    by_id = {s.id: s for s in river}
    plans: list[tuple[_Written, Severity, Arrival]] = []
    for item, severity in wanted:
        source = by_id.get(item.subject[1] or 0)
        if source is None:
            continue
        for arrival in arrivals(source, catalogue.reaches, river, max_eta_s=spec.max_eta_s):
            plans.append((item, severity, arrival))
    if not plans:
        return 0
    subjects: list[Subject] = [(rule.id, a.station.id, None) for _, _, a in plans]
    await lock_subjects(conn, [(s[0], _subject_key(s)) for s in subjects])
    # One pre-alert per downstream station follows the loudest source; the source it names is
    # the one whose end ends it.
    tracks: dict[Subject, tuple[Track, list[int], int | None, int]] = {}
    for row in await subject_alerts(conn, subjects, since=now):
        if row.state in ("pending", "firing"):
            source_id = row.source_alert_id or 0
            track = Track(_pure(row), [], is_new=False, changed=False)
            tracks[(row.rule_id, row.station_id, row.city)] = (
                track,
                list(row.addressed_to),
                row.parameter_id,
                source_id,
            )
    for item, severity, arrival in plans:
        source_alert = item.track.alert
        source_id = _id(source_alert)
        subject: Subject = (rule.id, arrival.station.id, None)
        source_station = catalogue.stations[item.subject[1] or 0]
        details = {
            "source_alert_id": source_id,
            "source_rule": item.rule.id,
            "source_station": source_station.code,
            "source_severity": source_alert.severity,
            "distance_km": round(arrival.distance_km, 3),
            "eta_s": round(arrival.eta_s),
            "expected_at": (source_alert.trigger_time + timedelta(seconds=arrival.eta_s))
            .astimezone(CST)
            .isoformat(),
            "direction": arrival.direction,
            "path": list(arrival.path),
            "basis": spec.basis,
        }
        known = tracks.get(subject)
        if known is None:
            alert = Alert(
                id=None,
                state="firing",
                severity=severity,
                value=source_alert.value,
                opened_at=now,
                pending_since=None,
                trigger_time=source_alert.trigger_time,
                trigger_period_s=source_alert.trigger_period_s,
                last_point_at=source_alert.trigger_time,
                fired_at=now,
                details=details,
            )
            event = Event("firing", "firing", severity, alert.value, details)
            tracks[subject] = (
                Track(alert, [event], is_new=True),
                [arrival.station.agency_id],
                item.parameter_id,
                source_id,
            )
            continue
        track, addressed, parameter_id, held_by = known
        pure = track.alert
        if severity_rank(severity) == severity_rank(pure.severity):
            continue
        if held_by != source_id and severity_rank(severity) < severity_rank(pure.severity):
            continue  # another source keeps it at a higher level
        kind: AlertEventKind = (
            "escalated" if severity_rank(severity) > severity_rank(pure.severity) else "deescalated"
        )
        pure.severity = severity
        pure.details.update(details)
        track.events.append(Event(kind, pure.state, severity, pure.value, details))
        track.changed = True
        tracks[subject] = (track, addressed, parameter_id, source_id)
    written = [
        (
            _Written(track, rule, subject, parameter_id),
            _row(rule, subject, parameter_id, track.alert, addressed, now, source_alert_id=source),
        )
        for subject, (track, addressed, parameter_id, source) in tracks.items()
        if track.events
    ]
    return await _store(conn, written, now)


async def _end_pre_alerts(
    conn: Conn,
    catalogue: _Catalogue,
    rule: ActiveRule,
    ended: Mapping[int, AlertState],
    now: datetime,
) -> int:
    rows = [
        r for r in await open_alerts(conn, source_alert_ids=list(ended)) if r.rule_id == rule.id
    ]
    if not rows:
        return 0
    await lock_subjects(
        conn, [(r.rule_id, _subject_key((r.rule_id, r.station_id, r.city))) for r in rows]
    )
    written: list[tuple[_Written, NewAlert]] = []
    for row in rows:
        assert row.source_alert_id is not None
        final = ended[row.source_alert_id]
        alert = _pure(row)
        alert.state = final
        if final == "retracted":
            alert.retracted_at = now
        else:
            alert.resolved_at = now
        details = {
            "source_alert_id": row.source_alert_id,
            "reason": f"the source alert was {final}",
        }
        kind: AlertEventKind = "retracted" if final == "retracted" else "resolved"
        track = Track(
            alert, [Event(kind, final, alert.severity, alert.value, details)], is_new=False
        )
        subject = (row.rule_id, row.station_id, row.city)
        new_row = _row(
            rule,
            subject,
            row.parameter_id,
            alert,
            list(row.addressed_to),
            now,
            source_alert_id=row.source_alert_id,
        )
        written.append((_Written(track, rule, subject, row.parameter_id), new_row))
    return await _store(conn, written, now)
