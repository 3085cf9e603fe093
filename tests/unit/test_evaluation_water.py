"""Surface-water period evaluation (docs/evaluation.md §5) and sea-water points and areas (§6)."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import numpy as np
import pytest

from alerts.evaluation.rules import EvaluationSettings, SeaGradeThresholds
from alerts.evaluation.sea import sea_area_grade
from alerts.evaluation.validity import Insufficient
from alerts.evaluation.water import (
    ItemSeries,
    SectionEvaluation,
    Target,
    evaluate_group,
    evaluate_sea_point,
    evaluate_section,
    format_exceedances,
    group_report,
    item_mean,
    section_report,
)

SETTINGS = EvaluationSettings()
NOVEMBER = (date(2026, 11, 1), date(2026, 12, 1))
NAMES = {"nh3n": "氨氮", "tp": "总磷", "codmn": "高锰酸盐指数", "do": "溶解氧", "ph": "pH"}


def _daily(value: float, valid: int = 30) -> ItemSeries:
    values = np.full(30, np.nan)
    values[:valid] = value
    return ItemSeries(values)


def _samples(*values: float, below: tuple[bool, ...] | None = None) -> ItemSeries:
    flags = None if below is None else np.array(below)
    return ItemSeries(np.array(values), flags, automatic=False)


def _section(code: str, target: Target | None = None, **items: float) -> SectionEvaluation:
    series = {item: _samples(value) for item, value in items.items()}
    start, end = NOVEMBER
    return evaluate_section(
        code, series, start=start, end=end, target=target or Target(3), settings=SETTINGS
    )


@pytest.mark.parametrize(("valid", "expected"), [(30, 0.5), (20, 0.5), (19, Insufficient(19, 20))])
def test_automatic_month_needs_20_valid_days(valid: int, expected: object) -> None:
    found = item_mean("nh3n", _daily(0.5, valid), *NOVEMBER, SETTINGS)
    assert (found if isinstance(found, Insufficient) else found.mean) == expected


@pytest.mark.parametrize(("valid", "expected"), [(10, 0.5), (9, Insufficient(9, 10))])
def test_a_part_month_needs_its_share_of_20_days(valid: int, expected: object) -> None:
    # 15 of November's 30 days: ceil(20 x 15 / 30) = 10 valid daily means.
    values = np.full(15, np.nan)
    values[:valid] = 0.5
    found = item_mean("nh3n", ItemSeries(values), date(2026, 11, 1), date(2026, 11, 16), SETTINGS)
    assert (found if isinstance(found, Insufficient) else found.mean) == expected


def test_completeness_is_a_setting() -> None:
    relaxed = EvaluationSettings(water_month_min_valid_days=15)
    found = item_mean("nh3n", _daily(0.5, 15), *NOVEMBER, relaxed)
    assert not isinstance(found, Insufficient)
    assert found.count == 15


def test_lab_samples_are_averaged_as_they_are() -> None:
    found = item_mean("cd", _samples(0.002, 0.004), *NOVEMBER, SETTINGS)
    assert not isinstance(found, Insufficient)
    assert (found.mean, found.count) == (0.003, 2)
    empty = item_mean("cd", _samples(np.nan), *NOVEMBER, SETTINGS)
    assert empty == Insufficient(0, 1)


def test_a_mean_at_a_limit_stays_at_the_limit() -> None:
    found = item_mean("tp", _daily(0.2), *NOVEMBER, SETTINGS)
    assert not isinstance(found, Insufficient)
    assert found.mean == 0.2
    section = evaluate_section(
        "s", {"tp": _daily(0.2)}, start=NOVEMBER[0], end=NOVEMBER[1], target=Target(3),
        settings=SETTINGS,
    )  # fmt: skip
    assert section.water_class == 3


def test_below_detection_enters_means_at_half_the_limit() -> None:
    series = _samples(0.00004, 0.00006, 0.00008, below=(True, False, False))
    found = item_mean("hg", series, *NOVEMBER, SETTINGS)
    assert not isinstance(found, Insufficient)
    assert found.mean == pytest.approx((0.00002 + 0.00006 + 0.00008) / 3, rel=1e-12)
    assert found.detection_limit is None
    assert _section_of("hg", series).assessment.item_classes["hg"] == 3


@pytest.mark.parametrize(("limit", "item_class"), [(0.00004, 1), (0.00005, 1), (0.00008, 3)])
def test_an_item_below_detection_throughout_passes_classes_at_or_above_its_limit(
    limit: float, item_class: int
) -> None:
    series = _samples(limit, limit, below=(True, True))
    found = item_mean("hg", series, *NOVEMBER, SETTINGS)
    assert not isinstance(found, Insufficient)
    assert (found.mean, found.detection_limit) == (limit / 2, limit)
    assert _section_of("hg", series).assessment.item_classes["hg"] == item_class


@pytest.mark.parametrize(
    ("limit", "value", "item_class"),
    [
        # Hg (GB 3838 I-II 0.00005, III-IV 0.0001): (0.0001/2 + 0.00005)/2 = 0.00005, at the
        # class I limit; the detection limit itself would give 0.000075, class III.
        (0.0001, 0.00005, 1),
        (0.0001, 0.00006, 3),
    ],
)
def test_half_the_detection_limit_at_a_class_limit(
    limit: float, value: float, item_class: int
) -> None:
    series = _samples(limit, value, below=(True, False))
    found = item_mean("hg", series, *NOVEMBER, SETTINGS)
    assert not isinstance(found, Insufficient)
    assert found.mean == pytest.approx((limit / 2 + value) / 2, rel=1e-12)
    assert _section_of("hg", series).assessment.item_classes["hg"] == item_class


def test_below_detection_fraction_is_a_setting() -> None:
    series = _samples(0.0001, 0.00005, below=(True, False))
    whole = EvaluationSettings(below_detection_fraction=Fraction(1))
    found = item_mean("hg", series, *NOVEMBER, whole)
    assert not isinstance(found, Insufficient)
    assert found.mean == pytest.approx(0.000075, rel=1e-12)
    # Daily means of an automatic station take the same rule.
    days = np.full(30, 0.4)
    flags = np.zeros(30, dtype=bool)
    flags[:10] = True
    daily = item_mean("nh3n", ItemSeries(days, flags), *NOVEMBER, SETTINGS)
    assert not isinstance(daily, Insufficient)
    assert daily.mean == pytest.approx((10 * 0.2 + 20 * 0.4) / 30, rel=1e-12)
    assert (daily.count, daily.detection_limit) == (30, None)


def _section_of(item: str, series: ItemSeries) -> SectionEvaluation:
    start, end = NOVEMBER
    return evaluate_section(
        "s", {item: series}, start=start, end=end, target=Target(3), settings=SETTINGS
    )


def test_section_single_factor_class_target_and_exceedances() -> None:
    section = _section("dadun", Target(2), nh3n=1.24, do=6.5, ph=7.5, codmn=3.0, tp=0.15)
    assert section.water_class == 4
    assert (section.assessment.label, section.assessment.description_zh) == ("IV", "轻度污染")
    assert section.compliant is False
    assert [(e.item, e.multiple) for e in section.exceedances] == [
        ("nh3n", Fraction("1.48")),
        ("tp", Fraction("0.5")),
    ]
    assert [(e.item, e.multiple) for e in section.exceedances_class_iii] == [
        ("nh3n", Fraction("0.24"))
    ]
    assert format_exceedances(section.exceedances_class_iii, NAMES) == "氨氮(0.24)"
    assert format_exceedances(section.exceedances, NAMES) == "氨氮(1.48)、总磷(0.50)"
    # CWQI: 1.24/1 + 5/6.5 + (7.5 - 7)/2 + 3/6 + 0.15/0.2 = 3.5092...
    assert section.cwqi == Fraction("1.24") + Fraction(5) / Fraction("6.5") + Fraction(
        "0.25"
    ) + Fraction("0.5") + Fraction("0.75")
    report = section_report(section)
    assert report["cwqi"] == 3.51
    assert report["class_label"] == "IV"
    assert report["exceedances"]["target"][0] == {
        "item": "nh3n",
        "value": 1.24,
        "limit": 0.5,
        "multiple": 1.48,
        "against": "target",
    }
    assert report["items_evaluated"] == ["ph", "do", "codmn", "nh3n", "tp"]
    assert report["items_not_measured"][:3] == ["cod", "bod5", "cu"]
    assert len(report["items_not_measured"]) == 16


def test_ph_is_judged_against_6_to_9_without_a_multiple() -> None:
    section = _section("s", Target(3), ph=9.5, nh3n=0.3)
    assert section.water_class == 6
    assert [(e.item, e.multiple) for e in section.exceedances] == [("ph", None)]
    assert format_exceedances(section.exceedances, NAMES) == "pH"
    assert section.cwqi == Fraction("1.25") + Fraction("0.3")


@pytest.mark.parametrize(("ph", "cwqi"), [("6.5", "0.5"), ("7", "0"), ("8", "0.5"), ("9", "1")])
def test_cwqi_of_ph(ph: str, cwqi: str) -> None:
    # (pH - 7)/2 above 7, else 7 - pH.
    assert _section("s", Target(3), ph=float(ph)).cwqi == Fraction(cwqi)


def test_do_has_no_multiple() -> None:
    section = _section("s", Target(3), do=4.0)
    assert [(e.item, e.multiple, e.limit) for e in section.exceedances] == [("do", None, 5.0)]


def test_per_item_target_limits() -> None:
    target = Target(4, {"nh3n": 3.0, "tp": 0.35})
    section = _section("s", target, nh3n=2.5, tp=0.32, codmn=8.0, do=4.0, ph=7.0)
    assert section.water_class == 6  # NH3-N 2.5 is worse than V ...
    assert section.compliant is True  # ... and still meets its own target of 3
    assert section.exceedances == ()
    assert [(e.item, e.multiple) for e in section.exceedances_class_iii] == [
        ("nh3n", Fraction("1.5")),
        ("tp", Fraction("0.6")),
        ("codmn", Fraction(1, 3)),
        ("do", None),
    ]
    over = _section("s", target, nh3n=3.2, tp=0.32)
    assert over.compliant is False
    assert [(e.item, e.multiple) for e in over.exceedances] == [("nh3n", Fraction(1, 15))]
    assert format_exceedances(over.exceedances, NAMES) == "氨氮(0.07)"


def test_target_rejects_limits_for_ph_and_do() -> None:
    with pytest.raises(ValueError):
        Target(3, {"do": 5.0})
    with pytest.raises(ValueError):
        Target(6)


def test_items_short_of_data_are_listed_not_evaluated() -> None:
    start, end = NOVEMBER
    section = evaluate_section(
        "s", {"nh3n": _daily(0.4), "tp": _daily(0.1, valid=12)}, start=start, end=end,
        target=Target(3), settings=SETTINGS,
    )  # fmt: skip
    assert section.water_class == 2
    assert section.insufficient == {"tp": Insufficient(12, 20)}
    assert section_report(section)["insufficient_data"] == {
        "tp": {"status": "insufficient_data", "have": 12, "need": 20}
    }


def test_items_outside_the_evaluation_are_listed() -> None:
    section = _section("s", Target(3), nh3n=0.4, tn=3.0, water_temp=25.0)
    assert section.water_class == 2
    assert section.assessment.excluded == ("tn", "water_temp")


# Several sections

NH3N_OF_CLASS = {2: 0.4, 3: 0.8, 4: 1.2, 5: 1.8, 6: 2.5}


def _sections(*classes: int) -> list[SectionEvaluation]:
    return [_section(f"s{i}", Target(2), nh3n=NH3N_OF_CLASS[c]) for i, c in enumerate(classes)]


def test_six_section_example_is_lightly_polluted() -> None:
    group = evaluate_group(_sections(2, 2, 3, 3, 4, 6))
    report = group_report(group)
    assert (report["method"], report["grade_zh"], report["grade"]) == (
        "proportion", "轻度污染", "lightly polluted"
    )  # fmt: skip
    assert (report["good_share"], report["worse_than_v_share"]) == (66.7, 16.7)
    assert report["compliant_share"] == 33.3
    assert report["sections"] == 6


@pytest.mark.parametrize(
    ("classes", "grade"),
    [
        ((2,) * 9 + (4,), "优"),  # 90 % I-III
        ((2,) * 8 + (4, 4), "良好"),  # 80 %
        ((2,) * 15 + (4,) * 5, "良好"),  # 75 %
        ((2,) * 14 + (4,) * 3 + (6,) * 3, "轻度污染"),  # 70 %, 劣V 15 %
        ((2,) * 14 + (4,) * 2 + (6,) * 4, "中度污染"),  # 劣V 20 %
        ((2,) * 12 + (6,) * 8, "重度污染"),  # 劣V 40 %
        ((2,) * 12 + (4,) + (6,) * 7, "中度污染"),  # 劣V 35 %
        ((2, 2, 3, 6, 6), "重度污染"),  # five sections: the proportion method, 劣V 40 %
    ],
)
def test_proportion_method_boundaries(classes: tuple[int, ...], grade: str) -> None:
    found = evaluate_group(_sections(*classes))
    assert found.method == "proportion"
    assert found.grade_zh == grade


def test_under_five_sections_the_mean_concentrations_are_classified() -> None:
    found = evaluate_group(_sections(2, 3, 4, 6))
    # NH3-N (0.4 + 0.8 + 1.2 + 2.5)/4 = 1.225: class IV.
    assert (found.method, found.mean_class, found.grade_zh) == ("mean_concentration", 4, "轻度污染")
    assert found.worse_than_v_share == Fraction(1, 4)
    # One more section: I-III 60 %, 劣V 20 % by the proportion method.
    five = evaluate_group(_sections(2, 2, 3, 4, 6))
    assert (five.method, five.grade_zh) == ("proportion", "中度污染")


def test_group_cwqi_is_the_mean_of_its_sections() -> None:
    found = evaluate_group(_sections(2, 6))
    assert found.cwqi == (Fraction("0.4") + Fraction("2.5")) / 2
    assert group_report(found)["cwqi"] == 1.45


def test_group_without_sections() -> None:
    found = evaluate_group([])
    assert (found.sections, found.good_share, found.grade, found.cwqi) == (0, None, None, None)


# Sea water (GB 3097)


def test_sea_point_single_factor_class() -> None:
    start, end = NOVEMBER
    items = {
        "din": _samples(0.25),
        "po4p": _samples(0.02),
        "do": _samples(5.5),
        "ph": _samples(8.0),
        "nh3n": _samples(0.9),
    }
    point = evaluate_sea_point("p", items, start=start, end=end, target_class=2, settings=SETTINGS)
    assert (point.water_class, point.assessment.label, point.compliant) == (2, "2", True)
    assert section_report(point)["target"] == {"class": 2, "label": "2", "item_limits": {}}
    assert point.assessment.excluded == ("nh3n",)
    worse = evaluate_sea_point(
        "p", {"din": _samples(0.6)}, start=start, end=end, target_class=2, settings=SETTINGS
    )
    assert (worse.water_class, worse.assessment.label) == (5, "劣四类")
    assert [(e.item, e.multiple) for e in worse.exceedances] == [("din", Fraction(1))]


@pytest.mark.parametrize(
    ("classes", "grade"),
    [
        ((1,) * 6 + (2,) * 3 + (3,), "优"),
        ((1,) * 5 + (2,) * 4 + (3,), "良好"),
        ((1,) * 2 + (2,) * 6 + (3,) * 2, "良好"),  # 1+2 exactly 80 %
        ((1,) * 7 + (3,) * 3, "一般"),
        ((2,) * 6 + (5,) * 3 + (3,), "一般"),  # 劣四 exactly 30 %
        ((2,) * 5 + (5,) * 3 + (3,) * 2, "差"),  # 1+2 50 %, 劣四 30 %
        ((2,) * 14 + (5,) * 6, "一般"),  # 劣四 30 %
        ((2,) * 13 + (5,) * 7, "差"),  # 劣四 35 %
        ((2,) * 6 + (5,) * 4, "极差"),  # 劣四 40 %
    ],
)
def test_sea_area_grade(classes: tuple[int, ...], grade: str) -> None:
    found = sea_area_grade(classes, SeaGradeThresholds())
    assert found is not None
    assert found.grade_zh == grade


def test_sea_area_grade_thresholds_are_a_setting() -> None:
    strict = SeaGradeThresholds(good_class_1_2=95)
    classes = (1,) * 5 + (2,) * 4 + (3,)
    found = sea_area_grade(classes, strict)
    assert found is not None
    assert found.grade_zh == "一般"
    assert found.describe()["class_1_2_share"] == 90.0
    assert sea_area_grade((), strict) is None
    with pytest.raises(ValueError):
        sea_area_grade((6,), strict)
