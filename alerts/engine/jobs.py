"""What the engine evaluates: a rule at a subject (a station, or a city), from a time on.

Every (rule, subject) has at most one open alert, and is evaluated under a transaction-scoped
advisory lock on `lock_key`, so several workers can share the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alerts.engine.catalogue import ActiveRule
from alerts.rules import Track
from schemas.rules import RuleDefinition
from store.catalogue import StationRef

if TYPE_CHECKING:
    from alerts.engine.kinds.base import SeriesKind

# (rule id, station id, city): a station's alert, a city-wide alert (station None), or a
# regional alert (both None).
Subject = tuple[str, int | None, str | None]
# City-wide and regional subjects lock on a negative key, apart from every station's id.
_CITY_KEYS = {"guangzhou": -1, "dongguan": -2}
_REGION_KEY = -3


@dataclass
class Job:
    """One (rule, subject) to evaluate from `start`; touched data spans [first, last].

    `fetch_from` starts at `start` and moves back to the trigger of an alert whose data was
    touched, so that its trigger can be judged again; `reach` is how far after a touched point
    later points still depend on it, `stations` whose data the subject is judged on.
    """

    rule: ActiveRule
    kind: SeriesKind
    subject: Subject
    start: datetime
    first: datetime
    last: datetime
    fetch_from: datetime = field(init=False)
    reach: timedelta = timedelta(0)
    stations: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fetch_from = self.start

    @property
    def definition(self) -> RuleDefinition:
        return self.rule.definition


def in_scope(rule: RuleDefinition, station: StationRef) -> bool:
    """Whether a rule's scope takes in a station."""
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


def subject_of(rule: RuleDefinition, station: StationRef) -> Subject:
    """The subject a station's data is judged for: the station, its city (city-wide rules), or
    the region (regional episode rules)."""
    if rule.episode is not None:
        return (rule.id, None, None)
    if rule.scope.city_wide:
        return (rule.id, None, station.city)
    return (rule.id, station.id, None)


def lock_key(subject: Subject) -> tuple[str, int]:
    """The advisory lock that serialises a subject's evaluation across workers."""
    rule_id, station_id, city = subject
    if station_id is not None:
        return rule_id, station_id
    return rule_id, _REGION_KEY if city is None else _CITY_KEYS[city]


@dataclass
class Written:
    """A track the engine decided for a subject, with what propagation needs to know of it."""

    track: Track
    rule: ActiveRule
    subject: Subject
    parameter_id: int | None
