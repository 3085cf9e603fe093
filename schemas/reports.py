"""Period reports of air and water (docs/evaluation.md), as GET /v1/reports/air and
GET /v1/reports/water give them, and the stored bulletins' list (GET /v1/reports/bulletins).

Every figure is published (rounded once, half to even). A statistic short of data is
`{"status": "insufficient_data", "have", "need"}` (Shortfall). The models describe the answers
exactly (no field beyond them); the routes serialise the evaluation's own JSON, which these
models document and the tests check it against.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.bulletin import Shortfall
from schemas.episodes import EpisodeOut

Count = float
"""A day count: whole days as an integer; a region's mean or a split count to one decimal."""
Concentration = float | Shortfall
Pollutant = Literal["so2", "no2", "co", "o3", "pm10", "pm25"]
PeriodKind = Literal["month", "quarter", "year", "range"]


class _Exact(BaseModel):
    """A report object: its fields and no others."""

    model_config = ConfigDict(extra="forbid")


class ReportPeriod(_Exact):
    start: date
    end: date = Field(description="The day after the last, [start, end)")
    kind: PeriodKind
    label: str = Field(description="2026-11, 2026-Q3, 2026, or the range's days")


class ReportScope(_Exact):
    kind: str = Field(description="The scope asked for")
    code: str | None = Field(description="The code asked for (none for the region)")
    stations: list[str] = Field(description="The stations it evaluates")


# --- the rule set ----------------------------------------------------------------------------


class CompositeIndexBasis(_Exact):
    limits: dict[Pollutant, float | None] = Field(
        description="The GB 3095 Grade II limit each term divides by"
    )
    weights: Literal["unweighted", "weighted"]
    basis: str


class EvaluationSettingsOut(_Exact):
    """The evaluation settings in force (docs/evaluation.md §9)."""

    version: str
    every_month_valid: bool
    percentiles_need_day_counts: bool
    o3_city_mda8: Literal["station_mean", "city_hourly"]
    primary_ties: Literal["each", "split"]
    composite_weights: Literal["unweighted"] | dict[Pollutant, float]
    from_published: bool
    water_month_min_valid_days: int
    below_detection_fraction: float


class RuleSetOut(_Exact):
    """The editions of HJ 663, GB 3095 and HJ 633 (and GB 3838, GB 3097) that applied."""

    name: str = Field(description='e.g. "HJ 663-2026 / GB 3095-2026 (transition limits) / ..."')
    first_day: date
    until: date | None = Field(description="The day it stops applying; null: still in force")
    hj663: str
    gb3095: str
    hj633: str
    gb3838: str
    gb3097: str
    composite_index: CompositeIndexBasis
    settings: EvaluationSettingsOut


# --- air -------------------------------------------------------------------------------------


class CategoryDays(_Exact):
    """Valid days by HJ 633 category."""

    excellent: Count
    good: Count
    lightly_polluted: Count
    moderately_polluted: Count
    heavily_polluted: Count
    severely_polluted: Count


class ComplianceCheck(_Exact):
    statistic: str = Field(description="mean, p95, mda8_p90, ...")
    value: Concentration
    limit: float | None
    complies: bool | None = Field(description="null: short of data or no limit")


class Compliance(_Exact):
    """A year's verdict on a pollutant: both statistics (mean and percentile) against limits."""

    complies: bool | None
    checks: list[ComplianceCheck]


class PollutantFigures(_Exact):
    statistic: str = Field(description="mean, p95 (CO) or mda8_p90 (O3)")
    value: Concentration = Field(description="ug/m3 as an integer, CO (mg/m3) to one decimal")
    unit: Literal["ug/m3", "mg/m3"]
    valid_days: int
    limit: float | None = Field(description="The GB 3095 Grade II limit it is compared with")
    limit_averaging: str = Field(description="The averaging of that limit (annual, 24h, 8h)")
    exceedance_multiple: float | None = Field(description="(C - S)/S when above the limit")
    compliance: Compliance | None = Field(default=None, description="Years only (absent otherwise)")


class PollutantTable(_Exact):
    so2: PollutantFigures
    no2: PollutantFigures
    co: PollutantFigures
    o3: PollutantFigures
    pm10: PollutantFigures
    pm25: PollutantFigures


class CompositeIndexOut(_Exact):
    value: float | Shortfall = Field(description="Σ Iᵢ, two decimals")
    terms: dict[Pollutant, float] = Field(
        description="Each Iᵢ = Cᵢ/Sᵢ rounded to two decimals (pollutants with data)"
    )
    primary: list[Pollutant] = Field(description="The largest term(s)")
    limits: dict[Pollutant, float | None]


class PrimaryPollutantDays(_Exact):
    so2: Count
    no2: Count
    co: Count
    o3: Count
    pm10: Count
    pm25: Count


class PrimaryPollutantShares(_Exact):
    """Percent of the days with a primary pollutant (ties count as the rule set says)."""

    so2: float
    no2: float
    co: float
    o3: float
    pm10: float
    pm25: float


class AirFigures(_Exact):
    """One part's published air figures under one rule set."""

    period: ReportPeriod
    rule_set: RuleSetOut
    days: int = Field(description="Days in the part")
    valid_days: Count
    category_days: CategoryDays
    good_days: Count
    good_day_share: float | Shortfall = Field(description="Percent of valid days, 1 decimal")
    exceedance_days: Count
    exceedance_share: float | Shortfall
    heavy_pollution_days: Count
    heavy_pollution_share: float | Shortfall
    pollutants: PollutantTable
    complies: bool | None = Field(description="Years: all six pollutants comply; else null")
    composite_index: CompositeIndexOut
    days_with_primary_pollutant: Count
    primary_pollutant_days: PrimaryPollutantDays
    primary_pollutant_shares: PrimaryPollutantShares | None = Field(
        description="null without a day with a primary pollutant"
    )


class AirFiguresParts(_Exact):
    """A period across a change of rule set: each part under its own."""

    parts: list[AirFigures]


class CategoryDayChanges(CategoryDays):
    """The change in valid days of each HJ 633 category, like for like."""


class PollutantChanges(_Exact):
    so2: float | None
    no2: float | None
    co: float | None
    o3: float | None
    pm10: float | None
    pm25: float | None


class AirChanges(_Exact):
    """Changes on last year ("+" is worse for the index and concentrations)."""

    basis: Literal["like_for_like", "as_published"]
    previous_rule_set: str
    good_day_share_points: float | None = Field(description="Percentage points")
    composite_index_percent: float | None
    category_days: CategoryDayChanges
    pollutants_percent: PollutantChanges


class AirLastYear(_Exact):
    as_published: AirFigures | AirFiguresParts = Field(
        description="Last year's same days under their own rule set(s)"
    )
    like_for_like: AirFigures = Field(description="The same days under this part's rule set")
    changes: AirChanges = Field(description="Computed like for like")


class AirPeriodReport(AirFigures):
    """The air evaluation of one part, with last year's and the regional episodes."""

    scope: ReportScope
    last_year: AirLastYear
    episodes: list[EpisodeOut] = Field(description="Regional episodes overlapping the part")


class AirReportParts(_Exact):
    """A period across 2026-03-01: `{"parts": [before, after]}`, each a full report."""

    parts: list[AirPeriodReport]


AirReportOut = AirPeriodReport | AirReportParts


# --- water -----------------------------------------------------------------------------------


class ItemFigures(_Exact):
    mean: float = Field(description="The period mean (mg/L; pH none)")
    below_detection: bool = Field(description="Every value below detection")
    detection_limit: float | None
    values: int = Field(description="Values averaged")
    item_class: int = Field(alias="class", description="The item's class")


class SectionTarget(_Exact):
    water_class: int = Field(alias="class", description="The target class (1..5)")
    label: str
    item_limits: dict[str, float]


class ExceedanceOut(_Exact):
    item: str
    value: float
    limit: float | None
    multiple: float | None = Field(description="(C - S)/S, two decimals; none for pH and DO")
    against: Literal["target", "class_iii"]


class SectionExceedances(_Exact):
    target: list[ExceedanceOut] = Field(description="Beyond the target, largest multiple first")
    class_iii: list[ExceedanceOut] = Field(description="Beyond GB 3838 class III")


class SectionFigures(_Exact):
    """A section's (GB 3838) or sea point's (GB 3097) period figures."""

    code: str
    standard: str = Field(description="GB 3838-2002 or GB 3097-1997")
    items_evaluated: list[str]
    items_not_measured: list[str]
    items_not_evaluated: list[str]
    items: dict[str, ItemFigures]
    insufficient_data: dict[str, Shortfall]
    water_class: int | None = Field(
        alias="class", description="Surface 1..6 (6: 劣V), sea 1..5 (5: 劣四类); null: no data"
    )
    class_label: str | None
    grade_zh: str | None
    grade: str | None
    target: SectionTarget | None = Field(description="The class it is judged against")
    compliant: bool | None
    exceedances: SectionExceedances
    cwqi: float | None = Field(description="Sections only")


class WaterGroup(_Exact):
    """Several sections: shares (percent), grade and mean CWQI (GB 3838 §5)."""

    sections: int
    good_share: float | None = Field(description="Sections in I-III")
    worse_than_v_share: float | None
    compliant_share: float | None
    method: Literal["proportion", "mean_concentration"] = Field(
        description="Proportion from 5 sections; below, the sections' mean concentrations"
    )
    grade_zh: str | None
    grade: str | None
    mean_class: int | None = Field(description="mean_concentration: the means' class")
    cwqi: float | None


class SeaAreaOut(_Exact):
    """Sea points graded together (GB 3097)."""

    points: int
    class_1_share: float
    class_1_2_share: float
    worse_than_4_share: float
    grade_zh: str
    grade: str


class WaterFigures(_Exact):
    period: ReportPeriod
    sections: list[SectionFigures]
    sea_points: list[SectionFigures]
    group: WaterGroup | None = Field(description="Several sections; null for a station")
    sea_area: SeaAreaOut | None


class WaterPeriodReport(WaterFigures):
    scope: ReportScope
    last_year: WaterFigures


# --- stored bulletins -----------------------------------------------------------------------

BulletinFormat = Literal["json", "html", "csv"]


class StoredBulletinOut(BaseModel):
    """One stored version of a month's bulletin, as the worker generated it."""

    month: str = Field(description="YYYY-MM")
    version: int = Field(description="1 for the first; a month generated again adds one")
    generated_at: datetime
    formats: list[BulletinFormat]
    links: dict[BulletinFormat, str] = Field(
        description="GET /v1/reports/bulletins/{month}?version=…&format=… for each format"
    )
