"""HJ 633 AQI, editions 2012 and 2026, against HJ 633 Table 1 (copied independently of the code)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction

import pytest

from alerts.standards import AqiResult, aqi_level, daily_aqi, edition_for, hourly_aqi, iaqi
from alerts.standards.aqi import edition_for_day

CST = timezone(timedelta(hours=8))
BEFORE = datetime(2026, 2, 28, 23, 0, tzinfo=CST)
FROM = datetime(2026, 3, 1, 0, 0, tzinfo=CST)
ROWS = (0, 50, 100, 150, 200, 300, 400, 500)
SHARED = {
    ("so2", "24h"): (0, 50, 150, 475, 800, 1600, 2100, 2620),
    ("so2", "1h"): (0, 150, 500, 650, 800),
    ("no2", "24h"): (0, 40, 80, 180, 280, 565, 750, 940),
    ("no2", "1h"): (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    ("co", "24h"): (0, 2, 4, 14, 24, 36, 48, 60),
    ("co", "1h"): (0, 5, 10, 35, 60, 90, 120, 150),
    ("o3", "8h"): (0, 100, 160, 215, 265, 800),
    ("o3", "1h"): (0, 160, 200, 300, 400, 800, 1000, 1200),
}
TABLES = {
    "2012": {
        **SHARED,
        ("pm10", "24h"): (0, 50, 150, 250, 350, 420, 500, 600),
        ("pm25", "24h"): (0, 35, 75, 115, 150, 250, 350, 500),
    },
    "2026": {
        **SHARED,
        ("pm10", "24h"): (0, 50, 120, 250, 350, 420, 500, 600),
        ("pm25", "24h"): (0, 35, 60, 115, 150, 250, 350, 500),
    },
}
BREAKPOINTS = [
    (edition, pollutant, averaging, row, bp)
    for edition, table in TABLES.items()
    for (pollutant, averaging), column in table.items()
    for row, bp in enumerate(column)
]
CLEAN_HOUR = {"so2": 5.0, "no2": 10.0, "co": 0.5, "o3": 20.0, "pm10": 10.0, "pm25": 5.0}


def _case_id(case: tuple[str, str, str, int, int]) -> str:
    edition, pollutant, averaging, _, bp = case
    return f"{edition}-{pollutant}-{averaging}-{bp}"


@pytest.mark.parametrize("case", BREAKPOINTS, ids=_case_id)
def test_value_at_breakpoint_gives_its_row(case: tuple[str, str, str, int, int]) -> None:
    edition, pollutant, averaging, row, bp = case
    assert iaqi(pollutant, averaging, bp, edition) == ROWS[row]


@pytest.mark.parametrize("case", [c for c in BREAKPOINTS if c[0] == "2012"], ids=_case_id)
def test_2012_just_above_breakpoint_gives_next(case: tuple[str, str, str, int, int]) -> None:
    _, pollutant, averaging, row, bp = case
    top = row == len(TABLES["2012"][(pollutant, averaging)]) - 1
    # 2012 defers above the SO2 1h and O3 8h tops; every other column caps at 500.
    deferred = (pollutant, averaging) in {("so2", "1h"), ("o3", "8h")}
    expected = (None if deferred else 500) if top else ROWS[row] + 1
    assert iaqi(pollutant, averaging, bp + 0.001, "2012") == expected


@pytest.mark.parametrize("case", [c for c in BREAKPOINTS if c[0] == "2026"], ids=_case_id)
def test_2026_just_above_breakpoint_after_rounding(case: tuple[str, str, str, int, int]) -> None:
    _, pollutant, averaging, row, bp = case
    column = TABLES["2026"][(pollutant, averaging)]
    step = Fraction(1, 10) if pollutant == "co" else Fraction(1)
    if row == len(column) - 1:
        expected = {("so2", "1h"): 200, ("o3", "8h"): 300}.get((pollutant, averaging), 500)
    else:
        slope = Fraction(ROWS[row + 1] - ROWS[row], column[row + 1] - bp)
        expected = ROWS[row] + math.ceil(slope * step)
    # Less than half a step above rounds back onto the breakpoint.
    assert iaqi(pollutant, averaging, bp + float(step) * 0.4, "2026") == ROWS[row]
    assert iaqi(pollutant, averaging, bp + float(step), "2026") == expected


@pytest.mark.parametrize(
    ("pollutant", "averaging", "concentration", "edition", "expected"),
    [
        ("pm25", "24h", 60.5, "2026", 100),  # 60.5 -> 60 (half to even)
        ("pm25", "24h", 60.6, "2026", 101),  # 60.6 -> 61
        ("pm25", "24h", 61.5, "2026", 102),  # 61.5 -> 62: 100 + 2 x 50/55
        ("pm25", "24h", 35.5, "2026", 52),  # 35.5 -> 36: 50 + 1 x 50/25
        ("pm25", "24h", 34.5, "2026", 49),  # 34.5 -> 34: 34 x 50/35 = 48.57
        ("pm25", "24h", 35.4, "2026", 50),
        ("pm25", "24h", 35.4, "2012", 51),  # no rounding: 50 + 0.4 x 50/40 = 50.5
        ("pm25", "24h", 60.5, "2012", 82),  # 50 + 25.5 x 50/40 = 81.875
        ("pm25", "24h", 70.0, "2012", 94),
        ("pm25", "24h", 70.0, "2026", 110),
        ("co", "24h", 2.05, "2026", 50),  # 2.05 -> 2.0
        ("co", "24h", 2.15, "2026", 55),  # 2.15 -> 2.2: 50 + 0.2 x 25
        ("co", "24h", 2.45, "2026", 60),  # 2.45 -> 2.4 as the reported decimal, not round()'s 2.5
        ("co", "24h", 0.4, "2012", 10),  # exactly 10, not ceil(10.000000000000002)
        ("pm25", "24h", 500.5, "2026", 500),
        ("pm25", "24h", 501.0, "2026", 500),
        ("pm25", "24h", 600.0, "2012", 500),
        ("no2", "1h", 5000.0, "2012", 500),
        ("co", "1h", 0.0, "2026", 0),
    ],
)
def test_iaqi_examples(
    pollutant: str, averaging: str, concentration: float, edition: str, expected: int
) -> None:
    assert iaqi(pollutant, averaging, concentration, edition) == expected


@pytest.mark.parametrize(
    ("pollutant", "averaging", "concentration", "edition", "expected"),
    [
        ("so2", "1h", 800.4, "2026", 200),  # rounds to 800
        ("so2", "1h", 801.0, "2026", 200),
        ("so2", "1h", 5000.0, "2026", 200),
        ("o3", "8h", 801.0, "2026", 300),
        ("o3", "8h", 5000.0, "2026", 300),
        ("so2", "1h", 800.001, "2012", None),
        ("o3", "8h", 800.001, "2012", None),
    ],
)
def test_iaqi_above_800(
    pollutant: str, averaging: str, concentration: float, edition: str, expected: int | None
) -> None:
    assert iaqi(pollutant, averaging, concentration, edition) == expected


@pytest.mark.parametrize(
    ("pollutant", "averaging", "concentration", "edition"),
    [
        ("pm25", "1h", 10.0, "2026"),
        ("o3", "24h", 10.0, "2012"),
        ("pm2.5", "24h", 10.0, "2012"),
        ("pm25", "24h", 10.0, "2020"),
        ("pm25", "24h", -0.1, "2026"),
        ("pm25", "24h", math.nan, "2026"),
        ("pm25", "24h", math.inf, "2012"),
    ],
)
def test_iaqi_rejects_bad_input(
    pollutant: str, averaging: str, concentration: float, edition: str
) -> None:
    with pytest.raises(ValueError):
        iaqi(pollutant, averaging, concentration, edition)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2026, 2, 28, 23, 59, tzinfo=CST), "2012"),
        (datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=CST), "2012"),
        (datetime(2026, 3, 1, 0, 0, tzinfo=CST), "2026"),
        (datetime(2026, 2, 28, 15, 59, 59, tzinfo=UTC), "2012"),
        (datetime(2026, 2, 28, 16, 0, tzinfo=UTC), "2026"),
        (datetime(2026, 2, 28, 20, 0, tzinfo=timezone(timedelta(hours=-5))), "2026"),
        (datetime(2013, 1, 1, tzinfo=CST), "2012"),
        (datetime(2040, 1, 1, tzinfo=CST), "2026"),
    ],
)
def test_edition_by_period_start_in_shanghai(at: datetime, expected: str) -> None:
    assert edition_for(at) == expected


def test_edition_needs_aware_datetime() -> None:
    with pytest.raises(ValueError):
        edition_for(datetime(2026, 3, 1, 12, 0))


@pytest.mark.parametrize(
    ("day", "expected"), [(date(2026, 2, 28), "2012"), (date(2026, 3, 1), "2026")]
)
def test_edition_for_day(day: date, expected: str) -> None:
    assert edition_for_day(day) == expected


@pytest.mark.parametrize(
    ("aqi", "expected"),
    [
        (0, ("I", "一级", "Excellent", "优", "#00E400")),
        (1, ("I", "一级", "Excellent", "优", "#00E400")),
        (50, ("I", "一级", "Excellent", "优", "#00E400")),
        (51, ("II", "二级", "Good", "良", "#FFFF00")),
        (100, ("II", "二级", "Good", "良", "#FFFF00")),
        (101, ("III", "三级", "Lightly polluted", "轻度污染", "#FF7E00")),
        (150, ("III", "三级", "Lightly polluted", "轻度污染", "#FF7E00")),
        (151, ("IV", "四级", "Moderately polluted", "中度污染", "#FF0000")),
        (200, ("IV", "四级", "Moderately polluted", "中度污染", "#FF0000")),
        (201, ("V", "五级", "Heavily polluted", "重度污染", "#99004C")),
        (300, ("V", "五级", "Heavily polluted", "重度污染", "#99004C")),
        (301, ("VI", "六级", "Severely polluted", "严重污染", "#7E0023")),
        (500, ("VI", "六级", "Severely polluted", "严重污染", "#7E0023")),
    ],
)
def test_aqi_level_boundaries(aqi: int, expected: tuple[str, str, str, str, str]) -> None:
    assert aqi_level(aqi) == expected


def test_aqi_level_rejects_negative() -> None:
    with pytest.raises(ValueError):
        aqi_level(-1)


def test_hourly_2026_full_report() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm25": 80.0}, FROM)
    assert result == AqiResult(
        aqi=119,
        level="III",
        level_zh="三级",
        category="Lightly polluted",
        category_zh="轻度污染",
        color="#FF7E00",
        primary_pollutants=("pm25",),
        sub_indices={"so2": 2, "no2": 5, "co": 5, "o3": 7, "pm10": 10, "pm25": 119},
        edition="2026",
        missing=(),
        published=True,
    )


def test_hourly_2026_ignores_the_8h_moving_mean() -> None:
    result = hourly_aqi(CLEAN_HOUR, FROM, o3_8h_moving=500.0)
    assert list(result.sub_indices) == ["so2", "no2", "co", "o3", "pm10", "pm25"]
    assert result.aqi == 10


def test_hourly_2012_uses_o3_8h_moving_and_pm_on_24h_columns() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm25": 70.0}, BEFORE, o3_8h_moving=180.0)
    assert result.sub_indices == {
        "so2": 2,
        "no2": 5,
        "co": 5,
        "o3": 7,
        "o3_8h": 119,  # 100 + 20 x 50/55 = 118.18
        "pm10": 10,
        "pm25": 94,
    }
    assert (result.aqi, result.primary_pollutants, result.edition) == (119, ("o3_8h",), "2012")


@pytest.mark.parametrize(
    ("at", "edition", "pm25_iaqi"),
    [
        (datetime(2026, 2, 28, 23, 0, tzinfo=CST), "2012", 94),
        (datetime(2026, 3, 1, 0, 0, tzinfo=CST), "2026", 110),
        (datetime(2026, 2, 28, 16, 0, tzinfo=UTC), "2026", 110),
    ],
)
def test_hourly_edition_switch(at: datetime, edition: str, pm25_iaqi: int) -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm25": 70.0}, at, o3_8h_moving=20.0)
    assert (result.edition, result.aqi, result.sub_indices["pm25"]) == (
        edition,
        pm25_iaqi,
        pm25_iaqi,
    )


def test_hourly_2026_so2_above_800_is_200() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "so2": 1000.0}, FROM, so2_24h_moving=100.0)
    assert (result.sub_indices["so2"], result.aqi, result.primary_pollutants) == (
        200,
        200,
        ("so2",),
    )


def test_hourly_2012_so2_above_800_uses_24h_moving_mean() -> None:
    result = hourly_aqi(
        {**CLEAN_HOUR, "so2": 900.0}, BEFORE, so2_24h_moving=700.0, o3_8h_moving=20.0
    )
    # SO2 24h column: 150 + (700 - 475) x 50/325 = 184.6
    assert (result.sub_indices["so2"], result.aqi, result.primary_pollutants) == (
        185,
        185,
        ("so2",),
    )


@pytest.mark.parametrize("so2_24h_moving", [None, math.nan])
def test_hourly_2012_so2_above_800_without_moving_mean_is_na(
    so2_24h_moving: float | None,
) -> None:
    result = hourly_aqi(
        {**CLEAN_HOUR, "so2": 900.0}, BEFORE, so2_24h_moving=so2_24h_moving, o3_8h_moving=20.0
    )
    assert (result.sub_indices["so2"], result.aqi, result.missing, result.published) == (
        None,
        10,
        (),
        True,
    )


def test_hourly_2012_o3_8h_above_800_uses_o3_1h() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "o3": 900.0}, BEFORE, o3_8h_moving=850.0)
    # O3 1h column: 300 + (900 - 800) x 100/200 = 350
    assert (result.sub_indices["o3"], result.sub_indices["o3_8h"]) == (350, 350)
    assert (result.aqi, result.primary_pollutants) == (350, ("o3", "o3_8h"))


def test_daily_2026_report() -> None:
    day = {
        "so2": 10.0,
        "no2": 45.0,
        "co": 1.0,
        "o3_8h_max": 900.0,
        "pm10": 120.0,
        "pm25": 60.0,
        "o3_1h_max": 1100.0,
    }
    result = daily_aqi(day, date(2026, 3, 1))
    # o3_1h_max is not part of the 2026 daily report; O3 8h above 800 is 300.
    assert result.sub_indices == {
        "so2": 10,
        "no2": 57,  # 50 + 5 x 50/40 = 56.25
        "co": 25,
        "o3_8h_max": 300,
        "pm10": 100,
        "pm25": 100,
    }
    assert (result.aqi, result.level, result.primary_pollutants) == (300, "V", ("o3_8h_max",))


def test_daily_2012_o3_8h_above_800_uses_daily_max_1h() -> None:
    day = {
        "so2": 10.0,
        "no2": 45.0,
        "co": 1.0,
        "o3_8h_max": 900.0,
        "o3_1h_max": 1100.0,
        "pm10": 120.0,
        "pm25": 60.0,
    }
    result = daily_aqi(day, date(2026, 2, 28))
    assert result.sub_indices == {
        "so2": 10,
        "no2": 57,
        "co": 25,
        "o3_1h_max": 450,
        "o3_8h_max": 450,
        "pm10": 85,
        "pm25": 82,  # 50 + 25 x 50/40 = 81.25
    }
    assert (result.aqi, result.edition, result.primary_pollutants) == (
        450,
        "2012",
        ("o3_1h_max", "o3_8h_max"),
    )


@pytest.mark.parametrize(
    ("pm10", "aqi", "published"),
    [
        (120.0, None, False),  # computed 100: not published
        (121.0, 101, True),  # 100 + 1 x 50/130 = 100.38 -> 101
    ],
)
def test_2026_missing_pollutant_publishes_only_above_100(
    pm10: float, aqi: int | None, published: bool
) -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm10": pm10, "pm25": None}, FROM)
    assert (result.aqi, result.published, result.missing) == (aqi, published, ("pm25",))
    assert result.sub_indices["pm25"] is None
    assert result.sub_indices["pm10"] == (aqi if published else 100)


def test_2026_missing_pollutant_unpublished_has_no_level_or_primary() -> None:
    result = hourly_aqi({"so2": 5.0, "no2": 10.0, "co": 0.5, "o3": 20.0}, FROM)
    assert result == AqiResult(
        aqi=None,
        level=None,
        level_zh=None,
        category=None,
        category_zh=None,
        color=None,
        primary_pollutants=(),
        sub_indices={"so2": 2, "no2": 5, "co": 5, "o3": 7, "pm10": None, "pm25": None},
        edition="2026",
        missing=("pm10", "pm25"),
        published=False,
    )


def test_2026_missing_pollutant_published_above_100_names_primary() -> None:
    result = daily_aqi({"pm25": 80.0, "no2": 30.0}, date(2026, 3, 2))
    assert (result.aqi, result.level, result.primary_pollutants, result.published) == (
        119,
        "III",
        ("pm25",),
        True,
    )
    assert result.missing == ("so2", "co", "o3_8h_max", "pm10")


def test_nan_counts_as_missing() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm25": math.nan}, FROM)
    assert (result.missing, result.published, result.aqi) == (("pm25",), False, None)


def test_2012_missing_pollutant_still_published() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm25": None}, BEFORE)
    assert (result.aqi, result.published, result.missing) == (10, True, ("o3_8h", "pm25"))


@pytest.mark.parametrize("at", [BEFORE, FROM])
def test_nothing_supplied_gives_no_aqi(at: datetime) -> None:
    result = hourly_aqi({}, at)
    assert (result.aqi, result.level, result.published) == (None, None, False)


def test_primary_pollutant_ties_name_all() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm10": 120.0, "pm25": 60.0}, FROM)
    assert (result.aqi, result.primary_pollutants) == (100, ("pm10", "pm25"))


def test_primary_pollutant_tie_at_51() -> None:
    # NO2 1h 102 -> 51; PM10 51.4 -> 51 -> 50.71 -> 51.
    result = hourly_aqi({**CLEAN_HOUR, "no2": 102.0, "pm10": 51.4}, FROM)
    assert (result.aqi, result.level, result.primary_pollutants) == (51, "II", ("no2", "pm10"))


def test_aqi_50_has_no_primary_pollutant() -> None:
    result = hourly_aqi({**CLEAN_HOUR, "pm25": 35.0}, FROM)
    assert (result.aqi, result.level, result.primary_pollutants) == (50, "I", ())


@pytest.mark.parametrize(("at", "aqi"), [(FROM, 1), (BEFORE, 0)])
def test_computed_zero_is_reported_as_one_under_2026(at: datetime, aqi: int) -> None:
    zeros = dict.fromkeys(CLEAN_HOUR, 0.0)
    result = hourly_aqi(zeros, at, o3_8h_moving=0.0)
    assert (result.aqi, result.level, result.primary_pollutants) == (aqi, "I", ())
    assert set(result.sub_indices.values()) == {0}


def test_unknown_input_key_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"pm2\.5"):
        hourly_aqi({"pm2.5": 10.0}, FROM)
    with pytest.raises(ValueError, match="o3"):
        daily_aqi({"o3": 10.0}, date(2026, 3, 1))
