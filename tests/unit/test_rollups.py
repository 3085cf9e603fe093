"""Hourly and daily rollup values: validity minimums at the edge, reported means win, QC gating."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from alerts.rollups import DailyRollup, HourlyRollup, daily_rollup, hourly_rollup
from core.timeutil import CST
from schemas.common import QC

HOUR = int(datetime(2026, 11, 20, 8, tzinfo=CST).timestamp())
VALID = QC.VALID.code

Reading = tuple[int, int, float | None, int]  # period_s, seconds after HOUR, value, QC code


def _hour(readings: list[Reading], *, interval_s: int = 3600, water: bool = False) -> object:
    periods = [r[0] for r in readings]
    times = [HOUR + r[1] for r in readings]
    values = [math.nan if r[2] is None else r[2] for r in readings]
    qcs = [r[3] for r in readings]
    return hourly_rollup(
        periods, times, values, qcs, hour_start_s=HOUR, interval_s=interval_s, water=water
    )


def _minutes(count: int, value: float = 10.0, qc: int = VALID) -> list[Reading]:
    return [(60, 60 * m, value + m, qc) for m in range(count)]


def test_minute_series_needs_45_minutes() -> None:
    assert _hour(_minutes(44)) == HourlyRollup(None, 44, 2640, None, None, "computed")
    assert _hour(_minutes(45)) == HourlyRollup(10.0 + 22.0, 45, 2700, 10.0, 54.0, "computed")


@pytest.mark.parametrize(
    ("interval_s", "short", "enough"),
    [(60, 44, 45), (300, 8, 9), (900, 2, 3)],
)
def test_real_time_samples_count_their_interval(interval_s: int, short: int, enough: int) -> None:
    below = [(0, interval_s * k, 5.0, VALID) for k in range(short)]
    at_edge = [(0, interval_s * k, 5.0, VALID) for k in range(enough)]
    assert _hour(below, interval_s=interval_s) == HourlyRollup(
        None, short, short * interval_s, None, None, "computed"
    )
    assert _hour(at_edge, interval_s=interval_s) == HourlyRollup(
        5.0, enough, enough * interval_s, 5.0, 5.0, "computed"
    )


@pytest.mark.parametrize("interval_s", [3600, 14400])
def test_one_sample_of_an_hourly_or_slower_cadence_covers_the_hour(interval_s: int) -> None:
    assert _hour([(0, 0, 7.5, VALID)], interval_s=interval_s) == HourlyRollup(
        7.5, 1, 3600, 7.5, 7.5, "computed"
    )


def test_reported_hourly_mean_wins_over_finer_data() -> None:
    readings = [*_minutes(60, value=100.0), (3600, 0, 42.0, VALID)]
    assert _hour(readings) == HourlyRollup(42.0, 1, 3600, 42.0, 42.0, "reported")
    # ...even where the finer data alone would be insufficient.
    assert _hour([*_minutes(3), (3600, 0, 42.0, VALID)]) == HourlyRollup(
        42.0, 1, 3600, 42.0, 42.0, "reported"
    )


@pytest.mark.parametrize("qc", [QC.SUSPECT, QC.INVALID, QC.MAINTENANCE, QC.CALIBRATION])
def test_a_reported_mean_that_is_not_valid_does_not_win(qc: QC) -> None:
    readings = [*_minutes(45, value=0.0), (3600, 0, 500.0, qc.code)]
    assert _hour(readings) == HourlyRollup(22.0, 45, 2700, 0.0, 44.0, "computed")


@pytest.mark.parametrize("qc", [QC.SUSPECT, QC.INVALID, QC.FAULT, QC.OVER_RANGE, QC.STOPPED])
def test_only_valid_and_below_detection_feed_the_mean(qc: QC) -> None:
    readings = [*_minutes(44, value=10.0), (60, 44 * 60, 1000.0, qc.code)]
    assert _hour(readings) == HourlyRollup(None, 44, 2640, None, None, "computed")
    readings[-1] = (60, 44 * 60, 0.5, QC.BELOW_DETECTION.code)
    expected = (sum(10.0 + m for m in range(44)) + 0.5) / 45
    assert _hour(readings) == HourlyRollup(expected, 45, 2700, 0.5, 53.0, "computed")


def test_a_reading_without_value_is_not_a_sample() -> None:
    readings = [*_minutes(44), (60, 44 * 60, None, VALID)]
    assert _hour(readings) == HourlyRollup(None, 44, 2640, None, None, "computed")


def test_the_series_covering_more_of_the_hour_is_used_never_both() -> None:
    minutes = _minutes(30, value=100.0)
    real_time = [(0, 60 * k + 30, 1.0, VALID) for k in range(50)]
    assert _hour(minutes + real_time, interval_s=60) == HourlyRollup(
        1.0, 50, 3000, 1.0, 1.0, "computed"
    )
    # On a tie the minute series wins.
    tie = [(0, 60 * k + 30, 1.0, VALID) for k in range(30)]
    assert _hour(minutes + tie, interval_s=60) == HourlyRollup(
        None, 30, 1800, None, None, "computed"
    )


def test_water_needs_one_valid_sample_not_45_minutes() -> None:
    one = [(0, 600, 0.8, VALID)]
    assert _hour(one, interval_s=60, water=True) == HourlyRollup(0.8, 1, 60, 0.8, 0.8, "computed")
    assert _hour(one, interval_s=60) == HourlyRollup(None, 1, 60, None, None, "computed")
    invalid = [(0, 600, 0.8, QC.MAINTENANCE.code)]
    assert _hour(invalid, water=True) == HourlyRollup(None, 0, 0, None, None, "computed")


def test_an_hour_without_readings_has_no_rollup() -> None:
    assert _hour([]) is None
    # Readings of the neighbouring hours do not belong to it.
    assert _hour([(0, -1, 5.0, VALID), (0, 3600, 5.0, VALID)]) is None


def test_an_hour_of_unusable_readings_is_insufficient_data() -> None:
    readings = [(0, 0, 5.0, QC.FAULT.code), (60, 60, None, VALID)]
    assert _hour(readings) == HourlyRollup(None, 0, 0, None, None, "computed")


def test_mismatched_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        hourly_rollup([0], [HOUR, HOUR], [1.0], [0], hour_start_s=HOUR, interval_s=60, water=False)
    with pytest.raises(ValueError, match="interval_s must be positive"):
        hourly_rollup([0], [HOUR], [1.0], [0], hour_start_s=HOUR, interval_s=0, water=False)


def _day(
    valid_hours: int, *, value: float = 30.0, samples: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    values = np.full(24, np.nan)
    values[:valid_hours] = [value + h for h in range(valid_hours)]
    counts = np.where(np.isfinite(values), samples, 0)
    return values, counts, values.copy(), values.copy()


def test_air_day_needs_20_valid_hours() -> None:
    assert daily_rollup(*_day(19), reported=None, water=False) == DailyRollup(
        None, 19, None, None, "computed"
    )
    assert daily_rollup(*_day(20), reported=None, water=False) == DailyRollup(
        30.0 + 9.5, 20, 30.0, 49.0, "computed"
    )


def test_reported_daily_mean_wins() -> None:
    assert daily_rollup(*_day(0), reported=61.0, water=False) == DailyRollup(
        61.0, 0, 61.0, 61.0, "reported"
    )
    assert daily_rollup(*_day(24), reported=61.0, water=False) == DailyRollup(
        61.0, 24, 61.0, 61.0, "reported"
    )


def test_water_day_is_the_mean_of_its_samples() -> None:
    values, counts, lows, highs = _day(0)
    # 00:00 one sample 1.0; 04:00 three samples 2, 3, 4 (mean 3); 08:00 a reported mean 5.0.
    values[[0, 4, 8]] = [1.0, 3.0, 5.0]
    counts[[0, 4, 8]] = [1, 3, 1]
    lows[[0, 4, 8]] = [1.0, 2.0, 5.0]
    highs[[0, 4, 8]] = [1.0, 4.0, 5.0]
    assert daily_rollup(values, counts, lows, highs, reported=None, water=True) == DailyRollup(
        (1.0 + 9.0 + 5.0) / 5, 5, 1.0, 5.0, "computed"
    )


def test_water_day_minimum_samples_is_configurable() -> None:
    one = _day(1, value=0.4)
    assert daily_rollup(*one, reported=None, water=True) == DailyRollup(
        0.4, 1, 0.4, 0.4, "computed"
    )
    assert daily_rollup(*one, reported=None, water=True, water_min_samples=2) == DailyRollup(
        None, 1, None, None, "computed"
    )


def test_a_day_takes_exactly_24_hours() -> None:
    with pytest.raises(ValueError, match="24 hourly"):
        daily_rollup(
            np.zeros(23), np.zeros(23), np.zeros(23), np.zeros(23), reported=None, water=False
        )
