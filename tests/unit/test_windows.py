"""Window statistics and their validity minimums (GB 3095 Table 4; docs/standards.md §2-§3)."""

from __future__ import annotations

import numpy as np
import pytest

from alerts.windows import (
    daily_mean,
    hourly_mean,
    moving_8h_mean,
    moving_24h_mean,
    o3_daily_max_8h,
    water_daily_mean,
)

NAN = np.nan
HOUR = 1_767_225_600  # 2026-01-01T00:00Z, an hour boundary


@pytest.mark.parametrize(
    ("count", "interval_s", "expected"),
    [
        (44, 60, None),  # 44 minutes
        (45, 60, 22.0),  # 45 minutes: mean of 0..44
        (60, 60, 29.5),
        (8, 300, None),  # 40 minutes of 5-minute samples
        (9, 300, 4.0),  # 45 minutes
        (0, 60, None),
    ],
)
def test_hourly_mean_needs_45_minutes(count: int, interval_s: int, expected: float | None) -> None:
    times = HOUR + np.arange(count) * interval_s
    values = np.arange(count, dtype=np.float64)
    assert hourly_mean(times, values, hour_start_s=HOUR, sample_interval_s=interval_s) == expected


def test_hourly_mean_counts_only_valid_samples_inside_the_hour() -> None:
    inside = HOUR + np.arange(46) * 60
    times = np.concatenate([[HOUR - 60], inside, [HOUR + 3600]])
    values = np.concatenate([[1000.0], np.full(46, 10.0), [1000.0]])
    values[[1, 2]] = NAN  # 44 valid minutes remain
    assert hourly_mean(times, values, hour_start_s=HOUR, sample_interval_s=60) is None
    values[1] = 40.0  # 45 valid minutes
    expected = (40.0 + 44 * 10.0) / 45
    assert hourly_mean(times, values, hour_start_s=HOUR, sample_interval_s=60) == expected


def test_hourly_mean_does_not_count_a_redelivered_sample_twice() -> None:
    times = HOUR + np.concatenate([np.arange(44), [43]]) * 60
    values = np.full(45, 5.0)
    assert hourly_mean(times, values, hour_start_s=HOUR, sample_interval_s=60) is None


def test_hourly_mean_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        hourly_mean(np.arange(3), np.arange(4), hour_start_s=0, sample_interval_s=60)
    with pytest.raises(ValueError):
        hourly_mean(np.arange(3), np.arange(3), hour_start_s=0, sample_interval_s=0)


def test_moving_8h_mean_indexing_and_minimum() -> None:
    hourly = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, NAN, NAN, NAN])
    expected = np.array(
        [NAN, NAN, NAN, NAN, NAN, 3.5, 4.0, 4.5, 5.5, 6.0, 6.5, NAN]
    )  # index 5: hours 0..5 (6 valid); index 11: hours 4..11 (5 valid)
    np.testing.assert_array_equal(moving_8h_mean(hourly), expected)


@pytest.mark.parametrize(("valid", "expected"), [(5, NAN), (6, 10.0), (8, 10.0)])
def test_moving_8h_mean_needs_6_of_8(valid: int, expected: float) -> None:
    hourly = np.full(8, NAN)
    hourly[:valid] = 10.0
    np.testing.assert_array_equal(moving_8h_mean(hourly)[-1], expected)


@pytest.mark.parametrize(("valid", "expected"), [(19, NAN), (20, 3.0), (24, 3.0)])
def test_moving_24h_mean_needs_20_of_24(valid: int, expected: float) -> None:
    hourly = np.full(30, NAN)
    hourly[30 - valid :] = 3.0
    np.testing.assert_array_equal(moving_24h_mean(hourly)[-1], expected)
    np.testing.assert_array_equal(moving_24h_mean(hourly)[22], NAN)


@pytest.mark.parametrize(("valid", "expected"), [(19, None), (20, 9.5), (24, 11.5)])
def test_daily_mean_needs_20_hours(valid: int, expected: float | None) -> None:
    hourly = np.arange(24, dtype=np.float64)
    hourly[valid:] = NAN
    assert daily_mean(hourly) == expected


def test_day_statistics_need_24_hours() -> None:
    with pytest.raises(ValueError):
        daily_mean(np.zeros(23))
    with pytest.raises(ValueError):
        o3_daily_max_8h(np.zeros(25))


def test_o3_daily_max_8h_first_window_is_hours_0_to_7() -> None:
    hourly = np.full(24, 10.0)
    hourly[:7] = 1000.0  # 00:00-07:00; hour 7 (07:00-08:00) stays 10
    assert o3_daily_max_8h(hourly) == (7 * 1000.0 + 10.0) / 8


def test_o3_daily_max_8h_ignores_windows_ending_before_08() -> None:
    hourly = np.zeros(24)
    hourly[:6] = 1000.0  # the 06:00 window (6 valid hours) would give 1000; it is not one of 17
    assert o3_daily_max_8h(hourly) == 750.0


def test_o3_daily_max_8h_last_window_ends_at_24() -> None:
    hourly = np.full(24, 10.0)
    hourly[16:] = 200.0  # hours 16..23 form the window ending 24:00
    assert o3_daily_max_8h(hourly) == 200.0


@pytest.mark.parametrize(("valid", "expected"), [(5, None), (6, 80.0)])
def test_o3_daily_max_8h_needs_6_valid_hours_in_a_window(
    valid: int, expected: float | None
) -> None:
    hourly = np.full(24, NAN)
    hourly[10 : 10 + valid] = 80.0
    assert o3_daily_max_8h(hourly) == expected


def test_o3_daily_max_8h_takes_the_largest_of_17_windows() -> None:
    hourly = np.zeros(24)
    hourly[12] = 80.0
    hourly[20] = 160.0
    # windows covering hour 20 (ending 21:00..24:00) average 20; hour 12 alone gives 10.
    assert o3_daily_max_8h(hourly) == 20.0


@pytest.mark.parametrize(
    ("values", "min_count", "expected"),
    [
        ([NAN, NAN], 1, None),
        ([], 1, None),
        ([1.0, NAN, 3.0], 1, 2.0),
        ([1.0, NAN, 3.0], 2, 2.0),
        ([1.0, NAN, 3.0], 3, None),
    ],
)
def test_water_daily_mean(values: list[float], min_count: int, expected: float | None) -> None:
    assert water_daily_mean(np.array(values), min_count=min_count) == expected


def test_water_daily_mean_rejects_min_count_below_one() -> None:
    with pytest.raises(ValueError):
        water_daily_mean(np.array([1.0]), min_count=0)


def test_moving_means_of_several_series_at_once_match_them_one_by_one() -> None:
    rng = np.random.default_rng(7)
    hourly = rng.uniform(0.0, 300.0, (5, 30))
    hourly[rng.random((5, 30)) < 0.2] = NAN
    for moving in (moving_8h_mean, moving_24h_mean):
        np.testing.assert_array_equal(moving(hourly), np.vstack([moving(row) for row in hourly]))
    with pytest.raises(ValueError):
        moving_8h_mean(np.zeros((2, 2, 24)))
