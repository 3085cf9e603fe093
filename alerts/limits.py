"""What a station's parameter is held to on a day: the standards' limits and the rules' levels.

The standards' limits come from alerts/standards (GB 3095 by the edition in force on the day,
Grade II as every EnvLink air station is; GB 3838 or GB 3097 classes by the station's standard,
water body and target class, as alerts/assessment judges them). The rules' levels are the
ladders in force on the day of the enabled threshold rules whose scope takes in the station.
Pure: the caller passes the station and the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from alerts.assessment import AQI_POLLUTANTS, WaterSite
from alerts.assessment.water import SEA_STANDARD as GB3097_SITE
from alerts.engine.jobs import in_scope
from alerts.standards import (
    air_edition_for,
    air_limit,
    sea_class_label,
    sea_class_limit,
    surface_class_label,
    surface_class_limit,
)
from alerts.standards.tables import SEA_WATER_PH, SURFACE_WATER_PH
from alerts.standards.water import SEA_STANDARD, SURFACE_STANDARD
from schemas.rules import RuleDefinition
from store.catalogue import StationRef

Comparison = Literal["<=", ">=", ">"]

# Every EnvLink air station is in a Grade II (urban) area (docs/standards.md §3.1).
AIR_GRADE = 2
AIR_AVERAGINGS = ("1h", "8h", "24h", "annual")
GB3095_NAMES = {
    "2012": "GB 3095-2012",
    "2026_transition": "GB 3095-2026 (transition limits)",
    "2026_final": "GB 3095-2026 (final limits)",
}
SURFACE_CLASSES = range(1, 6)
SEA_CLASSES = range(1, 5)


@dataclass(frozen=True, slots=True)
class StandardLimit:
    """One limit of a standard: a value meets it when `value comparison limit` holds."""

    standard: str
    edition: str
    level: str  # "Grade II"; a class as the standard writes it ("III", "2")
    grade: int | None
    water_class: int | None
    averaging: str | None  # air: "1h", "8h", "24h", "annual"; water: None (each sample, day)
    comparison: Comparison
    limit: float
    target: bool


@dataclass(frozen=True, slots=True)
class RuleLevel:
    """One level of a rule's ladder in force on the day."""

    rule: str
    version: int
    name: str
    name_zh: str
    statistic: str | None
    direction: str
    standard: str
    applies_from: date | None
    applies_until: date | None
    severity: str
    trigger: float
    clear: float
    basis: str


def standard_limits(station: StationRef, parameter: str, day: date) -> list[StandardLimit]:
    """The standards' limits of a station's parameter on `day`; none where no standard sets one."""
    if station.medium == "air":
        return _air_limits(parameter, day)
    if station.water_standard is None:
        return []
    # The items a station's class is judged on; they do not depend on its target class.
    site = WaterSite(station.water_standard, station.water_body or "river", 0)
    if parameter not in site.items:
        return []
    if station.water_standard == GB3097_SITE:
        return _sea_limits(parameter, station.target_class)
    return _surface_limits(parameter, site.water_body, station.target_class)


def _air_limits(parameter: str, day: date) -> list[StandardLimit]:
    if parameter not in AQI_POLLUTANTS:
        return []
    edition = air_edition_for(day)
    found = []
    for averaging in AIR_AVERAGINGS:
        limit = air_limit(parameter, averaging, day, grade=AIR_GRADE)
        if limit is not None:
            found.append(
                StandardLimit(
                    standard=GB3095_NAMES[edition],
                    edition=edition,
                    level="Grade II",
                    grade=AIR_GRADE,
                    water_class=None,
                    averaging=averaging,
                    comparison="<=",
                    limit=limit,
                    target=True,
                )
            )
    return found


def _surface_limits(item: str, water_body: str, target: int | None) -> list[StandardLimit]:
    found = []
    for water_class in SURFACE_CLASSES:
        label = surface_class_label(water_class)
        bounds: list[tuple[Comparison, float]]
        if item == "ph":
            low, high = SURFACE_WATER_PH
            bounds = [(">=", float(low)), ("<=", float(high))]
        else:
            limit = surface_class_limit(item, water_class, water_body=water_body)
            assert limit is not None
            bounds = [(">=" if item == "do" else "<=", limit)]
        found += [
            _water_limit(SURFACE_STANDARD, "2002", label, water_class, comparison, limit, target)
            for comparison, limit in bounds
        ]
    return found


def _sea_limits(item: str, target: int | None) -> list[StandardLimit]:
    found = []
    for water_class in SEA_CLASSES:
        label = sea_class_label(water_class)
        bounds: list[tuple[Comparison, float]]
        if item == "ph":
            low, high = SEA_WATER_PH[water_class - 1]
            bounds = [(">=", float(low)), ("<=", float(high))]
        else:
            limit = sea_class_limit(item, water_class)
            assert limit is not None
            bounds = [(">" if item == "do" else "<=", limit)]
        found += [
            _water_limit(SEA_STANDARD, "1997", label, water_class, comparison, limit, target)
            for comparison, limit in bounds
        ]
    return found


def _water_limit(
    standard: str,
    edition: str,
    label: str,
    water_class: int,
    comparison: Comparison,
    limit: float,
    target: int | None,
) -> StandardLimit:
    return StandardLimit(
        standard=standard,
        edition=edition,
        level=label,
        grade=None,
        water_class=water_class,
        averaging=None,
        comparison=comparison,
        limit=limit,
        target=water_class == target,
    )


def rule_levels(
    rules: Iterable[tuple[RuleDefinition, int]], station: StationRef, parameter: str, day: date
) -> list[RuleLevel]:
    """The levels in force on `day` of the enabled threshold rules (definition, version) on this
    parameter whose scope takes in the station, by rule id and then severity."""
    found = []
    for rule, version in sorted(rules, key=lambda entry: entry[0].id):
        if rule.kind != "threshold" or not rule.enabled or rule.parameter != parameter:
            continue
        ladder = rule.ladder_for(day) if in_scope(rule, station) else None
        if ladder is None:
            continue
        found += [
            RuleLevel(
                rule=rule.id,
                version=version,
                name=rule.name.en,
                name_zh=rule.name.zh,
                statistic=rule.statistic,
                direction=rule.direction,
                standard=ladder.standard,
                applies_from=ladder.applies_from,
                applies_until=ladder.applies_until,
                severity=level.severity,
                trigger=level.trigger,
                clear=level.clear,
                basis=level.basis,
            )
            for level in ladder.levels
        ]
    return found
