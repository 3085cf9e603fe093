"""Pick a standard's edition by the observation's Asia/Shanghai date, never by today's date."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def observation_day(at: date | datetime) -> date:
    """The Asia/Shanghai calendar day of an aware instant, or the given natural day itself."""
    if isinstance(at, datetime):
        if at.utcoffset() is None:
            raise ValueError(f"{at.isoformat()} has no UTC offset; pass an aware datetime")
        return at.astimezone(SHANGHAI).date()
    return at


def edition_on(at: date | datetime, editions: Sequence[tuple[str, date]]) -> str:
    """The last edition of `editions` (name, first day; ascending) in force on `at`'s day."""
    day = observation_day(at)
    chosen = editions[0][0]
    for name, first_day in editions:
        if day >= first_day:
            chosen = name
    return chosen
