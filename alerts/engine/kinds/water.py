"""Water-class rules: a station's single-factor class against its target, per sample or per day.

A point's value is the station's class minus its target class: 1 is one class worse than the
target, 0 on target, negative better. The class is alerts/assessment's, as /v1/water-quality's.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

from alerts.assessment import DAY, WATER_ITEMS, Period, WaterSite, water_class
from alerts.engine.catalogue import Catalogue
from alerts.engine.jobs import Job, in_scope
from alerts.engine.kinds.base import Data, Need, SeriesKind, point
from alerts.rules import Point
from core.timeutil import cst_day_start
from schemas.rules import RuleDefinition
from store.alerts import EngineStation

# A water item's latest sample stands for the station's water for two reporting intervals
# (the staleness cadence), so 4-hourly nutrients count in every hourly snapshot between them.
SAMPLE_VALID_INTERVALS = 2


def site_of(station: EngineStation) -> WaterSite | None:
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

    def watches(self, rule: RuleDefinition, station: EngineStation, parameter: str) -> bool:
        site = site_of(station)
        return in_scope(rule, station) and site is not None and parameter in site.items

    def period(self, rule: RuleDefinition) -> Period | None:
        return None if rule.statistic == "water_sample" else DAY

    def reach(self, job: Job, catalogue: Catalogue) -> timedelta:
        if job.definition.statistic == "water_sample":
            return timedelta(days=2 * SAMPLE_VALID_INTERVALS)
        return timedelta(days=1)

    def needs(self, job: Job, catalogue: Catalogue) -> Iterable[Need]:
        station = catalogue.stations[job.stations[0]]
        site = site_of(station)
        for series in catalogue.station_series(station.id, site.items if site else ()):
            if job.definition.statistic == "water_sample":
                back = timedelta(seconds=SAMPLE_VALID_INTERVALS * series.interval_s)
                yield Need("raw", station.id, series.parameter_id, job.fetch_from - back)
            else:
                yield Need("daily", station.id, series.parameter_id, job.fetch_from)

    def points(self, job: Job, catalogue: Catalogue, data: Data) -> list[Point]:
        station = catalogue.stations[job.stations[0]]
        site = site_of(station)
        if site is None:
            return []
        items = catalogue.station_series(station.id, site.items)
        snapshots: list[tuple[datetime, dict[str, float]]] = []
        if job.definition.statistic == "water_sample":
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
            first = DAY.floor(job.fetch_from).date()
            days: dict[date, dict[str, float]] = defaultdict(dict)
            for s in items:
                for day, value in data.daily.get((station.id, s.parameter_id), {}).items():
                    if day >= first:
                        days[day][s.parameter] = value
            snapshots = [(cst_day_start(day), values) for day, values in sorted(days.items())]
            span = 86400
        return [_point(job.definition, site, moment, values, span) for moment, values in snapshots]


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
