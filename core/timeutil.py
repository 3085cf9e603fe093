"""Time conventions (docs/conventions.md §1): timestamptz everywhere, naive inputs are CST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.errors import InvalidInput, TimeOutOfRange

CST = ZoneInfo("Asia/Shanghai")
PERIODS_S = (0, 60, 3600, 86400)
# Times given to EnvLink lie in these years (wall clock, any offset): nothing it monitors is
# older or newer, and arithmetic on them (periods, days, time zones) stays within datetime's.
FIRST_YEAR, LAST_YEAR = 1900, 2199


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def parse_time(text: str, *, field: str = "time") -> datetime:
    """Parse ISO 8601 / RFC 3339; a value without an offset is Asia/Shanghai."""
    try:
        if "\x00" in text:  # CPython's fromisoformat would ignore a trailing NUL
            raise ValueError(text)
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field}: {text!r} is not an ISO 8601 / RFC 3339 time") from None
    if not in_years(parsed):
        raise TimeOutOfRange(f"{field}: {text!r} is outside the years {FIRST_YEAR}-{LAST_YEAR}")
    return as_aware(parsed)


def in_years(moment: date) -> bool:
    """Whether a date or time lies in the years EnvLink handles (FIRST_YEAR to LAST_YEAR)."""
    return FIRST_YEAR <= moment.year <= LAST_YEAR


def as_aware(moment: datetime) -> datetime:
    """Attach Asia/Shanghai to a naive datetime; leave aware ones alone."""
    return moment.replace(tzinfo=CST) if moment.tzinfo is None else moment


def floor_to_period(moment: datetime, period_s: int) -> datetime:
    """Floor a period's DataTime to its boundary; days follow the Asia/Shanghai calendar."""
    if period_s == 0:
        return moment
    local = moment.astimezone(CST)
    if period_s == 86400:
        return datetime.combine(local.date(), time(0), tzinfo=CST)
    seconds = local.minute * 60 + local.second
    within = seconds % period_s if period_s <= 3600 else 0
    return (local - timedelta(seconds=within, microseconds=local.microsecond)).astimezone(CST)


def period_end(moment: datetime, period_s: int) -> datetime:
    """The end of the period that starts at `moment`."""
    return moment + timedelta(seconds=period_s)


def rfc3339(moment: datetime, *, utc: bool = False) -> str:
    """Format for the API: +08:00 by default, Z when the caller asked for UTC."""
    if utc:
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return moment.astimezone(CST).isoformat()


def cst_day_start(day: date) -> datetime:
    """00:00 Asia/Shanghai of a natural day."""
    return datetime.combine(day, time(0), tzinfo=CST)
