"""Daily air values of a station or city over consecutive natural days (docs/evaluation.md §2).

Hourly means come in as float arrays of shape (days, 24), hour 0 being 00:00-01:00 Asia/Shanghai,
NaN where an hour has no valid mean. A day's mean needs 20 valid hours; the O3 daily maximum
8-hour mean (MDA8) takes the 17 windows ending 08:00..24:00 (each needing 6 valid hours) and
needs 14 valid windows, unless the maximum of fewer exceeds the O3 8-hour limit (HJ 663 §6.1.2).
The O3 daily maximum 1-hour mean (used by HJ 633-2012's daily AQI) is the largest valid hour, as
/v1/aqi takes it: GB 3095 sets no day minimum for it. Values are keyed like `daily_aqi`'s inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt

from alerts.evaluation.rules import EvaluationSettings
from alerts.evaluation.statistics import nan_mean
from alerts.standards import air_limit
from alerts.standards.aqi import AqiArrays
from alerts.standards.tables import AIR_EDITIONS, O3_MDA8_MIN_VALID_WINDOWS
from alerts.windows import (
    HOURS_PER_DAY,
    MIN_VALID_HOURS_8H,
    MIN_VALID_HOURS_DAY,
    O3_DAILY_WINDOW_FIRST_HOUR,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DAILY_MEANS = ("so2", "no2", "co", "pm10", "pm25")
DAILY_KEYS = (*DAILY_MEANS, "o3_8h_max", "o3_1h_max")
# The daily AQI inputs that stand for each pollutant (both O3 maxima are O3).
POLLUTANT_OF_KEY = {**{key: key for key in DAILY_MEANS}, "o3_8h_max": "o3", "o3_1h_max": "o3"}


@dataclass(frozen=True)
class AirDays:
    """Daily values (keyed like `daily_aqi`'s inputs) for natural days from `first_day`."""

    first_day: date
    values: Mapping[str, FloatArray]

    def __post_init__(self) -> None:
        if set(self.values) != set(DAILY_KEYS):
            raise ValueError(f"daily air values need exactly {list(DAILY_KEYS)}")
        shapes = {array.shape for array in self.values.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"daily air values must be 1-D of one length, not {sorted(shapes)}")

    @property
    def days(self) -> int:
        """How many natural days the values cover."""
        return int(self.values["so2"].shape[0])

    @property
    def end(self) -> date:
        """The day after the last one."""
        return self.first_day + timedelta(days=self.days)

    def between(self, start: date, end: date) -> AirDays:
        """The days [start, end), which must lie within these."""
        first = (start - self.first_day).days
        last = (end - self.first_day).days
        if first < 0 or last > self.days or last <= first:
            raise ValueError(f"days [{start}, {end}) are not within [{self.first_day}, {self.end})")
        return AirDays(start, {key: array[first:last] for key, array in self.values.items()})


def from_daily(first_day: date, daily: Mapping[str, npt.ArrayLike]) -> AirDays:
    """AirDays from daily values already validated (e.g. rollups); a missing key is all NaN."""
    unknown = sorted(set(daily) - set(DAILY_KEYS))
    if unknown:
        raise ValueError(f"unknown daily air values {unknown}; expected some of {list(DAILY_KEYS)}")
    arrays = {key: np.asarray(value, dtype=np.float64) for key, value in daily.items()}
    lengths = {array.shape for array in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"daily air values must share one shape, not {sorted(lengths)}")
    (shape,) = lengths
    return AirDays(first_day, {key: arrays.get(key, np.full(shape, np.nan)) for key in DAILY_KEYS})


def day_hours(hourly: npt.ArrayLike) -> FloatArray:
    """Hourly means as (days, 24): accepts that shape or a flat series of whole days."""
    data = np.asarray(hourly, dtype=np.float64)
    if data.ndim == 1 and data.size % HOURS_PER_DAY == 0:
        return data.reshape(-1, HOURS_PER_DAY)
    if data.ndim == 2 and data.shape[1] == HOURS_PER_DAY:
        return data
    raise ValueError(f"hourly means must be (days, 24) or whole days flat, not {data.shape}")


def daily_means(hourly: npt.ArrayLike) -> FloatArray:
    """Each day's mean of its valid hours; NaN with fewer than 20 of them."""
    hours = day_hours(hourly)
    valid = ~np.isnan(hours)
    counts = valid.sum(axis=1)
    means = np.full(hours.shape[0], np.nan)
    enough = counts >= MIN_VALID_HOURS_DAY
    means[enough] = np.where(valid, hours, 0.0)[enough].sum(axis=1) / counts[enough]
    return means


def day_8h_means(hourly: npt.ArrayLike) -> FloatArray:
    """Each day's 17 8-hour means ending 08:00..24:00 as (days, 17); NaN under 6 valid hours.

    The same windows as `moving_8h_mean` at hours 7..23 of each day, summed by running totals
    so a year of hours takes a fraction of a millisecond.
    """
    hours = day_hours(hourly)
    valid = ~np.isnan(hours)
    zero = np.zeros((hours.shape[0], 1))
    sums = np.concatenate([zero, np.cumsum(np.where(valid, hours, 0.0), axis=1)], axis=1)
    counts = np.concatenate([zero, np.cumsum(valid, axis=1)], axis=1)
    width = HOURS_PER_DAY - O3_DAILY_WINDOW_FIRST_HOUR
    span = O3_DAILY_WINDOW_FIRST_HOUR + 1
    window_sums = sums[:, span:] - sums[:, :width]
    window_counts = counts[:, span:] - counts[:, :width]
    means = np.full(window_sums.shape, np.nan)
    np.divide(window_sums, window_counts, out=means, where=window_counts >= MIN_VALID_HOURS_8H)
    return means


def daily_max_8h(hourly: npt.ArrayLike, first_day: date) -> FloatArray:
    """Each day's O3 MDA8 under HJ 663's 14-window rule and its exceedance exception."""
    hours = day_hours(hourly)
    windows = day_8h_means(hours)
    valid = ~np.isnan(windows)
    counts = valid.sum(axis=1)
    highest = np.where(valid, windows, -np.inf).max(axis=1, initial=-np.inf)
    counted = (counts >= O3_MDA8_MIN_VALID_WINDOWS) | (
        (counts > 0) & (highest > _o3_8h_limits(first_day, hours.shape[0]))
    )
    return np.where(counted, highest, np.nan)


def daily_max_1h(hourly: npt.ArrayLike) -> FloatArray:
    """Each day's largest valid hourly mean; NaN for a day without one."""
    hours = day_hours(hourly)
    valid = ~np.isnan(hours)
    highest = np.where(valid, hours, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(valid.any(axis=1), highest, np.nan)


def station_days(first_day: date, hourly: Mapping[str, npt.ArrayLike]) -> AirDays:
    """A station's daily values from its hourly means per pollutant (a missing one is NaN)."""
    unknown = sorted(set(hourly) - {*DAILY_MEANS, "o3"})
    if unknown:
        raise ValueError(f"unknown pollutants {unknown}")
    hours = {code: day_hours(series) for code, series in hourly.items()}
    shapes = {array.shape for array in hours.values()}
    if len(shapes) != 1:
        raise ValueError(f"hourly means must cover the same days, not {sorted(shapes)}")
    (shape,) = shapes
    missing = np.full(shape, np.nan)
    o3 = hours.get("o3", missing)
    daily = {code: daily_means(hours.get(code, missing)) for code in DAILY_MEANS}
    daily["o3_8h_max"] = daily_max_8h(o3, first_day)
    daily["o3_1h_max"] = daily_max_1h(o3)
    return AirDays(first_day, daily)


def city_days(
    stations: Sequence[AirDays],
    settings: EvaluationSettings,
    *,
    o3_hourly: Sequence[npt.ArrayLike] | None = None,
) -> AirDays:
    """A city's daily values: the mean over its assessment stations (background excluded).

    The O3 maxima follow `settings.o3_city_mda8`: the mean of the stations' maxima, or the
    maxima of the city's hourly means (then `o3_hourly` gives each station's hourly O3).
    """
    if not stations:
        raise ValueError("a city needs at least one assessment station")
    first_day = stations[0].first_day
    if any(s.first_day != first_day or s.days != stations[0].days for s in stations):
        raise ValueError("the stations' daily values must cover the same days")
    daily = {key: nan_mean([s.values[key] for s in stations]) for key in DAILY_KEYS}
    if settings.o3_city_mda8 == "city_hourly":
        if o3_hourly is None or len(o3_hourly) != len(stations):
            raise ValueError("o3_city_mda8 'city_hourly' needs every station's hourly O3")
        city_o3 = nan_mean([day_hours(series) for series in o3_hourly])
        daily["o3_8h_max"] = daily_max_8h(city_o3, first_day)
        daily["o3_1h_max"] = daily_max_1h(city_o3)
    return AirDays(first_day, daily)


def primary_by_pollutant(aqi: AqiArrays) -> dict[str, BoolArray]:
    """Per pollutant code, the days it is a primary pollutant (either O3 maximum counts as O3)."""
    found: dict[str, BoolArray] = {}
    for key, days in aqi.primary.items():
        code = POLLUTANT_OF_KEY[key]
        found[code] = found[code] | days if code in found else days
    return found


def _o3_8h_limits(first_day: date, days: int) -> FloatArray:
    """The O3 8-hour limit of each day's GB 3095 edition, for the MDA8 exception."""
    changes = [(edition_day - first_day).days for _, edition_day in AIR_EDITIONS[1:]]
    edges = [0, *(offset for offset in changes if 0 < offset < days), days]
    limits = np.empty(days)
    for start, end in itertools.pairwise(edges):
        limit = air_limit("o3", "8h", first_day + timedelta(days=start))
        limits[start:end] = np.nan if limit is None else limit
    return limits
