"""Surface-water period evaluation (GB 3838, docs/evaluation.md §5) and sea-water points (§6).

A section's period class is the single-factor class of its items' period means: automatic
stations average their valid daily means (a month needs the completeness setting, default 20
valid days; a part month in proportion), laboratory samples are averaged as they are. A value
below detection enters means as a fraction of its detection limit (setting, default half); an
item below detection throughout is classed by its detection limit, which passes every class
whose limit it does not exceed. Classes, limits and labels come from alerts.standards.water.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from alerts.evaluation.publish import (
    INDEX_PLACES,
    MULTIPLE_PLACES,
    published,
    published_share,
)
from alerts.evaluation.rules import EvaluationSettings
from alerts.evaluation.statistics import mean
from alerts.evaluation.validity import Insufficient, water_requirement
from alerts.standards import (
    assess_sea_water,
    assess_surface_water,
    sea_class_label,
    surface_class_label,
    surface_class_limit,
)
from alerts.standards.tables import SURFACE_WATER_PH, SURFACE_WATER_QUALITY
from alerts.standards.water import SEA_STANDARD, WaterAssessment
from core.rounding import exact

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Sections up to class III are 优良 (good), class 6 is 劣V (worse than V).
GOOD_CLASS = 3
WORSE_THAN_V = 6
# §5 several sections: from this many, the share of sections decides the grade (proportion
# method); below it, the sections' mean concentrations are classified.
PROPORTION_METHOD_MIN_SECTIONS = 5
EXCELLENT_GOOD_SHARE = Fraction(90, 100)
GOOD_GOOD_SHARE = Fraction(75, 100)
MODERATE_WORSE_THAN_V_SHARE = Fraction(20, 100)
HEAVY_WORSE_THAN_V_SHARE = Fraction(40, 100)
# Grades in order: 优, 良好, 轻度污染, 中度污染, 重度污染 (Chinese, English).
GRADES = tuple(dict.fromkeys(SURFACE_WATER_QUALITY))
# CWQI's neutral pH, between the 6-9 bounds.
NEUTRAL_PH = 7


@dataclass(frozen=True)
class ItemSeries:
    """One item's values in a period: automatic daily means (one per day) or lab samples.

    NaN is no valid value; where `below_detection` is set the value is the detection limit.
    """

    values: FloatArray
    below_detection: BoolArray | None = None
    automatic: bool = True


@dataclass(frozen=True)
class ItemMean:
    """An item's period mean; when every value was below detection, the detection limit."""

    item: str
    mean: float
    count: int
    detection_limit: float | None = None

    @property
    def class_value(self) -> float:
        """The value the item is classed by: its mean, or its detection limit."""
        return self.mean if self.detection_limit is None else self.detection_limit


@dataclass(frozen=True)
class Target:
    """A section's target: a class 1..5, and per-item concentration limits that override it."""

    water_class: int
    item_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not 1 <= self.water_class <= 5:
            raise ValueError(f"a target class is 1..5, not {self.water_class}")
        fixed = sorted(set(self.item_limits) & {"ph", "do"})
        if fixed:
            raise ValueError(f"pH and DO have no per-item target limit: {fixed}")


@dataclass(frozen=True)
class Exceedance:
    """An item beyond a limit: multiple (C - S)/S, None for pH and DO."""

    item: str
    value: float
    limit: float | None
    multiple: Fraction | None
    against: Literal["target", "class_iii"]


@dataclass(frozen=True)
class SectionEvaluation:
    """A section's (or sea point's) period class, grade, target compliance and CWQI."""

    code: str
    standard: str
    means: dict[str, ItemMean]
    insufficient: dict[str, Insufficient]
    assessment: WaterAssessment
    target: Target | None
    compliant: bool | None
    exceedances: tuple[Exceedance, ...]
    exceedances_class_iii: tuple[Exceedance, ...]
    cwqi: Fraction | None

    @property
    def water_class(self) -> int | None:
        """The single-factor class (surface 1..6, sea 1..5); None when nothing was evaluated."""
        return self.assessment.overall_class


@dataclass(frozen=True)
class GroupEvaluation:
    """Several sections (a river, an area, a city): shares, grade and mean CWQI (§5)."""

    sections: int
    good_share: Fraction | None
    worse_than_v_share: Fraction | None
    compliant_share: Fraction | None
    method: Literal["proportion", "mean_concentration"]
    grade_zh: str | None
    grade: str | None
    mean_class: int | None
    cwqi: Fraction | None


def item_mean(
    item: str, series: ItemSeries, start: date, end: date, settings: EvaluationSettings
) -> ItemMean | Insufficient:
    """An item's period mean (below detection: the setting's fraction of the limit)."""
    values = np.asarray(series.values, dtype=np.float64)
    below = (
        np.zeros(values.shape, dtype=bool)
        if series.below_detection is None
        else np.asarray(series.below_detection, dtype=bool)
    )
    valid = ~np.isnan(values)
    if series.automatic:
        if values.shape != ((end - start).days,):
            raise ValueError(f"automatic daily means need one per day of [{start}, {end})")
        requirement = water_requirement(
            start, end, month_min_valid_days=settings.water_month_min_valid_days
        )
        short = requirement.check(valid)
        if short is not None:
            return short
    elif not valid.any():
        return Insufficient(have=0, need=1)
    fraction = float(settings.below_detection_fraction)
    counted = np.where(below, values * fraction, values)
    all_below = bool(below[valid].all())
    return ItemMean(
        item=item,
        mean=mean(counted),
        count=int(valid.sum()),
        detection_limit=float(values[valid].max()) if all_below else None,
    )


def evaluate_section(
    code: str,
    items: Mapping[str, ItemSeries],
    *,
    start: date,
    end: date,
    target: Target,
    settings: EvaluationSettings,
    water_body: str = "river",
) -> SectionEvaluation:
    """A GB 3838 section's period class, grade, target compliance, exceedances and CWQI."""
    means, insufficient = _means(items, start, end, settings)
    values = {item: found.class_value for item, found in means.items()}
    assessment = assess_surface_water(
        values, water_body=water_body, target_class=target.water_class
    )
    evaluated = assessment.item_classes
    failing = {
        item: _target_limit(item, target, water_body)
        for item, item_class in evaluated.items()
        if not _meets(item, values[item], item_class, target)
    }
    class_iii = {
        item: surface_class_limit(item, GOOD_CLASS, water_body=water_body)
        for item, item_class in evaluated.items()
        if item_class > GOOD_CLASS
    }
    return SectionEvaluation(
        code=code,
        standard=assessment.standard,
        means={item: means[item] for item in evaluated},
        insufficient=insufficient,
        assessment=assessment,
        target=target,
        compliant=None if not evaluated else not failing,
        exceedances=_exceedances(failing, values, "target"),
        exceedances_class_iii=_exceedances(class_iii, values, "class_iii"),
        cwqi=_cwqi({item: means[item].mean for item in evaluated}, water_body),
    )


def evaluate_sea_point(
    code: str,
    items: Mapping[str, ItemSeries],
    *,
    start: date,
    end: date,
    target_class: int,
    settings: EvaluationSettings,
) -> SectionEvaluation:
    """A GB 3097 point's period class (1..4, 5 = 劣四类) and its items beyond the target."""
    means, insufficient = _means(items, start, end, settings)
    values = {item: found.class_value for item, found in means.items()}
    assessment = assess_sea_water(values, target_class=target_class)
    evaluated = assessment.item_classes
    exceedances = tuple(
        Exceedance(
            limiting.item,
            limiting.value,
            limiting.limit,
            None if limiting.exceedance is None else exact(limiting.exceedance),
            "target",
        )
        for limiting in assessment.limiting
    )
    return SectionEvaluation(
        code=code,
        standard=assessment.standard,
        means={item: means[item] for item in evaluated},
        insufficient=insufficient,
        assessment=assessment,
        target=Target(target_class),
        compliant=assessment.meets_target,
        exceedances=exceedances,
        exceedances_class_iii=(),
        cwqi=None,
    )


def evaluate_group(
    sections: Sequence[SectionEvaluation], *, water_body: str = "river"
) -> GroupEvaluation:
    """A river's, area's or city's sections together: shares, grade (§5) and mean CWQI."""
    classes = [s.water_class for s in sections if s.water_class is not None]
    classed = [s for s in sections if s.water_class is not None]
    count = len(classes)
    judged = [s.compliant for s in classed if s.compliant is not None]
    indices = [s.cwqi for s in classed if s.cwqi is not None]
    good = Fraction(sum(c <= GOOD_CLASS for c in classes), count) if count else None
    worse = Fraction(sum(c == WORSE_THAN_V for c in classes), count) if count else None
    compliant = Fraction(sum(judged), len(judged)) if judged else None
    cwqi = sum(indices, Fraction(0)) / len(indices) if indices else None
    if good is not None and worse is not None and count >= PROPORTION_METHOD_MIN_SECTIONS:
        grade_zh, grade = GRADES[_proportion_grade(good, worse)]
        return GroupEvaluation(
            count, good, worse, compliant, "proportion", grade_zh, grade, None, cwqi
        )
    pooled: dict[str, list[float]] = {}
    for section in classed:
        for item, found in section.means.items():
            pooled.setdefault(item, []).append(found.class_value)
    averaged = {item: mean(values) for item, values in pooled.items()}
    assessment = assess_surface_water(averaged, water_body=water_body)
    return GroupEvaluation(
        count,
        good,
        worse,
        compliant,
        "mean_concentration",
        assessment.description_zh,
        assessment.description,
        assessment.overall_class,
        cwqi,
    )


def format_exceedances(exceedances: Sequence[Exceedance], names: Mapping[str, str]) -> str:
    """The bulletin's form: '氨氮(0.24)、总磷(0.15)' (pH and DO named without a multiple)."""
    parts = []
    for exceedance in exceedances:
        name = names.get(exceedance.item, exceedance.item)
        if exceedance.multiple is None:
            parts.append(name)
        else:
            parts.append(f"{name}({published(exceedance.multiple, MULTIPLE_PLACES):.2f})")
    return "、".join(parts)


def section_report(section: SectionEvaluation) -> dict[str, Any]:
    """A section's published figures (JSON-ready)."""
    assessment = section.assessment
    return {
        "code": section.code,
        "standard": section.standard,
        "items_evaluated": list(assessment.item_classes),
        "items_not_measured": list(assessment.not_measured),
        "items_not_evaluated": list(assessment.excluded),
        "items": {
            item: {
                "mean": found.mean,
                "below_detection": found.detection_limit is not None,
                "detection_limit": found.detection_limit,
                "values": found.count,
                "class": assessment.item_classes[item],
            }
            for item, found in section.means.items()
        },
        "insufficient_data": {
            item: short.describe() for item, short in section.insufficient.items()
        },
        "class": assessment.overall_class,
        "class_label": assessment.label,
        "grade_zh": assessment.description_zh,
        "grade": assessment.description,
        "target": None
        if section.target is None
        else _target_report(section.target, section.standard),
        "compliant": section.compliant,
        "exceedances": {
            "target": [_exceedance_report(e) for e in section.exceedances],
            "class_iii": [_exceedance_report(e) for e in section.exceedances_class_iii],
        },
        "cwqi": None if section.cwqi is None else published(section.cwqi, INDEX_PLACES),
    }


def group_report(group: GroupEvaluation) -> dict[str, Any]:
    """A group's published figures (JSON-ready)."""
    return {
        "sections": group.sections,
        "good_share": None if group.good_share is None else published_share(group.good_share),
        "worse_than_v_share": None
        if group.worse_than_v_share is None
        else published_share(group.worse_than_v_share),
        "compliant_share": None
        if group.compliant_share is None
        else published_share(group.compliant_share),
        "method": group.method,
        "grade_zh": group.grade_zh,
        "grade": group.grade,
        "mean_class": group.mean_class,
        "cwqi": None if group.cwqi is None else published(group.cwqi, INDEX_PLACES),
    }


def _means(
    items: Mapping[str, ItemSeries], start: date, end: date, settings: EvaluationSettings
) -> tuple[dict[str, ItemMean], dict[str, Insufficient]]:
    means: dict[str, ItemMean] = {}
    insufficient: dict[str, Insufficient] = {}
    for item, series in items.items():
        found = item_mean(item, series, start, end, settings)
        if isinstance(found, Insufficient):
            insufficient[item] = found
        else:
            means[item] = found
    return means, insufficient


def _target_limit(item: str, target: Target, water_body: str) -> float | None:
    if item in target.item_limits:
        return target.item_limits[item]
    return surface_class_limit(item, target.water_class, water_body=water_body)


def _meets(item: str, value: float, item_class: int, target: Target) -> bool:
    if item in target.item_limits:
        return value <= target.item_limits[item]
    return item_class <= target.water_class


def _exceedances(
    limits: Mapping[str, float | None],
    values: Mapping[str, float],
    against: Literal["target", "class_iii"],
) -> tuple[Exceedance, ...]:
    found = []
    for item, limit in limits.items():
        multiple = None
        if item not in ("ph", "do") and limit is not None:
            standard = exact(limit)
            multiple = (exact(values[item]) - standard) / standard
        found.append(Exceedance(item, values[item], limit, multiple, against))
    # Largest multiple first; pH and DO (no multiple) after, in the standard's order.
    return tuple(
        sorted(found, key=lambda e: -e.multiple if e.multiple is not None else Fraction(1))
    )


def _cwqi(means: Mapping[str, float], water_body: str) -> Fraction | None:
    """Σ over items of C/C_III; DO C_III/C; pH by its distance from 7 toward 6 or 9."""
    if not means:
        return None
    low, high = SURFACE_WATER_PH
    total = Fraction(0)
    for item, value in means.items():
        level = exact(value)
        if item == "ph":
            if level > NEUTRAL_PH:
                total += (level - NEUTRAL_PH) / (exact(high) - NEUTRAL_PH)
            else:
                total += (NEUTRAL_PH - level) / (NEUTRAL_PH - exact(low))
            continue
        limit = surface_class_limit(item, GOOD_CLASS, water_body=water_body)
        if limit is None:
            continue
        if item == "do":
            if level == 0:
                return None
            total += exact(limit) / level
        else:
            total += level / exact(limit)
    return total


def _proportion_grade(good: Fraction, worse_than_v: Fraction) -> int:
    """Index into GRADES by the shares of sections in I-III and in 劣V (§5)."""
    if good >= EXCELLENT_GOOD_SHARE:
        return 0
    if good >= GOOD_GOOD_SHARE:
        return 1
    if worse_than_v < MODERATE_WORSE_THAN_V_SHARE:
        return 2
    if worse_than_v < HEAVY_WORSE_THAN_V_SHARE:
        return 3
    return 4


def _exceedance_report(exceedance: Exceedance) -> dict[str, Any]:
    return {
        "item": exceedance.item,
        "value": exceedance.value,
        "limit": exceedance.limit,
        "multiple": None
        if exceedance.multiple is None
        else published(exceedance.multiple, MULTIPLE_PLACES),
        "against": exceedance.against,
    }


def _target_report(target: Target, standard: str) -> dict[str, Any]:
    label = sea_class_label if standard == SEA_STANDARD else surface_class_label
    return {
        "class": target.water_class,
        "label": label(target.water_class),
        "item_limits": dict(target.item_limits),
    }
