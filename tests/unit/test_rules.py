"""Rule evaluation without a database: hysteresis, `for`, escalation, late data, retraction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.rules import (
    Alert,
    Point,
    Track,
    breaches,
    promote_due,
    reassess_trigger,
    replay,
    severity_for,
)
from alerts.standards import air_limit
from core.timeutil import CST
from schemas.rules import Level, RuleDefinition, RuleSet, Severity, load_rules

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 20, 8, tzinfo=CST)
NOW = datetime(2026, 11, 20, 12, tzinfo=CST)
LADDER = (
    Level(severity="warning", trigger=200, clear=180, basis="test"),
    Level(severity="critical", trigger=400, clear=360, basis="test"),
)
DO_LADDER = (
    Level(severity="warning", trigger=3, clear=3.5, basis="test"),
    Level(severity="critical", trigger=2, clear=2.5, basis="test"),
)


def _points(
    values: Sequence[float | None], *, step_s: int = 3600, levels: Any = LADDER
) -> list[Point]:
    return [
        Point(T0 + timedelta(seconds=i * step_s), value, levels) for i, value in enumerate(values)
    ]


def _events(tracks: Sequence[Track]) -> list[tuple[int, str, str, str]]:
    """(track index, event kind, state after, severity) in order."""
    return [
        (index, event.kind, event.state, event.severity)
        for index, track in enumerate(tracks)
        for event in track.events
    ]


@pytest.mark.parametrize(
    ("value", "current", "expected"),
    [
        (200.0, None, None),  # at the limit is not over it
        (200.5, None, "warning"),
        (400.5, None, "critical"),
        (190.0, "warning", "warning"),  # above warning's clear: held
        (180.0, "warning", None),  # at clear: cleared
        (380.0, "critical", "critical"),  # above critical's clear
        (350.0, "critical", "warning"),  # critical cleared, warning still held
        (170.0, "critical", None),
        (450.0, "warning", "critical"),  # escalation needs the trigger
        (390.0, "warning", "warning"),  # warning never climbs to critical below its trigger
    ],
)
def test_severity_for_above(value: float, current: Severity | None, expected: str | None) -> None:
    assert severity_for(value, LADDER, "above", current) == expected


@pytest.mark.parametrize(
    ("value", "current", "expected"),
    [
        (3.0, None, None),
        (2.9, None, "warning"),
        (1.9, None, "critical"),
        (3.4, "warning", "warning"),
        (3.5, "warning", None),
        (2.4, "critical", "critical"),
        (2.6, "critical", "warning"),
    ],
)
def test_severity_for_below(value: float, current: Severity | None, expected: str | None) -> None:
    assert severity_for(value, DO_LADDER, "below", current) == expected


def test_hysteresis_value_oscillating_around_the_trigger_fires_once() -> None:
    values = [205, 195, 205, 195, 205, 195, 205]
    tracks = replay(None, _points(values), direction="above", for_s=0, now=NOW)
    assert _events(tracks) == [(0, "firing", "firing", "warning")]
    alert = tracks[0].alert
    assert (alert.state, alert.trigger_time, alert.last_point_at) == (
        "firing",
        T0,
        T0 + timedelta(hours=6),
    )
    assert alert.details["peak"] == 205


def test_without_hysteresis_the_same_values_flap() -> None:
    flat = (Level(severity="warning", trigger=200, clear=200, basis="test"),)
    values = [205, 195, 205, 195]
    tracks = replay(None, _points(values, levels=flat), direction="above", for_s=0, now=NOW)
    assert _events(tracks) == [
        (0, "firing", "firing", "warning"),
        (0, "resolved", "resolved", "warning"),
        (1, "firing", "firing", "warning"),
        (1, "resolved", "resolved", "warning"),
    ]


def test_clearing_then_breaching_again_opens_a_new_alert() -> None:
    tracks = replay(None, _points([250, 170, 250]), direction="above", for_s=0, now=NOW)
    assert _events(tracks) == [
        (0, "firing", "firing", "warning"),
        (0, "resolved", "resolved", "warning"),
        (1, "firing", "firing", "warning"),
    ]
    assert tracks[0].alert.clear_point_at == T0 + timedelta(hours=1)
    assert tracks[1].alert.trigger_time == T0 + timedelta(hours=2)


def test_escalation_and_deescalation_stay_on_one_alert() -> None:
    tracks = replay(None, _points([250, 450, 380, 350, 170]), direction="above", for_s=0, now=NOW)
    assert _events(tracks) == [
        (0, "firing", "firing", "warning"),
        (0, "escalated", "firing", "critical"),
        (0, "deescalated", "firing", "warning"),
        (0, "resolved", "resolved", "warning"),
    ]
    assert tracks[0].alert.details["peak"] == 450


def test_below_direction_dissolved_oxygen() -> None:
    tracks = replay(
        None,
        _points([4.0, 2.9, 1.8, 2.6, 3.6], levels=DO_LADDER),
        direction="below",
        for_s=0,
        now=NOW,
    )
    assert _events(tracks) == [
        (0, "firing", "firing", "warning"),
        (0, "escalated", "firing", "critical"),
        (0, "deescalated", "firing", "warning"),
        (0, "resolved", "resolved", "warning"),
    ]
    assert tracks[0].alert.details["peak"] == 1.8


def test_for_duration_keeps_the_alert_pending_until_the_condition_has_held() -> None:
    points = _points([210, 220, 230], step_s=300)
    tracks = replay(None, points, direction="above", for_s=600, now=NOW)
    assert _events(tracks) == [
        (0, "pending", "pending", "warning"),
        (0, "firing", "firing", "warning"),
    ]
    assert tracks[0].alert.pending_since == T0
    assert tracks[0].alert.fired_at == NOW


def test_pending_that_clears_is_cancelled_not_fired() -> None:
    tracks = replay(None, _points([210, 150], step_s=300), direction="above", for_s=600, now=NOW)
    assert _events(tracks) == [
        (0, "pending", "pending", "warning"),
        (0, "cancelled", "resolved", "warning"),
    ]
    assert tracks[0].alert.fired_at is None


def test_pending_escalates_silently_and_fires_at_the_higher_severity() -> None:
    tracks = replay(
        None, _points([210, 450, 460], step_s=300), direction="above", for_s=600, now=NOW
    )
    assert _events(tracks) == [
        (0, "pending", "pending", "warning"),
        (0, "firing", "firing", "critical"),
    ]


def test_an_hourly_statistic_covers_its_hour_toward_the_for_duration() -> None:
    points = [Point(T0, 250.0, LADDER, span_s=3600, period_s=3600)]
    tracks = replay(None, points, direction="above", for_s=3600, now=NOW)
    assert _events(tracks) == [(0, "firing", "firing", "warning")]


def test_insufficient_data_neither_fires_nor_clears() -> None:
    tracks = replay(
        None, _points([None, 250, None, None, 170]), direction="above", for_s=0, now=NOW
    )
    assert _events(tracks) == [
        (0, "firing", "firing", "warning"),
        (0, "resolved", "resolved", "warning"),
    ]
    assert tracks[0].alert.clear_point_at == T0 + timedelta(hours=4)


def test_points_without_a_ladder_are_skipped() -> None:
    assert replay(None, _points([900], levels=()), direction="above", for_s=0, now=NOW) == []


def _firing(trigger: datetime, last: datetime, **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": 7,
        "state": "firing",
        "severity": "warning",
        "value": 250.0,
        "opened_at": NOW,
        "pending_since": trigger,
        "trigger_time": trigger,
        "trigger_period_s": 0,
        "last_point_at": last,
        "fired_at": NOW,
        "details": {"peak": 250.0},
    }
    fields.update(changes)
    return Alert(**fields)


def test_late_data_inside_an_open_episode_neither_splits_nor_ends_it() -> None:
    alert = _firing(T0, T0 + timedelta(hours=3))
    late = [
        Point(T0 + timedelta(hours=1), 100.0, LADDER),
        Point(T0 + timedelta(hours=3), 260.0, LADDER),
    ]
    tracks = replay(alert, late, direction="above", for_s=0, now=NOW)
    assert _events(tracks) == []
    assert tracks[0].alert.state == "firing"
    assert tracks[0].alert.value == 260.0


def test_a_revision_of_the_latest_point_can_resolve_the_open_alert() -> None:
    alert = _firing(T0, T0 + timedelta(hours=3))
    tracks = replay(
        alert, [Point(T0 + timedelta(hours=3), 150.0, LADDER)], direction="above", for_s=0, now=NOW
    )
    assert _events(tracks) == [(0, "resolved", "resolved", "warning")]


def test_late_data_inside_a_resolved_episode_opens_nothing() -> None:
    covered = [(T0, T0 + timedelta(hours=2))]
    late = [Point(T0 + timedelta(minutes=30), 300.0, LADDER)]
    assert replay(None, late, direction="above", for_s=0, now=NOW, covered=covered) == []


def test_late_data_that_turns_a_resolved_alert_back_opens_a_new_alert() -> None:
    covered = [(T0, T0 + timedelta(hours=2))]
    revised_clear_point = [Point(T0 + timedelta(hours=2), 300.0, LADDER)]
    tracks = replay(None, revised_clear_point, direction="above", for_s=0, now=NOW, covered=covered)
    assert _events(tracks) == [(0, "firing", "firing", "warning")]
    assert tracks[0].is_new
    assert tracks[0].alert.trigger_time == T0 + timedelta(hours=2)


def test_late_data_for_a_past_window_fires_and_resolves_on_the_later_data() -> None:
    points = _points([300, 100, 100])
    tracks = replay(None, points, direction="above", for_s=0, now=NOW)
    assert _events(tracks) == [
        (0, "firing", "firing", "warning"),
        (0, "resolved", "resolved", "warning"),
    ]
    assert tracks[0].alert.trigger_time == T0


def test_an_isolated_outlier_reflagged_suspect_retracts_the_alert() -> None:
    alert = _firing(T0, T0)
    # The suspect reading no longer feeds statistics: its point is gone; the next is normal.
    points = [Point(T0 + timedelta(hours=1), 120.0, LADDER)]
    track = reassess_trigger(alert, points, direction="above", now=NOW)
    assert track is not None
    assert (track.alert.state, track.alert.retracted_at) == ("retracted", NOW)
    assert [(e.kind, e.state) for e in track.events] == [("retracted", "retracted")]


def test_a_resolved_alert_raised_by_an_outlier_is_retracted_too() -> None:
    alert = _firing(
        T0, T0 + timedelta(hours=1), state="resolved", clear_point_at=T0 + timedelta(hours=1)
    )
    track = reassess_trigger(
        alert, [Point(T0 + timedelta(hours=1), 120.0, LADDER)], direction="above", now=NOW
    )
    assert track is not None and track.alert.state == "retracted"


def test_a_sustained_change_is_not_retracted_when_its_first_point_goes() -> None:
    alert = _firing(T0, T0 + timedelta(hours=2))
    points = [Point(T0 + timedelta(hours=h), 260.0, LADDER) for h in (1, 2)]
    track = reassess_trigger(alert, points, direction="above", now=NOW)
    assert track is not None
    assert track.alert.state == "firing"
    assert track.alert.trigger_time == T0 + timedelta(hours=1)
    assert track.events == []


def test_an_alert_whose_trigger_still_holds_is_left_alone() -> None:
    alert = _firing(T0, T0)
    assert reassess_trigger(alert, [Point(T0, 250.0, LADDER)], direction="above", now=NOW) is None


@pytest.mark.parametrize(
    ("elapsed_s", "fires"), [(0, False), (599, False), (600, True), (3600, True)]
)
def test_promote_due_after_the_for_duration(elapsed_s: int, fires: bool) -> None:
    pending = _firing(T0, T0, state="pending", fired_at=None)
    track = promote_due(pending, for_s=600, now=T0 + timedelta(seconds=elapsed_s))
    if not fires:
        assert track is None
        return
    assert track is not None
    assert (track.alert.state, track.alert.fired_at) == (
        "firing",
        T0 + timedelta(seconds=elapsed_s),
    )
    assert [(e.kind, e.state) for e in track.events] == [("firing", "firing")]
    assert pending.state == "pending"  # the input is not mutated


def test_promote_due_ignores_firing_alerts() -> None:
    assert promote_due(_firing(T0, T0), for_s=0, now=NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), (200.0, False), (200.01, True), (1000.0, True)]
)
def test_breaches(value: float | None, expected: bool) -> None:
    assert breaches(value, LADDER, "above") is expected


def _rule(**changes: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "no2_test",
        "name": {"en": "NO2", "zh": "二氧化氮"},
        "kind": "threshold",
        "parameter": "no2",
        "unit": "ug/m3",
        "statistic": "mean_1h",
        "ladders": [
            {
                "standard": "GB 3095-2012",
                "applies_until": "2026-03-01",
                "levels": [{"severity": "warning", "trigger": 200, "clear": 180, "basis": "x"}],
            },
            {
                "standard": "GB 3095-2026",
                "applies_from": "2026-03-01",
                "levels": [{"severity": "warning", "trigger": 150, "clear": 140, "basis": "y"}],
            },
        ],
    }
    rule.update(changes)
    return rule


@pytest.mark.parametrize(
    ("day", "standard"),
    [
        (date(2026, 2, 28), "GB 3095-2012"),
        (date(2026, 3, 1), "GB 3095-2026"),
        (date(2040, 1, 1), "GB 3095-2026"),
    ],
)
def test_ladder_follows_the_observation_date(day: date, standard: str) -> None:
    ladder = RuleDefinition.model_validate(_rule()).ladder_for(day)
    assert ladder is not None and ladder.standard == standard


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"statistic": "water_sample"}, "needs a statistic among"),
        ({"parameter": None}, "needs parameter"),
        ({"unit": None}, "give the unit"),
        ({"kind": "aqi"}, "takes no parameter"),
        ({"ladders": []}, "at least one ladder"),
        (
            {
                "ladders": [
                    {
                        "standard": "s",
                        "levels": [
                            {"severity": "warning", "trigger": 200, "clear": 210, "basis": "x"}
                        ],
                    }
                ]
            },
            "must be at or below its trigger",
        ),
        (
            {
                "ladders": [
                    {
                        "standard": "s",
                        "levels": [
                            {"severity": "critical", "trigger": 400, "clear": 300, "basis": "x"},
                            {"severity": "warning", "trigger": 200, "clear": 180, "basis": "x"},
                        ],
                    }
                ]
            },
            "levels must rise in severity",
        ),
        (
            {
                "ladders": [
                    {
                        "standard": "s",
                        "levels": [
                            {"severity": "warning", "trigger": 400, "clear": 300, "basis": "x"},
                            {"severity": "critical", "trigger": 200, "clear": 180, "basis": "x"},
                        ],
                    }
                ]
            },
            "critical trigger must be beyond",
        ),
        (
            {
                "ladders": [
                    {
                        "standard": "a",
                        "levels": [{"severity": "warning", "trigger": 2, "clear": 1, "basis": "x"}],
                    },
                    {
                        "standard": "b",
                        "applies_from": "2026-03-01",
                        "levels": [{"severity": "warning", "trigger": 2, "clear": 1, "basis": "x"}],
                    },
                ]
            },
            "two ladders apply to the same dates",
        ),
        ({"scope": {"city_wide": True}}, "only aqi rules can be city_wide"),
        ({"rate": {"window_s": 3600, "direction": "rise"}}, "`rate` goes with kind rate_of_change"),
        ({"qc": "suspect"}, "Input should be 'valid'"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_rule_definition_refuses_inconsistent_rules(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RuleDefinition.model_validate(_rule(**changes))


def test_rule_set_refuses_repeated_ids_and_unknown_propagation_sources() -> None:
    with pytest.raises(ValidationError, match="rule ids appear more than once: no2_test"):
        RuleSet.model_validate({"rules": [_rule(), _rule()]})
    propagation = {
        "id": "prop",
        "name": {"en": "p", "zh": "p"},
        "kind": "propagation",
        "propagation": {
            "from_rules": ["nope"],
            "pre_alert_severity": {"warning": "advisory"},
            "basis": "x",
        },
    }
    with pytest.raises(ValidationError, match="propagates unknown rules nope"):
        RuleSet.model_validate({"rules": [_rule(), propagation]})


def test_catalogue_problems_name_unknown_codes_and_wrong_units() -> None:
    rule = RuleDefinition.model_validate(
        _rule(unit="mg/m3", scope={"stations": ["zz", "gz-a-huangpu"]})
    )
    problems = rule.catalogue_problems(parameter_units={"no2": "ug/m3"}, stations={"gz-a-huangpu"})
    assert problems == [
        "rule no2_test: no2 thresholds must be in its canonical unit 'ug/m3', not 'mg/m3'",
        "rule no2_test: unknown stations zz",
    ]


_AVERAGING = {"mean_1h": "1h", "day_mean": "24h", "o3_max_8h": "8h"}


def test_every_gb3095_warning_threshold_in_the_joint_rules_is_the_limit_of_its_edition() -> None:
    rules = load_rules(ROOT / "config" / "thresholds.yaml").rules
    checked = 0
    for rule in rules:
        if rule.kind != "threshold" or rule.statistic not in _AVERAGING:
            continue
        assert rule.parameter is not None
        for ladder in rule.ladders:
            assert ladder.standard.startswith("GB 3095-")
            days = [d for d in (ladder.applies_from, ladder.applies_until) if d is not None]
            # Check the first and the last day each ladder covers.
            probes = [ladder.applies_from or date(2020, 1, 1)]
            if ladder.applies_until is not None:
                probes.append(ladder.applies_until - timedelta(days=1))
            assert days, f"{rule.id}: an edition ladder must say when it applies"
            for day in probes:
                limit = air_limit(rule.parameter, _AVERAGING[rule.statistic], day)
                warning = ladder.levels[0]
                assert (warning.severity, warning.trigger) == ("warning", limit), (rule.id, day)
                edition = ladder.standard.split(" (")[0]
                assert "Grade II" in warning.basis and edition in warning.basis
                checked += 1
    assert checked == 37


def test_every_level_of_the_joint_rules_cites_its_basis() -> None:
    rules = load_rules(ROOT / "config" / "thresholds.yaml").rules
    assert len(rules) == 19
    for rule in rules:
        for ladder in rule.ladders:
            for level in ladder.levels:
                cited = ("GB 3095-", "GB 3838-2002", "GB 3097-1997", "HJ 633-", "Joint agreement")
                assert any(name in level.basis for name in cited), (rule.id, level.basis)


def test_a_corrected_value_does_not_retract_replay_judges_it() -> None:
    alert = _firing(T0, T0)
    corrected = [Point(T0, 150.0, LADDER)]
    assert reassess_trigger(alert, corrected, direction="above", now=NOW) is None
    tracks = replay(alert, corrected, direction="above", for_s=0, now=NOW)
    assert _events(tracks) == [(0, "resolved", "resolved", "warning")]
