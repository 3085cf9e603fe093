"""Air evaluation (docs/evaluation.md §2-§4): every worked example and every boundary as a test."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from alerts.evaluation.air import (
    AirEvaluation,
    air_report,
    compare_air,
    composite_index,
    evaluate_air,
    region_evaluation,
)
from alerts.evaluation.air_days import (
    AirDays,
    city_days,
    daily_max_8h,
    daily_means,
    day_8h_means,
    from_daily,
    station_days,
)
from alerts.evaluation.periods import Period, PeriodPart, date_range, month, quarter, year
from alerts.evaluation.publish import published, published_share
from alerts.evaluation.rules import EvaluationSettings, rule_set_for
from alerts.evaluation.statistics import percentile, percentile_rank
from alerts.evaluation.validity import Insufficient
from alerts.windows import moving_8h_mean
from core.rounding import round_exact

# A clean day: every sub-index below 50 under both editions (PM2.5 sets the AQI when raised).
CLEAN = {"so2": 5.0, "no2": 20.0, "co": 0.5, "pm10": 30.0, "pm25": 20.0, "o3_8h_max": 50.0}
CLEAN_2012 = {**CLEAN, "o3_1h_max": 60.0}


def _air_days(first_day: date, count: int, **changes: object) -> AirDays:
    """`count` clean days from `first_day`, with some keys replaced by a value or an array."""
    base = CLEAN_2012 if first_day < date(2026, 3, 1) else CLEAN
    daily = {key: np.full(count, value) for key, value in base.items()}
    for key, value in changes.items():
        daily[key] = np.broadcast_to(np.asarray(value, dtype=float), (count,)).copy()
    return from_daily(first_day, daily)


def _only_part(period: Period) -> PeriodPart:
    (part,) = period.parts()
    return part


def _evaluate(period: Period, **changes: object) -> AirEvaluation:
    return evaluate_air(_air_days(period.start, period.days, **changes), _only_part(period))


# §2 percentile (HJ 663 Appendix A)


def test_percentile_worked_example() -> None:
    assert percentile_rank(6, 90) == Fraction(11, 2)
    assert percentile([3, 4, 8, 2, 5, 4], 90) == 6.5


@pytest.mark.parametrize(
    ("count", "percent", "rank"),
    [
        (365, 98, Fraction("357.72")),
        (365, 95, Fraction("346.8")),
        (365, 90, Fraction("328.6")),
        (324, 98, Fraction("317.54")),
        (324, 95, Fraction("307.85")),
        (324, 90, Fraction("291.7")),
        (1, 95, Fraction(1)),
    ],
)
def test_percentile_ranks(count: int, percent: int, rank: Fraction) -> None:
    assert percentile_rank(count, percent) == rank
    # X(i) = 10·i, shuffled, with gaps (NaN) that do not count: the percentile is 10·k.
    values = np.arange(1, count + 1) * 10.0
    np.random.default_rng(count).shuffle(values)
    values = np.insert(values, [0, count // 2], np.nan)
    found = percentile(values, percent)
    assert found == pytest.approx(float(rank * 10), abs=1e-9)
    assert found == pytest.approx(
        float(np.percentile(values[~np.isnan(values)], percent)), abs=1e-9
    )


def test_percentile_is_numpys_linear_percentile() -> None:
    rng = np.random.default_rng(5)
    for size in (2, 27, 324, 365, 366):
        values = rng.gamma(2.0, 20.0, size)
        for percent in (90, 95, 98):
            assert percentile(values, percent) == pytest.approx(
                float(np.percentile(values, percent)), rel=1e-12
            )


# §2 rounding at publication


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (0.125, 2, "0.12"),
        (0.135, 2, "0.14"),
        (0.275, 2, "0.28"),
        (2.5, 0, "2"),
        (3.5, 0, "4"),
        (42.5, 0, "42"),
        (43.5, 0, "44"),
        (1.25, 1, "1.2"),
        (1.35, 1, "1.4"),
        (1.05, 1, "1.0"),
        (Fraction(24, 29) * 100, 1, "82.8"),
        (Fraction(5, 29) * 100, 1, "17.2"),
        (Fraction(1, 16) * 100, 1, "6.2"),
    ],
)
def test_round_exact(value: float | Fraction, places: int, expected: str) -> None:
    assert round_exact(value, places) == Decimal(expected)


def test_published_figures() -> None:
    assert published(42.5, 0) == 42
    assert isinstance(published(42.5, 0), int)
    assert published(0.125, 2) == 0.12
    assert published_share(Fraction(24, 29)) == 82.8


# §2 day validity: day means, 8-hour means, MDA8


@pytest.mark.parametrize(("valid", "expected"), [(24, 10.0), (20, 10.0), (19, None)])
def test_day_mean_needs_20_hours(valid: int, expected: float | None) -> None:
    hours = np.full((1, 24), np.nan)
    hours[0, :valid] = 10.0
    found = daily_means(hours)[0]
    assert (None if np.isnan(found) else found) == expected


def test_day_8h_means_are_the_moving_means_ending_0800_to_2400() -> None:
    rng = np.random.default_rng(8)
    hours = rng.uniform(20, 200, (40, 24))
    hours[rng.random((40, 24)) < 0.35] = np.nan
    expected = moving_8h_mean(hours.ravel()).reshape(40, 24)[:, 7:]
    found = day_8h_means(hours)
    assert found.shape == (40, 17)
    np.testing.assert_allclose(found, expected, rtol=1e-12, equal_nan=True)


def _o3_day(valid_hours: int, level: float) -> np.ndarray:
    hours = np.full(24, np.nan)
    hours[:valid_hours] = level
    return hours


@pytest.mark.parametrize(
    ("valid_hours", "level", "expected"),
    [
        # Hours 00-18 valid: windows ending 08:00..21:00 have >= 6 of 8 hours -> 14 windows.
        (19, 100.0, 100.0),
        # Hours 00-17 valid: 13 windows -> not a valid MDA8 ...
        (18, 100.0, None),
        (18, 160.0, None),
        # ... unless its maximum exceeds 160.
        (18, 160.5, 160.5),
        (18, 200.0, 200.0),
        (24, 80.0, 80.0),
        (0, 80.0, None),
    ],
)
def test_mda8_needs_14_windows_unless_above_160(
    valid_hours: int, level: float, expected: float | None
) -> None:
    day = _o3_day(valid_hours, level)
    windows = day_8h_means(day.reshape(1, 24))
    assert int(np.count_nonzero(~np.isnan(windows))) == {19: 14, 18: 13, 24: 17, 0: 0}[valid_hours]
    found = daily_max_8h(day, date(2025, 7, 1))[0]
    assert (None if np.isnan(found) else found) == expected


def test_mda8_is_the_largest_window() -> None:
    hours = np.full(24, 50.0)
    hours[12:20] = 210.0  # the window ending 20:00 covers 12:00-20:00 exactly
    assert daily_max_8h(hours, date(2026, 7, 1))[0] == 210.0
    hours[0:7] = 500.0  # windows before 08:00 are not counted: the first ends 08:00 (0-7)
    assert daily_max_8h(hours, date(2026, 7, 1))[0] == pytest.approx((7 * 500 + 50) / 8)


def test_station_days_from_hourly() -> None:
    hourly = {code: np.full((3, 24), value) for code, value in {"so2": 5.0, "o3": 90.0}.items()}
    hourly["so2"][1, :5] = np.nan  # 19 valid hours
    found = station_days(date(2026, 7, 1), hourly)
    assert found.values["so2"].tolist()[0] == 5.0
    assert np.isnan(found.values["so2"][1])
    assert found.values["o3_8h_max"].tolist() == [90.0, 90.0, 90.0]
    assert found.values["o3_1h_max"].tolist() == [90.0, 90.0, 90.0]
    assert np.isnan(found.values["pm25"]).all()


# §2 city and region


def test_city_is_the_mean_of_its_stations() -> None:
    first = _air_days(date(2026, 7, 1), 2, pm25=[30.0, np.nan])
    second = _air_days(date(2026, 7, 1), 2, pm25=[50.0, 44.0])
    city = city_days([first, second], EvaluationSettings())
    assert city.values["pm25"].tolist() == [40.0, 44.0]


def test_city_aqi_is_from_city_concentrations_never_the_mean_of_station_aqis() -> None:
    # HJ 633-2026 PM2.5: 60 -> IAQI 100. Stations at 0 and 120 average 60: the city's AQI is
    # 100 (良), not the mean of the stations' AQIs (the 120 station alone is above 100).
    days = date_range(date(2026, 7, 1), date(2026, 7, 2))
    part = _only_part(days)
    stations = [_air_days(days.start, 1, pm25=level) for level in (0.0, 120.0)]
    city = evaluate_air(city_days(stations, EvaluationSettings()), part)
    assert city.aqi is not None
    assert city.aqi.aqi.tolist() == [100]
    station_aqis = []
    for station in stations:
        found = evaluate_air(station, part).aqi
        assert found is not None
        station_aqis.append(float(found.aqi[0]))
    assert station_aqis[1] > 100
    assert sum(station_aqis) / 2 != 100
    assert air_report(city)["category_days"]["good"] == 1


def test_city_o3_mda8_setting() -> None:
    # Station A peaks in the morning, B in the evening: the mean of their MDA8s (station_mean)
    # is higher than the MDA8 of the city's hourly means (city_hourly).
    a = np.full((1, 24), 40.0)
    a[0, 0:8] = 200.0
    b = np.full((1, 24), 40.0)
    b[0, 16:24] = 200.0
    stations = [station_days(date(2026, 7, 1), {"o3": series}) for series in (a, b)]
    by_station = city_days(stations, EvaluationSettings())
    assert by_station.values["o3_8h_max"].tolist() == [200.0]
    hourly = EvaluationSettings(o3_city_mda8="city_hourly")
    by_city = city_days(stations, hourly, o3_hourly=[a, b])
    assert by_city.values["o3_8h_max"].tolist() == [120.0]
    with pytest.raises(ValueError):
        city_days(stations, hourly)


# §3 days and shares


def test_worked_example_30_day_month() -> None:
    # 2026-11 (HJ 633-2026): 1 day NA (PM10 missing and AQI <= 100), 10 优, 14 良, 4 轻度, 1 中度.
    pm25 = [45.0] + [20.0] * 10 + [45.0] * 14 + [80.0] * 4 + [130.0]
    pm10 = [np.nan] + [30.0] * 29
    found = _evaluate(month(2026, 11), pm25=pm25, pm10=pm10)
    report = air_report(found)
    assert report["days"] == 30
    assert report["valid_days"] == 29
    assert report["category_days"] == {
        "excellent": 10,
        "good": 14,
        "lightly_polluted": 4,
        "moderately_polluted": 1,
        "heavily_polluted": 0,
        "severely_polluted": 0,
    }
    assert (report["good_days"], report["good_day_share"]) == (24, 82.8)
    assert (report["exceedance_days"], report["exceedance_share"]) == (5, 17.2)
    assert (report["heavy_pollution_days"], report["heavy_pollution_share"]) == (0, 0.0)


@pytest.mark.parametrize(
    ("pm25", "category"),
    [
        # HJ 633-2026 PM2.5: 35 -> 50, 36 -> 52 (51..100 良), 60 -> 100, 61 -> 101.
        (35.0, "excellent"),
        (36.0, "good"),
        (60.0, "good"),
        (61.0, "lightly_polluted"),
        (150.0, "moderately_polluted"),
        (151.0, "heavily_polluted"),
        (250.0, "heavily_polluted"),
        (251.0, "severely_polluted"),
    ],
)
def test_category_boundaries(pm25: float, category: str) -> None:
    found = air_report(_evaluate(date_range(date(2026, 7, 1), date(2026, 7, 2)), pm25=pm25))
    assert found["category_days"][category] == 1
    assert found["heavy_pollution_days"] == (1 if pm25 > 150 else 0)
    assert found["exceedance_days"] == (1 if pm25 > 60 else 0)


def test_primary_pollutant_ties_count_for_each() -> None:
    # PM2.5 45 and PM10 78 both give IAQI 70 under HJ 633-2026; day 2 PM2.5 alone; day 3 clean.
    days = date_range(date(2026, 7, 1), date(2026, 7, 4))
    found = _evaluate(days, pm25=[45.0, 45.0, 20.0], pm10=[78.0, 30.0, 30.0])
    report = air_report(found)
    assert report["days_with_primary_pollutant"] == 2
    assert report["primary_pollutant_days"] == {
        "so2": 0, "no2": 0, "co": 0, "o3": 0, "pm10": 1, "pm25": 2
    }  # fmt: skip
    assert report["primary_pollutant_shares"]["pm25"] == 100.0
    assert report["primary_pollutant_shares"]["pm10"] == 50.0


@pytest.mark.parametrize(("pm25", "aqi", "primary"), [(35.0, 50, 0), (36.0, 52, 1)])
def test_a_primary_pollutant_only_above_aqi_50(pm25: float, aqi: int, primary: int) -> None:
    # HJ 633-2026 PM2.5 35 -> IAQI 50 (优, no primary pollutant), 36 -> 52 (良, PM2.5).
    found = _evaluate(date_range(date(2026, 7, 1), date(2026, 7, 2)), pm25=pm25)
    assert found.aqi is not None
    assert found.aqi.aqi.tolist() == [aqi]
    report = air_report(found)
    assert report["days_with_primary_pollutant"] == primary
    assert report["primary_pollutant_days"]["pm25"] == primary


def test_primary_pollutant_ties_split_when_the_setting_says_so() -> None:
    days = date_range(date(2026, 7, 1), date(2026, 7, 4))
    part = _only_part(days)
    split = dataclasses.replace(part.rule_set, settings=EvaluationSettings(primary_ties="split"))
    found = evaluate_air(
        _air_days(days.start, 3, pm25=[45.0, 45.0, 20.0], pm10=[78.0, 30.0, 30.0]),
        part.with_rule_set(split),
    )
    report = air_report(found)
    assert report["primary_pollutant_days"]["pm25"] == 1.5
    assert report["primary_pollutant_days"]["pm10"] == 0.5
    assert report["primary_pollutant_shares"]["pm25"] == 75.0


def test_o3_maxima_count_as_one_primary_pollutant() -> None:
    # HJ 633-2012: O3 8-hour max 215 -> 150 and 1-hour max 300 -> 150, tied: O3 counted once.
    days = date_range(date(2025, 7, 1), date(2025, 7, 2))
    report = air_report(_evaluate(days, o3_8h_max=215.0, o3_1h_max=300.0))
    assert report["primary_pollutant_days"]["o3"] == 1
    assert report["days_with_primary_pollutant"] == 1


def test_shares_without_a_valid_day_are_insufficient() -> None:
    days = date_range(date(2026, 7, 1), date(2026, 7, 3))
    report = air_report(_evaluate(days, pm10=np.nan))
    assert report["valid_days"] == 0
    assert report["good_day_share"] == {"status": "insufficient_data", "have": 0, "need": 1}
    assert report["primary_pollutant_shares"] is None


# §2 statistics, limits, exceedance multiple, compliance


def test_month_statistics_and_exceedance_multiples() -> None:
    found = air_report(_evaluate(month(2025, 11), no2=56.0, pm25=42.4, co=1.25))
    no2 = found["pollutants"]["no2"]
    assert (no2["statistic"], no2["value"], no2["limit"], no2["limit_averaging"]) == (
        "mean", 56, 40.0, "annual"
    )  # fmt: skip
    assert no2["exceedance_multiple"] == 0.4
    # PM2.5 42.4 publishes as 42: (42 - 35)/35 = 0.2 from the published figure.
    assert found["pollutants"]["pm25"]["value"] == 42
    assert found["pollutants"]["pm25"]["exceedance_multiple"] == 0.2
    assert found["pollutants"]["co"]["statistic"] == "p95"
    assert found["pollutants"]["co"]["value"] == 1.2
    assert found["pollutants"]["o3"]["statistic"] == "mda8_p90"
    assert found["pollutants"]["so2"]["exceedance_multiple"] is None
    assert "compliance" not in found["pollutants"]["so2"]
    assert found["complies"] is None


def test_a_statistic_at_its_limit_does_not_exceed() -> None:
    found = air_report(_evaluate(month(2025, 11), no2=40.4))
    assert found["pollutants"]["no2"]["value"] == 40
    assert found["pollutants"]["no2"]["exceedance_multiple"] is None


def test_month_short_of_valid_days_is_insufficient() -> None:
    pm25 = np.full(30, 20.0)
    pm25[:4] = np.nan  # 26 valid days of 27 needed
    report = air_report(_evaluate(month(2025, 11), pm25=pm25))
    assert report["pollutants"]["pm25"]["value"] == {
        "status": "insufficient_data",
        "have": 26,
        "need": 27,
    }
    assert report["pollutants"]["pm25"]["valid_days"] == 26
    assert report["composite_index"]["value"] == {
        "status": "insufficient_data",
        "have": 5,
        "need": 6,
    }


def test_year_compliance_needs_both_statistics() -> None:
    # PM2.5: annual mean 33 (<= 35) but 24-h P95 (rank 346.8 of 365) 80 -> does not comply.
    pm25 = np.full(365, 30.0)
    pm25[:20] = 80.0
    found = _evaluate(year(2025), pm25=pm25)
    checks = air_report(found)["pollutants"]["pm25"]["compliance"]
    assert checks["checks"] == [
        {"statistic": "mean", "value": 33, "limit": 35.0, "complies": True},
        {"statistic": "p95", "value": 80, "limit": 75.0, "complies": False},
    ]
    assert checks["complies"] is False
    assert found.complies is False
    clean = _evaluate(year(2025))
    assert clean.complies is True
    assert air_report(clean)["pollutants"]["so2"]["compliance"]["checks"][1]["statistic"] == "p98"


def test_year_statistics_at_324_and_365_valid_days() -> None:
    # SO2 on 324 days (41 without data), 1..324 µg/m³: P98 at rank 317.54 = 317.54 -> 318; the
    # mean 162.5 publishes as 162 (half to even). O3 MDA8 1..365: P90 at rank 328.6 -> 329. CO
    # 0.01..3.65 mg/m³: P95 at rank 346.8 = 3.468 -> 3.5.
    so2 = np.full(365, np.nan)
    so2[41:] = np.arange(1, 325)
    np.random.default_rng(324).shuffle(so2)
    o3 = np.arange(1, 366) * 1.0
    co = np.arange(1, 366) / 100
    found = _evaluate(year(2025), so2=so2, o3_8h_max=o3, co=co)
    report = air_report(found)
    checks = report["pollutants"]["so2"]["compliance"]["checks"]
    assert [(c["statistic"], c["value"], c["limit"], c["complies"]) for c in checks] == [
        ("mean", 162, 60.0, False), ("p98", 318, 150.0, False)
    ]  # fmt: skip
    assert report["pollutants"]["so2"]["valid_days"] == 324
    assert found.pollutants["so2"].value == pytest.approx(162.5)
    assert (report["pollutants"]["o3"]["statistic"], report["pollutants"]["o3"]["value"]) == (
        "mda8_p90", 329
    )  # fmt: skip
    assert found.pollutants["o3"].value == pytest.approx(328.6)
    assert (report["pollutants"]["co"]["statistic"], report["pollutants"]["co"]["value"]) == (
        "p95", 3.5
    )  # fmt: skip
    assert found.pollutants["co"].value == pytest.approx(3.468)


def test_year_short_of_324_days_has_no_verdict() -> None:
    so2 = np.full(365, 8.0)
    so2[:42] = np.nan  # 323 valid days
    found = _evaluate(year(2025), so2=so2)
    assert found.pollutants["so2"].value == Insufficient(323, 324)
    assert found.pollutants["so2"].complies is None
    assert found.complies is None


def test_percentiles_use_the_day_counts_unless_set_otherwise() -> None:
    co = np.full(30, 1.0)
    co[:5] = np.nan
    period = month(2025, 11)
    assert _evaluate(period, co=co).pollutants["co"].value == Insufficient(25, 27)
    part = _only_part(period)
    relaxed = dataclasses.replace(
        part.rule_set, settings=EvaluationSettings(percentiles_need_day_counts=False)
    )
    found = evaluate_air(_air_days(period.start, 30, co=co), part.with_rule_set(relaxed))
    assert found.pollutants["co"].value == 1.0
    assert found.pollutants["so2"].value == 5.0


# §4 composite index

GUANGZHOU_2018_11 = {"pm25": 42.0, "pm10": 64.0, "no2": 56.0, "so2": 9.0, "o3": 145.0, "co": 1.1}


def test_composite_index_guangzhou_2018_11() -> None:
    found = composite_index(GUANGZHOU_2018_11, rule_set_for(date(2018, 11, 1)))
    assert found.value == Fraction("4.85")
    assert {p: float(t) for p, t in found.terms.items()} == {
        "so2": 0.15, "no2": 1.4, "co": 0.28, "o3": 0.91, "pm10": 0.91, "pm25": 1.2
    }  # fmt: skip
    assert found.primary == ("no2",)


def test_composite_index_under_gb3095_2026_is_unweighted_with_2026_limits() -> None:
    rule_set = rule_set_for(date(2026, 11, 1))
    found = composite_index(GUANGZHOU_2018_11, rule_set)
    # PM2.5 42/30 = 1.4, PM10 64/60 = 1.0667 -> 1.07: 1.4 + 1.07 + 1.4 + 0.15 + 0.91 + 0.28.
    assert found.value == Fraction("5.21")
    assert found.primary == ("no2", "pm25")
    assert rule_set.describe()["composite_index"]["weights"] == "unweighted"


def test_composite_index_weights_setting() -> None:
    rule_set = rule_set_for(date(2018, 11, 1))
    weighted = dataclasses.replace(
        rule_set, settings=EvaluationSettings(composite_weights=(("pm25", Fraction(2)),))
    )
    assert composite_index(GUANGZHOU_2018_11, weighted).value == Fraction("6.05")


def test_composite_index_from_a_month_report() -> None:
    found = air_report(
        _evaluate(month(2025, 11), no2=56.0, so2=9.0, co=1.1, o3_8h_max=145.0, pm10=64.0, pm25=42.0)
    )
    assert found["composite_index"]["value"] == 4.85
    assert found["composite_index"]["primary"] == ["no2"]
    assert found["composite_index"]["terms"]["co"] == 0.28


# §1 a period across 2026-03-01


def test_year_2026_is_reported_in_two_parts_never_mixed() -> None:
    period = year(2026)
    days = _air_days(period.start, period.days, pm25=70.0, o3_1h_max=60.0)
    reports = [air_report(evaluate_air(days, part)) for part in period.parts()]
    before, after = reports
    assert before["rule_set"]["hj633"] == "HJ 633-2012"
    assert after["rule_set"]["hj633"] == "HJ 633-2026"
    # PM2.5 70: IAQI 94 (良) under HJ 633-2012, 110 (轻度) under HJ 633-2026.
    assert (before["days"], before["good_days"], before["exceedance_days"]) == (59, 59, 0)
    assert (after["days"], after["good_days"], after["exceedance_days"]) == (306, 0, 306)
    # The annual PM2.5 limit of each part's GB 3095 edition: 35, then 30.
    assert before["pollutants"]["pm25"]["exceedance_multiple"] == 1.0
    assert after["pollutants"]["pm25"]["exceedance_multiple"] == 1.33
    assert before["pollutants"]["pm25"]["valid_days"] == 59


def test_a_part_is_evaluated_on_its_own_days_only() -> None:
    period = quarter(2026, 1)
    pm25 = np.concatenate([np.full(59, 20.0), np.full(31, 50.0)])
    days = _air_days(period.start, period.days, pm25=pm25, o3_1h_max=60.0)
    before, after = (evaluate_air(days, part) for part in period.parts())
    assert before.pollutants["pm25"].value == 20.0
    assert after.pollutants["pm25"].value == 50.0


def test_days_outside_the_evaluated_range_are_refused() -> None:
    days = _air_days(date(2026, 11, 1), 10)
    with pytest.raises(ValueError):
        evaluate_air(days, _only_part(month(2026, 11)))


# Region and year-on-year changes


def test_region_is_the_mean_of_the_cities() -> None:
    period = month(2026, 11)
    guangzhou = _evaluate(period, pm25=[20.0] * 20 + [80.0] * 10, no2=50.0)
    dongguan = _evaluate(period, pm25=[20.0] * 25 + [80.0] * 5, no2=30.0)
    region = air_report(region_evaluation([guangzhou, dongguan]))
    assert region["pollutants"]["no2"]["value"] == 40
    assert region["good_day_share"] == published_share(Fraction(45, 60))
    assert region["exceedance_days"] == 7.5
    # NO2 50 makes every Guangzhou day at least 良; Dongguan has 25 优 days.
    assert region["category_days"]["excellent"] == 12.5
    first, second = guangzhou.composite.value, dongguan.composite.value
    assert isinstance(first, Fraction) and isinstance(second, Fraction)
    assert region["composite_index"]["value"] == published((first + second) / 2, 2)


def test_compare_with_last_year() -> None:
    now = _evaluate(month(2026, 11), no2=44.0, pm25=[20.0] * 27 + [80.0] * 3)
    before_days = _air_days(date(2025, 11, 1), 30, no2=40.0, pm25=[20.0] * 24 + [80.0] * 6)
    like_for_like = evaluate_air(
        before_days, _only_part(month(2025, 11)).with_rule_set(now.rule_set)
    )
    as_published = evaluate_air(before_days, _only_part(month(2025, 11)))
    changes = compare_air(now, like_for_like)
    assert changes["basis"] == "like_for_like"
    assert changes["pollutants_percent"]["no2"] == 10.0
    assert changes["good_day_share_points"] == 10.0
    assert changes["category_days"]["lightly_polluted"] == -3
    assert compare_air(now, as_published)["basis"] == "as_published"
    index_now, index_before = now.composite.value, like_for_like.composite.value
    assert isinstance(index_now, Fraction) and isinstance(index_before, Fraction)
    expected = round_exact((index_now - index_before) / index_before * 100, 1)
    assert changes["composite_index_percent"] == float(expected)


def test_between_slices_days() -> None:
    days = _air_days(date(2026, 3, 1), 10, pm25=np.arange(10.0))
    assert days.between(date(2026, 3, 3), date(2026, 3, 5)).values["pm25"].tolist() == [2.0, 3.0]
    assert days.end == date(2026, 3, 1) + timedelta(days=10)
