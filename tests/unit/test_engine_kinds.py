"""The engine's planning and its pure point builders, one per rule kind, without a database.

A small catalogue (two Guangzhou air stations, one of them a background site, one Dongguan air
station, two water stations on the river) and data written by hand stand in for the fetch.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from alerts.engine.catalogue import ActiveRule, Catalogue
from alerts.engine.jobs import Job, Written
from alerts.engine.kinds import PROPAGATION, SERIES_KINDS, STALENESS, Data, Need
from alerts.engine.plan import LOOKBACK, Touched, plan
from alerts.rules import Alert, Event, Track
from core.timeutil import CST
from schemas.alerts import AlertEventKind, AlertState
from schemas.rules import RuleDefinition, Severity
from store.alerts import RawPoint, SeriesSilence
from store.catalogue import (
    AgencyRow,
    CatalogueSnapshot,
    ParameterRef,
    ReachRef,
    SeriesRef,
    StationRef,
)

T0 = datetime(2026, 11, 20, 8, tzinfo=CST)
NOW = datetime(2026, 11, 20, 12, tzinfo=CST)
HOUR = timedelta(hours=1)
PARAMETERS = {
    "so2": 1, "no2": 2, "co": 3, "o3": 4, "pm10": 5, "pm25": 6, "do": 10, "nh3n": 11, "tp": 12,
    "codmn": 13, "conductivity": 14, "water_temp": 15, "phenol": 16,
}  # fmt: skip
AIR = ("so2", "no2", "co", "o3", "pm10", "pm25")
# Water items: hourly DO and conductivity, 4-hourly nutrients, a monthly lab item.
WATER = {"do": 3600, "conductivity": 3600, "water_temp": 3600, "nh3n": 14400, "tp": 14400,
         "codmn": 14400, "phenol": 2592000}  # fmt: skip


def _station(station_id: int, code: str, city: str, medium: str, agency: int) -> dict[str, Any]:
    return {
        "id": station_id, "code": code, "name": code, "name_zh": code, "city": city,
        "area": "dongjiang", "medium": medium, "agency_id": agency, "agency": f"agency{agency}",
        "lat": 23.0, "lon": 113.5, "hj212_mn": None, "hj212_password": None, "hj212_crc": "hj212",
        "background": None, "reach_code": None, "river_km": None, "water_standard": None,
        "water_body": None, "target_class": None, "approximate": True,
    }  # fmt: skip


def _air(station_id: int, code: str, city: str, background: bool) -> StationRef:
    return StationRef(**{**_station(station_id, code, city, "air", 1), "background": background})


def _water(station_id: int, code: str, reach: str, km: float, agency: int) -> StationRef:
    water = {"reach_code": reach, "river_km": km, "water_standard": "gb3838",
             "water_body": "river", "target_class": 2}  # fmt: skip
    return StationRef(**{**_station(station_id, code, "guangzhou", "water", agency), **water})


STATIONS = [
    _air(1, "gz-a-huangpu", "guangzhou", False),
    _air(2, "gz-a-maofengshan", "guangzhou", True),
    _air(3, "dg-a-shilong", "dongguan", False),
    _water(4, "gz-w-upstream", "main", 2.0, 1),
    _water(5, "gz-w-downstream", "main", 20.0, 2),
]
SERIES = [
    *(SeriesRef(s, PARAMETERS[c], c, "air", "ug/m3", 3600) for s in (1, 2, 3) for c in AIR),
    *(SeriesRef(s, PARAMETERS[c], c, "water", "mg/L", i) for s in (4, 5) for c, i in WATER.items()),
]
SNAPSHOT = CatalogueSnapshot.of(
    STATIONS,
    [
        ParameterRef(pid, code, "air" if code in AIR else "water", "x", None, None, 0, 1e6)
        for code, pid in PARAMETERS.items()
    ],
    SERIES,
    [ReachRef("main", (), 50.0, 0.5, False, None)],
    [AgencyRow(a, f"agency{a}", f"Agency {a}", f"Agency {a}", None) for a in (1, 2, 3)],
)


def _rule(rule_id: str, **fields: Any) -> ActiveRule:
    definition: dict[str, Any] = {
        "id": rule_id,
        "name": {"en": rule_id, "zh": rule_id},
        "kind": "threshold",
        "parameter": "no2",
        "unit": "ug/m3",
        "statistic": "instant",
        "ladders": [
            {
                "standard": "test",
                "levels": [
                    {"severity": "warning", "trigger": 200, "clear": 180, "basis": "test"},
                    {"severity": "critical", "trigger": 400, "clear": 360, "basis": "test"},
                ],
            }
        ],
    }
    definition.update(fields)
    return ActiveRule(rule_id, 1, RuleDefinition.model_validate(definition))


CLASS_LADDER = [
    {
        "standard": "GB 3838-2002",
        "levels": [
            {"severity": "advisory", "trigger": 0, "clear": 0, "basis": "one class worse"},
            {"severity": "warning", "trigger": 1, "clear": 1, "basis": "two classes worse"},
        ],
    }
]
RULES = {
    "no2": _rule("no2"),
    "no2_8h": _rule("no2_8h", statistic="mean_8h"),
    "aqi_city": _rule(
        "aqi_city",
        kind="aqi",
        parameter=None,
        unit=None,
        statistic="mean_1h",
        scope={"medium": "air", "city_wide": True},
        ladders=[
            {
                "standard": "HJ 633-2026",
                "levels": [{"severity": "warning", "trigger": 150, "clear": 140, "basis": "IV"}],
            }
        ],
    ),
    "water_day": _rule(
        "water_day",
        kind="water_class",
        parameter=None,
        unit=None,
        statistic="water_day",
        scope={"medium": "water"},
        ladders=CLASS_LADDER,
    ),
    "silent": _rule(
        "silent",
        kind="staleness",
        parameter=None,
        unit=None,
        statistic=None,
        staleness={"max_interval_s": 86400},
        ladders=[
            {
                "standard": "test",
                "levels": [{"severity": "warning", "trigger": 2, "clear": 1.5, "basis": "test"}],
            }
        ],
    ),
}


def _catalogue(*rules: ActiveRule) -> Catalogue:
    return Catalogue(SNAPSHOT, {rule.id: rule for rule in rules})


@pytest.mark.parametrize(
    ("touched", "jobs"),
    [
        # NO2 at Huangpu wakes the station rules and its city's AQI (first and last floored to
        # the rule's period: the reading itself, or its hour).
        (
            [Touched(1, 2, [T0 + timedelta(minutes=20), T0 + timedelta(minutes=80)])],
            {
                ("no2", 1, None): (T0 + timedelta(minutes=20), T0 + timedelta(minutes=80), [1]),
                ("no2_8h", 1, None): (T0, T0 + HOUR, [1]),
                ("aqi_city", None, "guangzhou"): (T0, T0 + HOUR, [1]),
            },
        ),
        # The background site has station rules, but never speaks for its city.
        (
            [Touched(2, 6, [T0])],
            {},
        ),
        (
            [Touched(2, 2, [T0])],
            {("no2", 2, None): (T0, T0, [2]), ("no2_8h", 2, None): (T0, T0, [2])},
        ),
        # Water: the class items wake the daily class, from the touched natural day on.
        (
            [Touched(4, 11, [T0]), Touched(4, 15, [T0])],
            {("water_day", 4, None): (T0.replace(hour=0), T0.replace(hour=0), [4])},
        ),
        # Data older than LOOKBACK wakes nothing; a series not in the catalogue neither.
        ([Touched(1, 2, [NOW - LOOKBACK - HOUR])], {}),
        ([Touched(9, 2, [T0])], {}),
    ],
)
def test_plan_wakes_the_rules_that_watch_a_touched_series(
    touched: list[Touched], jobs: dict[tuple[Any, ...], tuple[datetime, datetime, list[int]]]
) -> None:
    found = plan(_catalogue(*RULES.values()), touched, NOW)
    assert {s: (j.first, j.last, j.stations) for s, j in found.items()} == jobs
    assert all(job.start == job.first for job in found.values())


def test_a_city_wide_job_is_judged_on_the_citys_stations_in_scope() -> None:
    found = plan(_catalogue(RULES["aqi_city"]), [Touched(3, 6, [T0]), Touched(1, 6, [T0])], NOW)
    assert {s: j.stations for s, j in found.items()} == {
        ("aqi_city", None, "dongguan"): [3],
        ("aqi_city", None, "guangzhou"): [1],
    }


def _job(
    rule: ActiveRule, station: int | None, *, since: datetime = T0, city: str | None = None
) -> tuple[Job, CatalogueSnapshot]:
    """A job of one rule at a station (or city) from `since`, and the catalogue."""
    catalogue = SNAPSHOT
    kind = SERIES_KINDS[rule.definition.kind]
    job = Job(rule, kind, (rule.id, station, city), since, since, since)
    job.stations = [station] if station is not None else [1]
    job.reach = kind.reach(job, catalogue)
    return job, catalogue


def _hourly(*values: float | None, first: datetime = T0) -> dict[datetime, float]:
    return {first + i * HOUR: v for i, v in enumerate(values) if v is not None}


@pytest.mark.parametrize(
    ("statistic", "data", "since", "points", "need"),
    [
        (
            "instant",
            Data(raw={(1, 2): [RawPoint(1, 2, T0 + i * HOUR, 0, 100.0 * i) for i in range(3)]}),
            T0 + HOUR,
            [(T0 + HOUR, 100.0, 0), (T0 + 2 * HOUR, 200.0, 0)],
            Need("raw", 1, 2, T0 + HOUR),
        ),
        (
            "mean_1h",
            Data(hourly={(1, 2): _hourly(150.0, 210.0, 190.0)}),
            T0 + timedelta(minutes=90),
            [(T0 + HOUR, 210.0, 3600), (T0 + 2 * HOUR, 190.0, 3600)],
            Need("hourly", 1, 2, T0 + HOUR),
        ),
        # 8-hour moving means need 6 valid hours of the 8: the first mean ends at hour 5.
        (
            "mean_8h",
            Data(hourly={(1, 2): _hourly(*[120.0] * 5 + [240.0] * 3, first=T0 - 7 * HOUR)}),
            T0 - 3 * HOUR,
            [(T0 - 2 * HOUR, 140.0, 3600), (T0 - HOUR, 1080 / 7, 3600), (T0, 165.0, 3600)],
            Need("hourly", 1, 2, T0 - 10 * HOUR),
        ),
        (
            "o3_max_8h",
            Data(hourly={(1, 4): _hourly(*[100.0] * 12 + [300.0] * 8, first=T0 - 8 * HOUR)}),
            T0,
            [(T0 - 8 * HOUR, 300.0, 86400)],
            Need("hourly", 1, 4, T0 - 8 * HOUR),
        ),
        (
            "day_mean",
            Data(daily={(1, 2): {date(2026, 11, 19): 90.0, date(2026, 11, 20): 210.0}}),
            T0,
            [(T0 - 8 * HOUR, 210.0, 86400)],
            Need("daily", 1, 2, T0),
        ),
    ],
)
def test_threshold_points_of_each_statistic(
    statistic: str,
    data: Data,
    since: datetime,
    points: list[tuple[datetime, float, int]],
    need: Need,
) -> None:
    parameter = "o3" if statistic == "o3_max_8h" else "no2"
    rule = _rule(statistic, statistic=statistic, parameter=parameter)
    job, catalogue = _job(rule, 1, since=since)
    found = job.kind.points(job, catalogue, data)
    assert [(p.time, p.value, p.span_s) for p in found] == points
    assert list(job.kind.needs(job, catalogue)) == [need]
    assert {p.details["standard"] for p in found} <= {"test"}


def test_rate_points_measure_the_fall_from_the_highest_value_of_the_window() -> None:
    rule = _rule(
        "do_drop",
        kind="rate_of_change",
        parameter="do",
        unit="mg/L",
        rate={"window_s": 10800, "direction": "fall"},
    )
    values = [7.0, 6.8, 5.9, 4.7, 4.6]
    data = Data(raw={(4, 10): [RawPoint(4, 10, T0 + i * HOUR, 0, v) for i, v in enumerate(values)]})
    job, catalogue = _job(rule, 4, since=T0 + 3 * HOUR)
    found = job.kind.points(job, catalogue, data)
    assert [(p.time, round(p.value or 0, 3)) for p in found] == [
        (T0 + 3 * HOUR, 2.3),
        (T0 + 4 * HOUR, 2.2),
    ]
    assert list(job.kind.needs(job, catalogue)) == [Need("raw", 4, 10, T0)]


def test_city_aqi_points_average_the_concentrations_then_index() -> None:
    data = Data(
        hourly={
            (1, 6): _hourly(100.0, 130.0),
            (3, 6): _hourly(500.0),  # Dongguan: not this city's
        }
    )
    job, catalogue = _job(RULES["aqi_city"], None, city="guangzhou")
    job.stations = [1, 2]  # the city's stations as planned; 2 has no data here
    found = job.kind.points(job, catalogue, data)
    # PM2.5 100 -> IAQI 137, 130 -> 172 (HJ 633-2026); the other pollutants are missing, and
    # 2026 publishes an incomplete AQI above 100.
    assert [(p.time, p.value) for p in found] == [(T0, 137.0), (T0 + HOUR, 172.0)]
    assert found[1].details["primary_pollutants"] == ["pm25"]
    assert found[1].details["stations"] == 2
    assert found[1].details["aqi_edition"] == "HJ 633-2026"


def test_daily_aqi_points_take_the_day_means_and_the_o3_daily_maximum() -> None:
    rule = _rule(
        "aqi_day",
        kind="aqi",
        parameter=None,
        unit=None,
        statistic="day_mean",
        ladders=RULES["aqi_city"].definition.model_dump()["ladders"],
    )
    day = T0.replace(hour=0)
    o3 = [150.0 if 12 <= h < 20 else 60.0 for h in range(24)]
    data = Data(
        daily={(1, 6): {date(2026, 11, 20): 80.0, date(2026, 11, 21): 30.0}},
        hourly={(1, 4): _hourly(*o3, first=day)},
    )
    job, catalogue = _job(rule, 1)
    found = job.kind.points(job, catalogue, data)
    # 20 November: PM2.5 80 -> IAQI 119, O3 daily max 8-hour 150 -> 92 (HJ 633-2026). 21
    # November: PM2.5 30 alone -> 43, not published without the other pollutants.
    assert [(p.time, p.value, p.details["sub_indices"].get("o3_8h_max")) for p in found] == [
        (day, 119.0, 92),
        (day + timedelta(days=1), None, None),
    ]
    assert list(job.kind.needs(job, catalogue)) == [
        *(Need("daily", 1, PARAMETERS[c], T0) for c in ("so2", "no2", "co", "o3")),
        Need("hourly", 1, PARAMETERS["o3"], day),
        *(Need("daily", 1, PARAMETERS[c], T0) for c in ("pm10", "pm25")),
    ]


def test_water_day_points_class_the_days_means_against_the_target() -> None:
    data = Data(
        daily={
            (4, 11): {date(2026, 11, 20): 0.75, date(2026, 11, 21): 0.4},
            (4, 10): {date(2026, 11, 20): 6.5, date(2026, 11, 21): 4.5},
            (4, 14): {date(2026, 11, 20): 900.0},  # conductivity: not a class item
        }
    )
    job, catalogue = _job(RULES["water_day"], 4)
    found = job.kind.points(job, catalogue, data)
    day = T0.replace(hour=0)
    assert [(p.time, p.value, p.details["class"]) for p in found] == [
        (day, 1.0, "III"),
        (day + timedelta(days=1), 2.0, "IV"),
    ]
    assert found[0].details["limiting"] == [
        {"item": "nh3n", "class": 3, "value": 0.75, "exceedance": 0.5}
    ]


def test_water_sample_points_take_what_stands_in_each_hour_with_data() -> None:
    rule = _rule(
        "water_sample",
        kind="water_class",
        parameter=None,
        unit=None,
        statistic="water_sample",
        ladders=CLASS_LADDER,
    )
    # NH3-N (4-hourly) at 08:00 only (class III); DO hourly (class II), none at 10:00; the
    # monthly volatile phenol of last week (class III) still stands.
    data = Data(
        hourly={
            (4, 11): {T0: 0.75},
            (4, 10): _hourly(6.2, 6.6, None, 6.7, 6.8),
            (4, 16): {T0 - timedelta(days=7): 0.004},
        }
    )
    job, catalogue = _job(rule, 4)
    found = job.kind.points(job, catalogue, data)
    # A point per hour with data; NH3-N stands at 08:00-11:00 and is missing at 12:00.
    assert [
        (p.time, p.value, p.details["class"], [i["item"] for i in p.details["limiting"]])
        for p in found
    ] == [
        (T0, 1.0, "III", ["phenol", "nh3n"]),
        (T0 + HOUR, 1.0, "III", ["phenol", "nh3n"]),
        (T0 + 3 * HOUR, 1.0, "III", ["phenol", "nh3n"]),
        (T0 + 4 * HOUR, 1.0, "III", ["phenol"]),
    ]
    assert {p.span_s for p in found} == {3600}
    assert job.reach == timedelta(hours=720)  # the monthly phenol's interval
    needs = {(n.parameter_id, n.since) for n in job.kind.needs(job, catalogue)}
    assert (10, T0) in needs  # DO: its own hour
    assert (11, T0 - 3 * HOUR) in needs  # NH3-N: up to three hours before
    assert (16, T0 - 719 * HOUR) in needs  # phenol: up to a month before
    assert {n.source for n in job.kind.needs(job, catalogue)} == {"hourly"}


def test_staleness_points_measure_silence_in_reporting_intervals() -> None:
    rule = RULES["silent"].definition
    silences = [
        SeriesSilence(4, 10, 3600, NOW - 3 * HOUR),  # DO: 3 intervals
        SeriesSilence(4, 11, 14400, NOW - 3 * HOUR),  # NH3-N: 0.75 of one
        SeriesSilence(5, 10, 3600, NOW - HOUR),
        SeriesSilence(1, 2, 3600, NOW + HOUR),  # ahead of the clock: not silent
    ]
    points = STALENESS.points(rule, SNAPSHOT, silences, NOW, skip={5})
    assert {s: p.value for s, p in points.items()} == {
        ("silent", 4, None): 3.0,
        ("silent", 1, None): 0.0,
    }
    assert [s["parameter"] for s in points[("silent", 4, None)].details["silent"]] == ["do"]


def _written(
    alert_id: int, state: AlertState, severity: Severity, events: list[AlertEventKind]
) -> Written:
    """A source rule's track as a round wrote it."""
    alert = Alert(
        id=alert_id,
        state=state,
        severity=severity,
        value=1.7,
        opened_at=T0,
        pending_since=T0,
        trigger_time=T0,
        trigger_period_s=0,
        last_point_at=T0,
    )
    track = Track(alert, [Event(e, state, severity, 1.7) for e in events], is_new=False)
    return Written(
        track, _rule("nh3n_high", parameter="nh3n", unit="mg/L"), ("nh3n_high", 4, None), 11
    )


def test_propagation_pre_alerts_downstream_and_ends_with_its_source() -> None:
    rule = _rule(
        "river",
        kind="propagation",
        parameter=None,
        unit=None,
        statistic=None,
        ladders=[],
        propagation={
            "from_rules": ["nh3n_high"],
            "min_severity": "warning",
            "pre_alert_severity": {"warning": "advisory", "critical": "warning"},
            "basis": "joint agreement",
        },
    ).definition
    catalogue = SNAPSHOT
    firing = _written(7, "firing", "warning", ["firing"])
    quiet = _written(8, "firing", "advisory", ["firing"])  # below min_severity
    wanted, ended = PROPAGATION.follows(
        rule, [firing, quiet, _written(9, "resolved", "warning", ["resolved"])]
    )
    assert [(w.track.alert.id, severity) for w, severity in wanted] == [(7, "advisory")]
    assert ended == {9: "resolved"}
    plans = PROPAGATION.arrivals(rule, catalogue, wanted)
    # 18 km downstream at 0.5 m/s: 36,000 s, addressed to the downstream station's agency.
    assert [(a.station.id, round(a.eta_s)) for _, _, a in plans] == [(5, 36000)]
    pre = PROPAGATION.raise_pre_alerts(rule, catalogue, plans, {}, NOW)
    assert [
        (s, p.addressed_to, p.source_alert_id, p.track.alert.severity) for s, p in pre.items()
    ] == [(("river", 5, None), [2], 7, "advisory")]
    assert pre[("river", 5, None)].track.alert.details["source_station"] == "gz-w-upstream"
    ending = PROPAGATION.end_pre_alert(pre[("river", 5, None)].track.alert, "resolved", 7, NOW)
    assert [(e.kind, e.state) for e in ending.events] == [("resolved", "resolved")]
