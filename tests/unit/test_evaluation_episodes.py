"""Regional air episodes (docs/evaluation.md §7): both cities above 100 for two days or more."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from alerts.evaluation.air import evaluate_air
from alerts.evaluation.air_days import from_daily
from alerts.evaluation.episodes import CityAqi, EpisodeRule, find_episodes
from alerts.evaluation.periods import month

CST = timezone(timedelta(hours=8))
FIRST = date(2026, 11, 1)


def _city(aqi: list[float], primary: dict[str, list[bool]] | None = None) -> CityAqi:
    flags = {p: np.array(days) for p, days in (primary or {}).items()}
    return CityAqi(np.array(aqi, dtype=float), flags)


def test_episodes_need_both_cities_above_100_for_two_days() -> None:
    guangzhou = _city(
        [120, 130, 90, 150, 160, 210, 80, 120, 130],
        {"pm25": [True, True, False, True, True, False, False, True, True],
         "o3": [False, False, False, False, True, True, False, False, False]},
    )  # fmt: skip
    dongguan = _city(
        [110, 105, 120, 130, 101, 180, 50, 101, 100],
        {"pm25": [True, True, True, True, False, True, False, True, True]},
    )
    found = find_episodes(FIRST, {"guangzhou": guangzhou, "dongguan": dongguan}, EpisodeRule())
    assert [episode.describe() for episode in found] == [
        {
            "start": "2026-11-01",
            "end": "2026-11-03",
            "cities": ["guangzhou", "dongguan"],
            "city_days": 4,
            "peak_aqi": 130,
            "peak_city": "guangzhou",
            "peak_category": "lightly_polluted",
            "heavy": False,
            "primary_pollutants": ["pm25"],
            "ongoing": False,
        },
        {
            "start": "2026-11-04",
            "end": "2026-11-07",
            "cities": ["guangzhou", "dongguan"],
            "city_days": 6,
            "peak_aqi": 210,
            "peak_city": "guangzhou",
            "peak_category": "heavily_polluted",
            "heavy": True,
            "primary_pollutants": ["pm25", "o3"],
            "ongoing": False,
        },
    ]


def test_one_day_is_no_episode_and_100_is_not_above_100() -> None:
    found = find_episodes(
        FIRST,
        {"guangzhou": _city([150, 101, 101, 90]), "dongguan": _city([150, 100, 150, 150])},
        EpisodeRule(),
    )
    assert found == []


def test_a_day_without_an_aqi_ends_a_run() -> None:
    cities = {"guangzhou": _city([150, np.nan, 150, 150]), "dongguan": _city([150] * 4)}
    found = find_episodes(FIRST, cities, EpisodeRule())
    assert [(e.start, e.end, e.ongoing) for e in found] == [
        (date(2026, 11, 3), date(2026, 11, 5), True)
    ]


def test_rule_is_configurable() -> None:
    cities = {"guangzhou": _city([160, 160, 160, 120]), "dongguan": _city([155, 170, 151, 130])}
    assert len(find_episodes(FIRST, cities, EpisodeRule(min_days=3, aqi_above=150))) == 1
    assert find_episodes(FIRST, cities, EpisodeRule(min_days=4, aqi_above=150)) == []
    alone = find_episodes(FIRST, cities, EpisodeRule(cities=("dongguan",), aqi_above=150))
    assert [(e.cities, e.city_days) for e in alone] == [(("dongguan",), 3)]
    with pytest.raises(ValueError):
        find_episodes(FIRST, cities, EpisodeRule(cities=("guangzhou", "shenzhen")))
    with pytest.raises(ValueError):
        EpisodeRule(min_days=0)


def test_rolling_24_hour_series() -> None:
    start = datetime(2026, 11, 1, 12, 0, tzinfo=CST)
    rule = EpisodeRule(series="rolling_24h")
    hours = 60
    above = np.full(hours, 130.0)
    above[:5] = 90.0
    short = above.copy()
    short[52:] = 90.0  # hours 5..51 above: 47 hours, short of 48
    found = find_episodes(
        start, {"guangzhou": _city(list(above)), "dongguan": _city(list(short))}, rule
    )
    assert found == []
    longer = above.copy()
    longer[53:] = 90.0  # hours 5..52: 48 hours
    found = find_episodes(
        start, {"guangzhou": _city(list(above)), "dongguan": _city(list(longer))}, rule
    )
    assert [(e.start, e.end) for e in found] == [
        (start + timedelta(hours=5), start + timedelta(hours=53))
    ]
    # 17:00 on the 1st to 16:00 on the 3rd touches three natural days in each city.
    assert found[0].city_days == 6
    with pytest.raises(ValueError):
        find_episodes(FIRST, {"guangzhou": _city([1.0]), "dongguan": _city([1.0])}, rule)


def test_city_aqi_from_an_air_evaluation() -> None:
    period = month(2026, 11)
    clean = {"so2": 5.0, "no2": 20.0, "co": 0.5, "pm10": 30.0, "o3_8h_max": 50.0}
    daily = {key: np.full(30, value) for key, value in clean.items()}
    polluted = np.full(30, 20.0)
    polluted[10:13] = 80.0  # PM2.5 80 under HJ 633-2026: IAQI 119 on three days
    cities = {}
    for city in ("guangzhou", "dongguan"):
        (part,) = period.parts()
        evaluation = evaluate_air(from_daily(period.start, {**daily, "pm25": polluted}), part)
        assert evaluation.aqi is not None
        cities[city] = CityAqi.from_daily(evaluation.aqi)
    (episode,) = find_episodes(period.start, cities, EpisodeRule())
    assert (episode.start, episode.end, episode.peak_aqi) == (
        date(2026, 11, 11), date(2026, 11, 14), 119
    )  # fmt: skip
    assert episode.primary_pollutants == ("pm25",)
    assert episode.city_days == 6
