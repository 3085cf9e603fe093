"""The monthly joint bulletin (docs/evaluation.md §8): both cities' and the region's air, the
sections' water, and the notes, as GET /v1/reports/bulletin and `envlink report` give it.

Every figure is the one the air or water report publishes for the same scope and period
(GET /v1/reports/air, /v1/reports/water): the bulletin assembles, it does not evaluate again.
A figure short of data is `{"status": "insufficient_data", "have", "need"}`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field


class Shortfall(BaseModel):
    """A statistic without enough valid data: how many values it had and needed."""

    status: Literal["insufficient_data"]
    have: int
    need: int
    short_months: list[str] | None = Field(
        default=None, exclude_if=lambda months: months is None, description="Months short"
    )


Figure = int | float | Shortfall | None
BulletinUnit = Literal["guangzhou", "dongguan", "region"]


class BulletinPeriod(BaseModel):
    start: date
    end: date = Field(description="The day after the last, [start, end)")
    label: str


class SummaryRow(BaseModel):
    """§8.1: a city's or the region's good-day share and composite index against last year."""

    unit: BulletinUnit
    name_zh: str
    name: str
    good_day_share: Figure = Field(description="Percent, 1 decimal")
    good_day_share_last_year: Figure
    good_day_share_change_points: float | None = Field(description="Percentage points")
    composite_index: Figure
    composite_index_last_year: Figure
    composite_index_change_percent: float | None = Field(description='"+" is worse')


class AirDaysRow(BaseModel):
    """Category days, exceedance days and good-day share of one unit in one period."""

    days: int
    valid_days: int | float
    category_days: dict[str, int | float] = Field(
        description="excellent, good, lightly_polluted, moderately_polluted, heavily_polluted,"
        " severely_polluted (the region: the cities' mean, 1 decimal)"
    )
    good_days: int | float
    exceedance_days: int | float
    heavy_pollution_days: int | float
    good_day_share: Figure


class PollutantRow(BaseModel):
    """A pollutant's period statistic, last year's (like for like) and the change."""

    pollutant: str
    statistic: str = Field(description="mean, p95 (CO) or mda8_p90 (O3)")
    unit: str
    limit: float | None
    value: Figure
    last_year: Figure
    change_percent: float | None = Field(description='"+" is worse')
    exceedance_multiple: float | None


class AirUnitReport(BaseModel):
    """§8.2 for a city or the region."""

    unit: BulletinUnit
    name_zh: str
    name: str
    stations: list[str]
    rule_set: str
    this_period: AirDaysRow
    last_year: AirDaysRow = Field(description="Last year's same month under this rule set")
    last_year_as_published: AirDaysRow = Field(
        description="Last year's same month under its own rule set"
    )
    last_year_rule_set: str
    pollutants: list[PollutantRow]
    good_day_share_change_points: float | None = Field(description="Percentage points")
    composite_index: Figure
    composite_index_last_year: Figure
    composite_index_change_percent: float | None = Field(description='"+" is worse')
    composite_index_primary: list[str]
    days_with_primary_pollutant: int | float
    primary_pollutant_days: dict[str, int | float]
    primary_pollutant_shares: dict[str, float] | None = Field(
        description="Percent of the days with a primary pollutant (ties count for each)"
    )


class StationRank(BaseModel):
    """An assessment station ranked by its composite index (1 = the cleanest air)."""

    rank: int | None = Field(description="None when the index is short of data")
    code: str
    name_zh: str
    name: str
    city: str
    composite_index: Figure
    composite_index_primary: list[str]
    good_day_share: Figure


class CalendarDay(BaseModel):
    day: date
    aqi: int | None
    category: str | None


class AirMonth(BaseModel):
    """A month of this year so far, as the city's air report of that month publishes it."""

    label: str
    start: date
    end: date
    rule_set: str
    valid_days: int | float
    category_days: dict[str, int | float]
    pollutants: dict[str, Figure]
    limits: dict[str, float | None]


class CityCharts(BaseModel):
    """What the charts draw for a city: its AQI calendar and this year's months."""

    city: Literal["guangzhou", "dongguan"]
    calendar: list[CalendarDay]
    months: list[AirMonth]


class EpisodeRow(BaseModel):
    """A regional episode of the month, as the air report lists it."""

    id: int
    start: str = Field(description="Its first day's 00:00 +08:00, or its first hour")
    end: str | None = Field(description="The step after its last one; null while it goes on")
    cities: list[str]
    city_days: int
    peak_aqi: int
    peak_category: str
    primary_pollutants: list[str]
    alert_id: int


class Exceedance(BaseModel):
    item: str
    name_zh: str
    multiple: float | None = Field(description="(C - S)/S against the target; none for pH, DO")


class SectionRow(BaseModel):
    """§8.3: a section (GB 3838) or sea point (GB 3097), this month and last year's."""

    river: str | None
    reach: str | None
    code: str
    name_zh: str
    name: str
    city: str
    standard: str
    target_class: int | None
    target_label: str | None
    water_class: int | None
    class_label: str | None
    grade_zh: str | None
    last_year_class: int | None
    last_year_class_label: str | None
    compliant: bool | None
    exceedances: list[Exceedance] = Field(description="Beyond the target, largest multiple first")
    exceedances_text: str = Field(description='As bulletins write them: "氨氮(0.24)"')
    cwqi: float | None
    cwqi_last_year: float | None
    cwqi_change_percent: float | None = Field(description='"+" is worse')
    insufficient_items: list[str]


class WaterGroupRow(BaseModel):
    """Several sections: a river, a reach, or a city's (GB 3838 §5 shares and grade)."""

    kind: Literal["river", "reach", "city"]
    code: str
    name_zh: str
    name: str
    sections: int
    good_share: float | None = Field(description="Sections in I-III, percent")
    worse_than_v_share: float | None
    compliant_share: float | None
    method: str
    grade_zh: str | None
    grade: str | None
    cwqi: float | None
    cwqi_last_year: float | None
    cwqi_change_percent: float | None


class SeaArea(BaseModel):
    """The estuary's sea points graded together (GB 3097)."""

    points: int
    class_1_share: float
    class_1_2_share: float
    worse_than_4_share: float
    grade_zh: str
    grade: str


class WaterReport(BaseModel):
    sections: list[SectionRow]
    rivers: list[WaterGroupRow]
    cities: list[WaterGroupRow]
    dongjiang_north_main: WaterGroupRow | None = Field(description="东江北干流's grade")
    shiziyang_estuary: WaterGroupRow | None = Field(description="狮子洋's sections' grade")
    shiziyang_sea_area: SeaArea | None


class BulletinNotes(BaseModel):
    """§8.4: rule sets, validity and counts, data status."""

    rule_sets: list[str]
    air_valid_days: dict[str, int | float]
    air_days: int
    water_sections_evaluated: int
    water_sections_short: list[str] = Field(description="Sections without a class: short of data")
    data_status: Literal["provisional", "incomplete"] = Field(
        description="incomplete: the month has not ended; provisional: figures from the data as"
        " stored when generated, which late or audited data may still change"
    )
    episodes_status: Literal["listed", "not_available"]


class Bulletin(BaseModel):
    """The monthly joint bulletin of Guangzhou and Dongguan (docs/evaluation.md §8)."""

    month: str
    period: BulletinPeriod
    last_year_period: BulletinPeriod
    generated_at: datetime
    summary: list[SummaryRow]
    air: list[AirUnitReport]
    stations: list[StationRank]
    episodes: list[EpisodeRow] | None = Field(
        description="The month's regional episodes; null where the air report lists none yet"
    )
    charts: list[CityCharts]
    water: WaterReport
    notes: BulletinNotes
