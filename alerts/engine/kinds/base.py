"""What every kind of series rule tells the engine, and what the point builders share.

Nothing in alerts/engine/kinds reads the database: a kind says what it needs (`Need`), the
engine's fetch step reads it into `Data`, and the kind turns that into points.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

from alerts.assessment import Period
from alerts.engine.jobs import Job, in_scope
from alerts.rules import Point
from alerts.windows import HOUR_S
from core.timeutil import CST
from schemas.rules import Level, RuleDefinition
from store.alerts import RawPoint
from store.catalogue import CatalogueSnapshot, StationRef

FloatArray = npt.NDArray[np.float64]
Source = Literal["raw", "hourly", "daily"]


@dataclass(frozen=True, slots=True)
class Need:
    """A series to read from `since` on: its raw readings, hourly means or natural-day means
    (daily: from the Asia/Shanghai date of `since`)."""

    source: Source
    station_id: int
    parameter_id: int
    since: datetime


@dataclass
class Data:
    """What the fetch step read, per (station id, parameter id); maintenance data left out."""

    raw: dict[tuple[int, int], list[RawPoint]] = field(default_factory=dict)
    hourly: dict[tuple[int, int], dict[datetime, float]] = field(default_factory=dict)
    daily: dict[tuple[int, int], dict[date, float]] = field(default_factory=dict)


class SeriesKind(Protocol):
    """A kind of rule judged on the data of the series it watches (threshold, rate of change,
    AQI, water class), evaluated again whenever that data changes.

    The planner asks `codes` and `watches` which rules a touched series wakes, `period` to
    floor the touched times to whole points and `reach` how far later points depend on them;
    the fetch step reads what `needs` names; `points` turns that into the rule's points from
    the job's `fetch_from` on. Adding a kind is one module with one such object, registered in
    alerts/engine/kinds/__init__.py.
    """

    kind: ClassVar[str]

    def codes(self, rule: RuleDefinition) -> Collection[str]:
        """Parameter codes whose data may wake the rule at some station."""
        ...

    def watches(self, rule: RuleDefinition, station: StationRef, parameter: str) -> bool:
        """Whether new data of this station's parameter may change the rule's points."""
        return in_scope(rule, station) and parameter in self.codes(rule)

    def period(self, rule: RuleDefinition) -> Period | None:
        """The period one point covers, or None for a point per reading."""
        ...

    def reach(self, job: Job, catalogue: CatalogueSnapshot) -> timedelta:
        """How far after a touched point later points still depend on it."""
        ...

    def needs(self, job: Job, catalogue: CatalogueSnapshot) -> Iterable[Need]:
        """The series to read for the job's points from `job.fetch_from` on."""
        ...

    def points(self, job: Job, catalogue: CatalogueSnapshot, data: Data) -> list[Point]:
        """The rule's points from `job.fetch_from` on, in time order."""
        ...


_ladders: dict[tuple[int, date], tuple[RuleDefinition, tuple[tuple[Level, ...], str | None]]] = {}


def levels_on(rule: RuleDefinition, moment: datetime) -> tuple[tuple[Level, ...], str | None]:
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


def point(
    rule: RuleDefinition,
    moment: datetime,
    value: float | None,
    *,
    span_s: int,
    period_s: int,
    details: Mapping[str, Any] | None = None,
) -> Point:
    """A point of the rule's statistic, with the levels and standard in force on its day."""
    levels, standard = levels_on(rule, moment)
    extra: dict[str, Any] = {"standard": standard} if standard else {}
    extra.update(details or {})
    if value is not None and not math.isfinite(value):
        value = None
    return Point(moment, value, levels, span_s=span_s, period_s=period_s, details=extra)


def hourly_grid(values: Mapping[datetime, float], first: datetime, count: int) -> FloatArray:
    """`count` hours of means from the hour `first` (NaN where an hour has none)."""
    grid = np.full(count, np.nan)
    for hour, value in values.items():
        slot = int((hour - first).total_seconds() // HOUR_S)
        if 0 <= slot < count:
            grid[slot] = value
    return grid
