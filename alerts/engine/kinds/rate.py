"""Rate-of-change rules: how far one parameter rose or fell within a window before each reading."""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import ClassVar

from alerts.assessment import Period
from alerts.engine.jobs import Job
from alerts.engine.kinds.base import Data, Need, SeriesKind, point
from alerts.engine.kinds.threshold import parameter_series
from alerts.rules import Point
from schemas.rules import RateOfChange, RuleDefinition
from store.alerts import RawPoint
from store.catalogue import CatalogueSnapshot


class Rate(SeriesKind):
    """A rate rule watches one parameter's readings; a point per reading (its change)."""

    kind: ClassVar[str] = "rate_of_change"

    def codes(self, rule: RuleDefinition) -> Collection[str]:
        return (rule.parameter,) if rule.parameter is not None else ()

    def period(self, rule: RuleDefinition) -> Period | None:
        return None

    def reach(self, job: Job, catalogue: CatalogueSnapshot) -> timedelta:
        return _window(job.definition)

    def needs(self, job: Job, catalogue: CatalogueSnapshot) -> Iterable[Need]:
        key = parameter_series(job, catalogue)
        if key is not None:
            yield Need("raw", *key, job.fetch_from - _window(job.definition))

    def points(self, job: Job, catalogue: CatalogueSnapshot, data: Data) -> list[Point]:
        key = parameter_series(job, catalogue)
        readings = [] if key is None else data.raw.get(key, [])
        times = [r.time for r in readings]
        rule = job.definition
        assert rule.rate is not None
        return [
            point(
                rule,
                reading.time,
                change(rule.rate, readings, times, index),
                span_s=0,
                period_s=reading.period_s,
                details={"reading": reading.value, "window_s": rule.rate.window_s},
            )
            for index, reading in enumerate(readings)
            if reading.time >= job.fetch_from
        ]


def change(
    rate: RateOfChange, readings: Sequence[RawPoint], times: Sequence[datetime], index: int
) -> float | None:
    """A reading's rise over the lowest (or fall from the highest) of the window before it;
    `times` are the readings' times, for the search."""
    reading = readings[index]
    begin = bisect.bisect_left(times, reading.time - timedelta(seconds=rate.window_s))
    earlier = [r.value for r in readings[begin:index] if r.time < reading.time]
    if not earlier:
        return None
    if rate.direction == "fall":
        return max(earlier) - reading.value
    return reading.value - min(earlier)


def _window(rule: RuleDefinition) -> timedelta:
    assert rule.rate is not None
    return timedelta(seconds=rule.rate.window_s)
