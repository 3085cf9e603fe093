"""The situation now, for the people on duty: an area's, a city's or some stations' in one read.

Everything here is read through `store/` on one connection, a fixed number of queries whatever
the number of stations, and judged with the code the rest of EnvLink judges with: the latest
values of /v1/latest (`reading_latest`), the alert engine's staleness kind and maintenance
windows for a station's state, the assessment behind /v1/aqi and /v1/water-quality (for the
same hour, the last complete one), the alerts of /v1/alerts, and the propagation kind's river
graph for when a breach arrives downstream. The pure parts (`station_state`, `in_flow_order`,
`alerts/trend.py`, `alerts/propagation.py`) are tested without a database.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from alerts.aqi_service import stations_aqi, stations_water_quality
from alerts.engine.catalogue import Catalogue, load
from alerts.engine.kinds import PROPAGATION, STALENESS
from alerts.engine.timers import in_maintenance
from alerts.propagation import Direction, flow_order
from alerts.rollups import hour_start
from alerts.rules import breaches
from alerts.trend import TREND_STEP, TREND_WINDOW, Trend, trends
from core.errors import StationNotFound
from schemas.common import Area, City
from schemas.quality import AqiOut, WaterQualityOut
from store.alerts import AlertListing, list_alerts, series_silence
from store.catalogue import (
    CatalogueSnapshot,
    NamedReach,
    PlacedStation,
    named_reaches,
    placed_stations,
)
from store.pool import Conn
from store.readings import LatestReading, latest_readings, trend_points

StationState = Literal["reporting", "late", "silent", "maintenance"]
# A series with no reading for this many of its reporting intervals is late.
LATE_INTERVALS = 2.0
ACTIVE_STATES = ("pending", "firing")
# Alerts about the water itself travel with it; a silent station or a pre-alert does not.
_NOT_TRAVELLING = {STALENESS.kind, PROPAGATION.kind}
# More open alerts than both cities' stations × rules could ever hold.
_OPEN_ALERTS_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Selection:
    """Whose situation: an area, a city or a list of station codes (exactly one is set)."""

    area: Area | None = None
    city: City | None = None
    stations: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SeriesNow:
    """A series' latest reading and its trend over the three hours up to that reading."""

    reading: LatestReading
    trend: Trend


@dataclass(frozen=True, slots=True)
class StationNow:
    station: PlacedStation
    state: StationState
    series: list[SeriesNow]
    aqi: AqiOut | None
    water_class: WaterQualityOut | None


@dataclass(frozen=True, slots=True)
class ArrivalEstimate:
    """When a water alert's breach is expected at a station downstream (or up, on the tide)."""

    alert_id: int
    from_station: str
    station: str
    eta: datetime
    eta_s: float
    distance_km: float
    direction: Direction


@dataclass(frozen=True, slots=True)
class Situation:
    generated_at: datetime
    hour: datetime
    reaches: list[NamedReach]
    stations: list[StationNow]
    alerts: list[AlertListing]
    arrivals: list[ArrivalEstimate]


def station_state(
    *, maintenance: bool, reported: bool, silence_intervals: float | None, silent: bool
) -> StationState:
    """A station's state: in a maintenance window; silent (nothing ever received, or past the
    staleness rule's threshold); late (its most silent series without a reading for
    LATE_INTERVALS of its interval); else reporting."""
    if maintenance:
        return "maintenance"
    if not reported or silent:
        return "silent"
    if silence_intervals is not None and silence_intervals >= LATE_INTERVALS:
        return "late"
    return "reporting"


def in_flow_order(
    stations: Sequence[PlacedStation], reaches: Sequence[NamedReach]
) -> list[PlacedStation]:
    """Water stations reach by reach in flow order and by river km within a reach; then water
    stations off the river, then air stations (each by code)."""
    rank = {code: i for i, code in enumerate(flow_order({r.code: r.downstream for r in reaches}))}
    off_river = len(rank)

    def key(station: PlacedStation) -> tuple[int, int, float, str]:
        if station.medium != "water":
            return (1, 0, 0.0, station.code)
        place = rank.get(station.reach or "", off_river)
        km = station.river_km if station.river_km is not None and place < off_river else 0.0
        return (0, place, km, station.code)

    return sorted(stations, key=key)


def touches(alert: AlertListing, codes: Collection[str], cities: Collection[str]) -> bool:
    """Whether an alert concerns these stations: one of them, a city-wide alert of a city they
    are in, or a regional episode that takes in such a city."""
    if alert.station is not None:
        return alert.station in codes
    if alert.city is None:
        return bool(set(alert.details.get("cities", ())) & set(cities))
    return alert.city in cities


async def situation(
    conn: Conn, snapshot: CatalogueSnapshot, selection: Selection, *, now: datetime
) -> Situation:
    """The situation of the selection at `now`; StationNotFound names unknown station codes.

    `snapshot` is the process's catalogue (the engine's view of stations, reaches and series).
    """
    stations = await placed_stations(
        conn, area=selection.area, city=selection.city, codes=selection.stations
    )
    if selection.stations is not None:
        unknown = sorted(set(selection.stations) - {s.code for s in stations})
        if unknown:
            raise StationNotFound(f"station: no station with code {', '.join(unknown)}")
    reaches = await named_reaches(conn)
    catalogue = await load(conn, snapshot)
    ids = [s.id for s in stations]
    latest = await latest_readings(
        conn, city=None, area=None, medium=None, station_ids=ids, now=now
    )
    trends = await _trends(conn, latest)
    busy = await in_maintenance(conn, now, ids)
    silences = await _silences(conn, catalogue, ids, now, skip=busy)
    hour = hour_start(now) - timedelta(hours=1)
    # As the catalogue snapshot knows them (a station seeded a moment ago may not be there yet).
    quality = [ref for s in stations if (ref := snapshot.stations_by_id.get(s.id)) is not None]
    air = await stations_aqi(
        conn, snapshot, [q for q in quality if q.medium == "air"], kind="hourly", at=hour
    )
    water = await stations_water_quality(conn, snapshot, quality, kind="sample", at=hour)
    open_alerts = await list_alerts(conn, states=list(ACTIVE_STATES), limit=_OPEN_ALERTS_LIMIT)

    by_station: dict[int, list[SeriesNow]] = {}
    for reading in latest:
        series = SeriesNow(reading, trends[(reading.station_id, reading.parameter_id)])
        by_station.setdefault(reading.station_id, []).append(series)
    now_by_station = []
    for station in in_flow_order(stations, reaches):
        ratio, silent = silences.get(station.id, (None, False))
        state = station_state(
            maintenance=station.id in busy,
            reported=station.id in by_station,
            silence_intervals=ratio,
            silent=silent,
        )
        now_by_station.append(
            StationNow(
                station,
                state,
                by_station.get(station.id, []),
                air.get(station.id),
                water.get(station.id),
            )
        )
    codes = {s.code for s in stations}
    cities = {s.city for s in stations}
    return Situation(
        generated_at=now,
        hour=hour,
        reaches=_in_order(reaches),
        stations=now_by_station,
        alerts=[a for a in open_alerts if touches(a, codes, cities)],
        arrivals=_arrivals(catalogue, open_alerts, codes),
    )


def _in_order(reaches: Sequence[NamedReach]) -> list[NamedReach]:
    by_code = {r.code: r for r in reaches}
    return [by_code[code] for code in flow_order({r.code: r.downstream for r in reaches})]


async def _trends(conn: Conn, latest: Sequence[LatestReading]) -> dict[tuple[int, int], Trend]:
    """Each series' trend over the window up to its latest reading, at that reading's period."""
    found = await trend_points(
        conn,
        [(r.station_id, r.parameter_id, r.period_s, r.time) for r in latest],
        window_s=TREND_WINDOW.total_seconds(),
        step_s=TREND_STEP.total_seconds(),
    )
    # A row of points a series, padded with NaN (no point) to the longest.
    shape = (len(found), max((len(p.ends) for p in found), default=0))
    hours, values = np.full(shape, np.nan), np.full(shape, np.nan)
    for row, points in enumerate(found):
        hours[row, : len(points.ends)] = points.ends
        values[row, : len(points.values)] = points.values
    fitted = trends(hours / 3600, values, [p.noise for p in found])
    return {(p.station_id, p.parameter_id): t for p, t in zip(found, fitted, strict=True)}


async def _silences(
    conn: Conn,
    catalogue: Catalogue,
    station_ids: Sequence[int],
    now: datetime,
    *,
    skip: Collection[int],
) -> dict[int, tuple[float, bool]]:
    """Per station (but those in `skip`), its largest silence in reporting intervals and
    whether a staleness rule in force calls it silent, as the alert engine judges it."""
    rules = [r.definition for r in catalogue.rules.values() if r.definition.kind == STALENESS.kind]
    if not rules or not station_ids:
        return {}
    widest = max(STALENESS.max_interval_s(rule) for rule in rules)
    silences = await series_silence(conn, max_interval_s=widest, station_ids=station_ids)
    judged: dict[int, tuple[float, bool]] = {}
    for rule in rules:
        limit = STALENESS.max_interval_s(rule)
        watched = [s for s in silences if s.interval_s <= limit]
        for (_, station_id, _), point in STALENESS.points(
            rule, catalogue.snapshot, watched, now, skip=skip
        ).items():
            if station_id is None or point.value is None:
                continue
            ratio, silent = judged.get(station_id, (0.0, False))
            judged[station_id] = (
                max(ratio, point.value),
                silent or breaches(point.value, point.levels, "above"),
            )
    return judged


def _arrivals(
    catalogue: Catalogue, open_alerts: Sequence[AlertListing], codes: Collection[str]
) -> list[ArrivalEstimate]:
    """Where and when every open water alert's breach arrives, within the propagation rule's
    horizon, where it starts or arrives at one of `codes`; earliest first."""
    rules = [
        r.definition for r in catalogue.rules.values() if r.definition.kind == PROPAGATION.kind
    ]
    if not rules:
        return []
    rule = max(rules, key=lambda r: r.propagation.max_eta_s if r.propagation else 0)
    by_code = catalogue.snapshot.stations
    estimates = []
    for alert in open_alerts:
        source = by_code.get(alert.station or "")
        if (
            source is None
            or source.medium != "water"
            or alert.kind in _NOT_TRAVELLING
            or alert.trigger_time is None
        ):
            continue
        for arrival in PROPAGATION.downstream(rule, catalogue.snapshot, source.id):
            if source.code not in codes and arrival.station.code not in codes:
                continue
            estimates.append(
                ArrivalEstimate(
                    alert_id=alert.id,
                    from_station=source.code,
                    station=arrival.station.code,
                    eta=arrival.expected_at(alert.trigger_time),
                    eta_s=arrival.eta_s,
                    distance_km=arrival.distance_km,
                    direction=arrival.direction,
                )
            )
    return sorted(estimates, key=lambda e: (e.eta, e.alert_id, e.station))
