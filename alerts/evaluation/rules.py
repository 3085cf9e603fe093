"""Which rule set evaluates a day (docs/evaluation.md §1), and the settings that travel with it.

A rule set is the HJ 663, GB 3095 and HJ 633 editions in force on a day plus the evaluation
settings: the points docs/evaluation.md §9 lists as settings, each with its default. Like the
standards' editions, settings are versioned by the first day they apply to, so a period keeps
the figures it was published with. A period never mixes two rule sets (see periods.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal

from alerts.standards import air_limit
from alerts.standards.editions import edition_on
from alerts.standards.tables import AIR_EDITIONS, AQI_EDITIONS, HJ663_EDITIONS
from alerts.standards.water import SEA_STANDARD, SURFACE_STANDARD

POLLUTANTS = ("so2", "no2", "co", "o3", "pm10", "pm25")


@dataclass(frozen=True)
class Statistic:
    """A period statistic of daily values: their mean, or an HJ 663 percentile of them."""

    name: str
    percentile: int | None
    averaging: str


_MEAN = Statistic("mean", None, "annual")
# docs/evaluation.md §2: the statistic each pollutant reports (from which daily value), and what a
# year must meet to comply (each statistic against the limit of its averaging).
PERIOD_STATISTICS: Mapping[str, tuple[str, Statistic]] = MappingProxyType(
    {
        "so2": ("so2", _MEAN),
        "no2": ("no2", _MEAN),
        "co": ("co", Statistic("p95", 95, "24h")),
        "o3": ("o3_8h_max", Statistic("mda8_p90", 90, "8h")),
        "pm10": ("pm10", _MEAN),
        "pm25": ("pm25", _MEAN),
    }
)
COMPLIANCE_STATISTICS: Mapping[str, tuple[Statistic, ...]] = MappingProxyType(
    {
        "so2": (_MEAN, Statistic("p98", 98, "24h")),
        "no2": (_MEAN, Statistic("p98", 98, "24h")),
        "co": (PERIOD_STATISTICS["co"][1],),
        "o3": (PERIOD_STATISTICS["o3"][1],),
        "pm10": (_MEAN, Statistic("p95", 95, "24h")),
        "pm25": (_MEAN, Statistic("p95", 95, "24h")),
    }
)


@dataclass(frozen=True)
class SeaGradeThresholds:
    """docs/evaluation.md §6 sea-area grade (setting): percent of points by GB 3097 class."""

    excellent_class_1: int = 60
    excellent_class_1_2: int = 90
    good_class_1_2: int = 80
    fair_class_1_2: int = 60
    fair_worse_than_4_at_most: int = 30
    very_poor_worse_than_4: int = 40


@dataclass(frozen=True)
class EvaluationSettings:
    """The settings of docs/evaluation.md §9 with their defaults; a change is a new version.

    - every_month_valid (§2): a quarter — and any period of several months that is not a whole
      year — needs every month valid; False: only its total of the months' minimums.
    - percentiles_need_day_counts (§2): the CO and O3 percentile series need the same valid-day
      counts as the means; False: any valid day will do.
    - o3_city_mda8 (§2): a city's O3 MDA8 is the mean of its stations' MDA8s ("station_mean")
      or the MDA8 of the city's hourly means ("city_hourly").
    - primary_ties (§3): a day with tied primary pollutants counts a whole day for each
      ("each": shares may sum above 100 %) or splits the day between them ("split").
    - composite_averaging, composite_weights (§4): the GB 3095 limit each composite-index term
      divides by (averaging, from the rule set's edition) and (pollutant, weight) pairs for the
      terms (one not listed weighs 1; None: unweighted). The GB 3095-2026 index is thus
      unweighted with the 2026 limits, and labelled so.
    - from_published (EnvLink's reading of how the cities publish): compliance,
      exceedance multiples, composite-index terms and changes use a statistic's published
      (rounded) value, as the cities' own figures do; False: full precision.
    - water_month_min_valid_days (§5): valid daily means an automatic station needs a month.
    - below_detection_fraction (§5): a value below detection enters means as this fraction of
      its detection limit.
    - sea_grades (§6): the sea-area grade thresholds.
    """

    version: str = "1"
    every_month_valid: bool = True
    percentiles_need_day_counts: bool = True
    o3_city_mda8: Literal["station_mean", "city_hourly"] = "station_mean"
    primary_ties: Literal["each", "split"] = "each"
    composite_averaging: tuple[tuple[str, str], ...] = (
        ("so2", "annual"),
        ("no2", "annual"),
        ("co", "24h"),
        ("o3", "8h"),
        ("pm10", "annual"),
        ("pm25", "annual"),
    )
    composite_weights: tuple[tuple[str, Fraction], ...] | None = None
    from_published: bool = True
    water_month_min_valid_days: int = 20
    below_detection_fraction: Fraction = Fraction(1, 2)
    sea_grades: SeaGradeThresholds = SeaGradeThresholds()

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-ready data, for a report's notes."""
        return {
            "version": self.version,
            "every_month_valid": self.every_month_valid,
            "percentiles_need_day_counts": self.percentiles_need_day_counts,
            "o3_city_mda8": self.o3_city_mda8,
            "primary_ties": self.primary_ties,
            "composite_weights": "unweighted"
            if self.composite_weights is None
            else {key: float(weight) for key, weight in self.composite_weights},
            "from_published": self.from_published,
            "water_month_min_valid_days": self.water_month_min_valid_days,
            "below_detection_fraction": float(self.below_detection_fraction),
        }


# Settings versions in force from their first day, like the standards' editions.
SETTINGS_EDITIONS: tuple[tuple[str, date], ...] = (("1", date.min),)
SETTINGS: Mapping[str, EvaluationSettings] = MappingProxyType({"1": EvaluationSettings()})

_GB3095_NAMES = {
    "2012": "GB 3095-2012",
    "2026_transition": "GB 3095-2026 (transition limits)",
    "2026_final": "GB 3095-2026 (final limits)",
}


@dataclass(frozen=True)
class RuleSet:
    """The editions and settings that evaluate the days from `first_day` until `until`."""

    first_day: date
    until: date | None
    hj663: str
    gb3095: str
    hj633: str
    settings: EvaluationSettings

    @property
    def name(self) -> str:
        """E.g. 'HJ 663-2013 / GB 3095-2012 / HJ 633-2012'."""
        return f"HJ 663-{self.hj663} / {_GB3095_NAMES[self.gb3095]} / HJ 633-{self.hj633}"

    def limit(self, pollutant: str, averaging: str) -> float | None:
        """The GB 3095 Grade II limit of this rule set's edition; None where none is set."""
        return air_limit(pollutant, averaging, self.first_day)

    def composite_limits(self) -> dict[str, float | None]:
        """The limit each composite-index term divides by (§4)."""
        averaging = dict(self.settings.composite_averaging)
        return {pollutant: self.limit(pollutant, averaging[pollutant]) for pollutant in POLLUTANTS}

    def describe(self) -> dict[str, Any]:
        """The rule set as JSON-ready data: editions, composite-index basis, settings."""
        weights = self.settings.composite_weights
        return {
            "name": self.name,
            "first_day": self.first_day.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "hj663": f"HJ 663-{self.hj663}",
            "gb3095": _GB3095_NAMES[self.gb3095],
            "hj633": f"HJ 633-{self.hj633}",
            "gb3838": SURFACE_STANDARD,
            "gb3097": SEA_STANDARD,
            "composite_index": {
                "limits": self.composite_limits(),
                "weights": "unweighted" if weights is None else "weighted",
                "basis": f"{'unweighted' if weights is None else 'weighted'}, "
                f"{_GB3095_NAMES[self.gb3095]} Grade II limits",
            },
            "settings": self.settings.describe(),
        }


def _boundaries() -> tuple[date, ...]:
    """Every day on which some edition or settings version changes, ascending."""
    days = {
        first_day
        for editions in (HJ663_EDITIONS, AIR_EDITIONS, AQI_EDITIONS, SETTINGS_EDITIONS)
        for _, first_day in editions
        if first_day != date.min
    }
    return tuple(sorted(days))


RULE_SET_BOUNDARIES = _boundaries()


def rule_set_for(day: date) -> RuleSet:
    """The rule set that evaluates a natural day (Asia/Shanghai)."""
    first_day = max((b for b in RULE_SET_BOUNDARIES if b <= day), default=date.min)
    until = min((b for b in RULE_SET_BOUNDARIES if b > day), default=None)
    return RuleSet(
        first_day=first_day,
        until=until,
        hj663=edition_on(day, HJ663_EDITIONS),
        gb3095=edition_on(day, AIR_EDITIONS),
        hj633=edition_on(day, AQI_EDITIONS),
        settings=SETTINGS[edition_on(day, SETTINGS_EDITIONS)],
    )
