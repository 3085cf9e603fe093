"""How many valid days a period's statistic needs (GB 3095 Table 4; docs/evaluation.md §2, §5).

A whole calendar year needs 324 valid days. Otherwise each calendar month the period touches
needs its monthly minimum (27, February 25; water: the setting), scaled down for a month the
period covers only in part (rounded up). With `every_month_valid` every month must meet its own
minimum (a quarter: every month valid); without, only their total counts. A statistic short of
data is `Insufficient`, never an average of whatever is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.evaluation.periods import month_spans
from alerts.standards.tables import (
    AIR_MIN_VALID_DAYS_FEBRUARY,
    AIR_MIN_VALID_DAYS_MONTH,
    AIR_MIN_VALID_DAYS_YEAR,
)


@dataclass(frozen=True)
class Insufficient:
    """A statistic without enough data: the valid values it had and how many it needs."""

    have: int
    need: int
    short_months: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """`{"status": "insufficient_data", "have": n, "need": m}` (and the short months)."""
        found: dict[str, Any] = {
            "status": "insufficient_data",
            "have": self.have,
            "need": self.need,
        }
        if self.short_months:
            found["short_months"] = list(self.short_months)
        return found


@dataclass(frozen=True)
class MonthNeed:
    """Valid days one calendar month of a period needs, as day offsets [first, end) from start."""

    label: str
    first: int
    end: int
    need: int


@dataclass(frozen=True)
class DayRequirement:
    """Valid days a period needs in total, and per month when each month must be valid."""

    need: int
    months: tuple[MonthNeed, ...]

    def check(self, valid: npt.ArrayLike) -> Insufficient | None:
        """None when a day mask (one flag per day of the period) meets the requirement."""
        flags = np.asarray(valid, dtype=bool)
        have = int(flags.sum())
        short = tuple(
            month.label
            for month in self.months
            if int(flags[month.first : month.end].sum()) < month.need
        )
        if have >= self.need and not short:
            return None
        return Insufficient(have, self.need, short)


ANY_DAY = DayRequirement(need=1, months=())


def air_requirement(start: date, end: date, *, every_month_valid: bool) -> DayRequirement:
    """Valid daily values an air statistic over [start, end) needs (GB 3095 Table 4)."""
    if start.month == 1 and start.day == 1 and end == date(start.year + 1, 1, 1):
        return DayRequirement(need=AIR_MIN_VALID_DAYS_YEAR, months=())

    def monthly(first: date) -> int:
        return AIR_MIN_VALID_DAYS_FEBRUARY if first.month == 2 else AIR_MIN_VALID_DAYS_MONTH

    return _by_month(start, end, monthly, every_month_valid=every_month_valid)


def water_requirement(start: date, end: date, *, month_min_valid_days: int) -> DayRequirement:
    """Valid daily means an automatic water station needs over [start, end) (§5, setting)."""
    return _by_month(start, end, lambda _: month_min_valid_days, every_month_valid=False)


def _by_month(
    start: date, end: date, monthly: Callable[[date], int], *, every_month_valid: bool
) -> DayRequirement:
    months = []
    offset = 0
    for first, covered, length in month_spans(start, end):
        need = -(-monthly(first) * covered // length)
        months.append(MonthNeed(f"{first:%Y-%m}", offset, offset + covered, need))
        offset += covered
    total = sum(month.need for month in months)
    # One month is its own total: only several months are checked one by one.
    checked = tuple(months) if every_month_valid and len(months) > 1 else ()
    return DayRequirement(need=total, months=checked)
