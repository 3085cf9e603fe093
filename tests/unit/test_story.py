"""The demo's story: the scenes' shapes at their boundaries, where they are placed, and that
they leave everything else as the everyday simulator makes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from envlink.demo import STORY_FILE, story_anchors
from ingest.sources.simulator import simulate
from ingest.sources.story import (
    BACKFILL_S,
    BACKFILL_STEP_S,
    SCENES,
    STORY_LEAD_S,
    STORY_PERIOD_S,
    Scene,
    Story,
    travel_s,
)
from store.catalogue import (
    AgencyRow,
    CatalogueSnapshot,
    ParameterRef,
    ReachRef,
    SeriesRef,
    StationRef,
)

ANCHOR = datetime(2026, 12, 4, 19, 6, tzinfo=UTC)
A = int(ANCHOR.timestamp())
PARAMETERS = {"o3": 1, "pm25": 2, "do": 3, "nh3n": 4, "tp": 5}


def _station(station_id: int, code: str, medium: str, **extra: Any) -> StationRef:
    fields: dict[str, Any] = {
        "id": station_id, "code": code, "name": code, "name_zh": code, "city": "guangzhou",
        "area": "dongjiang", "medium": medium, "agency_id": 1, "agency": "gz_eeb",
        "lat": 23.0, "lon": 113.5, "hj212_mn": None, "hj212_password": None, "hj212_crc": "hj212",
        "background": None, "reach_code": None, "river_km": None, "water_standard": None,
        "water_body": None, "target_class": None, "approximate": True,
    }  # fmt: skip
    return StationRef(**{**fields, **extra})


WATER = [("dg-w-zhongtang", 22.0), ("gz-w-xintang", 28.0), ("gz-w-dadun", 33.0)]
AIR = ["gz-a-huangpu", "gz-a-huangge", "gz-a-maofengshan", "gz-a-nansha"]
STATIONS = [
    *(
        _station(n, code, "water", reach_code="north_main", river_km=km)
        for n, (code, km) in enumerate(WATER, start=1)
    ),
    *(_station(n, code, "air") for n, code in enumerate(AIR, start=len(WATER) + 1)),
    _station(9, "gz-w-lianhuashan", "water", reach_code="shiziyang", river_km=9.0),
]
SERIES = [
    *(SeriesRef(s.id, PARAMETERS[c], c, "water", "mg/L", 3600) for s in STATIONS[:3]
      for c in ("do", "nh3n", "tp")),
    *(SeriesRef(s.id, PARAMETERS[c], c, "air", "ug/m3", 3600) for s in STATIONS[3:7]
      for c in ("o3", "pm25")),
]  # fmt: skip
CATALOGUE = CatalogueSnapshot.of(
    STATIONS,
    [
        ParameterRef(
            pid,
            code,
            "air" if code in ("o3", "pm25") else "water",
            "ug/m3" if code in ("o3", "pm25") else "mg/L",
            1,
            None,
            0.0,
            1e5,
        )
        for code, pid in PARAMETERS.items()
    ],
    SERIES,
    [
        ReachRef("north_main", ("shiziyang",), 42.0, 0.5, False, None),
        ReachRef("shiziyang", (), 30.0, 0.3, True, 0.5),
    ],
    [AgencyRow(1, "gz_eeb", "GZ", "GZ", "guangzhou")],
)
STORY = Story(ANCHOR)


def _value(code: str, parameter: str, at: int, base: float = 1.0) -> float:
    return float(STORY.apply(CATALOGUE, code, parameter, [at], [base])[0])


def test_the_plume_reaches_each_station_a_flow_time_later() -> None:
    # 6 km at 0.5 m/s, then 5 km more: the times the propagation rule computes.
    assert travel_s(CATALOGUE, "dg-w-zhongtang", "gz-w-xintang") == 12000
    assert travel_s(CATALOGUE, "gz-w-xintang", "gz-w-dadun") == 10000
    spans = {
        code: [(p.start_s, p.end_s, p.share) for p in placed if p.scene.kind == "plume"]
        for code, placed in STORY.placed(CATALOGUE).items()
    }
    # It reaches Xintang 4 minutes after the anchor; the source stops at +7 minutes.
    assert spans["dg-w-zhongtang"] == [(240 - 12000, 420, 1.0)]
    assert spans["gz-w-xintang"] == [(240, 420 + 12000, 0.8)]
    assert spans["gz-w-dadun"] == [(240 + 10000, 420 + 22000, 0.6)]
    with pytest.raises(ValueError, match="not on one reach"):
        travel_s(CATALOGUE, "gz-w-dadun", "gz-w-lianhuashan")


def test_the_plume_ramps_to_its_level_and_stops_at_its_end() -> None:
    start, end = A + 240, A + 420 + 12000  # at Xintang
    assert _value("gz-w-xintang", "nh3n", start - 1, 0.3) == 0.3
    assert _value("gz-w-xintang", "nh3n", start, 0.3) == 0.3  # the ramp starts at 0
    assert _value("gz-w-xintang", "nh3n", start + 30, 0.3) == pytest.approx(0.3 + 2.3 * 0.8 / 2)
    assert _value("gz-w-xintang", "nh3n", start + 60, 0.3) == pytest.approx(0.3 + 2.3 * 0.8)
    assert _value("gz-w-xintang", "do", start + 3600, 6.8) == pytest.approx(6.8 - 5.2 * 0.8)
    assert _value("gz-w-xintang", "nh3n", end - 30, 0.3) == pytest.approx(0.3 + 2.3 * 0.8 / 2)
    assert _value("gz-w-xintang", "nh3n", end, 0.3) == 0.3
    # Full strength at the source, from a minute after it started until a minute before it
    # stopped; parameters the plume does not carry are left alone.
    assert _value("dg-w-zhongtang", "nh3n", A - 11760 + 60, 0.3) == pytest.approx(2.6)
    assert _value("dg-w-zhongtang", "do", A + 360, 6.8) == pytest.approx(1.6)
    assert _value("dg-w-zhongtang", "tp", A, 0.09) == 0.09


def test_ozone_rises_at_plus_one_minute_in_the_first_cycle_and_at_the_hour_later() -> None:
    assert [_value("gz-a-huangpu", "o3", A + s, 20.0) for s in (59, 60, 299, 300)] == [
        20.0,
        420.0,
        420.0,
        20.0,
    ]
    # The second cycle's zero is 03:06 UTC: its episode builds from 03:00.
    zero = A + STORY_PERIOD_S
    top = zero // 3600 * 3600
    assert [_value("gz-a-huangge", "o3", s, 20.0) for s in (top - 1, top, zero + 299)] == [
        20.0,
        420.0,
        420.0,
    ]
    # The background station is not in the episode.
    assert _value("gz-a-maofengshan", "o3", A + 120, 20.0) == 20.0


def test_the_silent_station_sends_nothing_from_its_start_to_its_end() -> None:
    start, end = A - 7200 + 180, A + 360
    instants = [start - 1, start, end - 1, end]
    assert STORY.silent(CATALOGUE, "gz-a-maofengshan", instants).tolist() == [
        False,
        True,
        True,
        False,
    ]
    # An hourly mean is withheld when any of its hour is silent.
    first_hour = start // 3600 * 3600
    hours = [first_hour - 3600, first_hour, (end // 3600) * 3600, end // 3600 * 3600 + 3600]
    assert STORY.silent(CATALOGUE, "gz-a-maofengshan", hours, 3600).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert not STORY.silent(CATALOGUE, "gz-a-huangpu", instants).any()


def test_the_stuck_sensor_repeats_one_value() -> None:
    inside = [A - 6 * 3600 - 1800, A - 3600, A + 419]
    assert STORY.apply(CATALOGUE, "gz-a-huangge", "pm25", inside, [30.1, 44.2, 27.9]).tolist() == [
        38.0,
        38.0,
        38.0,
    ]
    outside = [A - 6 * 3600 - 1801, A + 420]
    assert STORY.apply(CATALOGUE, "gz-a-huangge", "pm25", outside, [30.1, 44.2]).tolist() == [
        30.1,
        44.2,
    ]


def test_cycles_repeat_and_none_plays_before_the_anchor() -> None:
    # The stuck run of the first cycle began 6.5 h before the anchor; one cycle earlier none did.
    before = A - 6 * 3600 - 1800 + 60 - STORY_PERIOD_S
    assert _value("gz-a-huangge", "pm25", before, 30.0) == 30.0
    assert _value("dg-w-zhongtang", "nh3n", A - 11000 - STORY_PERIOD_S, 0.3) == 0.3
    for offset in (-11000, 0, 300, 5000):
        first = _value("dg-w-zhongtang", "nh3n", A + offset, 0.3)
        later = _value("dg-w-zhongtang", "nh3n", A + offset + 3 * STORY_PERIOD_S, 0.3)
        assert first == later
    assert STORY.silent(CATALOGUE, "gz-a-maofengshan", [A + 60 + STORY_PERIOD_S])[0]


def test_scenes_are_data_and_the_story_can_play_others() -> None:
    assert {scene.kind for scene in SCENES} == {"plume", "ozone", "silence", "stuck"}
    story = Story(ANCHOR, (Scene("stuck", ("gz-a-nansha",), 0, 60, {"o3": 5.0}),), period_s=600)
    values = story.apply(
        CATALOGUE, "gz-a-nansha", "o3", [A - 1, A, A + 59, A + 60, A + 600], [9.0] * 5
    )
    assert values.tolist() == [9.0, 5.0, 5.0, 9.0, 5.0]


def test_the_first_round_backfills_the_scenes_under_way_minute_by_minute() -> None:
    now = ANCHOR + timedelta(seconds=25)
    stations, instants = STORY.backfill(CATALOGUE, now)
    # The source of the plume and the silent station; not the ozone or stuck-sensor stations.
    assert stations == ["dg-w-zhongtang", "gz-a-maofengshan"]
    assert len(instants) == BACKFILL_S // BACKFILL_STEP_S
    assert instants[-1] == A and instants[0] == A + BACKFILL_STEP_S - BACKFILL_S
    assert np.all(np.diff(instants) == BACKFILL_STEP_S)


def test_simulate_plays_the_story_and_leaves_the_rest_as_it_was() -> None:
    at = ANCHOR + timedelta(minutes=5)
    plain = {(r.station, r.parameter): r for r in simulate(CATALOGUE, at)}
    played = {(r.station, r.parameter): r for r in simulate(CATALOGUE, at, story=STORY)}
    assert ("gz-a-maofengshan", "o3") in plain and ("gz-a-maofengshan", "o3") not in played
    assert played[("dg-w-zhongtang", "nh3n")].value == 2.6
    assert played[("gz-w-xintang", "nh3n")].value > 2.0  # the plume has arrived
    assert played[("gz-w-dadun", "nh3n")] == plain[("gz-w-dadun", "nh3n")]  # not yet
    assert played[("gz-a-huangge", "pm25")].value == 38.0
    untouched = set(plain) - {
        ("gz-a-maofengshan", "o3"), ("gz-a-maofengshan", "pm25"), ("dg-w-zhongtang", "nh3n"),
        ("dg-w-zhongtang", "do"), ("gz-w-xintang", "nh3n"), ("gz-w-xintang", "do"),
        ("gz-a-huangge", "pm25"), ("gz-a-huangge", "o3"), ("gz-a-huangpu", "o3"),
        ("gz-a-nansha", "o3"),
    }  # fmt: skip
    assert {k: played[k] for k in untouched} == {k: plain[k] for k in untouched}
    # Deterministic: another story anchored alike sends the same readings.
    assert simulate(CATALOGUE, at, story=Story(ANCHOR)) == list(played.values())


def test_the_anchor_is_chosen_at_the_first_start_and_kept(tmp_path: Path) -> None:
    first = story_anchors(tmp_path, datetime(2026, 12, 4, 19, 6, 42, 5, tzinfo=UTC), None)
    assert first == [ANCHOR]
    assert (tmp_path / STORY_FILE).exists()
    # A restart while the demo's readings are recent continues the story.
    sent = ANCHOR + timedelta(days=5) - timedelta(seconds=STORY_LEAD_S - 60)
    assert story_anchors(tmp_path, datetime(2026, 12, 9, 19, 6, tzinfo=UTC), sent) == [ANCHOR]


def test_a_restart_after_a_pause_begins_a_new_story_and_keeps_the_old(tmp_path: Path) -> None:
    story_anchors(tmp_path, ANCHOR, None)
    restart = datetime(2026, 12, 9, 8, 30, 12, tzinfo=UTC)
    sent = restart.replace(second=0) - timedelta(seconds=STORY_LEAD_S)  # just long enough ago
    assert story_anchors(tmp_path, restart, sent) == [ANCHOR, restart.replace(second=0)]
    # And again later; a file of the first layout ({"anchor"} alone) is read too.
    assert story_anchors(tmp_path, restart + timedelta(minutes=5), restart) == [
        ANCHOR, restart.replace(second=0)
    ]  # fmt: skip
    (tmp_path / STORY_FILE).write_text('{"anchor": "2026-12-04T19:06:00+00:00"}')
    assert story_anchors(tmp_path, restart, None) == [ANCHOR, restart.replace(second=0)]


def test_a_new_story_leaves_what_the_earlier_one_played() -> None:
    later = ANCHOR + timedelta(days=2, hours=5, minutes=17)
    both = Story(later, earlier=[ANCHOR])
    alone = Story(later)
    reach = int(later.timestamp()) - STORY_LEAD_S
    before = np.arange(A, reach, 60, dtype=np.float64)
    after = np.arange(reach, reach + 2 * STORY_PERIOD_S, 60, dtype=np.float64)
    for code, parameter in (("gz-a-huangge", "pm25"), ("dg-w-zhongtang", "nh3n"),
                            ("gz-w-xintang", "do"), ("gz-a-huangpu", "o3")):  # fmt: skip
        base = np.full(before.shape, 1.5)
        played = both.apply(CATALOGUE, code, parameter, before, base)
        assert played.tolist() == STORY.apply(CATALOGUE, code, parameter, before, base).tolist()
        base = np.full(after.shape, 1.5)
        played = both.apply(CATALOGUE, code, parameter, after, base)
        assert played.tolist() == alone.apply(CATALOGUE, code, parameter, after, base).tolist()
    silent_before = both.silent(CATALOGUE, "gz-a-maofengshan", before)
    assert silent_before.tolist() == STORY.silent(CATALOGUE, "gz-a-maofengshan", before).tolist()
    silent_after = both.silent(CATALOGUE, "gz-a-maofengshan", after)
    assert silent_after.tolist() == alone.silent(CATALOGUE, "gz-a-maofengshan", after).tolist()
    # The new story's incident plays from its start: under way at once, as at the first start.
    assert _value("dg-w-zhongtang", "nh3n", A, 0.3) == 2.6
    assert (
        float(both.apply(CATALOGUE, "dg-w-zhongtang", "nh3n", [reach + STORY_LEAD_S], [0.3])[0])
        == 2.6
    )
    with pytest.raises(ValueError, match="latest"):
        Story(ANCHOR, earlier=[later])


def test_the_lead_covers_every_scene_before_its_anchor() -> None:
    earliest = min(
        placed.start_s - (3600 if placed.scene.kind == "ozone" else 0)
        for scenes in STORY.placed(CATALOGUE).values()
        for placed in scenes
    )
    assert -STORY_LEAD_S <= earliest < -6 * 3600
