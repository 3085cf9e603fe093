"""Assessment periods on the Asia/Shanghai calendar, named by their start (docs/conventions.md §1).

A `Period` is a kind of period (an hour, a natural day): it finds the period holding an instant
and the start of the next one. The assessments take arrays with one value per consecutive
period of one kind, so a longer period (a month, a quarter, a year: calendar periods whose
length varies) is one more `Period`, not another code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core.timeutil import CST, cst_day_start


def _hour_of(moment: datetime) -> datetime:
    return moment.astimezone(CST).replace(minute=0, second=0, microsecond=0)


def _day_of(moment: datetime) -> datetime:
    return cst_day_start(moment.astimezone(CST).date())


@dataclass(frozen=True, slots=True)
class Period:
    """A kind of period: `floor` gives the start of the one holding an instant, `after` the next."""

    name: str
    floor: Callable[[datetime], datetime]
    after: Callable[[datetime], datetime]

    def bounds(self, at: datetime | date) -> tuple[datetime, datetime]:
        """Start and end of the period holding `at` (a date: the period holding its 00:00)."""
        start = self.floor(at if isinstance(at, datetime) else cst_day_start(at))
        return start, self.after(start)

    def starts(self, first: datetime, last: datetime) -> list[datetime]:
        """The starts of the consecutive periods from the one holding `first` to `last`'s."""
        found: list[datetime] = []
        start, end = self.floor(first), self.floor(last)
        while start <= end:
            found.append(start)
            start = self.after(start)
        return found


HOUR = Period("hour", _hour_of, lambda start: start + timedelta(hours=1))
DAY = Period("day", _day_of, lambda start: cst_day_start(start.date() + timedelta(days=1)))
