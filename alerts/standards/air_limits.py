"""GB 3095 ambient air concentration limits: 2012, 2026 transition and 2026 final (GB 3095 Table 1).

Also the HJ 663 assessment edition (2013 / 2026) that goes with them (docs/standards.md §1).

Averaging codes: "1h", "8h" (O3 daily maximum 8-hour mean), "24h" and "annual". Grade 1 is for
protected areas, grade 2 for urban areas. The edition follows the period start's date.
"""

from __future__ import annotations

from datetime import date, datetime

from alerts.standards.editions import edition_on
from alerts.standards.tables import AIR_EDITIONS, AIR_LIMITS, HJ663_EDITIONS

_POLLUTANTS = frozenset({"so2", "no2", "co", "o3", "pm10", "pm25"})
_AVERAGINGS = frozenset({"1h", "8h", "24h", "annual"})
_EDITION_NAMES = tuple(name for name, _ in AIR_EDITIONS)


def air_edition_for(at: date | datetime) -> str:
    """GB 3095 edition in force for an observation: '2012', '2026_transition' or '2026_final'."""
    return edition_on(at, AIR_EDITIONS)


def hj663_edition_for(at: date | datetime) -> str:
    """HJ 663 assessment edition ('2013' or '2026') for an observation or a day."""
    return edition_on(at, HJ663_EDITIONS)


def air_limit(pollutant: str, averaging: str, at: date | datetime, grade: int = 2) -> float | None:
    """GB 3095 limit (µg/m³, CO mg/m³) for the period starting at `at`; None where none is set."""
    if pollutant not in _POLLUTANTS or averaging not in _AVERAGINGS:
        raise ValueError(f"no GB 3095 pollutant/averaging {pollutant!r}/{averaging!r}")
    if grade not in (1, 2):
        raise ValueError(f"GB 3095 grade must be 1 or 2, not {grade!r}")
    limits = AIR_LIMITS.get((pollutant, averaging, grade))
    if limits is None:
        return None
    limit = limits[_EDITION_NAMES.index(air_edition_for(at))]
    return None if limit is None else float(limit)
