"""Hourly and daily rollup values from raw readings, with the validity rules.

The rules: docs/standards.md §3.2 (air) and §4 (water).

Pure functions over numpy arrays. An hour's value is the station's reported hourly mean where
one is valid (docs/conventions.md §5: reported means win); otherwise the mean of its valid
minute or real-time samples, which for air and weather needs 45 minutes of sampling and for
water one valid sample (the air minimums do not apply to water, docs/standards.md §4). A day's
value is the reported daily mean where valid; otherwise, for air, the mean of at least 20 valid
hourly values, and for water the mean of the day's valid samples (at least `water_min_samples`).
Only QC valid and below_detection feed statistics; a value that may not be used is None
("insufficient data").
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from alerts.windows import (
    HOUR_S,
    HOURS_PER_DAY,
    MIN_HOUR_SAMPLING_S,
    daily_mean,
    hourly_mean,
    water_daily_mean,
)
from schemas.common import QC

Origin = Literal["reported", "computed"]
MINUTE_S = 60
DAY_S = HOURS_PER_DAY * HOUR_S
WATER_GROUPS = frozenset({"water", "lab"})
STATISTICS_QC = frozenset(qc.code for qc in QC if qc.feeds_statistics)


@dataclass(frozen=True, slots=True)
class HourlyRollup:
    """One hour of one series; value None = insufficient data, and then no min or max."""

    value: float | None
    samples: int
    coverage_s: int
    min: float | None
    max: float | None
    origin: Origin


@dataclass(frozen=True, slots=True)
class DailyRollup:
    """One natural day of one series; `hours` counts valid hourly means (air) or samples (water)."""

    value: float | None
    hours: int
    min: float | None
    max: float | None
    origin: Origin


def hour_start(moment: datetime) -> datetime:
    """The start of the clock hour holding `moment` (the same instant in UTC and +08:00)."""
    return datetime.fromtimestamp(math.floor(moment.timestamp() / HOUR_S) * HOUR_S, UTC)


def is_water(group: str) -> bool:
    """Whether a parameter group follows the water statistics rule."""
    return group in WATER_GROUPS


def usable(values: npt.ArrayLike, qcs: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Which readings feed statistics: a value, and QC valid or below detection."""
    numbers = np.asarray(values, dtype=np.float64)
    codes = np.asarray(qcs)
    # Two comparisons: np.isin costs ten times more on an hour's few readings.
    feeds = np.zeros(codes.shape, dtype=bool)
    for code in STATISTICS_QC:
        feeds |= codes == code
    return np.isfinite(numbers) & feeds


def hourly_rollup(
    periods: npt.ArrayLike,
    times_s: npt.ArrayLike,
    values: npt.ArrayLike,
    qcs: npt.ArrayLike,
    *,
    hour_start_s: int,
    interval_s: int,
    water: bool,
) -> HourlyRollup | None:
    """Roll up the readings (periods 0, 60, 3600) of one hour; None when it holds none at all.

    `interval_s` is the station's real-time sampling interval: each real-time sample covers that
    long (capped to the hour), each minute mean 60 s. When an hour holds both a minute series
    and real-time samples, the one covering more of it is used (the minute series on a tie);
    the two are never mixed, which would count the same time twice.
    """
    period = np.asarray(periods, dtype=np.int64)
    times = np.asarray(times_s, dtype=np.float64)
    numbers = np.asarray(values, dtype=np.float64)
    if not period.shape == times.shape == numbers.shape == np.shape(qcs) or period.ndim != 1:
        raise ValueError("periods, times, values and qcs must be 1-D arrays of equal length")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, not {interval_s}")
    in_hour = (times >= hour_start_s) & (times < hour_start_s + HOUR_S)
    if not in_hour.any():
        return None
    good = usable(numbers, qcs) & in_hour
    reported = good & (period == HOUR_S) & (times == hour_start_s)
    if reported.any():
        value = float(numbers[reported][0])
        return HourlyRollup(value, 1, HOUR_S, value, value, "reported")
    best: tuple[int, int, npt.NDArray[np.bool_]] | None = None
    for series_period, step in ((MINUTE_S, MINUTE_S), (0, interval_s)):
        chosen = good & (period == series_period)
        count = int(np.unique(times[chosen]).size)
        coverage = min(count * step, HOUR_S)
        if count and (best is None or coverage > best[1]):
            best = (step, coverage, chosen)
    if best is None:
        return HourlyRollup(None, 0, 0, None, None, "computed")
    step, coverage, chosen = best
    samples = numbers[chosen]
    if water:
        mean = water_daily_mean(samples, min_count=1)
    else:
        mean = hourly_mean(
            times[chosen], samples, hour_start_s=hour_start_s, sample_interval_s=step
        )
    if mean is None:
        return HourlyRollup(None, int(samples.size), coverage, None, None, "computed")
    low, high = float(np.min(samples)), float(np.max(samples))
    return HourlyRollup(mean, int(samples.size), coverage, low, high, "computed")


# Sums of float64 values kept exactly: a decimal holds any double exactly, and a sum of a few
# thousand of them needs at most a few hundred digits unless their magnitudes span the whole
# double range, which the parameters' valid ranges exclude; an inexact sum raises.
_EXACT = decimal.Context(prec=2000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                         traps=[decimal.Inexact, decimal.InvalidOperation])  # fmt: skip


@dataclass(frozen=True, slots=True)
class HourPart:
    """The readings of one finer period (real-time or minute) in one hour, as running totals.

    `samples`, `total`, `min` and `max` cover the readings that feed statistics; `last_s` is
    the latest time (epoch seconds) of any reading of the period in the hour, whatever its QC
    or value, or None when there is none. Readings after `last_s` can extend the part
    (extend_part); anything else needs the hour recomputed from all of its readings.
    """

    samples: int
    total: decimal.Decimal  # the exact sum of the values
    min: float | None
    max: float | None
    last_s: float | None


NO_PART = HourPart(0, decimal.Decimal(0), None, None, None)


def exact_sum(values: npt.NDArray[np.float64], start: decimal.Decimal) -> decimal.Decimal:
    """start + the values, exactly."""
    with decimal.localcontext(_EXACT):
        return sum(map(decimal.Decimal, values.tolist()), start)


def hour_part(times_s: npt.ArrayLike, values: npt.ArrayLike, qcs: npt.ArrayLike) -> HourPart:
    """The part of one period's readings in an hour (each time once, as stored)."""
    return extend_part(NO_PART, times_s, values, qcs, ordered=False) or NO_PART


def extend_part(
    part: HourPart,
    times_s: npt.ArrayLike,
    values: npt.ArrayLike,
    qcs: npt.ArrayLike,
    *,
    ordered: bool = True,
) -> HourPart | None:
    """`part` with these readings of its period added; None where that cannot be done exactly.

    With `ordered`, every time must be distinct and after the part's `last_s`: a reading at or
    before it may already be counted, and only a recomputation can tell.
    """
    times = np.asarray(times_s, dtype=np.float64)
    numbers = np.asarray(values, dtype=np.float64)
    if times.size == 0:
        return part
    # Array methods and a set, not np.min or np.unique: a round extends thousands of hours by a
    # few readings each, where their overhead outweighed the work.
    last = float(times.max())
    if ordered:
        if part.last_s is not None and float(times.min()) <= part.last_s:
            return None
        if len(set(times.tolist())) != times.size:
            return None
    elif part.last_s is not None:
        last = max(last, part.last_s)
    good = numbers[usable(numbers, qcs)]
    if good.size == 0:
        return HourPart(part.samples, part.total, part.min, part.max, last)
    low, high = float(good.min()), float(good.max())
    return HourPart(
        part.samples + int(good.size),
        exact_sum(good, part.total),
        low if part.min is None else min(part.min, low),
        high if part.max is None else max(part.max, high),
        last,
    )


def parts_rollup(
    minute: HourPart, real_time: HourPart, *, interval_s: int, water: bool
) -> HourlyRollup:
    """An hour's computed rollup (no reported mean) from its minute and real-time parts.

    The rules of hourly_rollup for readings stored once per time: the part covering more of
    the hour (minute on a tie), whose mean needs 45 minutes of sampling (not for water). The
    mean is the exact sum rounded once, over the count: the same bits however the readings
    were added up.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, not {interval_s}")
    best: tuple[int, int, HourPart] | None = None
    for part, step in ((minute, MINUTE_S), (real_time, interval_s)):
        coverage = min(part.samples * step, HOUR_S)
        if part.samples and (best is None or coverage > best[1]):
            best = (step, coverage, part)
    if best is None:
        return HourlyRollup(None, 0, 0, None, None, "computed")
    step, coverage, chosen = best
    if not water and chosen.samples * step < MIN_HOUR_SAMPLING_S:
        return HourlyRollup(None, chosen.samples, coverage, None, None, "computed")
    mean = float(chosen.total) / chosen.samples
    return HourlyRollup(mean, chosen.samples, coverage, chosen.min, chosen.max, "computed")


def daily_rollup(
    hour_values: npt.ArrayLike,
    hour_samples: npt.ArrayLike,
    hour_min: npt.ArrayLike,
    hour_max: npt.ArrayLike,
    *,
    reported: float | None,
    water: bool,
    water_min_samples: int = 1,
) -> DailyRollup:
    """Roll up a natural day from its 24 hourly rollups (00:00-01:00 first; NaN = no value).

    For water, the hourly means weighted by their sample counts give back the mean of the day's
    samples, so the day needs no second pass over the raw readings, and min and max are the
    samples' extremes; for air they are the extremes of the valid hourly means.
    """
    values = np.asarray(hour_values, dtype=np.float64)
    samples = np.asarray(hour_samples, dtype=np.int64)
    lows = np.asarray(hour_min, dtype=np.float64)
    highs = np.asarray(hour_max, dtype=np.float64)
    if not values.shape == samples.shape == lows.shape == highs.shape == (HOURS_PER_DAY,):
        raise ValueError("a natural day takes 24 hourly values, samples, minima and maxima")
    valid = np.isfinite(values)
    count = int(samples[valid].sum()) if water else int(valid.sum())
    if reported is not None:
        return DailyRollup(reported, count, reported, reported, "reported")
    if water:
        mean = water_daily_mean(
            np.repeat(values[valid], samples[valid]), min_count=water_min_samples
        )
    else:
        mean = daily_mean(values)
    if mean is None:
        return DailyRollup(None, count, None, None, "computed")
    low = float(np.min(lows[valid])) if water else float(np.min(values[valid]))
    high = float(np.max(highs[valid])) if water else float(np.max(values[valid]))
    return DailyRollup(mean, count, low, high, "computed")
