"""Water-class rules: a station's single-factor class against its target, per sample or per day.

A point's value is the station's class minus its target class: 1 is one class worse than the
target, 0 on target, negative better. The class, and which value of each item an hour's sample
takes (alerts/assessment/water.py), are the assessment's, as /v1/water-quality's: a sample
point is an hour in which some item has a valid hourly mean, judged on what stands then.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from alerts.assessment import (
    DAY,
    HOUR,
    WATER_ITEMS,
    Period,
    WaterSite,
    sample_hours,
    standing,
    water_class,
)
from alerts.engine.jobs import Job, in_scope
from alerts.engine.kinds.base import Data, Need, SeriesKind, hourly_grid, point
from alerts.rules import Point
from alerts.windows import HOUR_S
from core.timeutil import cst_day_start
from schemas.rules import RuleDefinition
from store.catalogue import CatalogueSnapshot, SeriesRef, StationRef


def site_of(station: StationRef) -> WaterSite | None:
    """What a water station is judged against, or None for a station without a target."""
    if station.medium != "water" or station.target_class is None:
        return None
    return WaterSite(
        station.water_standard or "gb3838", station.water_body or "river", station.target_class
    )


class WaterClass(SeriesKind):
    """A water-class rule watches the items each water station's class is judged on."""

    kind: ClassVar[str] = "water_class"

    def codes(self, rule: RuleDefinition) -> Collection[str]:
        return WATER_ITEMS

    def watches(self, rule: RuleDefinition, station: StationRef, parameter: str) -> bool:
        site = site_of(station)
        return in_scope(rule, station) and site is not None and parameter in site.items

    def period(self, rule: RuleDefinition) -> Period | None:
        return HOUR if rule.statistic == "water_sample" else DAY

    def reach(self, job: Job, catalogue: CatalogueSnapshot) -> timedelta:
        if job.definition.statistic != "water_sample":
            return timedelta(days=1)
        # A touched hour's value stands in the samples of its item's reporting interval.
        hours = [sample_hours(s.interval_s) for s in _items(job, catalogue)]
        return timedelta(hours=max(hours, default=0))

    def needs(self, job: Job, catalogue: CatalogueSnapshot) -> Iterable[Need]:
        station_id = job.stations[0]
        for series in _items(job, catalogue):
            if job.definition.statistic == "water_sample":
                # The hour's sample may take a value from up to an interval before it.
                back = timedelta(hours=sample_hours(series.interval_s) - 1)
                yield Need(
                    "hourly", station_id, series.parameter_id, HOUR.floor(job.fetch_from) - back
                )
            else:
                yield Need("daily", station_id, series.parameter_id, job.fetch_from)

    def points(self, job: Job, catalogue: CatalogueSnapshot, data: Data) -> list[Point]:
        station = catalogue.stations_by_id[job.stations[0]]
        site = site_of(station)
        if site is None:
            return []
        items = _items(job, catalogue)
        if job.definition.statistic == "water_sample":
            snapshots = _samples(job, items, data)
            span = 3600
        else:
            snapshots = _days(job, items, data)
            span = 86400
        return [_point(job.definition, site, moment, values, span) for moment, values in snapshots]


def _items(job: Job, catalogue: CatalogueSnapshot) -> list[SeriesRef]:
    """The station's series of the items its class is judged on."""
    site = site_of(catalogue.stations_by_id[job.stations[0]])
    return catalogue.station_series(job.stations[0], site.items if site else ())


def _samples(
    job: Job, items: Sequence[SeriesRef], data: Data
) -> list[tuple[datetime, dict[str, float]]]:
    """Per hour since the job's first in which some item has a valid mean, what stands then."""
    since = HOUR.floor(job.fetch_from)
    hourly = {s.parameter: data.hourly.get((s.station_id, s.parameter_id), {}) for s in items}
    hours = sorted({hour for values in hourly.values() for hour in values if hour >= since})
    if not hours:
        return []
    spans = {s.parameter: sample_hours(s.interval_s) for s in items}
    first = since - timedelta(hours=max(spans.values()) - 1)
    count = len(HOUR.starts(first, hours[-1]))
    stands = {}
    for code, values in hourly.items():
        grid = hourly_grid(values, first, count)
        stands[code] = standing(grid, np.isfinite(grid), hours=spans[code]).values
    snapshots = []
    for hour in hours:
        slot = int((hour - first).total_seconds() // HOUR_S)
        sample = {code: float(values[slot]) for code, values in stands.items()}
        snapshots.append(
            (hour, {code: value for code, value in sample.items() if math.isfinite(value)})
        )
    return snapshots


def _days(
    job: Job, items: Sequence[SeriesRef], data: Data
) -> list[tuple[datetime, dict[str, float]]]:
    """Per natural day since the job's first with a daily mean, the items' daily means."""
    first = DAY.floor(job.fetch_from).date()
    days: dict[date, dict[str, float]] = defaultdict(dict)
    for s in items:
        for day, value in data.daily.get((s.station_id, s.parameter_id), {}).items():
            if day >= first:
                days[day][s.parameter] = value
    return [(cst_day_start(day), values) for day, values in sorted(days.items())]


def _point(
    rule: RuleDefinition, site: WaterSite, moment: datetime, values: dict[str, float], span: int
) -> Point:
    """A point of the class of one set of item values, with its limiting items."""
    assessment = water_class(site, values)
    worse = None
    if assessment.overall_class is not None:
        worse = float(assessment.overall_class - site.target_class)
    details: dict[str, Any] = {
        "water_standard": assessment.standard,
        "class": assessment.label,
        "target_class": site.target_class,
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
    return point(rule, moment, worse, span_s=span, period_s=span, details=details)
