"""Water quality classes: GB 3838-2002 surface water and GB 3097-1997 sea water.

See docs/standards.md §4-§5. Items use the EnvLink parameter codes (docs/standards.md §7).
GB 3097's own items are "cod_mn_alkaline" (COD by alkaline permanganate), "din" (inorganic
nitrogen) and "po4p" (reactive phosphate); they are never taken from "codmn"/"cod", "nh3n" or
"tp", which measure something else.
Surface classes are 1..5 with 6 meaning 劣V; sea classes are 1..4 with 5 meaning 劣四类.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from alerts.standards.tables import (
    SEA_CLASS_LABELS,
    SEA_WATER_DO_ABOVE,
    SEA_WATER_ITEMS,
    SEA_WATER_MAX,
    SEA_WATER_PH,
    SURFACE_CLASS_LABELS,
    SURFACE_WATER_DO_MIN,
    SURFACE_WATER_ITEMS,
    SURFACE_WATER_MAX,
    SURFACE_WATER_NOT_EVALUATED,
    SURFACE_WATER_PH,
    SURFACE_WATER_QUALITY,
    SURFACE_WATER_TP_MAX,
)

SURFACE_STANDARD = "GB 3838-2002"
SEA_STANDARD = "GB 3097-1997"


@dataclass(frozen=True)
class LimitingItem:
    """An item worse than the target class; exceedance (C - Cs)/Cs is None for pH and DO."""

    item: str
    item_class: int
    value: float
    limit: float | None
    exceedance: float | None


@dataclass(frozen=True)
class WaterAssessment:
    """Single-factor assessment of one sample or daily mean against a target class."""

    standard: str
    water_body: str
    target_class: int
    overall_class: int | None
    label: str | None
    description_zh: str | None
    description: str | None
    meets_target: bool | None
    item_classes: dict[str, int]
    limiting: tuple[LimitingItem, ...]
    not_measured: tuple[str, ...]
    excluded: tuple[str, ...]


def surface_class_label(water_class: int) -> str:
    """GB 3838 label of a class: 'I'..'V', or '劣V' for 6."""
    return _label(water_class, SURFACE_CLASS_LABELS)


def sea_class_label(water_class: int) -> str:
    """GB 3097 label of a class: '1'..'4', or '劣四类' for 5."""
    return _label(water_class, SEA_CLASS_LABELS)


def surface_water_class(item: str, value: float, *, water_body: str = "river") -> int:
    """GB 3838-2002 class of one item's value: 1..5, or 6 for worse than V (劣V)."""
    _check_value(item, value)
    if item == "ph":
        low, high = SURFACE_WATER_PH
        return 1 if low <= value <= high else 6
    if item == "do":
        return _first_class(value >= minimum for minimum in SURFACE_WATER_DO_MIN)
    return _first_class(value <= limit for limit in _surface_max(item, water_body))


def surface_evaluated_items(water_body: str = "river") -> tuple[str, ...]:
    """GB 3838 Table 1 items evaluated for a water body (rivers: 21, lakes/reservoirs: 23)."""
    _check_water_body(water_body)
    excluded = SURFACE_WATER_NOT_EVALUATED[water_body]
    return tuple(item for item in SURFACE_WATER_ITEMS if item not in excluded)


def surface_class_limit(item: str, water_class: int, *, water_body: str = "river") -> float | None:
    """GB 3838 limit of an item for class 1..5: a maximum, DO's minimum, None for pH (6-9)."""
    if not 1 <= water_class <= len(SURFACE_WATER_DO_MIN):
        raise ValueError(f"{SURFACE_STANDARD} class must be 1..5, not {water_class}")
    if item == "ph":
        return None
    if item == "do":
        return float(SURFACE_WATER_DO_MIN[water_class - 1])
    return float(_surface_max(item, water_body)[water_class - 1])


def sea_water_class(item: str, value: float) -> int:
    """GB 3097-1997 class of one item's value: 1..4, or 5 for worse than class 4 (劣四类)."""
    _check_value(item, value)
    if item == "ph":
        return _first_class(low <= value <= high for low, high in SEA_WATER_PH)
    if item == "do":
        return _first_class(value > floor for floor in SEA_WATER_DO_ABOVE)
    if item not in SEA_WATER_MAX:
        raise ValueError(f"{SEA_STANDARD} has no item {item!r}; items: {list(SEA_WATER_ITEMS)}")
    return _first_class(value <= limit for limit in SEA_WATER_MAX[item])


def sea_class_limit(item: str, water_class: int) -> float | None:
    """GB 3097 limit of an item for class 1..4: a maximum, DO's floor (strictly above), None
    for pH (a range per class)."""
    if not 1 <= water_class <= len(SEA_WATER_DO_ABOVE):
        raise ValueError(f"{SEA_STANDARD} class must be 1..4, not {water_class}")
    if item == "ph":
        return None
    if item == "do":
        return float(SEA_WATER_DO_ABOVE[water_class - 1])
    if item not in SEA_WATER_MAX:
        raise ValueError(f"{SEA_STANDARD} has no item {item!r}; items: {list(SEA_WATER_ITEMS)}")
    return float(SEA_WATER_MAX[item][water_class - 1])


def assess_surface_water(
    values: Mapping[str, float | None], *, water_body: str = "river", target_class: int = 3
) -> WaterAssessment:
    """Assess measured items against GB 3838-2002 and a target class 1..5 (single-factor)."""
    items = surface_evaluated_items(water_body)

    def classify(item: str, value: float) -> int:
        return surface_water_class(item, value, water_body=water_body)

    def target_limit(item: str) -> float | None:
        if item == "ph":
            return None
        if item == "do":
            return SURFACE_WATER_DO_MIN[target_class - 1]
        return _surface_max(item, water_body)[target_class - 1]

    return _assess(
        values,
        items,
        classify,
        target_limit,
        target_class,
        standard=SURFACE_STANDARD,
        water_body=water_body,
        labels=SURFACE_CLASS_LABELS,
        quality=SURFACE_WATER_QUALITY,
    )


def assess_sea_water(
    values: Mapping[str, float | None], *, target_class: int = 2
) -> WaterAssessment:
    """Assess measured items against GB 3097-1997 and a target class 1..4 (single-factor)."""

    def target_limit(item: str) -> float | None:
        if item == "ph":
            return None
        if item == "do":
            return SEA_WATER_DO_ABOVE[target_class - 1]
        return SEA_WATER_MAX[item][target_class - 1]

    return _assess(
        values,
        SEA_WATER_ITEMS,
        sea_water_class,
        target_limit,
        target_class,
        standard=SEA_STANDARD,
        water_body="sea",
        labels=SEA_CLASS_LABELS,
        quality=None,
    )


def _assess(
    values: Mapping[str, float | None],
    items: tuple[str, ...],
    classify: Callable[[str, float], int],
    target_limit: Callable[[str], float | None],
    target_class: int,
    *,
    standard: str,
    water_body: str,
    labels: tuple[str, ...],
    quality: tuple[tuple[str, str], ...] | None,
) -> WaterAssessment:
    # The last label is "worse than the worst class", which cannot be a target.
    class_count = len(labels) - 1
    if not 1 <= target_class <= class_count:
        raise ValueError(f"{standard} target class must be 1..{class_count}, not {target_class}")
    measured = {
        item: value
        for item in items
        if (value := values.get(item)) is not None and not math.isnan(value)
    }
    classes = {item: classify(item, value) for item, value in measured.items()}
    limiting = [
        _limiting_item(item, classes[item], value, target_limit(item))
        for item, value in measured.items()
        if classes[item] > target_class
    ]
    # Largest exceedance first; pH and DO (no multiple) after, in the standard's order.
    limiting.sort(key=lambda entry: -entry.exceedance if entry.exceedance is not None else 1.0)
    overall = max(classes.values(), default=None)
    description_zh, description = (
        quality[overall - 1] if quality is not None and overall is not None else (None, None)
    )
    return WaterAssessment(
        standard=standard,
        water_body=water_body,
        target_class=target_class,
        overall_class=overall,
        label=None if overall is None else labels[overall - 1],
        description_zh=description_zh,
        description=description,
        meets_target=None if overall is None else overall <= target_class,
        item_classes=classes,
        limiting=tuple(limiting),
        not_measured=tuple(item for item in items if item not in measured),
        excluded=tuple(sorted(set(values) - set(items))),
    )


def _limiting_item(item: str, item_class: int, value: float, limit: float | None) -> LimitingItem:
    exceedance = None
    if item not in ("ph", "do") and limit is not None:
        # Decimal on the reported figures keeps (0.3 - 0.2) / 0.2 at 0.5, not 0.49999999999999994.
        standard_value = Decimal(repr(float(limit)))
        exceedance = float((Decimal(repr(float(value))) - standard_value) / standard_value)
    return LimitingItem(item, item_class, value, limit, exceedance)


def _surface_max(item: str, water_body: str) -> tuple[float, ...]:
    _check_water_body(water_body)
    if item == "tp":
        return SURFACE_WATER_TP_MAX[water_body]
    if item not in SURFACE_WATER_MAX:
        raise ValueError(f"{SURFACE_STANDARD} sets no class limit for {item!r}")
    return SURFACE_WATER_MAX[item]


def _check_water_body(water_body: str) -> None:
    if water_body not in SURFACE_WATER_NOT_EVALUATED:
        raise ValueError(f"water_body must be 'river' or 'lake', not {water_body!r}")


def _check_value(item: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{item} value {value!r} is not a valid measurement")


def _first_class(fits: Iterable[bool]) -> int:
    """1-based position of the first class the value fits, or one past the last."""
    position = 0
    for position, fit in enumerate(fits, start=1):
        if fit:
            return position
    return position + 1


def _label(water_class: int, labels: tuple[str, ...]) -> str:
    if not 1 <= water_class <= len(labels):
        raise ValueError(f"class {water_class} is outside 1..{len(labels)}")
    return labels[water_class - 1]
