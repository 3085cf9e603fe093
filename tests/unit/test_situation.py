"""The situation's pure parts: the 3-hour trend, the river's flow order, a station's state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alerts.propagation import flow_order
from alerts.situation import LATE_INTERVALS, in_flow_order, station_state
from alerts.trend import MIN_POINTS, TREND_HOURS, TREND_STEP, Trend, trends
from store.catalogue import NamedReach, PlacedStation

# --- trend -----------------------------------------------------------------------------------


def trend(hours: list[float], values: list[float], *, noise: float | None) -> Trend:
    """One series' trend: a grid of one row."""
    return trends(np.array([hours], dtype=np.float64), np.array([values]), [noise])[0]


def test_trend_window_is_three_hours_and_needs_three_points() -> None:
    assert (TREND_HOURS, MIN_POINTS, TREND_STEP.total_seconds()) == (3.0, 3, 900.0)


def test_two_points_are_unknown_three_are_a_trend() -> None:
    two = trend([0.0, 1.0], [1.0, 5.0], noise=0.1)
    assert (two.slope_per_hour, two.direction, two.points) == (None, "unknown", 2)
    three = trend([0.0, 1.0, 2.0], [1.0, 5.0, 9.0], noise=0.1)
    assert (three.slope_per_hour, three.direction, three.points) == (4.0, "rising", 3)


def test_no_point_and_missing_values_are_not_points() -> None:
    assert trend([], [], noise=1.0).points == 0
    gaps = trend([0.0, 1.0, 2.0, 3.0], [1.0, math.nan, 3.0, math.nan], noise=0.0)
    assert (gaps.slope_per_hour, gaps.direction, gaps.points) == (None, "unknown", 2)


def test_least_squares_slope_through_scattered_points() -> None:
    # dx = -1.5, -0.5, 0.5, 1.5; y = 0, 3, 2, 7: slope = Σdx·y / Σdx² = 10 / 5 = 2 per hour.
    found = trend([10.0, 11.0, 12.0, 13.0], [0.0, 3.0, 2.0, 7.0], noise=6.0)
    assert (found.slope_per_hour, found.points) == (2.0, 4)
    # change over 3 h = 6: exactly at the noise band is still steady.
    assert found.direction == "steady"
    assert trend([10.0, 11.0, 12.0, 13.0], [7.0, 2.0, 3.0, 0.0], noise=5.5).direction == "falling"


@pytest.mark.parametrize(
    ("values", "noise", "direction"),
    [
        ([0.0, 1.0, 2.0], 3.0, "steady"),  # +1/h: +3 over 3 h, exactly the band
        ([0.0, 1.0, 2.0], 2.75, "rising"),  # +3 is beyond a band of 2.75
        ([2.0, 1.0, 0.0], 3.0, "steady"),  # -3 over 3 h, exactly the band
        ([2.0, 1.0, 0.0], 2.75, "falling"),
        ([5.0, 5.0, 5.0], 0.0, "steady"),  # no change, no band
        ([5.0, 5.0, 5.25], 0.0, "rising"),  # any change beyond a zero band
        ([5.0, 5.0, 5.25], None, "rising"),  # no band known: the same
    ],
)
def test_direction_against_the_noise_band(
    values: list[float], noise: float | None, direction: str
) -> None:
    assert trend([0.0, 1.0, 2.0], values, noise=noise).direction == direction


def test_points_at_one_instant_make_no_slope() -> None:
    found = trend([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], noise=0.0)
    assert (found.slope_per_hour, found.direction, found.points) == (None, "unknown", 3)


def test_series_fitted_together_each_get_their_own_least_squares_line() -> None:
    # Rows of 0 to 12 points at epoch hours, padded with NaN, some values missing (NaN): each
    # row's slope is numpy's least-squares line through its own points alone.
    rng = np.random.default_rng(7)
    rows, width = 300, 12
    hours = np.full((rows, width), np.nan)
    values = np.full((rows, width), np.nan)
    for row in range(rows):
        points = int(rng.integers(0, width + 1))
        hours[row, :points] = 493_000 + np.sort(rng.uniform(0, 3, points))
        values[row, :points] = rng.normal(50, 20, points) + rng.normal(0, 10) * hours[row, :points]
        values[row, rng.random(width) < 0.1] = np.nan
    noise = [None if row % 3 == 0 else float(row % 7) for row in range(rows)]
    found = trends(hours, values, noise)
    assert len(found) == rows
    for row, fitted in enumerate(found):
        kept = np.isfinite(hours[row]) & np.isfinite(values[row])
        assert fitted.points == int(kept.sum())
        if fitted.points < MIN_POINTS:
            assert (fitted.slope_per_hour, fitted.direction) == (None, "unknown")
            continue
        slope = np.polyfit(hours[row][kept], values[row][kept], 1)[0]
        assert fitted.slope_per_hour == pytest.approx(slope, rel=1e-6, abs=1e-9)
        change = fitted.slope_per_hour * TREND_HOURS
        steady = abs(change) <= (noise[row] or 0.0)
        expected = "steady" if steady else ("rising" if change > 0 else "falling")
        assert fitted.direction == expected
    assert trends(np.empty((0, 0)), np.empty((0, 0)), []) == []


# --- flow order ------------------------------------------------------------------------------

RIVER = {
    "shiziyang": [],
    "south_branch": ["shiziyang"],
    "north_main": ["shiziyang"],
    "dongjiang_upper": ["north_main", "south_branch"],
}


def test_a_split_hands_on_its_branches_in_the_order_it_lists_them() -> None:
    assert flow_order(RIVER) == ["dongjiang_upper", "north_main", "south_branch", "shiziyang"]
    swapped = {**RIVER, "dongjiang_upper": ["south_branch", "north_main"]}
    assert flow_order(swapped) == ["dongjiang_upper", "south_branch", "north_main", "shiziyang"]


def test_sources_first_by_code_and_a_join_after_both_branches() -> None:
    graph = {"c": ["d"], "b": ["d"], "a": ["c"], "d": []}
    # b and a are sources (by code: a, b); c follows a; d waits for both b and c.
    assert flow_order(graph) == ["a", "b", "c", "d"]


def test_a_loop_is_placed_last_by_code() -> None:
    assert flow_order({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["a", "b", "c"]


def _station(code: str, medium: str, reach: str | None, km: float | None) -> PlacedStation:
    return PlacedStation(
        1, code, code, code, "dongguan", "dongjiang", medium, None, reach, km,  # type: ignore[arg-type]
        None, None, None,
    )  # fmt: skip


def test_stations_in_flow_order_then_off_the_river_then_air() -> None:
    reaches = [NamedReach(code, code, code, below) for code, below in RIVER.items()]
    stations = [
        _station("a-air", "air", None, None),
        _station("w-humen", "water", "shiziyang", 25.0),
        _station("w-lianhuashan", "water", "shiziyang", 9.0),
        _station("w-shijie", "water", "south_branch", 8.0),
        _station("w-dadun", "water", "north_main", 33.0),
        _station("w-zhongtang", "water", "north_main", 22.0),
        _station("w-shilong", "water", "dongjiang_upper", 28.0),
        _station("w-pond", "water", None, None),
        _station("0-air", "air", None, None),
    ]
    assert [s.code for s in in_flow_order(stations, reaches)] == [
        "w-shilong", "w-zhongtang", "w-dadun", "w-shijie", "w-lianhuashan", "w-humen",
        "w-pond", "0-air", "a-air",
    ]  # fmt: skip


# --- station state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maintenance", "reported", "intervals", "silent", "state"),
    [
        (False, True, 0.0, False, "reporting"),
        (False, True, None, False, "reporting"),  # no staleness rule watches it
        (False, True, LATE_INTERVALS - 1e-9, False, "reporting"),
        (False, True, LATE_INTERVALS, False, "late"),  # exactly 2 intervals without a reading
        (False, True, 5.0, False, "late"),
        (False, True, 2.5, True, "silent"),  # past the staleness rule's threshold
        (False, False, None, False, "silent"),  # nothing ever received
        (True, True, 9.0, True, "maintenance"),  # a maintenance window explains the silence
        (True, False, None, False, "maintenance"),
    ],
)
def test_station_state(
    maintenance: bool, reported: bool, intervals: float | None, silent: bool, state: str
) -> None:
    found = station_state(
        maintenance=maintenance, reported=reported, silence_intervals=intervals, silent=silent
    )
    assert found == state
