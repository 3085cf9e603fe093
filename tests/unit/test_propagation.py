"""The river graph of config/rivers.yaml: downstream stations, distances, ETAs, agencies."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.propagation import Arrival, RiverStation, arrivals
from schemas.catalogue import load_catalogue
from store.catalogue import ReachRef

ROOT = Path(__file__).resolve().parents[2]
AGENCY_IDS = {"gz_eeb": 1, "dg_eeb": 2, "joint_office": 3}


@pytest.fixture(scope="module")
def river() -> tuple[dict[str, ReachRef], list[RiverStation]]:
    catalogue = load_catalogue(ROOT / "config")
    reaches = {
        r.code: ReachRef(
            r.code, tuple(r.downstream), r.length_km, r.velocity_m_s, r.tidal, r.tidal_factor
        )
        for r in catalogue.reaches
    }
    stations = [
        RiverStation(index, s.code, AGENCY_IDS[s.agency], s.reach, s.river_km)
        for index, s in enumerate(catalogue.stations, start=1)
        if s.reach is not None and s.river_km is not None
    ]
    return reaches, stations


def _from(
    river: tuple[dict[str, ReachRef], list[RiverStation]], code: str, **options: float
) -> list[Arrival]:
    reaches, stations = river
    source = next(s for s in stations if s.code == code)
    return arrivals(source, reaches, stations, **options)  # type: ignore[arg-type]


def _table(found: list[Arrival]) -> list[tuple[str, float, int, str, int]]:
    return [
        (a.station.code, round(a.distance_km, 3), round(a.eta_s), a.direction, a.station.agency_id)
        for a in found
    ]


def test_from_dadun_downstream_into_shiziyang(
    river: tuple[dict[str, ReachRef], list[RiverStation]],
) -> None:
    # 9 km left of the north main stream at 0.5 m/s (18000 s), then Shiziyang at 0.3 m/s.
    assert _table(_from(river, "gz-w-dadun")) == [
        ("gz-w-lianhuashan", 18.0, 18000 + 30000, "downstream", 1),
        ("dg-w-shatian", 26.0, 18000 + 56667, "downstream", 2),
        ("dg-w-humen", 34.0, 18000 + 83333, "downstream", 2),
        ("gz-w-nansha", 38.0, 18000 + 96667, "downstream", 1),
    ]


def test_zhongtang_pre_alerts_xintang_of_the_other_city(
    river: tuple[dict[str, ReachRef], list[RiverStation]],
) -> None:
    found = _from(river, "dg-w-zhongtang", max_eta_s=20000)
    # 6 km at 0.5 m/s; Xintang belongs to Guangzhou while Zhongtang is Dongguan's.
    assert _table(found) == [("gz-w-xintang", 6.0, 12000, "downstream", AGENCY_IDS["gz_eeb"])]


def test_shilong_splits_into_both_branches_and_the_earlier_path_wins(
    river: tuple[dict[str, ReachRef], list[RiverStation]],
) -> None:
    table = {row[0]: row for row in _table(_from(river, "dg-w-shilong"))}
    # 2 km to the end of the upper Dongjiang at 0.8 m/s = 2500 s.
    assert table["dg-w-zhongtang"] == ("dg-w-zhongtang", 24.0, 2500 + 44000, "downstream", 2)
    assert table["dg-w-shijie"] == ("dg-w-shijie", 10.0, 2500 + 20000, "downstream", 2)
    assert table["dg-w-wanjiang"] == ("dg-w-wanjiang", 24.0, 2500 + 55000, "downstream", 2)
    # Shiziyang via the north main stream (2500 + 84000 s) beats the south branch (2500 + 100000).
    assert table["gz-w-lianhuashan"] == (
        "gz-w-lianhuashan",
        53.0,
        2500 + 84000 + 30000,
        "downstream",
        1,
    )
    assert len(table) == 9


def test_tidal_shiziyang_propagates_both_ways(
    river: tuple[dict[str, ReachRef], list[RiverStation]],
) -> None:
    # Downstream at 0.3 m/s; upstream on the flood tide at 0.3 x 0.5 = 0.15 m/s, inside Shiziyang
    # only: the north main stream and south branch are not tidal.
    assert _table(_from(river, "dg-w-humen")) == [
        ("gz-w-nansha", 4.0, 13333, "downstream", 1),
        ("dg-w-shatian", 8.0, 53333, "tidal_upstream", 2),
        ("gz-w-lianhuashan", 16.0, 106667, "tidal_upstream", 1),
    ]


def test_max_eta_leaves_out_later_arrivals(
    river: tuple[dict[str, ReachRef], list[RiverStation]],
) -> None:
    assert [a.station.code for a in _from(river, "dg-w-humen", max_eta_s=60000)] == [
        "gz-w-nansha",
        "dg-w-shatian",
    ]


def test_the_last_station_downstream_has_only_tidal_neighbours(
    river: tuple[dict[str, ReachRef], list[RiverStation]],
) -> None:
    assert [a.direction for a in _from(river, "gz-w-nansha")] == ["tidal_upstream"] * 3


def test_a_loop_in_a_malformed_graph_ends() -> None:
    reaches = {
        "a": ReachRef("a", ("b",), 10, 1.0, False, None),
        "b": ReachRef("b", ("a",), 10, 1.0, False, None),
    }
    stations = [RiverStation(1, "s1", 1, "a", 5), RiverStation(2, "s2", 2, "b", 5)]
    found = arrivals(stations[0], reaches, stations)
    assert _table(found) == [("s2", 10.0, 10000, "downstream", 2)]


def test_unknown_reach_is_an_error() -> None:
    with pytest.raises(ValueError, match="station s1 is on unknown reach 'x'"):
        arrivals(RiverStation(1, "s1", 1, "x", 0), {}, [])
