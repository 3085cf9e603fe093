"""The AQI of a station or a city for an hour or a natural day (HJ 633 by the period's date).

Numpy in, results out. A station's statistics come as `Observed` arrays, one value per
consecutive period (an hour's mean, a day's mean), and each AQI input is an `Observed` too:
the real-time AQI takes the hour's 1-hour means plus, under HJ 633-2012, the O3 8-hour and SO2
24-hour moving means ending with that hour; the daily AQI takes the natural-day means and the
O3 daily maximum 8-hour (and, 2012, 1-hour) mean of the day's 24 hourly means. A city averages
each input over its non-background stations first and then computes the AQI (HJ 663), never
the mean of station AQIs. A statistic whose validity rule is not met is NaN ("insufficient
data" where something was received for it) and is left out, never replaced by a mean of what
is there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from alerts.assessment.observed import BoolArray, FloatArray, IntArray, Observed
from alerts.assessment.period import DAY, HOUR, Period
from alerts.standards import AqiResult, daily_aqi, hourly_aqi
from alerts.windows import (
    HOURS_PER_DAY,
    O3_DAILY_WINDOW_FIRST_HOUR,
    moving_8h_mean,
    moving_24h_mean,
    o3_daily_max_8h,
)
from core.timeutil import CST

AQI_POLLUTANTS = ("so2", "no2", "co", "o3", "pm10", "pm25")
DAY_MEANS = ("so2", "no2", "co", "pm10", "pm25")
# Input key -> (parameter, statistic) of each report, in the order the API lists them.
HOURLY_INPUTS = {
    "so2": ("so2", "1h"),
    "no2": ("no2", "1h"),
    "co": ("co", "1h"),
    "o3": ("o3", "1h"),
    "o3_8h": ("o3", "8h_moving"),
    "so2_24h": ("so2", "24h_moving"),
    "pm10": ("pm10", "1h"),
    "pm25": ("pm25", "1h"),
}
DAILY_INPUTS = {
    "so2": ("so2", "day_mean"),
    "no2": ("no2", "day_mean"),
    "co": ("co", "day_mean"),
    "o3_8h_max": ("o3", "day_max_8h"),
    "o3_1h_max": ("o3", "day_max_1h"),
    "pm10": ("pm10", "day_mean"),
    "pm25": ("pm25", "day_mean"),
}


def _any(rows: BoolArray, axis: int) -> BoolArray:
    return np.asarray(rows.any(axis=axis), dtype=np.bool_)


def _received_within(received: BoolArray, hours: int) -> BoolArray:
    """Whether anything was received in the `hours` hours ending with each hour (last axis)."""
    padding = np.zeros((*received.shape[:-1], hours - 1), dtype=bool)
    windows = sliding_window_view(np.concatenate([padding, received], axis=-1), hours, axis=-1)
    return _any(windows, -1)


def hourly_inputs(hourly: Mapping[str, Observed]) -> dict[str, Observed]:
    """A station's real-time AQI inputs at each hour of its hourly means, keyed as HOURLY_INPUTS.

    Moving means count the hours before the arrays' start as missing: give 23 earlier hours
    (2012 editions) for the SO2 24-hour mean to be computable at the first hour that matters.
    Arrays of one row per station give every station's inputs at once, row by row.
    """
    shape = next(iter(hourly.values())).values.shape if hourly else (0,)
    empty = Observed(np.full(shape, np.nan), np.zeros(shape, dtype=bool))
    means = {code: hourly.get(code, empty) for code in AQI_POLLUTANTS}
    o3, so2 = means["o3"], means["so2"]
    return {
        **means,
        "o3_8h": Observed(moving_8h_mean(o3.values), _received_within(o3.received, 8)),
        "so2_24h": Observed(moving_24h_mean(so2.values), _received_within(so2.received, 24)),
    }


def daily_inputs(day_means: Mapping[str, Observed], o3_hours: Observed) -> dict[str, Observed]:
    """A station's daily AQI inputs for each day, keyed as DAILY_INPUTS.

    `day_means` holds a natural-day mean per day; `o3_hours` the day's 24 hourly O3 means, one
    row per day (00:00-01:00 first), for the O3 daily maximum 8-hour and 1-hour means.
    """
    hours = o3_hours.values.reshape(-1, HOURS_PER_DAY)
    received = _any(o3_hours.received.reshape(-1, HOURS_PER_DAY), 1)
    empty = Observed(np.full(len(hours), np.nan), np.zeros(len(hours), dtype=bool))
    maximum_8h = [o3_daily_max_8h(day) for day in hours]
    valid = np.isfinite(hours)
    maximum_1h = np.where(valid, hours, -np.inf).max(axis=1, initial=-np.inf)
    return {
        **{code: day_means.get(code, empty) for code in DAY_MEANS},
        "o3_8h_max": Observed(np.array([np.nan if m is None else m for m in maximum_8h]), received),
        "o3_1h_max": Observed(np.where(_any(valid, 1), maximum_1h, np.nan), received),
    }


def rolling_24h_inputs(hourly: Mapping[str, Observed]) -> dict[str, Observed]:
    """A station's rolling 24-hour AQI inputs at each hour of its hourly means, keyed as
    DAILY_INPUTS: the daily AQI's inputs over the 24 hours ending with that hour instead of the
    natural day — the 24-hour moving means (20 valid hours), the largest O3 8-hour moving mean
    of the 17 windows inside those hours and the largest O3 1-hour mean. Give 30 earlier hours
    for the first hour that matters to see its whole window.
    """
    length = len(next(iter(hourly.values())).values) if hourly else 0
    empty = Observed(np.full(length, np.nan), np.zeros(length, dtype=bool))
    means = {code: hourly.get(code, empty) for code in AQI_POLLUTANTS}
    inputs = {
        code: Observed(
            moving_24h_mean(means[code].values), _received_within(means[code].received, 24)
        )
        for code in DAY_MEANS
    }
    o3 = means["o3"]
    received = _received_within(o3.received, HOURS_PER_DAY)
    windows = HOURS_PER_DAY - O3_DAILY_WINDOW_FIRST_HOUR
    inputs["o3_8h_max"] = Observed(_moving_max(moving_8h_mean(o3.values), windows), received)
    inputs["o3_1h_max"] = Observed(_moving_max(o3.values, HOURS_PER_DAY), received)
    return inputs


def _moving_max(values: FloatArray, hours: int) -> FloatArray:
    """The largest valid value of the `hours` values ending with each one (NaN if none)."""
    padded = np.concatenate([np.full(hours - 1, np.nan), values])
    frames = sliding_window_view(padded, hours)
    valid = np.isfinite(frames)
    found = np.where(valid, frames, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(valid.any(axis=1), found, np.nan)


def stacked(stations: Sequence[Mapping[str, Observed]]) -> dict[str, Observed]:
    """Stations' inputs as one grid per input, a row per station (in the order given)."""
    return {
        key: Observed(
            np.vstack([inputs[key].values for inputs in stations]),
            np.vstack([inputs[key].received for inputs in stations]),
        )
        for key in (stations[0] if stations else ())
    }


def city_inputs(
    stations: Sequence[Mapping[str, Observed]],
) -> tuple[dict[str, Observed], dict[str, IntArray]]:
    """A city's inputs: per input and period the mean of its stations' valid values, and how
    many stations gave one (the caller passes the non-background stations only)."""
    return city_means(stacked(stations))


def city_means(grids: Mapping[str, Observed]) -> tuple[dict[str, Observed], dict[str, IntArray]]:
    """city_inputs of stations' inputs already stacked (`stacked`: a row per station)."""
    city: dict[str, Observed] = {}
    counts: dict[str, IntArray] = {}
    for key, grid in grids.items():
        valid = np.isfinite(grid.values)
        count = valid.sum(axis=0)
        total = np.where(valid, grid.values, 0.0).sum(axis=0)
        city[key] = Observed(
            np.where(count > 0, total / np.maximum(count, 1), np.nan), _any(grid.received, 0)
        )
        counts[key] = count.astype(np.int64)
    return city, counts


def values_at(inputs: Mapping[str, Observed], index: int) -> dict[str, float | None]:
    """Every input's value in one period (None where it has none)."""
    return {key: observed.value(index) for key, observed in inputs.items()}


def _hourly(values: Mapping[str, float | None], start: datetime) -> AqiResult:
    return hourly_aqi(
        {code: values.get(code) for code in AQI_POLLUTANTS},
        start,
        so2_24h_moving=values.get("so2_24h"),
        o3_8h_moving=values.get("o3_8h"),
    )


def _daily(values: Mapping[str, float | None], start: datetime) -> AqiResult:
    return daily_aqi({key: values.get(key) for key in DAILY_INPUTS}, start.astimezone(CST).date())


# The HJ 633 report of each period kind: its inputs and how they become an AQI. Longer periods
# have no AQI of their own (they count days by their daily AQI, docs/evaluation.md §3).
_REPORTS: dict[str, tuple[Mapping[str, tuple[str, str]], Callable[..., AqiResult]]] = {
    HOUR.name: (HOURLY_INPUTS, _hourly),
    DAY.name: (DAILY_INPUTS, _daily),
}


def aqi_inputs(period: Period) -> Mapping[str, tuple[str, str]]:
    """The inputs of a period's AQI report: key -> (parameter, statistic)."""
    return _REPORTS[period.name][0]


def aqi(period: Period, values: Mapping[str, float | None], start: datetime) -> AqiResult:
    """The AQI of the period starting at `start` from its inputs, by the edition of its date."""
    return _REPORTS[period.name][1](values, start)
