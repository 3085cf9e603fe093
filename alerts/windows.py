"""Window statistics with the standards' data-validity minimums (docs/standards.md §3.2).

Hourly series are float arrays, one value per hour, NaN where the hour has no valid mean. Hour h
of a natural day is [h:00, h+1:00), published under its end label h+1:00 (the "16:00" value is
the mean of 15:00-16:00). A statistic without enough data is None or NaN ("insufficient data"),
never an average of whatever is there.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

FloatArray = npt.NDArray[np.float64]

HOUR_S = 3600
MIN_HOUR_SAMPLING_S = 45 * 60
MIN_VALID_HOURS_8H = 6
MIN_VALID_HOURS_24H = 20
MIN_VALID_HOURS_DAY = 20
HOURS_PER_DAY = 24
# HJ 663: the O3 daily max 8-hour mean takes the 17 windows ending 08:00..24:00, i.e. the
# moving means at hour indices 7..23, so every window lies inside the natural day.
O3_DAILY_WINDOW_FIRST_HOUR = 7


def hourly_mean(
    times_s: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    hour_start_s: int,
    sample_interval_s: int,
) -> float | None:
    """Mean of valid samples in [hour_start_s, +1 h); None under 45 minutes of sampling."""
    if sample_interval_s <= 0:
        raise ValueError(f"sample_interval_s must be positive, not {sample_interval_s}")
    times = np.asarray(times_s, dtype=np.float64)
    samples = np.asarray(values, dtype=np.float64)
    if times.shape != samples.shape or times.ndim != 1:
        raise ValueError(f"times {times.shape} and values {samples.shape} must be equal 1-D")
    in_hour = (times >= hour_start_s) & (times < hour_start_s + HOUR_S) & np.isfinite(samples)
    # Sampling time is distinct timestamps x interval: a re-delivered sample adds no coverage.
    _, first = np.unique(times[in_hour], return_index=True)
    if first.size * sample_interval_s < MIN_HOUR_SAMPLING_S:
        return None
    return float(np.mean(samples[in_hour][first]))


def moving_8h_mean(hourly: npt.ArrayLike) -> FloatArray:
    """8-hour moving means: index i covers hours i-7..i and needs 6 valid hours, else NaN.

    Along the last axis: a 2-D array is one series per row (stations at once).
    """
    return _moving_mean(hourly, 8, MIN_VALID_HOURS_8H)


def moving_24h_mean(hourly: npt.ArrayLike) -> FloatArray:
    """24-hour moving means: index i covers hours i-23..i and needs 20 valid hours, else NaN.

    Along the last axis, as moving_8h_mean.
    """
    return _moving_mean(hourly, 24, MIN_VALID_HOURS_24H)


def daily_mean(hourly: npt.ArrayLike) -> float | None:
    """Natural-day mean of the 24 hourly means; None with fewer than 20 valid hours."""
    day = _day(hourly)
    valid = day[np.isfinite(day)]
    return float(np.mean(valid)) if valid.size >= MIN_VALID_HOURS_DAY else None


def o3_daily_max_8h(hourly: npt.ArrayLike) -> float | None:
    """O3 daily maximum 8-hour mean over the 17 windows ending 08:00..24:00; None if none valid."""
    windows = moving_8h_mean(_day(hourly))[O3_DAILY_WINDOW_FIRST_HOUR:]
    valid = windows[np.isfinite(windows)]
    return float(np.max(valid)) if valid.size else None


def water_daily_mean(values: npt.ArrayLike, *, min_count: int = 1) -> float | None:
    """Mean of a day's valid water samples; None with fewer than `min_count` of them."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, not {min_count}")
    samples = np.asarray(values, dtype=np.float64).ravel()
    valid = samples[np.isfinite(samples)]
    return float(np.mean(valid)) if valid.size >= min_count else None


def _moving_mean(hourly: npt.ArrayLike, window: int, min_valid: int) -> FloatArray:
    series = np.asarray(hourly, dtype=np.float64)
    if series.ndim not in (1, 2):
        raise ValueError(f"hourly means must be 1-D or 2-D, not shape {series.shape}")
    # Hours before the array's start are unknown, so they count as missing.
    padding = np.full((*series.shape[:-1], window - 1), np.nan)
    frames = sliding_window_view(np.concatenate([padding, series], axis=-1), window, axis=-1)
    valid = np.isfinite(frames)
    counts = valid.sum(axis=-1)
    sums = np.where(valid, frames, 0.0).sum(axis=-1)
    means = np.full(series.shape, np.nan)
    enough = counts >= min_valid
    means[enough] = sums[enough] / counts[enough]
    return means


def _day(hourly: npt.ArrayLike) -> FloatArray:
    day = np.asarray(hourly, dtype=np.float64)
    if day.shape != (HOURS_PER_DAY,):
        raise ValueError(f"a natural day has 24 hourly means (00:00-01:00 first), not {day.shape}")
    return day
