"""Threshold rules: one parameter's statistic at a station against a severity ladder.

Each statistic says what one point covers, how far later points depend on a touched one, what
it reads (raw readings, hourly or natural-day rollups) and how it makes points.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import ClassVar

import numpy as np

from alerts.assessment import DAY, HOUR, Period
from alerts.engine.jobs import Job
from alerts.engine.kinds.base import Data, Need, SeriesKind, Source, hourly_grid, point
from alerts.rules import Point
from alerts.windows import HOURS_PER_DAY, moving_8h_mean, moving_24h_mean, o3_daily_max_8h
from core.timeutil import cst_day_start
from schemas.rules import RuleDefinition
from store.catalogue import CatalogueSnapshot

Key = tuple[int, int]
_Builder = Callable[[RuleDefinition, Key, Data, datetime], list[Point]]


def _instant(rule: RuleDefinition, key: Key, data: Data, since: datetime) -> list[Point]:
    """Each valid reading."""
    return [
        point(rule, r.time, r.value, span_s=r.period_s, period_s=r.period_s)
        for r in data.raw.get(key, [])
        if r.time >= since
    ]


def _mean_1h(rule: RuleDefinition, key: Key, data: Data, since: datetime) -> list[Point]:
    """Each hour's mean (the rollup: a station's reported mean, or ≥ 45 minutes of samples)."""
    return [
        point(rule, hour, value, span_s=3600, period_s=3600)
        for hour, value in sorted(data.hourly.get(key, {}).items())
        if hour >= HOUR.floor(since)
    ]


def _moving(hours: int, mean: Callable[[np.ndarray], np.ndarray]) -> _Builder:
    def build(rule: RuleDefinition, key: Key, data: Data, since: datetime) -> list[Point]:
        """The moving mean of the `hours` hours ending with each hour since `since`'s."""
        values = data.hourly.get(key, {})
        first = HOUR.floor(since) - timedelta(hours=hours - 1)
        starts = HOUR.starts(first, max(values)) if values else []
        means = mean(hourly_grid(values, first, len(starts)))
        return [
            point(rule, hour, float(value), span_s=3600, period_s=3600)
            for hour, value in zip(starts, means, strict=True)
            if hour >= HOUR.floor(since) and np.isfinite(value)
        ]

    return build


def _o3_max_8h(rule: RuleDefinition, key: Key, data: Data, since: datetime) -> list[Point]:
    """Each natural day's O3 maximum 8-hour mean (None when no window is valid)."""
    values = data.hourly.get(key, {})
    days = sorted({DAY.floor(hour) for hour in values if hour >= DAY.floor(since)})
    return [
        point(
            rule,
            day,
            o3_daily_max_8h(hourly_grid(values, day, HOURS_PER_DAY)),
            span_s=86400,
            period_s=86400,
        )
        for day in days
    ]


def _day(rule: RuleDefinition, key: Key, data: Data, since: datetime) -> list[Point]:
    """Each natural day's mean (the daily rollup)."""
    first: date = DAY.floor(since).date()
    return [
        point(rule, cst_day_start(day), value, span_s=86400, period_s=86400)
        for day, value in sorted(data.daily.get(key, {}).items())
        if day >= first
    ]


@dataclass(frozen=True, slots=True)
class Statistic:
    """A statistic: the period of a point, how far a touched point reaches, what it reads from
    where (for points from a given time on) and how it makes its points."""

    period: Period | None
    reach: timedelta
    source: Source
    read_from: Callable[[datetime], datetime]
    build: _Builder


def _hours_before(hours: int) -> Callable[[datetime], datetime]:
    return lambda since: HOUR.floor(since) - timedelta(hours=hours)


STATISTICS: Mapping[str, Statistic] = {
    "instant": Statistic(None, timedelta(0), "raw", lambda since: since, _instant),
    "mean_1h": Statistic(HOUR, timedelta(0), "hourly", _hours_before(0), _mean_1h),
    "mean_8h": Statistic(
        HOUR, timedelta(hours=8), "hourly", _hours_before(7), _moving(8, moving_8h_mean)
    ),
    "mean_24h": Statistic(
        HOUR, timedelta(hours=24), "hourly", _hours_before(23), _moving(24, moving_24h_mean)
    ),
    "o3_max_8h": Statistic(DAY, timedelta(days=1), "hourly", DAY.floor, _o3_max_8h),
    "day_mean": Statistic(DAY, timedelta(days=1), "daily", lambda since: since, _day),
    "water_day": Statistic(DAY, timedelta(days=1), "daily", lambda since: since, _day),
}


class Threshold(SeriesKind):
    """A threshold rule watches one parameter at each station in its scope."""

    kind: ClassVar[str] = "threshold"

    def codes(self, rule: RuleDefinition) -> Collection[str]:
        return (rule.parameter,) if rule.parameter is not None else ()

    def period(self, rule: RuleDefinition) -> Period | None:
        return self._statistic(rule).period

    def reach(self, job: Job, catalogue: CatalogueSnapshot) -> timedelta:
        return self._statistic(job.definition).reach

    def needs(self, job: Job, catalogue: CatalogueSnapshot) -> Iterable[Need]:
        key = parameter_series(job, catalogue)
        if key is not None:
            statistic = self._statistic(job.definition)
            yield Need(statistic.source, *key, statistic.read_from(job.fetch_from))

    def points(self, job: Job, catalogue: CatalogueSnapshot, data: Data) -> list[Point]:
        key = parameter_series(job, catalogue)
        if key is None:
            return []
        return self._statistic(job.definition).build(job.definition, key, data, job.fetch_from)

    @staticmethod
    def _statistic(rule: RuleDefinition) -> Statistic:
        assert rule.statistic is not None
        return STATISTICS[rule.statistic]


def parameter_series(job: Job, catalogue: CatalogueSnapshot) -> Key | None:
    """The (station id, parameter id) of a single-parameter rule's job, if the series exists."""
    assert job.definition.parameter is not None
    parameter_id = catalogue.parameter_id(job.definition.parameter)
    return None if parameter_id is None else (job.stations[0], parameter_id)
