"""HJ 633 air quality index, editions 2012 and 2026 (STANDARDS.md §2).

Inputs are keyed by parameter code (µg/m³; CO mg/m³). Real-time: "so2", "no2", "co", "o3",
"pm10", "pm25" hourly means, plus the O3 8-hour moving mean under 2012. Daily: the same codes for
natural-day means with "o3_8h_max" (O3 daily maximum 8-hour mean) and "o3_1h_max" (O3 daily
maximum 1-hour mean, used only under 2012). Sub-indices and primary pollutants use these keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import NamedTuple, TypeGuard

from alerts.standards.editions import edition_on
from alerts.standards.tables import (
    AQI_ABOVE_TOP,
    AQI_BREAKPOINTS,
    AQI_DAILY_COLUMNS,
    AQI_EDITIONS,
    AQI_HOURLY_COLUMNS,
    AQI_LEVELS,
    IAQI_ROWS,
)

_HOURLY_KEYS = frozenset({"so2", "no2", "co", "o3", "pm10", "pm25"})
_DAILY_KEYS = frozenset({"so2", "no2", "co", "pm10", "pm25", "o3_8h_max", "o3_1h_max"})


class AqiLevel(NamedTuple):
    """An AQI level row of HJ 633 (§2.3)."""

    level: str
    level_zh: str
    category: str
    category_zh: str
    color: str


@dataclass(frozen=True)
class AqiResult:
    """One real-time or daily AQI report; aqi, level and primary are None/empty when unpublished."""

    aqi: int | None
    level: str | None
    level_zh: str | None
    category: str | None
    category_zh: str | None
    color: str | None
    primary_pollutants: tuple[str, ...]
    sub_indices: dict[str, int | None]
    edition: str
    missing: tuple[str, ...]
    published: bool


def edition_for(at: datetime) -> str:
    """HJ 633 edition ('2012' or '2026') for an observation period starting at aware `at`."""
    if not isinstance(at, datetime):
        raise TypeError("edition_for takes an aware datetime; use edition_for_day for a date")
    return edition_on(at, AQI_EDITIONS)


def edition_for_day(day: date) -> str:
    """HJ 633 edition ('2012' or '2026') for a natural day (Asia/Shanghai)."""
    if isinstance(day, datetime):
        raise TypeError("edition_for_day takes a date; use edition_for for an instant")
    return edition_on(day, AQI_EDITIONS)


def iaqi(pollutant: str, averaging: str, concentration: float, edition: str) -> int | None:
    """IAQI of one concentration on one breakpoint column; None where the edition defers."""
    try:
        breakpoints = AQI_BREAKPOINTS[edition][(pollutant, averaging)]
    except KeyError:
        raise ValueError(
            f"no HJ 633-{edition} breakpoints for {pollutant!r} averaged over {averaging!r}"
        ) from None
    if not math.isfinite(concentration) or concentration < 0:
        raise ValueError(f"{pollutant} concentration {concentration!r} is not a valid value")
    # The float carries a reported decimal: read it as its shortest repr, so 2.45 is 2.45 and
    # not 2.4500000000000001776..., and interpolate exactly so a whole IAQI is not ceiled up.
    value = Decimal(repr(float(concentration)))
    if edition == "2026":
        step = Decimal("0.1") if pollutant == "co" else Decimal(1)
        value = value.quantize(step, rounding=ROUND_HALF_EVEN)
    if value > breakpoints[-1]:
        return AQI_ABOVE_TOP[edition].get((pollutant, averaging), IAQI_ROWS[-1])
    row = next(k for k in range(1, len(breakpoints)) if value <= breakpoints[k])
    bp_lo, bp_hi = breakpoints[row - 1], breakpoints[row]
    i_lo, i_hi = IAQI_ROWS[row - 1], IAQI_ROWS[row]
    return math.ceil(Fraction(i_hi - i_lo, bp_hi - bp_lo) * (Fraction(value) - bp_lo) + i_lo)


def aqi_level(aqi: int) -> AqiLevel:
    """Level, Chinese level, category, Chinese category and colour of an AQI value."""
    if aqi < 0:
        raise ValueError(f"AQI {aqi} is negative")
    for upper, *row in AQI_LEVELS:
        if upper is None or aqi <= upper:
            return AqiLevel(*row)
    raise AssertionError("AQI_LEVELS ends with an open-ended level")


def hourly_aqi(
    concentrations: Mapping[str, float | None],
    at: datetime,
    *,
    so2_24h_moving: float | None = None,
    o3_8h_moving: float | None = None,
) -> AqiResult:
    """Real-time AQI for the hour starting at `at` from its 1-hour means (extras used by 2012)."""
    _reject_unknown(concentrations, _HOURLY_KEYS)
    edition = edition_for(at)
    values = {key: concentrations.get(key) for key in _HOURLY_KEYS}
    values["o3_8h"] = o3_8h_moving
    columns = AQI_HOURLY_COLUMNS[edition]
    sub = _sub_indices(values, columns, edition)
    # 2012 only: above 800 the SO2 1h and O3 8h columns hand over to another index.
    if "so2" in sub and sub["so2"] is None and _present(values["so2"]):
        moving = so2_24h_moving
        sub["so2"] = iaqi("so2", "24h", moving, edition) if _present(moving) else None
    if "o3_8h" in sub and sub["o3_8h"] is None and _present(values["o3_8h"]):
        sub["o3_8h"] = sub["o3"]
    return _report(sub, _missing(values, columns), edition)


def daily_aqi(concentrations: Mapping[str, float | None], day: date) -> AqiResult:
    """Daily AQI of a natural day from its 24-hour means and O3 daily maxima."""
    _reject_unknown(concentrations, _DAILY_KEYS)
    edition = edition_for_day(day)
    values = {key: concentrations.get(key) for key in _DAILY_KEYS}
    columns = AQI_DAILY_COLUMNS[edition]
    sub = _sub_indices(values, columns, edition)
    if sub["o3_8h_max"] is None and _present(values["o3_8h_max"]):
        sub["o3_8h_max"] = sub.get("o3_1h_max")
    return _report(sub, _missing(values, columns), edition)


def _present(value: float | None) -> TypeGuard[float]:
    return value is not None and not math.isnan(value)


def _reject_unknown(concentrations: Mapping[str, float | None], known: frozenset[str]) -> None:
    unknown = sorted(set(concentrations) - known)
    if unknown:
        raise ValueError(f"unknown AQI inputs {unknown}; expected some of {sorted(known)}")


def _sub_indices(
    values: Mapping[str, float | None], columns: Mapping[str, tuple[str, str]], edition: str
) -> dict[str, int | None]:
    sub: dict[str, int | None] = {}
    for key, (pollutant, averaging) in columns.items():
        value = values[key]
        if _present(value):
            sub[key] = iaqi(pollutant, averaging, value, edition)
        else:
            sub[key] = None
    return sub


def _missing(
    values: Mapping[str, float | None], columns: Mapping[str, tuple[str, str]]
) -> tuple[str, ...]:
    return tuple(key for key in columns if not _present(values[key]))


def _report(sub: dict[str, int | None], missing: tuple[str, ...], edition: str) -> AqiResult:
    known = [index for index in sub.values() if index is not None]
    computed = max(known, default=None)
    # 2026 publishes an AQI computed without some pollutant only when it is above 100; 2012 has
    # no such rule and reports the AQI of the pollutants that are there.
    published = computed is not None and not (edition == "2026" and missing and computed <= 100)
    if computed is None or not published:
        return AqiResult(None, None, None, None, None, None, (), sub, edition, missing, False)
    aqi = 1 if edition == "2026" and computed == 0 else computed
    primary = tuple(key for key, index in sub.items() if index == computed) if aqi > 50 else ()
    return AqiResult(aqi, *aqi_level(aqi), primary, sub, edition, missing, True)
