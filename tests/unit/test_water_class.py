"""GB 3838-2002 and GB 3097-1997 classes and assessments, against the standards' tables."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from alerts.standards import (
    LimitingItem,
    assess_sea_water,
    assess_surface_water,
    sea_class_label,
    sea_water_class,
    surface_class_label,
    surface_water_class,
)

# GB 3838-2002 Table 1, "≤" items, classes I..V (copied from the standard).
SURFACE_MAX = {
    "codmn": (2, 4, 6, 10, 15),
    "cod": (15, 15, 20, 30, 40),
    "bod5": (3, 3, 4, 6, 10),
    "nh3n": (0.15, 0.5, 1.0, 1.5, 2.0),
    "tn": (0.2, 0.5, 1.0, 1.5, 2.0),
    "cu": (0.01, 1.0, 1.0, 1.0, 1.0),
    "zn": (0.05, 1.0, 1.0, 2.0, 2.0),
    "fluoride": (1.0, 1.0, 1.0, 1.5, 1.5),
    "se": (0.01, 0.01, 0.01, 0.02, 0.02),
    "as": (0.05, 0.05, 0.05, 0.1, 0.1),
    "hg": (0.00005, 0.00005, 0.0001, 0.001, 0.001),
    "cd": (0.001, 0.005, 0.005, 0.005, 0.01),
    "cr6": (0.01, 0.05, 0.05, 0.05, 0.1),
    "pb": (0.01, 0.01, 0.05, 0.05, 0.1),
    "cn": (0.005, 0.05, 0.2, 0.2, 0.2),
    "phenol": (0.002, 0.002, 0.005, 0.01, 0.1),
    "petroleum": (0.05, 0.05, 0.05, 0.5, 1.0),
    "las": (0.2, 0.2, 0.2, 0.3, 0.3),
    "sulfide": (0.05, 0.1, 0.2, 0.5, 1.0),
    "fecal_coliform": (200, 2000, 10000, 20000, 40000),
}
TP = {"river": (0.02, 0.1, 0.2, 0.3, 0.4), "lake": (0.01, 0.025, 0.05, 0.1, 0.2)}
# GB 3097-1997 "≤" items, classes 1..4 (copied from the standard).
SEA_MAX = {
    "cod_mn_alkaline": (2, 3, 4, 5),
    "bod5": (1, 3, 4, 5),
    "din": (0.20, 0.30, 0.40, 0.50),
    "po4p": (0.015, 0.030, 0.030, 0.045),
    "petroleum": (0.05, 0.05, 0.30, 0.50),
    "hg": (0.00005, 0.0002, 0.0002, 0.0005),
    "cd": (0.001, 0.005, 0.010, 0.010),
    "pb": (0.001, 0.005, 0.010, 0.050),
    "cu": (0.005, 0.010, 0.050, 0.050),
    "zn": (0.020, 0.050, 0.10, 0.50),
    "as": (0.020, 0.030, 0.050, 0.050),
}
RIVER_ITEMS = (
    "ph",
    "do",
    "codmn",
    "cod",
    "bod5",
    "nh3n",
    "tp",
    "cu",
    "zn",
    "fluoride",
    "se",
    "as",
    "hg",
    "cd",
    "cr6",
    "pb",
    "cn",
    "phenol",
    "petroleum",
    "las",
    "sulfide",
)
SEA_ITEMS = ("ph", "do", *SEA_MAX)


def _boundaries(table: Mapping[str, tuple[float, ...]], worse: int) -> list[tuple[str, float, int]]:
    """At each limit: the first class with that limit; just above it: the next larger limit's."""
    cases = []
    for item, limits in table.items():
        for limit in limits:
            above = math.nextafter(limit, math.inf)
            beyond = next((k for k, lim in enumerate(limits, 1) if lim > limit), worse)
            cases += [(item, limit, limits.index(limit) + 1), (item, above, beyond)]
    return cases


@pytest.mark.parametrize(("item", "value", "expected"), _boundaries(SURFACE_MAX, 6))
@pytest.mark.parametrize("water_body", ["river", "lake"])
def test_surface_class_boundaries(item: str, value: float, expected: int, water_body: str) -> None:
    assert surface_water_class(item, value, water_body=water_body) == expected


@pytest.mark.parametrize(
    ("water_body", "value", "expected"),
    [(body, value, cls) for body in TP for _, value, cls in _boundaries({"tp": TP[body]}, 6)],
)
def test_surface_tp_boundaries(water_body: str, value: float, expected: int) -> None:
    assert surface_water_class("tp", value, water_body=water_body) == expected


@pytest.mark.parametrize(
    ("item", "value", "water_body", "expected"),
    [
        ("tp", 0.2, "river", 3),
        ("tp", 0.2, "lake", 5),
        ("tp", 0.05, "river", 2),
        ("tp", 0.05, "lake", 3),
        ("tp", 0.41, "river", 6),
        ("tp", 0.21, "lake", 6),
        ("cod", 15.0, "river", 1),
        ("cod", 15.01, "river", 3),
        ("cu", 0.02, "river", 2),
        ("cu", 1.0, "river", 2),
        ("cu", 1.01, "river", 6),
        ("hg", 0.0001, "river", 3),
        ("fecal_coliform", 40000, "river", 5),
        ("fecal_coliform", 40001, "river", 6),
        ("ph", 6.0, "river", 1),
        ("ph", 9.0, "river", 1),
        ("ph", 7.3, "lake", 1),
        ("ph", 5.99, "river", 6),
        ("ph", 9.01, "river", 6),
        ("do", 9.0, "river", 1),
        ("do", 7.5, "river", 1),
        ("do", 7.49, "river", 2),
        ("do", 6.0, "river", 2),
        ("do", 5.99, "river", 3),
        ("do", 5.0, "river", 3),
        ("do", 4.99, "river", 4),
        ("do", 3.0, "river", 4),
        ("do", 2.99, "river", 5),
        ("do", 2.0, "river", 5),
        ("do", 1.99, "river", 6),
        ("do", 0.0, "lake", 6),
    ],
)
def test_surface_class_examples(item: str, value: float, water_body: str, expected: int) -> None:
    assert surface_water_class(item, value, water_body=water_body) == expected


@pytest.mark.parametrize(
    ("item", "value", "water_body"),
    [
        ("water_temp", 25.0, "river"),
        ("conductivity", 300.0, "river"),
        ("din", 0.1, "river"),
        ("nh3n", -0.1, "river"),
        ("nh3n", math.nan, "river"),
        ("tp", 0.1, "sea"),
    ],
)
def test_surface_class_rejects(item: str, value: float, water_body: str) -> None:
    with pytest.raises(ValueError):
        surface_water_class(item, value, water_body=water_body)


@pytest.mark.parametrize(("item", "value", "expected"), _boundaries(SEA_MAX, 5))
def test_sea_class_boundaries(item: str, value: float, expected: int) -> None:
    assert sea_water_class(item, value) == expected


@pytest.mark.parametrize(
    ("item", "value", "expected"),
    [
        ("po4p", 0.030, 2),
        ("po4p", 0.0301, 4),
        ("do", 6.01, 1),
        ("do", 6.0, 2),
        ("do", 5.0, 3),
        ("do", 4.0, 4),
        ("do", 3.01, 4),
        ("do", 3.0, 5),
        ("ph", 7.8, 1),
        ("ph", 8.5, 1),
        ("ph", 7.79, 3),
        ("ph", 8.51, 3),
        ("ph", 6.8, 3),
        ("ph", 8.8, 3),
        ("ph", 6.79, 5),
        ("ph", 8.81, 5),
    ],
)
def test_sea_class_examples(item: str, value: float, expected: int) -> None:
    assert sea_water_class(item, value) == expected


@pytest.mark.parametrize("item", ["nh3n", "tp", "codmn", "cod", "tn", "water_temp"])
def test_sea_class_never_substitutes(item: str) -> None:
    with pytest.raises(ValueError):
        sea_water_class(item, 0.1)


@pytest.mark.parametrize(
    ("water_class", "surface", "sea"),
    [(1, "I", "1"), (2, "II", "2"), (3, "III", "3"), (4, "IV", "4"), (5, "V", "劣四类")],
)
def test_class_labels(water_class: int, surface: str, sea: str) -> None:
    assert (surface_class_label(water_class), sea_class_label(water_class)) == (surface, sea)


def test_class_label_range() -> None:
    assert surface_class_label(6) == "劣V"
    with pytest.raises(ValueError):
        surface_class_label(7)
    with pytest.raises(ValueError):
        sea_class_label(6)
    with pytest.raises(ValueError):
        sea_class_label(0)


@pytest.mark.parametrize(
    ("codmn", "label", "description_zh", "description"),
    [
        (2.0, "I", "优", "excellent"),
        (4.0, "II", "优", "excellent"),
        (6.0, "III", "良好", "good"),
        (10.0, "IV", "轻度污染", "lightly polluted"),
        (15.0, "V", "中度污染", "moderately polluted"),
        (15.1, "劣V", "重度污染", "heavily polluted"),
    ],
)
def test_surface_description(
    codmn: float, label: str, description_zh: str, description: str
) -> None:
    result = assess_surface_water({"codmn": codmn}, water_body="river", target_class=5)
    assert (result.label, result.description_zh, result.description) == (
        label,
        description_zh,
        description,
    )


def test_river_assessment() -> None:
    values = {
        "water_temp": 28.0,
        "ph": 9.5,
        "do": 4.0,
        "codmn": 5.0,
        "nh3n": 3.0,
        "tp": 0.3,
        "tn": 5.0,
        "fecal_coliform": 90000.0,
        "conductivity": 350.0,
        "cod": None,
    }
    result = assess_surface_water(values, water_body="river", target_class=3)
    assert result.item_classes == {"ph": 6, "do": 4, "codmn": 3, "nh3n": 6, "tp": 4}
    assert (result.standard, result.overall_class, result.label) == ("GB 3838-2002", 6, "劣V")
    assert result.meets_target is False
    assert result.limiting == (
        LimitingItem("nh3n", 6, 3.0, 1.0, 2.0),
        LimitingItem("tp", 4, 0.3, 0.2, 0.5),
        LimitingItem("ph", 6, 9.5, None, None),
        LimitingItem("do", 4, 4.0, 5, None),
    )
    assert result.not_measured == tuple(
        item for item in RIVER_ITEMS if item not in {"ph", "do", "codmn", "nh3n", "tp"}
    )
    assert result.excluded == ("conductivity", "fecal_coliform", "tn", "water_temp")


def test_lake_assessment_counts_tn_and_lake_tp() -> None:
    values = {"tp": 0.05, "tn": 1.2, "nh3n": 0.4, "fecal_coliform": 100.0, "water_temp": 20.0}
    result = assess_surface_water(values, water_body="lake", target_class=2)
    assert result.item_classes == {"nh3n": 2, "tp": 3, "tn": 4, "fecal_coliform": 1}
    assert (result.overall_class, result.description_zh) == (4, "轻度污染")
    assert result.limiting == (
        LimitingItem("tn", 4, 1.2, 0.5, 1.4),
        LimitingItem("tp", 3, 0.05, 0.025, 1.0),
    )
    assert "tn" not in result.not_measured
    assert result.excluded == ("water_temp",)


@pytest.mark.parametrize(
    ("item", "value", "target", "exceedance"),
    [
        ("nh3n", 1.5, 3, 0.5),
        ("nh3n", 2.1, 2, 3.2),
        ("cod", 30.0, 3, 0.5),
        ("hg", 0.0005, 3, 4.0),
        ("tp", 0.25, 2, 1.5),
        ("fluoride", 1.2, 1, 0.2),
        ("codmn", 6.6, 3, 0.1),
    ],
)
def test_exceedance_multiple_against_target_class(
    item: str, value: float, target: int, exceedance: float
) -> None:
    result = assess_surface_water({item: value}, water_body="river", target_class=target)
    assert [(entry.item, entry.exceedance) for entry in result.limiting] == [(item, exceedance)]


def test_meeting_the_target_has_no_limiting_items() -> None:
    result = assess_surface_water({"nh3n": 1.0, "do": 5.0}, water_body="river", target_class=3)
    assert (result.overall_class, result.meets_target, result.limiting) == (3, True, ())


def test_nothing_measured() -> None:
    result = assess_surface_water({}, water_body="river", target_class=3)
    assert (result.overall_class, result.label, result.meets_target) == (None, None, None)
    assert (result.description_zh, result.item_classes, result.limiting) == (None, {}, ())
    assert result.not_measured == RIVER_ITEMS


@pytest.mark.parametrize(("water_body", "target"), [("river", 0), ("river", 6), ("sea", 3)])
def test_surface_assessment_rejects(water_body: str, target: int) -> None:
    with pytest.raises(ValueError):
        assess_surface_water({"nh3n": 1.0}, water_body=water_body, target_class=target)


def test_sea_assessment_never_substitutes_station_items() -> None:
    values = {"nh3n": 0.1, "tp": 0.01, "codmn": 1.0, "cod": 10.0}
    result = assess_sea_water(values, target_class=2)
    assert (result.item_classes, result.overall_class, result.label) == ({}, None, None)
    assert result.not_measured == SEA_ITEMS
    assert result.excluded == ("cod", "codmn", "nh3n", "tp")


def test_sea_assessment() -> None:
    values = {"ph": 8.0, "do": 6.0, "din": 0.45, "po4p": 0.045, "petroleum": 0.6}
    result = assess_sea_water(values, target_class=1)
    assert result.item_classes == {"ph": 1, "do": 2, "din": 4, "po4p": 4, "petroleum": 5}
    assert (result.standard, result.water_body, result.overall_class, result.label) == (
        "GB 3097-1997",
        "sea",
        5,
        "劣四类",
    )
    assert (result.description_zh, result.meets_target) == (None, False)
    assert result.limiting == (
        LimitingItem("petroleum", 5, 0.6, 0.05, 11.0),
        LimitingItem("po4p", 4, 0.045, 0.015, 2.0),
        LimitingItem("din", 4, 0.45, 0.2, 1.25),
        LimitingItem("do", 2, 6.0, 6, None),
    )
    assert result.not_measured == ("cod_mn_alkaline", "bod5", "hg", "cd", "pb", "cu", "zn", "as")


@pytest.mark.parametrize("target", [0, 5])
def test_sea_assessment_rejects_target(target: int) -> None:
    with pytest.raises(ValueError):
        assess_sea_water({"din": 0.1}, target_class=target)
