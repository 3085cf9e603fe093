"""AQI (HJ 633) and water quality (GB 3838 / GB 3097) as the API answers them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import City

AqiKind = Literal["hourly", "daily"]
WaterKind = Literal["sample", "daily"]
# "valid": the statistic met its validity rule; "insufficient_data": readings are there but too
# few (or not valid) for the rule; "no_data": nothing was received for it.
DataStatus = Literal["valid", "insufficient_data", "no_data"]


class AqiInput(BaseModel):
    """One input of the AQI: a concentration statistic and the sub-index it gives."""

    key: str = Field(description="HJ 633 input: so2, no2, co, o3, o3_8h, o3_8h_max, o3_1h_max, …")
    parameter: str
    statistic: str = Field(description="1h, 8h_moving, 24h_moving, day_mean, day_max_8h, …")
    concentration: float | None
    unit: str
    status: DataStatus
    sub_index: int | None
    origin: str | None = Field(
        default=None, description="Station: 'reported' by the station or 'computed' from finer data"
    )
    stations: int | None = Field(
        default=None, description="City AQI: how many stations' values were averaged"
    )


class AqiOut(BaseModel):
    """A real-time (hourly) or daily AQI of a station or a city."""

    station: str | None = None
    city: City | None = None
    stations: list[str] = Field(default_factory=list, description="City AQI: stations averaged")
    kind: AqiKind
    period_start: datetime = Field(description="Start of the hour or 00:00 +08:00 of the day")
    period_end: datetime
    day: date | None = Field(default=None, description="Daily AQI: the Asia/Shanghai date")
    edition: str = Field(description="HJ 633 edition used, chosen by the period start")
    published: bool = Field(
        description="False when HJ 633-2026 withholds an AQI computed without some pollutant"
    )
    aqi: int | None
    level: str | None
    level_zh: str | None
    category: str | None
    category_zh: str | None
    color: str | None
    primary_pollutants: list[str]
    sub_indices: dict[str, int | None]
    missing: list[str] = Field(description="Inputs without a valid value")
    inputs: list[AqiInput]


class WaterItem(BaseModel):
    """One parameter of a water-quality assessment."""

    parameter: str
    value: float | None
    unit: str
    time: datetime | None = Field(
        default=None, description="Sample: the hour the value is from (within the cadence)"
    )
    status: DataStatus
    origin: str | None = Field(default=None, description="'reported' or 'computed'")
    item_class: int | None = Field(default=None, description="Class of this item, if assessed")
    class_label: str | None = None


class WaterLimiting(BaseModel):
    """An item worse than the target class; exceedance (C - Cs) / Cs (none for pH and DO)."""

    parameter: str
    item_class: int
    class_label: str
    value: float
    limit: float | None
    exceedance: float | None


class WaterQualityOut(BaseModel):
    """Single-factor water quality of a station for a sample time or a natural day."""

    station: str
    kind: WaterKind
    period_start: datetime
    period_end: datetime
    day: date | None = None
    standard: str = Field(description="GB 3838-2002 or GB 3097-1997, per the station")
    water_body: str
    target_class: int
    target_label: str
    overall_class: int | None = Field(description="None when no item has a valid value")
    label: str | None
    description: str | None
    description_zh: str | None
    meets_target: bool | None
    items: list[WaterItem]
    limiting: list[WaterLimiting]
    not_measured: list[str] = Field(description="Items of the standard with nothing received")
    insufficient_data: list[str] = Field(description="Items received but not valid for the rule")
