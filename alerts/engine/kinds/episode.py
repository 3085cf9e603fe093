"""Regional episode rules (docs/evaluation.md §7): every listed city's AQI above a threshold.

The subject is the region (no station, no city). Each city's daily or rolling 24-hour AQI comes
from alerts/assessment, the same assessment as the city-wide AQI rules (a city averages each
input over its non-background stations, then computes the AQI); the episodes are found by
alerts/evaluation/episodes.py, the rule the reports use.

A point per step (day, or hour for the rolling series), up to the last step every city has a
mean of a day-mean pollutant for (a city's data still to come does not end a run; a step
without one before a later step with one does). An episode is in force from the step that
completes its `min_days` (the alert opens there) to its last step above; there the point's value
is the worst city AQI of the episode so far (the levels grade it), and the episode as known then
is in the details. Any other step's value is 0: no regional episode, the cities' AQI in the
details; the first such step after an episode closes its alert.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from alerts.assessment import (
    AQI_POLLUTANTS,
    DAY,
    DAY_MEANS,
    HOUR,
    Observed,
    Period,
    aqi,
    city_inputs,
    rolling_24h_inputs,
    values_at,
)
from alerts.engine.jobs import Job, in_scope
from alerts.engine.kinds.aqi import daily_results
from alerts.engine.kinds.base import Data, Need, SeriesKind, hourly_grid, point
from alerts.evaluation.air_days import POLLUTANT_OF_KEY
from alerts.evaluation.episodes import CityAqi, Episode, EpisodeRule, find_episodes
from alerts.rules import Point
from alerts.standards import AqiResult
from alerts.windows import HOURS_PER_DAY
from core.timeutil import CST, cst_day_start
from schemas.rules import RegionalEpisode as Spec
from schemas.rules import RuleDefinition
from store.catalogue import CatalogueSnapshot, StationRef

# Hours before a rolling 24-hour AQI's hour that its inputs read: 23 for the 24-hour means, and
# 7 more for the O3 8-hour means of the window's first hours.
ROLLING_HISTORY = timedelta(hours=HOURS_PER_DAY - 1 + 7)


def spec(rule: RuleDefinition) -> Spec:
    """The rule's episode settings (the schema requires them for this kind)."""
    if rule.episode is None:
        raise ValueError(f"rule {rule.id}: a regional_episode rule needs `episode`")
    return rule.episode


def episode_rule(rule: RuleDefinition) -> EpisodeRule:
    """The rule as alerts/evaluation/episodes.py takes it."""
    found = spec(rule)
    return EpisodeRule(tuple(found.cities), found.aqi_above, found.min_days, found.series)


@dataclass(frozen=True)
class Steps:
    """The steps judged: their starts, and each city's AQI series over them."""

    starts: list[datetime]
    cities: dict[str, CityAqi]


class RegionalEpisode(SeriesKind):
    """A regional episode rule watches the six pollutants of its cities' assessment stations."""

    kind: ClassVar[str] = "regional_episode"

    def codes(self, rule: RuleDefinition) -> Collection[str]:
        return AQI_POLLUTANTS

    def watches(self, rule: RuleDefinition, station: StationRef, parameter: str) -> bool:
        return (
            in_scope(rule, station)
            and station.medium == "air"
            and not station.background
            and station.city in spec(rule).cities
            and parameter in AQI_POLLUTANTS
        )

    def period(self, rule: RuleDefinition) -> Period | None:
        return DAY if spec(rule).series == "daily" else HOUR

    def reach(self, job: Job, catalogue: CatalogueSnapshot) -> timedelta:
        # A step decides whether the next min_days - 1 steps complete an episode; an hour's
        # data also enters the next 23 rolling 24-hour means.
        rule = episode_rule(job.definition)
        extra = timedelta(0) if rule.series == "daily" else timedelta(hours=HOURS_PER_DAY - 1)
        return rule.step * rule.min_steps + extra

    def needs(self, job: Job, catalogue: CatalogueSnapshot) -> Iterable[Need]:
        first = first_step(job)
        daily = spec(job.definition).series == "daily"
        for station_id in job.stations:
            for series in catalogue.station_series(station_id, AQI_POLLUTANTS):
                key = (station_id, series.parameter_id)
                if not daily:
                    yield Need("hourly", *key, first - ROLLING_HISTORY)
                    continue
                yield Need("daily", *key, first)
                if series.parameter == "o3":
                    yield Need("hourly", *key, first)

    def points(self, job: Job, catalogue: CatalogueSnapshot, data: Data) -> list[Point]:
        rule = episode_rule(job.definition)
        ids = {code: catalogue.parameter_id(code) for code in AQI_POLLUTANTS}
        by_city = {
            city: [s for s in job.stations if catalogue.stations_by_id[s].city == city]
            for city in rule.cities
        }
        if rule.series == "daily":
            steps = _daily_steps(first_step(job), by_city, ids, data)
        else:
            steps = _rolling_steps(first_step(job), by_city, ids, data)
        if steps is None:
            return []
        return _points(job, rule, steps)


def first_step(job: Job) -> datetime:
    """The first step read: min_days - 1 before the first judged, so a run's start is seen."""
    rule = episode_rule(job.definition)
    period = DAY if rule.series == "daily" else HOUR
    start = period.floor(job.fetch_from)
    if rule.series == "daily":
        return cst_day_start(start.date() - timedelta(days=rule.min_steps - 1))
    return start - rule.step * (rule.min_steps - 1)


def _city_aqi(results: Sequence[AqiResult | None]) -> CityAqi:
    values = np.array([np.nan if r is None or r.aqi is None else r.aqi for r in results])
    primary: dict[str, np.ndarray[Any, np.dtype[np.bool_]]] = {}
    for index, result in enumerate(results):
        for key in result.primary_pollutants if result is not None else ():
            code = POLLUTANT_OF_KEY.get(key, key)
            primary.setdefault(code, np.zeros(len(results), dtype=bool))[index] = True
    return CityAqi(values, primary)


def _known(reported: Sequence[bool]) -> int:
    """How many leading steps are known for a city: up to its last step with a mean reported."""
    return max((i + 1 for i, flag in enumerate(reported) if flag), default=0)


def _reported(
    series: Mapping[tuple[int, int], Mapping[Any, float]],
    stations: Sequence[int],
    ids: Mapping[str, int | None],
    step: date | datetime,
) -> bool:
    """Whether a city's stations have a mean of a day-mean pollutant for the step (O3 alone
    does not make a day: its hours come in long before the day's means are valid)."""
    return any(
        step in series.get((station_id, pid), {})
        for station_id in stations
        for pid in (ids[code] for code in DAY_MEANS)
        if pid is not None
    )


def _daily_steps(
    first: datetime, by_city: Mapping[str, list[int]], ids: Mapping[str, int | None], data: Data
) -> Steps | None:
    """Each city's daily AQI from the first step's day to the last day every city has data."""
    seen = [
        day
        for stations in by_city.values()
        for station_id in stations
        for pid in ids.values()
        if pid is not None
        for day in data.daily.get((station_id, pid), {})
    ]
    first_day = first.astimezone(CST).date()
    if not seen or max(seen) < first_day:
        return None
    days = [first_day + timedelta(days=n) for n in range((max(seen) - first_day).days + 1)]
    results = {city: daily_results(s, ids, data, days) for city, s in by_city.items()}
    reported = {
        city: [_reported(data.daily, s, ids, day) for day in days] for city, s in by_city.items()
    }
    return _steps([cst_day_start(day) for day in days], results, reported)


def _rolling_steps(
    first: datetime, by_city: Mapping[str, list[int]], ids: Mapping[str, int | None], data: Data
) -> Steps | None:
    """Each city's rolling 24-hour AQI at each hour from the first step's to the newest."""
    seen = [
        hour
        for stations in by_city.values()
        for station_id in stations
        for pid in ids.values()
        if pid is not None
        for hour in data.hourly.get((station_id, pid), {})
    ]
    if not seen or max(seen) < first:
        return None
    read_from = first - ROLLING_HISTORY
    hours = HOUR.starts(read_from, max(seen))
    skip = len(hours) - len(HOUR.starts(first, max(seen)))
    results = {}
    for city, stations in by_city.items():
        per_station = [
            rolling_24h_inputs(
                {
                    code: Observed.of(
                        hourly_grid(data.hourly.get((station_id, pid), {}), read_from, len(hours))
                    )
                    for code, pid in ids.items()
                    if pid is not None
                }
            )
            for station_id in stations
        ]
        inputs, _ = city_inputs(per_station) if per_station else ({}, {})
        found: list[AqiResult | None] = []
        for index in range(skip, len(hours)):
            values = values_at(inputs, index)
            window = hours[index] - timedelta(hours=HOURS_PER_DAY - 1)
            empty = all(value is None for value in values.values())
            found.append(None if empty else aqi(DAY, values, window))
        results[city] = found
    reported = {
        city: [_reported(data.hourly, s, ids, hour) for hour in hours[skip:]]
        for city, s in by_city.items()
    }
    return _steps(hours[skip:], results, reported)


def _steps(
    starts: list[datetime],
    results: Mapping[str, Sequence[AqiResult | None]],
    reported: Mapping[str, Sequence[bool]],
) -> Steps:
    """The steps up to the last one every city has data for."""
    known = min(_known(flags) for flags in reported.values())
    return Steps(
        starts[:known], {city: _city_aqi(found[:known]) for city, found in results.items()}
    )


def _points(job: Job, rule: EpisodeRule, steps: Steps) -> list[Point]:
    """A point per step from the job's start: an episode in force, or 0."""
    if not steps.starts:
        return []
    first: date | datetime = steps.starts[0]
    if rule.series == "daily":
        first = steps.starts[0].date()
    judged_from = (DAY if rule.series == "daily" else HOUR).floor(job.fetch_from)
    judged = sum(1 for start in steps.starts if start < judged_from)
    in_force: dict[int, Episode] = {}
    for episode in find_episodes(first, steps.cities, rule):
        begin = _index(first, episode.start, rule)
        end = _index(first, episode.end, rule)
        for index in range(max(begin + rule.min_steps - 1, judged), end):
            # The episode as known at that step: its runs cut there (ongoing).
            cut = {city: _cut(series, index + 1) for city, series in steps.cities.items()}
            in_force[index] = find_episodes(first, cut, rule)[-1]
    span = int(rule.step.total_seconds())
    points = []
    for index, start in enumerate(steps.starts):
        if start < judged_from:
            continue
        cities = {
            city: None if np.isnan(series.aqi[index]) else int(series.aqi[index])
            for city, series in steps.cities.items()
        }
        details: dict[str, Any] = {"series": rule.series, "cities": cities}
        known = in_force.get(index)
        if known is not None:
            details["episode"] = _described(known)
        value = float(known.peak_aqi) if known is not None else 0.0
        points.append(
            point(job.definition, start, value, span_s=span, period_s=span, details=details)
        )
    return points


def _described(episode: Episode) -> dict[str, Any]:
    """An episode for the details, its start as an instant (a day's at 00:00 +08:00)."""
    described = episode.describe()
    for name in ("start", "end"):
        moment = getattr(episode, name)
        described[name] = (
            moment if isinstance(moment, datetime) else cst_day_start(moment)
        ).isoformat()
    return described


def _index(first: date | datetime, moment: date | datetime, rule: EpisodeRule) -> int:
    if isinstance(first, datetime) and isinstance(moment, datetime):
        return int((moment - first) / rule.step)
    assert not isinstance(first, datetime) and not isinstance(moment, datetime)
    return (moment - first).days


def _cut(series: CityAqi, length: int) -> CityAqi:
    return CityAqi(
        series.aqi[:length], {code: flags[:length] for code, flags in series.primary.items()}
    )
