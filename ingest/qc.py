"""Quality checks that need no history: physically possible ranges and plausible times."""

from __future__ import annotations

import math
from datetime import datetime, timedelta


def range_problem(value: float | None, *, low: float, high: float, unit: str) -> str | None:
    """Why a value cannot be physically right, or None if it can."""
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return f"value {value} is not a finite number"
    if not low <= value <= high:
        return (
            f"value {value:g} {unit} is outside the physically possible range [{low:g}, {high:g}]"
        )
    return None


def time_problem(moment: datetime, *, now: datetime, earliest: datetime) -> str | None:
    """Why a reading time cannot be right (over a day ahead, or before the earliest date)."""
    if moment > now + timedelta(days=1):
        return f"time {moment.isoformat()} is more than a day in the future"
    if moment < earliest:
        return f"time {moment.isoformat()} is before the earliest accepted date {earliest.date()}"
    return None
