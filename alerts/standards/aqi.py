"""HJ 633 air quality index, editions 2012 and 2026 (docs/standards.md §2).

Inputs are keyed by parameter code (µg/m³; CO mg/m³). Real-time: "so2", "no2", "co", "o3",
"pm10", "pm25" hourly means, plus the O3 8-hour moving mean under 2012. Daily: the same codes for
natural-day means with "o3_8h_max" (O3 daily maximum 8-hour mean) and "o3_1h_max" (O3 daily
maximum 1-hour mean, used only under 2012). Sub-indices and primary pollutants use these keys.
`iaqi_array` and `daily_aqi_array` give the same figures for many days at once (numpy arrays).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import NamedTuple, TypeGuard

import numpy as np
import numpy.typing as npt

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
# HJ 633-2026 publishes an AQI computed without some pollutant only above this value.
_PUBLISHED_WITH_MISSING_ABOVE = 100
# A primary pollutant is named only when the AQI is above this value.
_PRIMARY_ABOVE = 50
# Concentrations with up to this many decimals are interpolated exactly in integers by the array
# functions; longer ones in floats, except those this close to a rounding tie (2026) or to a
# whole IAQI, which the exact scalar `iaqi` settles: the arrays agree with it to the last digit.
_EXACT_DIGITS = 6
_EXACT_MARGIN = 1e-6

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


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


@dataclass(frozen=True)
class AqiArrays:
    """Daily AQI of many days under one edition; NaN where a value is absent or unpublished."""

    edition: str
    aqi: FloatArray
    published: BoolArray
    sub_indices: dict[str, FloatArray]
    primary: dict[str, BoolArray]


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


def iaqi_array(
    pollutant: str, averaging: str, concentrations: npt.ArrayLike, edition: str
) -> FloatArray:
    """`iaqi` of many concentrations on one column; NaN where one is NaN or the edition defers."""
    try:
        breakpoints = AQI_BREAKPOINTS[edition][(pollutant, averaging)]
    except KeyError:
        raise ValueError(
            f"no HJ 633-{edition} breakpoints for {pollutant!r} averaged over {averaging!r}"
        ) from None
    values = np.asarray(concentrations, dtype=np.float64)
    present = ~np.isnan(values)
    bad = present & (~np.isfinite(values) | (values < 0))
    if bad.any():
        raise ValueError(f"{pollutant} concentration {values[bad][0]!r} is not a valid value")
    points = np.asarray(breakpoints, dtype=np.int64)
    rises = np.asarray(IAQI_ROWS, dtype=np.int64)
    # Anything above the top breakpoint reads as just above it (no integer overflow below).
    level = np.minimum(np.where(present, values, 0.0), float(points[-1] + 1))
    # Like `iaqi`, read each float as its shortest decimal: with `digits` decimals it is a whole
    # number of units of 10**-digits, and the interpolation runs exactly in integers.
    if edition == "2026":
        digits = np.full(values.shape, 1 if pollutant == "co" else 0, dtype=np.int64)
        scaled = level * 10.0**digits
        unsure = present & (np.abs(scaled - np.floor(scaled) - 0.5) < _EXACT_MARGIN)
    else:
        digits = np.full(values.shape, -1, dtype=np.int64)
        for count in range(_EXACT_DIGITS, -1, -1):
            digits[np.rint(level * 10.0**count) / 10.0**count == level] = count
        unsure = np.zeros(values.shape, dtype=bool)
    scale = 10 ** np.maximum(digits, 0)
    units = np.rint(level * scale).astype(np.int64)
    long = present & (digits < 0)
    reading = np.where(long, level, units / scale)
    row = np.clip(np.searchsorted(points, reading, side="left"), 1, len(points) - 1)
    low = points[row - 1] * scale
    numerator = (rises[row] - rises[row - 1]) * (units - low)
    result: FloatArray = (rises[row - 1] - (-numerator // (points[row] * scale - low))).astype(
        np.float64
    )
    above = units > points[-1] * scale
    # Longer decimals (full-precision means): floats, unless a hair from a whole IAQI.
    if long.any():
        rough = (rises[row] - rises[row - 1]) / (points[row] - points[row - 1]) * (
            level - points[row - 1]
        ) + rises[row - 1]
        result = np.where(long, np.ceil(rough), result)
        unsure |= long & (np.abs(rough - np.rint(rough)) < _EXACT_MARGIN)
        above = np.where(long, level > points[-1], above)
    top = AQI_ABOVE_TOP[edition].get((pollutant, averaging), IAQI_ROWS[-1])
    result[above] = np.nan if top is None else top
    result[~present] = np.nan
    for index in np.flatnonzero(unsure & ~above):
        exact_index = iaqi(pollutant, averaging, float(values.flat[index]), edition)
        result.flat[index] = np.nan if exact_index is None else exact_index
    return result


def daily_aqi_array(concentrations: Mapping[str, npt.ArrayLike], edition: str) -> AqiArrays:
    """`daily_aqi` of many days under one edition: equal arrays (NaN = missing) per input key."""
    _reject_unknown(concentrations, _DAILY_KEYS)
    if edition not in AQI_DAILY_COLUMNS:
        raise ValueError(f"no HJ 633 edition {edition!r}; editions: {sorted(AQI_DAILY_COLUMNS)}")
    given = {key: np.asarray(value, dtype=np.float64) for key, value in concentrations.items()}
    shapes = {array.shape for array in given.values()}
    if len(shapes) != 1:
        raise ValueError(f"daily AQI inputs must share one shape, not {sorted(shapes)}")
    (shape,) = shapes
    values = {key: given.get(key, np.full(shape, np.nan)) for key in _DAILY_KEYS}
    columns = AQI_DAILY_COLUMNS[edition]
    sub = {
        key: iaqi_array(pollutant, averaging, values[key], edition)
        for key, (pollutant, averaging) in columns.items()
    }
    deferred = np.isnan(sub["o3_8h_max"]) & ~np.isnan(values["o3_8h_max"])
    if deferred.any():
        fallback = sub.get("o3_1h_max", np.full(shape, np.nan))
        sub["o3_8h_max"] = np.where(deferred, fallback, sub["o3_8h_max"])
    computed = np.fmax.reduce(np.stack(list(sub.values())), axis=0)
    missing = np.stack([np.isnan(values[key]) for key in columns]).any(axis=0)
    published = ~np.isnan(computed)
    if edition == "2026":
        published &= ~(missing & (computed <= _PUBLISHED_WITH_MISSING_ABOVE))
    aqi = np.where(published, computed, np.nan)
    if edition == "2026":
        aqi[aqi == 0] = 1
    named = published & (aqi > _PRIMARY_ABOVE)
    primary = {key: named & (index == computed) for key, index in sub.items()}
    return AqiArrays(edition, aqi, published, sub, primary)


def aqi_level_index(aqi: npt.ArrayLike) -> IntArray:
    """Position of each AQI's level in HJ 633's level table (0 = 优 ... 5 = 严重); -1 for NaN."""
    values = np.asarray(aqi, dtype=np.float64)
    uppers = np.asarray([upper for upper, *_ in AQI_LEVELS if upper is not None], dtype=np.float64)
    index = np.searchsorted(uppers, values, side="left")
    return np.where(np.isnan(values), -1, index).astype(np.int64)


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


def _reject_unknown(concentrations: Mapping[str, object], known: frozenset[str]) -> None:
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
    published = computed is not None and not (
        edition == "2026" and missing and computed <= _PUBLISHED_WITH_MISSING_ABOVE
    )
    if computed is None or not published:
        return AqiResult(None, None, None, None, None, None, (), sub, edition, missing, False)
    aqi = 1 if edition == "2026" and computed == 0 else computed
    primary = (
        tuple(key for key, index in sub.items() if index == computed)
        if aqi > _PRIMARY_ABOVE
        else ()
    )
    return AqiResult(aqi, *aqi_level(aqi), primary, sub, edition, missing, True)
