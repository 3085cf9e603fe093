"""AQI rules: the real-time (hourly) or daily AQI of a station or a city, per alerts/assessment.

A city-wide rule's subject is the city: its non-background stations' concentrations are
averaged, then the AQI computed — the same assessment /v1/aqi answers with.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from alerts.assessment import (
    AQI_POLLUTANTS,
    DAY,
    DAY_MEANS,
    HOUR,
    Observed,
    Period,
    aqi,
    city_inputs,
    daily_inputs,
    hourly_inputs,
    values_at,
)
from alerts.engine.jobs import Job, in_scope
from alerts.engine.kinds.base import Data, Need, SeriesKind, hourly_grid, point
from alerts.rules import Point
from alerts.standards import AqiResult, edition_for
from alerts.windows import HOURS_PER_DAY
from core.timeutil import cst_day_start
from schemas.rules import RuleDefinition
from store.catalogue import CatalogueSnapshot, StationRef


def _history(moment: datetime, pollutant: str) -> timedelta:
    """Hours before the first point the real-time AQI needs: only HJ 633-2012 looks back (the
    SO2 24-hour and O3 8-hour moving means); the 2026 edition uses the hour's own means."""
    if edition_for(HOUR.floor(moment)) != "2012":
        return timedelta(0)
    return {"so2": timedelta(hours=23), "o3": timedelta(hours=7)}.get(pollutant, timedelta(0))


def _details(result: AqiResult, stations: int) -> dict[str, Any]:
    return {
        "aqi_edition": f"HJ 633-{result.edition}",
        "category": result.category,
        "level": result.level,
        "primary_pollutants": list(result.primary_pollutants),
        "sub_indices": dict(result.sub_indices),
        "stations": stations,
    }


class Aqi(SeriesKind):
    """An AQI rule watches the six pollutants of the air stations in its scope."""

    kind: ClassVar[str] = "aqi"

    def codes(self, rule: RuleDefinition) -> Collection[str]:
        return AQI_POLLUTANTS

    def watches(self, rule: RuleDefinition, station: StationRef, parameter: str) -> bool:
        return in_scope(rule, station) and station.medium == "air" and parameter in AQI_POLLUTANTS

    def period(self, rule: RuleDefinition) -> Period | None:
        return HOUR if rule.statistic == "mean_1h" else DAY

    def reach(self, job: Job, catalogue: CatalogueSnapshot) -> timedelta:
        # A real-time AQI looks back up to 24 hours (HJ 633-2012's SO2 24-hour moving mean).
        return timedelta(hours=24) if job.definition.statistic == "mean_1h" else timedelta(days=1)

    def needs(self, job: Job, catalogue: CatalogueSnapshot) -> Iterable[Need]:
        start = job.fetch_from
        for station_id in job.stations:
            for series in catalogue.station_series(station_id, AQI_POLLUTANTS):
                key = (station_id, series.parameter_id)
                if job.definition.statistic == "mean_1h":
                    yield Need(
                        "hourly", *key, HOUR.floor(start) - _history(start, series.parameter)
                    )
                else:
                    yield Need("daily", *key, start)
                    if series.parameter == "o3":
                        yield Need("hourly", *key, DAY.floor(start))

    def points(self, job: Job, catalogue: CatalogueSnapshot, data: Data) -> list[Point]:
        ids = {code: catalogue.parameter_id(code) for code in AQI_POLLUTANTS}
        if job.definition.statistic == "mean_1h":
            return _hourly(job, ids, data)
        return _daily(job, ids, data)


def _hourly(job: Job, ids: Mapping[str, int | None], data: Data) -> list[Point]:
    """Real-time AQI points of each hour from the first touched one to the newest with data."""
    since = HOUR.floor(job.fetch_from)
    first = since - max(_history(job.fetch_from, code) for code in ids)
    seen = [
        hour
        for station_id in job.stations
        for pid in ids.values()
        if pid is not None
        for hour in data.hourly.get((station_id, pid), {})
    ]
    if not seen:
        return []
    hours = HOUR.starts(first, max(seen))
    city, _ = city_inputs(
        [
            hourly_inputs(
                {
                    code: Observed.of(
                        hourly_grid(data.hourly.get((station_id, pid), {}), first, len(hours))
                    )
                    for code, pid in ids.items()
                    if pid is not None
                }
            )
            for station_id in job.stations
        ]
    )
    points = []
    for index, hour in enumerate(hours):
        values = values_at(city, index)
        if hour < since or all(values[code] is None for code in AQI_POLLUTANTS):
            continue
        result = aqi(HOUR, values, hour)
        points.append(
            point(
                job.definition,
                hour,
                None if result.aqi is None else float(result.aqi),
                span_s=3600,
                period_s=3600,
                details=_details(result, len(job.stations)),
            )
        )
    return points


def _daily(job: Job, ids: Mapping[str, int | None], data: Data) -> list[Point]:
    """Daily AQI points of each natural day with a daily mean, from the first touched one."""
    first = DAY.floor(job.fetch_from).date()
    days = sorted(
        {
            day
            for station_id in job.stations
            for pid in ids.values()
            if pid is not None
            for day in data.daily.get((station_id, pid), {})
            if day >= first
        }
    )
    points = []
    for day, result in zip(days, daily_results(job.stations, ids, data, days), strict=True):
        if result is None:
            continue
        points.append(
            point(
                job.definition,
                cst_day_start(day),
                None if result.aqi is None else float(result.aqi),
                span_s=86400,
                period_s=86400,
                details=_details(result, len(job.stations)),
            )
        )
    return points


def daily_results(
    stations: Sequence[int], ids: Mapping[str, int | None], data: Data, days: Sequence[date]
) -> list[AqiResult | None]:
    """The daily AQI of these stations together (a city: the mean of each input over them) on
    each day, None for a day with no input at all."""
    if not stations:
        return [None] * len(days)
    starts = [cst_day_start(day) for day in days]
    per_station = []
    for station_id in stations:
        means = {}
        for code in DAY_MEANS:
            pid = ids[code]
            daily = data.daily.get((station_id, pid), {}) if pid is not None else {}
            means[code] = Observed.of([daily.get(day, np.nan) for day in days])
        o3 = data.hourly.get((station_id, ids["o3"] or -1), {})
        o3_hours = [hourly_grid(o3, start, HOURS_PER_DAY) for start in starts]
        o3_days = np.concatenate(o3_hours) if o3_hours else np.empty(0)
        per_station.append(daily_inputs(means, Observed.of(o3_days)))
    city, _ = city_inputs(per_station)
    results: list[AqiResult | None] = []
    for index, start in enumerate(starts):
        values = values_at(city, index)
        empty = all(value is None for value in values.values())
        results.append(None if empty else aqi(DAY, values, start))
    return results
