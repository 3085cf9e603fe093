"""Regional air episodes (docs/evaluation.md §7): EnvLink's own rule, configurable, named so.

No national numeric definition exists. The joint rule: an episode is open while EVERY listed
city's AQI (daily, or rolling 24-hour) is above the threshold, for at least the given number of
consecutive days; its grade is its worst city-day (heavy above 200). A step without a published
AQI in some city ends a run: an unknown day is not a polluted one. Episodes are counted in
city-days (天次): the distinct (city, natural day) pairs they cover.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from alerts.evaluation.air import CATEGORIES, HEAVY_FROM_LEVEL
from alerts.evaluation.air_days import primary_by_pollutant
from alerts.evaluation.rules import POLLUTANTS
from alerts.standards.aqi import AqiArrays, aqi_level_index
from alerts.standards.editions import observation_day

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

HOURS_PER_DAY = 24


@dataclass(frozen=True)
class EpisodeRule:
    """The joint regional-episode rule: which cities, above which AQI, for how long."""

    cities: tuple[str, ...] = ("guangzhou", "dongguan")
    aqi_above: int = 100
    min_days: int = 2
    series: Literal["daily", "rolling_24h"] = "daily"

    def __post_init__(self) -> None:
        if not self.cities:
            raise ValueError("a regional episode rule needs at least one city")
        if self.min_days < 1:
            raise ValueError(f"min_days must be at least 1, not {self.min_days}")

    @property
    def step(self) -> timedelta:
        """The time between two values of the series: a day, or an hour (rolling 24 h)."""
        return timedelta(days=1) if self.series == "daily" else timedelta(hours=1)

    @property
    def min_steps(self) -> int:
        """Consecutive values above the threshold that open an episode."""
        return self.min_days * (1 if self.series == "daily" else HOURS_PER_DAY)


@dataclass(frozen=True)
class CityAqi:
    """A city's AQI per step (NaN = none published) and, per pollutant, its primary steps."""

    aqi: FloatArray
    primary: Mapping[str, BoolArray]

    @classmethod
    def from_daily(cls, arrays: AqiArrays) -> CityAqi:
        """From a city's daily AQI arrays (an evaluation's `aqi`)."""
        return cls(arrays.aqi, primary_by_pollutant(arrays))


@dataclass(frozen=True)
class Episode:
    """One regional episode: [start, end) in steps of the rule's series."""

    start: date | datetime
    end: date | datetime
    cities: tuple[str, ...]
    city_days: int
    peak_aqi: int
    peak_city: str
    peak_category: str
    heavy: bool
    primary_pollutants: tuple[str, ...]
    ongoing: bool

    def describe(self) -> dict[str, Any]:
        """JSON-ready, the fields of GET /v1/episodes that the evaluation knows."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "cities": list(self.cities),
            "city_days": self.city_days,
            "peak_aqi": self.peak_aqi,
            "peak_city": self.peak_city,
            "peak_category": self.peak_category,
            "heavy": self.heavy,
            "primary_pollutants": list(self.primary_pollutants),
            "ongoing": self.ongoing,
        }


def find_episodes(
    first: date | datetime, series: Mapping[str, CityAqi], rule: EpisodeRule
) -> list[Episode]:
    """Episodes in aligned series starting at `first` (a day, or an aware hour for rolling)."""
    if rule.series == "rolling_24h" and not isinstance(first, datetime):
        raise ValueError("a rolling 24-hour series starts at an aware datetime (its first hour)")
    if rule.series == "daily" and isinstance(first, datetime):
        raise ValueError("a daily series starts at a date")
    missing = [city for city in rule.cities if city not in series]
    if missing:
        raise ValueError(f"no AQI series for {missing}")
    stack = np.stack([np.asarray(series[city].aqi, dtype=np.float64) for city in rule.cities])
    every_city = np.count_nonzero(stack > rule.aqi_above, axis=0) == len(rule.cities)
    above = [bool(flag) for flag in every_city]
    episodes = []
    step = 0
    for is_above, run in itertools.groupby(above):
        length = len(list(run))
        if is_above and length >= rule.min_steps:
            episodes.append(_episode(first, series, rule, stack, step, step + length))
        step += length
    return episodes


def _episode(
    first: date | datetime,
    series: Mapping[str, CityAqi],
    rule: EpisodeRule,
    stack: FloatArray,
    begin: int,
    end: int,
) -> Episode:
    window = stack[:, begin:end]
    city_index, offset = np.unravel_index(int(np.argmax(window)), window.shape)
    peak = int(window[city_index, offset])
    level = int(aqi_level_index(peak))
    counts = {
        pollutant: sum(
            int(np.count_nonzero(series[city].primary.get(pollutant, np.zeros(0))[begin:end]))
            for city in rule.cities
        )
        for pollutant in POLLUTANTS
    }
    named = sorted((p for p in POLLUTANTS if counts[p]), key=lambda p: -counts[p])
    start = first + rule.step * begin
    days = {observation_day(start + rule.step * k) for k in range(end - begin)}
    return Episode(
        start=start,
        end=first + rule.step * end,
        cities=rule.cities,
        city_days=len(days) * len(rule.cities),
        peak_aqi=peak,
        peak_city=rule.cities[int(city_index)],
        peak_category=CATEGORIES[level],
        heavy=level >= HEAVY_FROM_LEVEL,
        primary_pollutants=tuple(named),
        ongoing=end == stack.shape[1],
    )
