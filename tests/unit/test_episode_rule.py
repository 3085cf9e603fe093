"""The regional episode rule kind (docs/evaluation.md §7) without a database: its points at every
boundary (the threshold, the consecutive days, the rolling 24 hours, one city or both, closing),
the episode its alert records, its addressees, its plan and its schema.

PM2.5 daily means with the other pollutants clean give these daily AQI (HJ 633-2026): 60 -> 100,
61 -> 101, 115 -> 150, 116 -> 152, 151 -> 201.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.engine.catalogue import ActiveRule, Catalogue
from alerts.engine.episodes import covers_an_episode, episode_of
from alerts.engine.jobs import Job, lock_key
from alerts.engine.kinds import SERIES_KINDS, Data, Need
from alerts.engine.persist import addressees
from alerts.engine.plan import Touched, plan
from alerts.rules import Alert, Point
from core.timeutil import CST, cst_day_start
from schemas.rules import RuleDefinition
from store.catalogue import AgencyRow, CatalogueSnapshot
from store.episodes import Episode
from tests.unit.test_engine_kinds import PARAMETERS, SERIES, SNAPSHOT, STATIONS

FIRST = date(2026, 11, 20)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
CLEAN = {"so2": 5.0, "no2": 20.0, "co": 0.5, "pm10": 30.0}
O3 = 50.0  # all day: O3 daily maximum 8-hour mean 50, IAQI 32
GZ, DG = 1, 3  # the air stations of each city in the catalogue (2 is a background site)
LADDER = [
    {
        "standard": "docs/evaluation.md §7",
        "levels": [
            {"severity": "advisory", "trigger": 100, "clear": 100, "basis": "both above 100"},
            {"severity": "warning", "trigger": 150, "clear": 100, "basis": "a city above 150"},
            {"severity": "critical", "trigger": 200, "clear": 100, "basis": "heavy"},
        ],
    }
]


def _definition(**episode: Any) -> dict[str, Any]:
    return {
        "id": "episode",
        "name": {"en": "episode", "zh": "区域污染过程"},
        "kind": "regional_episode",
        "episode": episode,
        "ladders": LADDER,
    }


def _rule(**episode: Any) -> ActiveRule:
    return ActiveRule("episode", 1, RuleDefinition.model_validate(_definition(**episode)))


def _daily(station: int, pm25: list[float | None], first: date = FIRST) -> Data:
    """A station's daily means (PM2.5 as given, None: no data that day) and hourly O3."""
    data = Data()
    for offset, fine in enumerate(pm25):
        if fine is None:
            continue
        day = first + offset * DAY
        for code, value in {**CLEAN, "pm25": fine}.items():
            data.daily.setdefault((station, PARAMETERS[code]), {})[day] = value
        o3 = data.hourly.setdefault((station, PARAMETERS["o3"]), {})
        for hour in range(24):
            o3[cst_day_start(day) + hour * HOUR] = O3
    return data


def _merged(*parts: Data) -> Data:
    data = Data()
    for part in parts:
        data.daily.update(part.daily)
        data.hourly.update(part.hourly)
    return data


def _job(rule: ActiveRule, since: datetime, stations: list[int]) -> Job:
    kind = SERIES_KINDS["regional_episode"]
    job = Job(rule, kind, ("episode", None, None), since, since, since)
    job.stations = stations
    job.reach = kind.reach(job, SNAPSHOT)
    return job


def _values(
    gz: list[float | None],
    dg: list[float | None],
    *,
    since: date = FIRST,
    **episode: Any,
) -> list[tuple[date, float | None]]:
    """(day, value) of the points from `since` for both cities' PM2.5 by day from FIRST."""
    rule = _rule(**episode)
    job = _job(rule, cst_day_start(since), [GZ, DG])
    found = job.kind.points(job, SNAPSHOT, _merged(_daily(GZ, gz), _daily(DG, dg)))
    return [(p.time.date(), p.value) for p in found]


def _day(n: int) -> date:
    return FIRST + n * DAY


@pytest.mark.parametrize(
    ("gz", "dg", "values"),
    [
        # Both at 101 for two days: in force from the second day (the alert opens there).
        ([61, 61], [61, 61], [0.0, 101.0]),
        # 100 is not above 100: Dongguan at exactly 100 on either day makes no episode.
        ([61, 61], [61, 60], [0.0, 0.0]),
        ([61, 61], [60, 61], [0.0, 0.0]),
        # The value is the worst city AQI of the episode so far, the first day included.
        ([151, 61], [61, 61], [0.0, 201.0]),
        ([61, 116], [61, 61], [0.0, 152.0]),
    ],
)
def test_the_threshold_is_strictly_above_in_every_city(
    gz: list[float], dg: list[float], values: list[float]
) -> None:
    assert _values(list(gz), list(dg)) == [(_day(i), v) for i, v in enumerate(values)]


def test_consecutive_days_count_at_the_boundary() -> None:
    three = {"min_days": 3}
    # Two days above with three needed: no episode; a third makes one, in force from it.
    assert _values([61, 61, 60], [61, 61, 61], **three) == [
        (_day(0), 0.0), (_day(1), 0.0), (_day(2), 0.0)
    ]  # fmt: skip
    assert _values([61, 61, 61], [61, 61, 61], **three) == [
        (_day(0), 0.0), (_day(1), 0.0), (_day(2), 101.0)
    ]  # fmt: skip
    # One day is enough with min_days 1.
    assert _values([61, 60], [61, 61], min_days=1) == [(_day(0), 101.0), (_day(1), 0.0)]


def test_one_city_alone_or_both() -> None:
    # Guangzhou above, Dongguan not: no regional episode of both cities ...
    assert _values([61, 61], [40, 40]) == [(_day(0), 0.0), (_day(1), 0.0)]
    # ... but an episode of a rule for Guangzhou alone (Dongguan's data is not its concern).
    rule = _rule(cities=["guangzhou"])
    job = _job(rule, cst_day_start(FIRST), [GZ])
    found = job.kind.points(job, SNAPSHOT, _merged(_daily(GZ, [61, 61]), _daily(DG, [40, 40])))
    assert [(p.time.date(), p.value) for p in found] == [(_day(0), 0.0), (_day(1), 101.0)]
    assert found[1].details["episode"]["cities"] == ["guangzhou"]
    assert found[1].details["episode"]["city_days"] == 2


def test_closing_and_what_the_points_say() -> None:
    rule = _rule()
    job = _job(rule, cst_day_start(_day(1)), [GZ, DG])
    data = _merged(_daily(GZ, [61, 116, 61, 60]), _daily(DG, [70, 61, 61, 100]))
    found = job.kind.points(job, SNAPSHOT, data)
    # The job judges from the second day; it read the first too, to see the run's start.
    assert [(p.time, p.value) for p in found] == [
        (cst_day_start(_day(1)), 152.0),
        (cst_day_start(_day(2)), 152.0),
        (cst_day_start(_day(3)), 0.0),  # Guangzhou back at 100: the episode ends
    ]
    assert found[1].details["episode"] == {
        "start": "2026-11-20T00:00:00+08:00",
        "end": "2026-11-23T00:00:00+08:00",
        "cities": ["guangzhou", "dongguan"],
        "city_days": 6,
        "peak_aqi": 152,
        "peak_city": "guangzhou",
        "peak_category": "moderately_polluted",
        "heavy": False,
        "primary_pollutants": ["pm25"],
        "ongoing": True,
    }
    assert found[2].details["cities"] == {"guangzhou": 100, "dongguan": 137}
    assert "episode" not in found[2].details
    assert found[0].details["standard"] == "docs/evaluation.md §7"
    assert list(job.kind.needs(job, SNAPSHOT))[:2] == [
        Need("daily", GZ, PARAMETERS["so2"], cst_day_start(_day(0))),
        Need("daily", GZ, PARAMETERS["no2"], cst_day_start(_day(0))),
    ]


def test_a_city_whose_data_is_still_to_come_does_not_end_a_run() -> None:
    # Dongguan's third day has not arrived: the points stop at the last day both cities have.
    assert _values([61, 61, 61], [61, 61]) == [(_day(0), 0.0), (_day(1), 101.0)]
    # Nor do the hourly O3 means of a day whose daily means are not valid yet.
    rule = _rule()
    job = _job(rule, cst_day_start(FIRST), [GZ, DG])
    data = _merged(_daily(GZ, [61, 61, 40]), _daily(DG, [61, 61]))
    data.hourly[(DG, PARAMETERS["o3"])].update(
        {cst_day_start(_day(2)) + h * HOUR: O3 for h in range(12)}
    )
    found = job.kind.points(job, SNAPSHOT, data)
    assert [(p.time.date(), p.value) for p in found] == [(_day(0), 0.0), (_day(1), 101.0)]
    # A day without data in Dongguan, followed by one with data, does end the run.
    assert _values([61, 61, 61, 61], [61, None, 61, 61]) == [
        (_day(0), 0.0), (_day(1), 0.0), (_day(2), 0.0), (_day(3), 101.0)
    ]  # fmt: skip


def _hourly(station: int, pm25: float, hours: int, first: datetime) -> Data:
    """A station's hourly means for `hours` hours: clean, PM2.5 as given."""
    data = Data()
    for code, value in {**CLEAN, "o3": O3, "pm25": pm25}.items():
        data.hourly[(station, PARAMETERS[code])] = {first + h * HOUR: value for h in range(hours)}
    return data


@pytest.mark.parametrize(("hours", "in_force"), [(66, []), (67, [66]), (70, [66, 67, 68, 69])])
def test_rolling_24_hours(hours: int, in_force: list[int]) -> None:
    first = datetime(2026, 11, 20, 0, tzinfo=CST)
    # PM2.5 80 every hour: the rolling 24-hour AQI is 119 once the 24-hour mean has its 20
    # valid hours (the hour at index 19). 48 hours above complete the episode at index 66.
    rule = _rule(series="rolling_24h")
    job = _job(rule, first + 60 * HOUR, [GZ, DG])
    data = _merged(_hourly(GZ, 80.0, hours, first), _hourly(DG, 80.0, hours, first))
    found = job.kind.points(job, SNAPSHOT, data)
    assert [p.time for p in found] == [first + h * HOUR for h in range(60, hours)]
    assert [int((p.time - first) / HOUR) for p in found if p.value] == in_force
    assert all(p.value == 119.0 for p in found if p.value)
    if in_force:
        assert found[-1].details["episode"]["start"] == "2026-11-20T19:00:00+08:00"
        # 19:00 on the 20th to the newest hour touches three natural days in each city.
        assert found[-1].details["episode"]["city_days"] == 6
    assert next(iter(job.kind.needs(job, SNAPSHOT))) == Need(
        "hourly", GZ, PARAMETERS["so2"], first + 60 * HOUR - 47 * HOUR - 30 * HOUR
    )


def _alert(trigger: datetime, *, clear: datetime | None = None, peak: float = 137.0) -> Alert:
    return Alert(
        id=7,
        state="resolved" if clear else "firing",
        severity="advisory",
        value=peak,
        opened_at=trigger,
        pending_since=trigger,
        trigger_time=trigger,
        trigger_period_s=86400,
        last_point_at=trigger,
        clear_point_at=clear,
        details={"peak": peak},
    )


def _in_force(day: date, start: date, peak: int, primary: list[str]) -> Point:
    episode = {"start": cst_day_start(start).isoformat(), "peak_aqi": peak,
               "primary_pollutants": primary}  # fmt: skip
    return Point(cst_day_start(day), float(peak), (), 86400, 86400, {"episode": episode})


def test_the_episode_an_alert_records() -> None:
    spec = _rule().definition.episode
    assert spec is not None
    trigger = cst_day_start(_day(1))
    points = [_in_force(_day(1), _day(0), 137, ["pm25"])]
    opened = episode_of("episode", spec, _alert(trigger), points, None)
    assert opened == Episode(
        "episode", 7, "daily", cst_day_start(_day(0)), None, ["guangzhou", "dongguan"], 4, 137,
        "lightly_polluted", ["pm25"],
    )  # fmt: skip
    # Later rounds read a few days only: the start, peak and pollutants seen before are kept.
    later = [_in_force(_day(4), _day(3), 120, ["o3", "pm25"])]
    assert opened is not None
    going = episode_of("episode", spec, _alert(trigger, peak=137), later, opened)
    assert going is not None
    assert (going.start, going.end, going.city_days, going.peak_aqi) == (
        cst_day_start(_day(0)), None, 10, 137
    )  # fmt: skip
    assert going.primary_pollutants == ["pm25", "o3"]
    # The clearing point ends it: [start, end).
    end = cst_day_start(_day(6))
    closed = episode_of("episode", spec, _alert(trigger, clear=end, peak=210), [], going)
    assert closed is not None
    assert (closed.end, closed.city_days, closed.peak_aqi, closed.peak_category) == (
        end, 12, 210, "heavily_polluted"
    )  # fmt: skip
    # Revised data that closes the alert at its own trigger leaves no episode.
    assert covers_an_episode(_alert(trigger, clear=end))
    assert not covers_an_episode(_alert(trigger, clear=trigger))
    # An alert with no episode point and nothing recorded records nothing.
    assert episode_of("episode", spec, _alert(trigger), [], None) is None


def test_addressed_to_its_cities_agencies_and_the_joint_office() -> None:
    agencies = [
        AgencyRow(1, "gz_eeb", "GZ", "广州", "guangzhou"),
        AgencyRow(2, "dg_eeb", "DG", "东莞", "dongguan"),
        AgencyRow(3, "joint_office", "Joint", "联合", None),
    ]
    catalogue = CatalogueSnapshot.of(STATIONS, [], SERIES, [], agencies)
    assert addressees(catalogue, _rule().definition) == [1, 2, 3]
    assert addressees(catalogue, _rule(cities=["dongguan"]).definition) == [2, 3]


def test_plan_makes_one_regional_job_of_both_cities_assessment_stations() -> None:
    rule = _rule()
    catalogue = Catalogue(SNAPSHOT, {rule.id: rule})
    now = datetime(2026, 11, 21, 12, tzinfo=CST)
    at = datetime(2026, 11, 21, 8, tzinfo=CST)
    found = plan(catalogue, [Touched(GZ, 6, [at]), Touched(DG, 2, [at])], now)
    assert {s: (j.start, j.stations) for s, j in found.items()} == {
        ("episode", None, None): (cst_day_start(date(2026, 11, 21)), [GZ, DG])
    }
    # The background site never speaks for its city, so it wakes nothing.
    assert plan(catalogue, [Touched(2, 6, [at])], now) == {}
    assert lock_key(("episode", None, None)) == ("episode", -3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"episode": {"cities": ["guangzhou", "guangzhou"]}}, "each city once"),
        ({"episode": {"min_days": 0}}, "greater than or equal to 1"),
        ({"episode": None}, "`episode` goes with kind regional_episode"),
        ({"kind": "aqi", "statistic": "day_mean"}, "`episode` goes with kind regional_episode"),
        ({"statistic": "day_mean"}, "takes no statistic"),
        ({"direction": "below"}, "judged above"),
    ],
)
def test_the_rule_schema(change: dict[str, Any], message: str) -> None:
    definition = {**_definition(), **change}
    if definition.get("direction") == "below":
        definition["ladders"] = [
            {"standard": "x", "levels": [
                {"severity": "advisory", "trigger": 50, "clear": 60, "basis": "x"}]}
        ]  # fmt: skip
    with pytest.raises(ValidationError, match=message):
        RuleDefinition.model_validate(definition)


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        # A first trigger above aqi_above would leave some episodes without an alert.
        ([{"severity": "warning", "trigger": 150, "clear": 100, "basis": "x"}],
         "at most aqi_above"),
        # A clear above aqi_above would let an episode lose its grade before it ends.
        ([{"severity": "warning", "trigger": 100, "clear": 90, "basis": "x"},
          {"severity": "critical", "trigger": 200, "clear": 190, "basis": "x"}], "keeps its grade"),
        # A step without an episode is 0: it must clear every level.
        ([{"severity": "warning", "trigger": 100, "clear": -1, "basis": "x"}], "at least 0"),
    ],
)  # fmt: skip
def test_levels_grade_the_whole_episode(levels: list[dict[str, Any]], message: str) -> None:
    definition = {**_definition(), "ladders": [{"standard": "x", "levels": levels}]}
    with pytest.raises(ValidationError, match=message):
        RuleDefinition.model_validate(definition)
