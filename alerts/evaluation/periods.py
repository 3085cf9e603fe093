"""Evaluation periods: a month, quarter, year or date range, and its parts by rule set (§1).

Periods are half-open ranges of natural days [start, end), as everywhere in EnvLink. A period
that spans a change of rule set (2026-03-01: HJ 663-2026, GB 3095-2026, HJ 633-2026) is
evaluated in parts, each under its own rule set: no figure mixes the two.
"""

from __future__ import annotations

import calendar
import itertools
import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from alerts.evaluation.rules import RULE_SET_BOUNDARIES, RuleSet, rule_set_for
from core.errors import InvalidInput

PeriodKind = Literal["month", "quarter", "year", "range"]

_MONTH = re.compile(r"(\d{4})-(\d{2})")
_QUARTER = re.compile(r"(\d{4})-Q([1-4])")
_YEAR = re.compile(r"\d{4}")


@dataclass(frozen=True)
class Period:
    """Natural days [start, end) with the kind and label the caller named them by."""

    start: date
    end: date
    kind: PeriodKind
    label: str

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise InvalidInput(
                f"period {self.label}: end {self.end} must be after start {self.start}"
            )

    @property
    def days(self) -> int:
        """How many natural days the period has."""
        return (self.end - self.start).days

    def year_earlier(self) -> Period:
        """The same period a year earlier (29 February starts on the 28th, ends on 1 March)."""
        return Period(
            _year_earlier(self.start, leap_day_to=28),
            _year_earlier(self.end, leap_day_to=29),
            self.kind,
            _year_earlier_label(self),
        )

    def parts(self) -> tuple[PeriodPart, ...]:
        """The period cut at every change of rule set, each part with its rule set."""
        cuts = [day for day in RULE_SET_BOUNDARIES if self.start < day < self.end]
        edges = [self.start, *cuts, self.end]
        whole = len(edges) == 2
        return tuple(
            PeriodPart(
                start=first,
                end=last,
                kind=self.kind,
                label=self.label if whole else f"{self.label} [{first}, {last})",
                rule_set=rule_set_for(first),
            )
            for first, last in itertools.pairwise(edges)
        )


@dataclass(frozen=True)
class PeriodPart:
    """Days [start, end) of a period that one rule set evaluates."""

    start: date
    end: date
    kind: PeriodKind
    label: str
    rule_set: RuleSet

    @property
    def days(self) -> int:
        """How many natural days the part has."""
        return (self.end - self.start).days

    def with_rule_set(self, rule_set: RuleSet) -> PeriodPart:
        """The same days under another rule set (last year's days under this year's, say)."""
        return PeriodPart(self.start, self.end, self.kind, self.label, rule_set)


def month(year: int, number: int) -> Period:
    """A calendar month."""
    if not 1 <= number <= 12:
        raise InvalidInput(f"month {number} is not 1..12")
    end = date(year + 1, 1, 1) if number == 12 else date(year, number + 1, 1)
    return Period(date(year, number, 1), end, "month", f"{year:04d}-{number:02d}")


def quarter(year: int, number: int) -> Period:
    """A calendar quarter (Q1 = January to March)."""
    if not 1 <= number <= 4:
        raise InvalidInput(f"quarter {number} is not 1..4")
    first = date(year, 3 * number - 2, 1)
    end = date(year + 1, 1, 1) if number == 4 else date(year, 3 * number + 1, 1)
    return Period(first, end, "quarter", f"{year:04d}-Q{number}")


def year(number: int) -> Period:
    """A calendar year."""
    return Period(date(number, 1, 1), date(number + 1, 1, 1), "year", f"{number:04d}")


def date_range(start: date, end: date) -> Period:
    """Any natural days [start, end)."""
    return Period(start, end, "range", f"{start.isoformat()}/{end.isoformat()}")


def parse_period(text: str) -> Period:
    """A period named like '2026-11', '2026-Q3' or '2026'."""
    value = text.strip()
    try:
        if found := _MONTH.fullmatch(value):
            return month(int(found[1]), int(found[2]))
        if found := _QUARTER.fullmatch(value):
            return quarter(int(found[1]), int(found[2]))
        if _YEAR.fullmatch(value):
            return year(int(value))
    except ValueError as exc:
        raise InvalidInput(f"period {text!r}: {exc}") from None
    raise InvalidInput(f"period {text!r} is not YYYY-MM, YYYY-Qn or YYYY")


def month_spans(start: date, end: date) -> tuple[tuple[date, int, int], ...]:
    """Each calendar month [start, end) touches: its first day, days covered, days it has."""
    spans = []
    first = start.replace(day=1)
    while first < end:
        length = calendar.monthrange(first.year, first.month)[1]
        following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        covered = (min(end, following) - max(start, first)).days
        spans.append((first, covered, length))
        first = following
    return tuple(spans)


def _year_earlier(day: date, *, leap_day_to: int) -> date:
    if day.month == 2 and day.day == 29:
        return date(day.year - 1, 3, 1) if leap_day_to == 29 else date(day.year - 1, 2, 28)
    return day.replace(year=day.year - 1)


def _year_earlier_label(period: Period) -> str:
    if period.kind == "range":
        start = _year_earlier(period.start, leap_day_to=28)
        end = _year_earlier(period.end, leap_day_to=29)
        return f"{start.isoformat()}/{end.isoformat()}"
    return f"{int(period.label[:4]) - 1:04d}{period.label[4:]}"
