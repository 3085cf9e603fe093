"""The one assessment (alerts/assessment): periods, AQI inputs and city means, the water sample.

No database: arrays in, results out, table-driven from the standards' rules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from alerts.assessment import (
    DAY,
    HOUR,
    Observed,
    Period,
    WaterSite,
    aqi,
    aqi_inputs,
    city_inputs,
    daily_inputs,
    hourly_inputs,
    sample_hours,
    standing,
    status_of,
    values_at,
    water_class,
)
from core.timeutil import CST

NAN = np.nan


def _cst(year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, tzinfo=CST)


@pytest.mark.parametrize(
    ("period", "at", "start", "end"),
    [
        (HOUR, datetime(2026, 3, 1, 8, 0, tzinfo=CST), _cst(2026, 3, 1, 8), _cst(2026, 3, 1, 9)),
        (
            HOUR,
            datetime(2026, 3, 1, 8, 59, 59, tzinfo=CST),
            _cst(2026, 3, 1, 8),
            _cst(2026, 3, 1, 9),
        ),
        # 00:30Z is 08:30 in Asia/Shanghai.
        (HOUR, datetime(2026, 3, 1, 0, 30, tzinfo=UTC), _cst(2026, 3, 1, 8), _cst(2026, 3, 1, 9)),
        (HOUR, date(2026, 3, 1), _cst(2026, 3, 1, 0), _cst(2026, 3, 1, 1)),
        (DAY, date(2026, 2, 28), _cst(2026, 2, 28, 0), _cst(2026, 3, 1, 0)),
        # 16:00Z on 28 February is 00:00 on 1 March in Asia/Shanghai: the natural day is 1 March.
        (DAY, datetime(2026, 2, 28, 16, tzinfo=UTC), _cst(2026, 3, 1, 0), _cst(2026, 3, 2, 0)),
        (
            DAY,
            datetime(2026, 12, 31, 23, 59, tzinfo=CST),
            _cst(2026, 12, 31, 0),
            _cst(2027, 1, 1, 0),
        ),
    ],
)
def test_a_period_is_named_by_its_start_on_the_shanghai_calendar(
    period: Period, at: datetime | date, start: datetime, end: datetime
) -> None:
    assert period.bounds(at) == (start, end)


def test_period_starts_run_from_the_first_to_the_last_period() -> None:
    first = datetime(2026, 3, 1, 22, 30, tzinfo=CST)
    last = datetime(2026, 3, 2, 1, 5, tzinfo=CST)
    assert HOUR.starts(first, last) == [
        datetime(2026, 3, 1, 22, tzinfo=CST),
        datetime(2026, 3, 1, 23, tzinfo=CST),
        datetime(2026, 3, 2, 0, tzinfo=CST),
        datetime(2026, 3, 2, 1, tzinfo=CST),
    ]
    assert DAY.starts(first, last) == [
        datetime(2026, 3, 1, tzinfo=CST),
        datetime(2026, 3, 2, tzinfo=CST),
    ]
    assert DAY.starts(last, first) == []


@pytest.mark.parametrize(
    ("value", "received", "status"),
    [
        (12.0, True, "valid"),
        (12.0, False, "valid"),
        (None, True, "insufficient_data"),
        (NAN, True, "insufficient_data"),
        (None, False, "no_data"),
    ],
)
def test_status_of_a_statistic(value: float | None, received: bool, status: str) -> None:
    assert status_of(value, received) == status


def _hours(values: list[float], received: list[bool] | None = None) -> Observed:
    array = np.array(values, dtype=np.float64)
    held = np.isfinite(array) if received is None else np.array(received)
    return Observed(array, held)


def test_hourly_inputs_are_the_1h_means_and_the_moving_means_ending_with_each_hour() -> None:
    o3 = [60.0] * 16 + [NAN] * 8
    so2 = [10.0] * 20 + [NAN] * 4
    inputs = hourly_inputs({"o3": _hours(o3), "so2": _hours(so2)})
    assert sorted(inputs) == sorted(aqi_inputs(HOUR))
    # The 8-hour moving mean needs 6 valid hours of the 8 ending with the hour.
    assert [inputs["o3_8h"].value(i) for i in (4, 5, 16, 17, 18, 23)] == [
        None, 60.0, 60.0, 60.0, None, None
    ]  # fmt: skip
    # The 24-hour moving mean needs 20 of 24 (hours before the array count as missing).
    assert [inputs["so2_24h"].value(i) for i in (18, 19, 23)] == [None, 10.0, 10.0]
    # Anything received in the 8 hours makes a missing O3 8-hour mean "insufficient".
    assert [inputs["o3_8h"].status(i) for i in (23, 22)] == ["no_data", "insufficient_data"]
    assert [inputs["no2"].status(i) for i in (0, 23)] == ["no_data", "no_data"]


def test_daily_inputs_take_the_day_means_and_the_o3_daily_maxima() -> None:
    day = [60.0] * 12 + [150.0] * 8 + [60.0] * 4
    short = [NAN] * 24
    short[3] = 90.0  # one hour: no 8-hour mean, but a 1-hour maximum
    o3 = Observed(
        np.array(day + short + [NAN] * 24),
        np.array([True] * 48 + [False] * 23 + [True]),
    )
    pm25 = Observed(np.array([58.0, NAN, NAN]), np.array([True, True, False]))
    inputs = daily_inputs({"pm25": pm25}, o3)
    assert sorted(inputs) == sorted(aqi_inputs(DAY))
    assert [inputs["o3_8h_max"].value(i) for i in range(3)] == [150.0, None, None]
    assert [inputs["o3_1h_max"].value(i) for i in range(3)] == [150.0, 90.0, None]
    assert [inputs["o3_8h_max"].status(i) for i in range(3)] == [
        "valid", "insufficient_data", "insufficient_data"
    ]  # fmt: skip
    assert [inputs["pm25"].status(i) for i in range(3)] == [
        "valid", "insufficient_data", "no_data"
    ]  # fmt: skip
    assert inputs["so2"].status(0) == "no_data"


@pytest.mark.parametrize(
    ("stations", "mean", "count", "status"),
    [
        ([(100.0, True), (50.0, True)], 75.0, 2, "valid"),
        ([(100.0, True), (NAN, False)], 100.0, 1, "valid"),  # no value: left out
        ([(NAN, False), (NAN, True)], None, 0, "insufficient_data"),
        ([(NAN, False), (NAN, False)], None, 0, "no_data"),
    ],
)
def test_a_city_averages_its_stations_valid_values(
    stations: list[tuple[float, bool]], mean: float | None, count: int, status: str
) -> None:
    per_station = [
        {"pm25": Observed(np.array([value]), np.array([received]))} for value, received in stations
    ]
    city, counts = city_inputs(per_station)
    found = (city["pm25"].value(0), int(counts["pm25"][0]), city["pm25"].status(0))
    assert found == (mean, count, status)


def test_a_city_aqi_is_the_aqi_of_the_mean_not_the_mean_of_the_aqis() -> None:
    stations = [{"pm25": Observed.of([100.0])}, {"pm25": Observed.of([50.0])}]
    city, _ = city_inputs(stations)
    at = datetime(2026, 11, 20, 10, tzinfo=CST)
    result = aqi(HOUR, values_at(hourly_inputs(city), 0), at)
    # PM2.5 75 (HJ 633-2026, 60-115 -> 100-150): 114; the stations alone give 137 and 80.
    assert (result.aqi, result.primary_pollutants, result.edition) == (114, ("pm25",), "2026")


@pytest.mark.parametrize(
    ("period", "values", "start", "edition", "expected"),
    [
        # 2026 withholds an AQI of an incomplete set that is not above 100; 2012 publishes it.
        (HOUR, {"pm25": 50.0}, datetime(2026, 11, 20, 8, tzinfo=CST), "2026", None),
        (HOUR, {"pm25": 50.0}, datetime(2025, 11, 20, 8, tzinfo=CST), "2012", 69),
        (HOUR, {"pm25": 130.0}, datetime(2026, 11, 20, 8, tzinfo=CST), "2026", 172),
        (HOUR, {"pm25": 130.0}, datetime(2025, 11, 20, 8, tzinfo=CST), "2012", 172),
        (HOUR, {"pm25": 70.0}, datetime(2026, 2, 28, 23, tzinfo=CST), "2012", 94),
        (HOUR, {"pm25": 70.0}, datetime(2026, 3, 1, 0, tzinfo=CST), "2026", 110),
        (DAY, {"pm25": 200.5}, datetime(2026, 11, 21, tzinfo=CST), "2026", 250),
        (DAY, {"o3_8h_max": 150.0}, datetime(2026, 2, 28, tzinfo=CST), "2012", 92),
        # 16:00Z is the next natural day in Asia/Shanghai: the 2026 edition.
        (DAY, {"pm25": 58.0}, datetime(2026, 2, 28, 16, tzinfo=UTC), "2026", None),
    ],
)
def test_aqi_of_a_period_uses_the_edition_of_its_start(
    period: Period,
    values: dict[str, float],
    start: datetime,
    edition: str,
    expected: int | None,
) -> None:
    result = aqi(period, values, start)
    assert (result.edition, result.aqi) == (edition, expected)


@pytest.mark.parametrize(
    ("interval_s", "hours"),
    [(60, 1), (3600, 1), (5400, 2), (4 * 3600, 4), (86400, 24), (2592000, 720), (0, 1)],
)
def test_a_sample_stands_for_one_reporting_interval_in_whole_hours(
    interval_s: int, hours: int
) -> None:
    assert sample_hours(interval_s) == hours


@pytest.mark.parametrize(
    ("values", "received", "hours", "stands", "source", "status"),
    [
        # A 4-hourly nutrient measured at hour 0 stands at hours 0-3, then is missing.
        ([0.75, NAN, NAN, NAN, NAN], [1, 0, 0, 0, 0], 4,
         [0.75, 0.75, 0.75, 0.75, NAN], [0, 0, 0, 0, -1],
         ["valid", "valid", "valid", "valid", "no_data"]),
        # A newer sample takes over at once.
        ([0.75, NAN, 0.25, NAN], [1, 0, 1, 0], 4,
         [0.75, 0.75, 0.25, 0.25], [0, 0, 2, 2], ["valid"] * 4),
        # An hourly item: an hour held without a valid value is insufficient, not the old value.
        ([7.5, NAN, NAN], [1, 1, 0], 1,
         [7.5, NAN, NAN], [0, 1, -1], ["valid", "insufficient_data", "no_data"]),
        # Within a longer interval the newest valid value stands over a newer invalid hour.
        ([7.5, NAN, NAN], [1, 1, 0], 4,
         [7.5, 7.5, 7.5], [0, 0, 0], ["valid"] * 3),
        ([NAN, NAN, NAN], [0, 1, 0], 2,
         [NAN, NAN, NAN], [-1, 1, 1], ["no_data", "insufficient_data", "insufficient_data"]),
        ([], [], 3, [], [], []),
    ],
)  # fmt: skip
def test_which_value_of_an_item_stands_in_each_hours_sample(
    values: list[float],
    received: list[int],
    hours: int,
    stands: list[float],
    source: list[int],
    status: list[str],
) -> None:
    found = standing(values, [bool(r) for r in received], hours=hours)
    np.testing.assert_array_equal(found.values, np.array(stands, dtype=np.float64))
    assert found.source.tolist() == source
    assert [found.status(i) for i in range(len(values))] == status


def test_items_of_a_grid_stand_each_as_it_would_alone() -> None:
    # A grid of items (a row each, each with its own interval) gives each row what the item's
    # own hours give: its value, the hour it is from, what was received, its status.
    rng = np.random.default_rng(11)
    rows, width = 200, 40
    values = np.where(rng.random((rows, width)) < 0.3, rng.uniform(0, 10, (rows, width)), NAN)
    received = np.isfinite(values) | (rng.random((rows, width)) < 0.2)
    hours = rng.integers(1, 30, rows)
    grid = standing(values, received, hours=hours)
    for row in range(rows):
        alone = standing(values[row], received[row], hours=int(hours[row]))
        np.testing.assert_array_equal(grid.values[row], alone.values)
        assert grid.source[row].tolist() == alone.source.tolist()
        assert grid.received[row].tolist() == alone.received.tolist()
        assert [grid.status((row, h)) for h in range(width)] == [
            alone.status(h) for h in range(width)
        ]
    assert {s for row in range(rows) for s in (grid.status((row, -1)),)} == {
        "valid",
        "insufficient_data",
        "no_data",
    }


RIVER_II = WaterSite("gb3838", "river", 2)


@pytest.mark.parametrize(
    ("site", "values", "overall", "label", "meets", "limiting"),
    [
        (RIVER_II, {"nh3n": 0.4, "do": 6.5, "tp": 0.08}, 2, "II", True, []),
        (RIVER_II, {"nh3n": 0.75, "do": 6.5, "tp": 0.125}, 3, "III", False,
         [("nh3n", 3, 0.5), ("tp", 3, 0.25)]),
        (RIVER_II, {"do": 4.5}, 4, "IV", False, [("do", 4, None)]),
        # TP: 0.04 is class III in a lake (0.025-0.05) but class I in a river.
        (WaterSite("gb3838", "lake", 2), {"tp": 0.04}, 3, "III", False, [("tp", 3, 0.6)]),
        (RIVER_II, {"tp": 0.04}, 2, "II", True, []),
        (RIVER_II, {"water_temp": 30.0, "conductivity": 900.0}, None, None, None, []),
        # GB 3097: NH3-N is not its inorganic nitrogen and is never classified there.
        (WaterSite("gb3097", "river", 3), {"do": 5.5, "ph": 8.0, "nh3n": 3.0}, 2, "2", True, []),
        (WaterSite("gb3097", "river", 2), {"din": 0.45}, 4, "4", False, [("din", 4, 0.5)]),
    ],
)  # fmt: skip
def test_water_class_of_a_set_of_item_values(
    site: WaterSite,
    values: dict[str, float],
    overall: int | None,
    label: str | None,
    meets: bool | None,
    limiting: list[tuple[str, int, float | None]],
) -> None:
    result = water_class(site, values)
    assert (result.overall_class, result.label, result.meets_target) == (overall, label, meets)
    assert [(i.item, i.item_class, i.exceedance) for i in result.limiting] == limiting


@pytest.mark.parametrize(
    ("site", "item", "judged"),
    [
        (RIVER_II, "nh3n", True),
        (RIVER_II, "tn", False),  # not evaluated in a river
        (WaterSite("gb3838", "lake", 3), "tn", True),
        (RIVER_II, "din", False),
        (WaterSite("gb3097", "river", 2), "din", True),
        (WaterSite("gb3097", "river", 2), "nh3n", False),
    ],
)
def test_the_items_a_site_is_judged_on(site: WaterSite, item: str, judged: bool) -> None:
    assert (item in site.items) == judged


@pytest.mark.parametrize(
    ("site", "water_class", "label"),
    [(RIVER_II, 4, "IV"), (RIVER_II, 6, "劣V"), (WaterSite("gb3097", "river", 2), 5, "劣四类")],
)
def test_a_class_is_written_as_the_sites_standard_writes_it(
    site: WaterSite, water_class: int, label: str
) -> None:
    assert site.label(water_class) == label
