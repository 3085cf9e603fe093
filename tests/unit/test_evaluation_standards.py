"""Standards the evaluation adds: HJ 663 editions, validity counts, array AQI, GB 3838 limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest

from alerts.standards import (
    aqi_level,
    aqi_level_index,
    daily_aqi,
    daily_aqi_array,
    hj663_edition_for,
    iaqi,
    iaqi_array,
    surface_class_limit,
    surface_evaluated_items,
)
from alerts.standards.tables import (
    AIR_MIN_VALID_DAYS_FEBRUARY,
    AIR_MIN_VALID_DAYS_MONTH,
    AIR_MIN_VALID_DAYS_YEAR,
    AQI_BREAKPOINTS,
    O3_MDA8_MIN_VALID_WINDOWS,
)

CST = timezone(timedelta(hours=8))
COLUMNS = [
    (edition, pollutant, averaging)
    for edition, table in AQI_BREAKPOINTS.items()
    for pollutant, averaging in table
]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (date(2013, 1, 1), "2013"),
        (date(2026, 2, 28), "2013"),
        (datetime(2026, 2, 28, 15, 59, 59, tzinfo=UTC), "2013"),
        (datetime(2026, 2, 28, 16, 0, tzinfo=UTC), "2026"),
        (date(2026, 3, 1), "2026"),
        (date(2031, 1, 1), "2026"),
    ],
)
def test_hj663_edition_boundary(at: date | datetime, expected: str) -> None:
    assert hj663_edition_for(at) == expected


def test_validity_counts_are_gb3095_table_4() -> None:
    assert (AIR_MIN_VALID_DAYS_MONTH, AIR_MIN_VALID_DAYS_FEBRUARY, AIR_MIN_VALID_DAYS_YEAR) == (
        27,
        25,
        324,
    )
    assert O3_MDA8_MIN_VALID_WINDOWS == 14


def _grid(top: int) -> np.ndarray:
    """Concentrations that reach every rounding and interpolation edge of a column."""
    rng = np.random.default_rng(top)
    return np.concatenate(
        [
            rng.uniform(0, top * 1.1, 400),
            np.round(rng.uniform(0, top * 1.1, 400), 1),
            np.round(rng.uniform(0, top * 1.1, 400), 2),
            np.arange(0, top + 2, max(top / 800, 0.05)),
            np.arange(0, top + 2, 0.5)[:2000],
            [top, top + 0.4, top + 0.5, top + 0.6, top + 1e-9, 5 * top],
        ]
    )


@pytest.mark.parametrize(("edition", "pollutant", "averaging"), COLUMNS)
def test_iaqi_array_equals_iaqi(edition: str, pollutant: str, averaging: str) -> None:
    breakpoints = AQI_BREAKPOINTS[edition][(pollutant, averaging)]
    edges = np.array(breakpoints, dtype=float)
    values = np.concatenate(
        [_grid(breakpoints[-1]), edges, edges + 0.5, edges + 0.05, edges + 1e-7, edges[1:] - 0.5]
    )
    expected = [iaqi(pollutant, averaging, float(v), edition) for v in values]
    found = iaqi_array(pollutant, averaging, values, edition)
    assert [None if np.isnan(f) else int(f) for f in found] == expected


def test_iaqi_array_keeps_shape_and_nan() -> None:
    found = iaqi_array("pm25", "24h", [[60.5, np.nan], [60.6, 0.0]], "2026")
    assert found.shape == (2, 2)
    assert np.isnan(found[0, 1])
    assert (found[0, 0], found[1, 0], found[1, 1]) == (100, 101, 0)


@pytest.mark.parametrize("bad", [-1.0, np.inf, -np.inf])
def test_iaqi_array_rejects_what_iaqi_rejects(bad: float) -> None:
    with pytest.raises(ValueError):
        iaqi_array("pm25", "24h", [10.0, bad], "2026")


def test_iaqi_array_2012_deferral_is_nan() -> None:
    found = iaqi_array("o3", "8h", [800.0, 800.5], "2012")
    assert found[0] == 300
    assert np.isnan(found[1])


def _random_days(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = {
        "so2": rng.uniform(2, 900, count),
        "no2": rng.uniform(5, 300, count),
        "co": np.round(rng.uniform(0.2, 30, count), 1),
        "pm10": rng.uniform(5, 400, count),
        "pm25": np.round(rng.uniform(3, 300, count)),
        "o3_8h_max": rng.uniform(10, 900, count),
        "o3_1h_max": rng.uniform(10, 1300, count),
    }
    for key, values in days.items():
        values[rng.random(count) < 0.08] = np.nan
        days[key] = values
    # Ties: a day whose PM10 and PM2.5 give the same IAQI, and an all-missing day.
    days["pm25"][0], days["pm10"][0] = 45.0, 78.0
    for values in days.values():
        values[1] = np.nan
    return days


@pytest.mark.parametrize(
    ("edition", "day"), [("2012", date(2025, 7, 1)), ("2026", date(2026, 7, 1))]
)
def test_daily_aqi_array_equals_daily_aqi(edition: str, day: date) -> None:
    days = _random_days(800, seed=int(edition))
    found = daily_aqi_array(days, edition)
    assert found.edition == edition
    for index in range(800):
        one = daily_aqi({key: float(values[index]) for key, values in days.items()}, day)
        aqi = found.aqi[index]
        assert (None if np.isnan(aqi) else int(aqi)) == one.aqi
        assert bool(found.published[index]) == one.published
        assert {k for k, flags in found.primary.items() if flags[index]} == set(
            one.primary_pollutants
        )
        subs = {
            k: None if np.isnan(v[index]) else int(v[index]) for k, v in found.sub_indices.items()
        }
        assert subs == one.sub_indices


def test_daily_aqi_array_rejects_unknown_keys_and_shapes() -> None:
    with pytest.raises(ValueError):
        daily_aqi_array({"pm2.5": [1.0]}, "2026")
    with pytest.raises(ValueError):
        daily_aqi_array({"pm25": [1.0], "pm10": [1.0, 2.0]}, "2026")
    with pytest.raises(ValueError):
        daily_aqi_array({"pm25": [1.0]}, "2020")


@pytest.mark.parametrize("aqi", [0, 1, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500])
def test_aqi_level_index_matches_aqi_level(aqi: int) -> None:
    levels = ["I", "II", "III", "IV", "V", "VI"]
    assert levels[int(aqi_level_index(aqi))] == aqi_level(aqi).level


def test_aqi_level_index_of_nan() -> None:
    assert aqi_level_index([np.nan, 42.0]).tolist() == [-1, 0]


def test_surface_evaluated_items_are_21_for_rivers() -> None:
    assert surface_evaluated_items("river") == (
        "ph", "do", "codmn", "cod", "bod5", "nh3n", "tp", "cu", "zn", "fluoride", "se",
        "as", "hg", "cd", "cr6", "pb", "cn", "phenol", "petroleum", "las", "sulfide",
    )  # fmt: skip
    assert len(surface_evaluated_items("lake")) == 23


@pytest.mark.parametrize(
    ("item", "water_class", "water_body", "expected"),
    [
        ("nh3n", 3, "river", 1.0),
        ("nh3n", 2, "river", 0.5),
        ("tp", 3, "river", 0.2),
        ("tp", 3, "lake", 0.05),
        ("do", 3, "river", 5.0),
        ("do", 1, "river", 7.5),
        ("hg", 3, "river", 0.0001),
        ("ph", 3, "river", None),
    ],
)
def test_surface_class_limit(
    item: str, water_class: int, water_body: str, expected: float | None
) -> None:
    assert surface_class_limit(item, water_class, water_body=water_body) == expected


@pytest.mark.parametrize(("item", "water_class"), [("nh3n", 0), ("nh3n", 6), ("water_temp", 3)])
def test_surface_class_limit_rejects(item: str, water_class: int) -> None:
    with pytest.raises(ValueError):
        surface_class_limit(item, water_class)
