"""Air evaluation of a period part: statistics, days and shares, composite index (§2-§4).

Days are rolled up by the standards: each day's AQI, level and primary pollutants come from
`daily_aqi_array` (HJ 633) under the part's edition. Everything here keeps full precision (exact
fractions for counts, shares and index terms); `air_report` rounds once, for publication.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from alerts.evaluation.air_days import AirDays, FloatArray, primary_by_pollutant
from alerts.evaluation.periods import PeriodPart
from alerts.evaluation.publish import (
    CHANGE_PLACES,
    INDEX_PLACES,
    MULTIPLE_PLACES,
    SHARE_PLACES,
    concentration_places,
    published,
    published_count,
    published_share,
)
from alerts.evaluation.rules import (
    COMPLIANCE_STATISTICS,
    PERIOD_STATISTICS,
    POLLUTANTS,
    RuleSet,
    Statistic,
)
from alerts.evaluation.statistics import mean, percentile
from alerts.evaluation.validity import ANY_DAY, DayRequirement, Insufficient, air_requirement
from alerts.standards.aqi import AqiArrays, aqi_level_index, daily_aqi_array
from alerts.standards.tables import AQI_LEVELS
from core.rounding import exact, round_exact

# Category keys in HJ 633's level order: excellent, good, lightly_polluted, ... (§3).
CATEGORIES = tuple(row[3].lower().replace(" ", "_") for row in AQI_LEVELS)
# Positions in that order: 优 and 良 are good days (AQI <= 100); 重度 and worse are heavy (> 200).
GOOD_LEVELS = 2
HEAVY_FROM_LEVEL = 4
UNITS = {"co": "mg/m3"}


def all_met(verdicts: Sequence[bool | None]) -> bool | None:
    """False if any verdict fails, None if any is unknown, else True."""
    if False in verdicts:
        return False
    return None if None in verdicts else True


@dataclass(frozen=True)
class Check:
    """One statistic judged against the limit of its averaging."""

    statistic: str
    value: float | Insufficient
    limit: float | None
    complies: bool | None


@dataclass(frozen=True)
class PollutantResult:
    """A pollutant's period statistic, its limit and (for a year) its compliance."""

    pollutant: str
    statistic: str
    value: float | Insufficient
    valid_days: int
    limit: float | None
    limit_averaging: str
    exceedance_multiple: Fraction | None
    compliance: tuple[Check, ...] | None

    @property
    def complies(self) -> bool | None:
        """All checks met (None: not a year, or a check without data or limit)."""
        if self.compliance is None:
            return None
        return all_met([check.complies for check in self.compliance])


@dataclass(frozen=True)
class DayCounts:
    """Valid days, category days and primary pollutants; counts are exact fractions."""

    days: int
    valid_days: Fraction
    category_days: dict[str, Fraction]
    good_days: Fraction
    exceedance_days: Fraction
    heavy_pollution_days: Fraction
    good_day_share: Fraction | None
    exceedance_share: Fraction | None
    heavy_pollution_share: Fraction | None
    days_with_primary: Fraction
    primary_days: dict[str, Fraction]
    primary_shares: dict[str, Fraction] | None


@dataclass(frozen=True)
class CompositeIndex:
    """Σ Cᵢ/Sᵢ with each term rounded to 2 decimals first (§4); Insufficient if a term is."""

    value: Fraction | Insufficient
    terms: dict[str, Fraction]
    primary: tuple[str, ...]
    limits: dict[str, float | None]


@dataclass(frozen=True)
class AirEvaluation:
    """The air evaluation of one period part under one rule set."""

    part: PeriodPart
    pollutants: dict[str, PollutantResult]
    days: DayCounts
    composite: CompositeIndex
    aqi: AqiArrays | None

    @property
    def rule_set(self) -> RuleSet:
        """The rule set the part was evaluated under."""
        return self.part.rule_set

    @property
    def complies(self) -> bool | None:
        """A city complies when all six pollutants do (years only; None where unknown)."""
        return all_met([result.complies for result in self.pollutants.values()])


def evaluate_air(days: AirDays, part: PeriodPart) -> AirEvaluation:
    """Evaluate a station's or city's daily values over one period part (its own rule set)."""
    within = days.between(part.start, part.end)
    rule_set = part.rule_set
    settings = rule_set.settings
    requirement = air_requirement(
        part.start, part.end, every_month_valid=settings.every_month_valid
    )
    percentile_requirement = requirement if settings.percentiles_need_day_counts else ANY_DAY
    pollutants = {}
    for pollutant in POLLUTANTS:
        key, statistic = PERIOD_STATISTICS[pollutant]
        series = within.values[key]
        need = requirement if statistic.percentile is None else percentile_requirement
        value = _statistic(series, statistic, need)
        limit = rule_set.limit(pollutant, statistic.averaging)
        checks = None
        if part.kind == "year":
            checks = tuple(
                _check(pollutant, series, check, rule_set, requirement, percentile_requirement)
                for check in COMPLIANCE_STATISTICS[pollutant]
            )
        pollutants[pollutant] = PollutantResult(
            pollutant=pollutant,
            statistic=statistic.name,
            value=value,
            valid_days=int(np.count_nonzero(~np.isnan(series))),
            limit=limit,
            limit_averaging=statistic.averaging,
            exceedance_multiple=_multiple(pollutant, value, limit, rule_set),
            compliance=checks,
        )
    aqi = daily_aqi_array(within.values, rule_set.hj633)
    return AirEvaluation(
        part=part,
        pollutants=pollutants,
        days=_day_counts(aqi, rule_set),
        composite=composite_index({p: result.value for p, result in pollutants.items()}, rule_set),
        aqi=aqi,
    )


def composite_index(
    statistics: Mapping[str, float | Insufficient], rule_set: RuleSet
) -> CompositeIndex:
    """§4: each Iᵢ = Cᵢ/Sᵢ (weighted if set) rounded half to even to 2 decimals, then summed."""
    limits = rule_set.composite_limits()
    weights = rule_set.settings.composite_weights
    weight_of = {} if weights is None else dict(weights)
    terms: dict[str, Fraction] = {}
    for pollutant in POLLUTANTS:
        value = statistics[pollutant]
        limit = limits[pollutant]
        if isinstance(value, Insufficient) or limit is None:
            continue
        weight = exact(weight_of.get(pollutant, 1))
        term = weight * _figure(pollutant, value, rule_set) / exact(limit)
        terms[pollutant] = exact(round_exact(term, INDEX_PLACES))
    index: Fraction | Insufficient = sum(terms.values(), Fraction(0))
    if len(terms) < len(POLLUTANTS):
        index = Insufficient(have=len(terms), need=len(POLLUTANTS))
    top = max(terms.values(), default=None)
    primary = tuple(p for p, term in terms.items() if term == top)
    return CompositeIndex(index, terms, primary, limits)


def region_evaluation(cities: Sequence[AirEvaluation]) -> AirEvaluation:
    """The region: for each indicator the mean of the cities' evaluations of one part (§2).

    Concentrations, day counts, shares and composite-index terms and values are the cities'
    means; a statistic short of data in any city is short for the region; a pollutant's valid
    days are the fewest of the cities'; a compliance check is met when every city meets it.
    """
    if not cities:
        raise ValueError("a region needs at least one city")
    part = cities[0].part
    if any(
        (c.part.start, c.part.end, c.part.rule_set) != (part.start, part.end, part.rule_set)
        for c in cities
    ):
        raise ValueError("the cities must be evaluated over the same part under one rule set")
    pollutants = {}
    for pollutant in POLLUTANTS:
        results = [city.pollutants[pollutant] for city in cities]
        first = results[0]
        checks = None
        if first.compliance is not None:
            checks = tuple(
                _mean_check([r.compliance[i] for r in results if r.compliance is not None])
                for i in range(len(first.compliance))
            )
        value = _mean_value([r.value for r in results])
        pollutants[pollutant] = PollutantResult(
            pollutant=pollutant,
            statistic=first.statistic,
            value=value,
            valid_days=min(r.valid_days for r in results),
            limit=first.limit,
            limit_averaging=first.limit_averaging,
            exceedance_multiple=_multiple(pollutant, value, first.limit, part.rule_set),
            compliance=checks,
        )
    return AirEvaluation(
        part=part,
        pollutants=pollutants,
        days=_mean_days([city.days for city in cities]),
        composite=_mean_composite([city.composite for city in cities]),
        aqi=None,
    )


def air_report(evaluation: AirEvaluation) -> dict[str, Any]:
    """The published report of one part: every figure rounded once (JSON-ready)."""
    part = evaluation.part
    days = evaluation.days
    composite = evaluation.composite
    return {
        "period": {
            "start": part.start.isoformat(),
            "end": part.end.isoformat(),
            "kind": part.kind,
            "label": part.label,
        },
        "rule_set": part.rule_set.describe(),
        "days": days.days,
        "valid_days": published_count(days.valid_days),
        "category_days": {key: published_count(n) for key, n in days.category_days.items()},
        "good_days": published_count(days.good_days),
        "good_day_share": _share(days.good_day_share, days.valid_days),
        "exceedance_days": published_count(days.exceedance_days),
        "exceedance_share": _share(days.exceedance_share, days.valid_days),
        "heavy_pollution_days": published_count(days.heavy_pollution_days),
        "heavy_pollution_share": _share(days.heavy_pollution_share, days.valid_days),
        "pollutants": {
            pollutant: _pollutant_report(result, part.rule_set)
            for pollutant, result in evaluation.pollutants.items()
        },
        "complies": evaluation.complies if part.kind == "year" else None,
        "composite_index": {
            "value": _index(composite.value),
            "terms": {p: published(term, INDEX_PLACES) for p, term in composite.terms.items()},
            "primary": list(composite.primary),
            "limits": composite.limits,
        },
        "days_with_primary_pollutant": published_count(days.days_with_primary),
        "primary_pollutant_days": {p: published_count(n) for p, n in days.primary_days.items()},
        "primary_pollutant_shares": _primary_shares(days),
    }


def compare_air(current: AirEvaluation, previous: AirEvaluation) -> dict[str, Any]:
    """Changes on `previous` (the same period a year earlier) of the published figures.

    The composite index and concentrations change in percent ("+" is worse), shares in
    percentage points, category days in days. `basis` says whether both parts ran under one
    rule set (like for like) or each under its own (as published).
    """
    from_published = current.rule_set.settings.from_published
    pollutants = {}
    for pollutant in POLLUTANTS:
        pollutants[pollutant] = _percent_change(
            current.pollutants[pollutant].value,
            previous.pollutants[pollutant].value,
            concentration_places(pollutant) if from_published else None,
        )
    return {
        "basis": "like_for_like" if previous.rule_set == current.rule_set else "as_published",
        "previous_rule_set": previous.rule_set.name,
        "good_day_share_points": _points(
            current.days.good_day_share, previous.days.good_day_share, from_published
        ),
        "composite_index_percent": _percent_change(
            current.composite.value, previous.composite.value, None
        ),
        "category_days": {
            key: published_count(current.days.category_days[key] - previous.days.category_days[key])
            for key in CATEGORIES
        },
        "pollutants_percent": pollutants,
    }


def _statistic(
    series: FloatArray, statistic: Statistic, need: DayRequirement
) -> float | Insufficient:
    short = need.check(~np.isnan(series))
    if short is not None:
        return short
    if statistic.percentile is None:
        return mean(series)
    return percentile(series, statistic.percentile)


def _check(
    pollutant: str,
    series: FloatArray,
    statistic: Statistic,
    rule_set: RuleSet,
    requirement: DayRequirement,
    percentile_requirement: DayRequirement,
) -> Check:
    need = requirement if statistic.percentile is None else percentile_requirement
    value = _statistic(series, statistic, need)
    limit = rule_set.limit(pollutant, statistic.averaging)
    complies = None
    if not isinstance(value, Insufficient) and limit is not None:
        complies = _figure(pollutant, value, rule_set) <= exact(limit)
    return Check(statistic.name, value, limit, complies)


def _figure(pollutant: str, value: float, rule_set: RuleSet) -> Fraction:
    """The value derived figures use: as published (the default setting), or full precision."""
    if rule_set.settings.from_published:
        return exact(round_exact(value, concentration_places(pollutant)))
    return exact(value)


def _multiple(
    pollutant: str, value: float | Insufficient, limit: float | None, rule_set: RuleSet
) -> Fraction | None:
    """(C - S)/S when the statistic exceeds its limit; None otherwise."""
    if isinstance(value, Insufficient) or limit is None:
        return None
    figure = _figure(pollutant, value, rule_set)
    standard = exact(limit)
    return (figure - standard) / standard if figure > standard else None


def _day_counts(aqi: AqiArrays, rule_set: RuleSet) -> DayCounts:
    levels = aqi_level_index(aqi.aqi)
    valid = int(np.count_nonzero(levels >= 0))
    per_level = np.bincount(levels[levels >= 0], minlength=len(CATEGORIES))
    category_days = {key: Fraction(int(n)) for key, n in zip(CATEGORIES, per_level, strict=True)}
    good = Fraction(int(per_level[:GOOD_LEVELS].sum()))
    heavy = Fraction(int(per_level[HEAVY_FROM_LEVEL:].sum()))
    exceedance = Fraction(valid) - good
    primary = primary_by_pollutant(aqi)
    per_day = np.stack([primary[p] for p in POLLUTANTS]).sum(axis=0)
    with_primary = Fraction(int(np.count_nonzero(per_day)))
    if rule_set.settings.primary_ties == "split":
        primary_days = {
            p: sum((Fraction(1, int(k)) for k in per_day[primary[p]]), Fraction(0))
            for p in POLLUTANTS
        }
    else:
        primary_days = {p: Fraction(int(np.count_nonzero(primary[p]))) for p in POLLUTANTS}
    return DayCounts(
        days=int(levels.size),
        valid_days=Fraction(valid),
        category_days=category_days,
        good_days=good,
        exceedance_days=exceedance,
        heavy_pollution_days=heavy,
        good_day_share=good / valid if valid else None,
        exceedance_share=exceedance / valid if valid else None,
        heavy_pollution_share=heavy / valid if valid else None,
        days_with_primary=with_primary,
        primary_days=primary_days,
        primary_shares={p: n / with_primary for p, n in primary_days.items()}
        if with_primary
        else None,
    )


def _mean_value(values: Sequence[float | Insufficient]) -> float | Insufficient:
    for value in values:
        if isinstance(value, Insufficient):
            return value
    return float(np.mean([float(v) for v in values if not isinstance(v, Insufficient)]))


def _mean_fraction(values: Sequence[Fraction | None]) -> Fraction | None:
    if any(value is None for value in values):
        return None
    return sum((v for v in values if v is not None), Fraction(0)) / len(values)


def _mean_check(checks: Sequence[Check]) -> Check:
    first = checks[0]
    complies = all_met([check.complies for check in checks])
    return Check(first.statistic, _mean_value([c.value for c in checks]), first.limit, complies)


def _mean_days(counts: Sequence[DayCounts]) -> DayCounts:
    n = len(counts)

    def average(values: Sequence[Fraction]) -> Fraction:
        return sum(values, Fraction(0)) / n

    shares = [c.primary_shares for c in counts]
    return DayCounts(
        days=counts[0].days,
        valid_days=average([c.valid_days for c in counts]),
        category_days={k: average([c.category_days[k] for c in counts]) for k in CATEGORIES},
        good_days=average([c.good_days for c in counts]),
        exceedance_days=average([c.exceedance_days for c in counts]),
        heavy_pollution_days=average([c.heavy_pollution_days for c in counts]),
        good_day_share=_mean_fraction([c.good_day_share for c in counts]),
        exceedance_share=_mean_fraction([c.exceedance_share for c in counts]),
        heavy_pollution_share=_mean_fraction([c.heavy_pollution_share for c in counts]),
        days_with_primary=average([c.days_with_primary for c in counts]),
        primary_days={p: average([c.primary_days[p] for c in counts]) for p in POLLUTANTS},
        primary_shares=None
        if any(s is None for s in shares)
        else {p: average([s[p] for s in shares if s is not None]) for p in POLLUTANTS},
    )


def _mean_composite(indices: Sequence[CompositeIndex]) -> CompositeIndex:
    values = [index.value for index in indices]
    short = next((v for v in values if isinstance(v, Insufficient)), None)
    n = len(indices)
    value: Fraction | Insufficient = (
        short
        if short is not None
        else sum((v for v in values if not isinstance(v, Insufficient)), Fraction(0)) / n
    )
    shared = set.intersection(*(set(index.terms) for index in indices))
    terms = {
        p: sum((index.terms[p] for index in indices), Fraction(0)) / n
        for p in POLLUTANTS
        if p in shared
    }
    top = max(terms.values(), default=None)
    primary = tuple(p for p, term in terms.items() if term == top)
    return CompositeIndex(value, terms, primary, indices[0].limits)


def _pollutant_report(result: PollutantResult, rule_set: RuleSet) -> dict[str, Any]:
    pollutant = result.pollutant
    found: dict[str, Any] = {
        "statistic": result.statistic,
        "value": _concentration(pollutant, result.value),
        "unit": UNITS.get(pollutant, "ug/m3"),
        "valid_days": result.valid_days,
        "limit": result.limit,
        "limit_averaging": result.limit_averaging,
        "exceedance_multiple": None
        if result.exceedance_multiple is None
        else published(result.exceedance_multiple, MULTIPLE_PLACES),
    }
    if result.compliance is not None:
        found["compliance"] = {
            "complies": result.complies,
            "checks": [
                {
                    "statistic": check.statistic,
                    "value": _concentration(pollutant, check.value),
                    "limit": check.limit,
                    "complies": check.complies,
                }
                for check in result.compliance
            ],
        }
    return found


def _concentration(pollutant: str, value: float | Insufficient) -> Any:
    if isinstance(value, Insufficient):
        return value.describe()
    return published(value, concentration_places(pollutant))


def _index(value: Fraction | Insufficient) -> Any:
    if isinstance(value, Insufficient):
        return value.describe()
    return published(value, INDEX_PLACES)


def _share(share: Fraction | None, valid_days: Fraction) -> Any:
    if share is None:
        return Insufficient(have=int(valid_days), need=1).describe()
    return published_share(share)


def _primary_shares(days: DayCounts) -> Any:
    if days.primary_shares is None:
        return None
    return {p: published_share(share) for p, share in days.primary_shares.items()}


def _points(now: Fraction | None, before: Fraction | None, from_published: bool) -> float | None:
    if now is None or before is None:
        return None
    if from_published:
        now = exact(round_exact(now * 100, SHARE_PLACES)) / 100
        before = exact(round_exact(before * 100, SHARE_PLACES)) / 100
    return float(round_exact((now - before) * 100, CHANGE_PLACES))


def _percent_change(
    now: float | Fraction | Insufficient,
    before: float | Fraction | Insufficient,
    places: int | None,
) -> float | None:
    """(now - before)/before × 100, of figures rounded to `places` (None: as they are)."""
    if isinstance(now, Insufficient) or isinstance(before, Insufficient):
        return None
    current, earlier = exact(now), exact(before)
    if places is not None:
        current = exact(round_exact(current, places))
        earlier = exact(round_exact(earlier, places))
    if earlier == 0:
        return None
    return float(round_exact((current - earlier) / earlier * 100, CHANGE_PLACES))
