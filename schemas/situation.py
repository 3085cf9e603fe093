"""The situation in one call (GET /v1/situation), for the people on duty."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.alerts import AlertOut
from schemas.common import QC, Area, City, Medium
from schemas.quality import AqiOut, WaterQualityOut
from schemas.readings import PERIOD_END_HELP, TIME_HELP, VALUE_HELP

StationState = Literal["reporting", "late", "silent", "maintenance"]
TrendDirection = Literal["rising", "falling", "steady", "unknown"]


class TrendOut(BaseModel):
    slope_per_hour: float | None = Field(
        description="Least-squares slope in the parameter's unit per hour; null when unknown"
    )
    direction: TrendDirection = Field(
        description="steady: the change over 3 h (slope × 3) is within ± the parameter's noise"
        " (/v1/parameters); unknown: fewer than 3 points"
    )
    points: int = Field(
        description="Valid readings fitted: of the 3 hours up to the latest reading, the newest"
        " of each 15 minutes"
    )


class SeriesOut(BaseModel):
    parameter: str
    time: datetime = Field(description=TIME_HELP)
    period_s: int
    period_end: datetime | None = Field(description=PERIOD_END_HELP)
    value: float | None = Field(description=VALUE_HELP)
    unit: str
    qc: QC
    age_s: int = Field(description="Seconds since the end of the reading's period")
    trend: TrendOut


class SituationStationOut(BaseModel):
    code: str
    name: str
    name_zh: str
    medium: Medium
    city: City
    reach: str | None
    river_km: float | None
    state: StationState = Field(
        description="maintenance: inside a maintenance window; silent: nothing received, or past"
        " the staleness rule's threshold (as its alert); late: a series without a reading for"
        " 2 of its reporting intervals; else reporting"
    )
    aqi: AqiOut | None = Field(description="Air stations: /v1/aqi of the situation's hour")
    water_class: WaterQualityOut | None = Field(
        description="Water stations: /v1/water-quality of the situation's hour"
    )
    series: list[SeriesOut] = Field(description="The latest reading of each series, as /v1/latest")


class ReachOut(BaseModel):
    code: str
    name: str
    name_zh: str
    downstream: list[str] = Field(description="The reaches it flows into (two where it splits)")


class ArrivalOut(BaseModel):
    alert_id: int
    from_station: str
    station: str
    eta: datetime = Field(description="The alert's trigger time plus the travel time")
    hours: float = Field(description="Travel time in hours (two decimals)")
    distance_km: float
    direction: Literal["downstream", "tidal_upstream"]


class SituationOut(BaseModel):
    area: Area | None
    city: City | None
    stations_asked: list[str] | None = Field(description="The station codes asked for, if any")
    generated_at: datetime
    hour: datetime = Field(description="The hour (by its start) `aqi` and `water_class` judge")
    reaches: list[ReachOut] = Field(description="The river graph, in flow order")
    stations: list[SituationStationOut] = Field(
        description="Water stations in flow order (reach by reach, by river km), then air"
    )
    alerts: list[AlertOut] = Field(
        description="Pending and firing alerts of these stations, and city-wide and regional"
        " episode ones of their cities, as /v1/alerts (acknowledged_by: the agencies that"
        " acknowledged), newest first"
    )
    arrivals: list[ArrivalOut] = Field(
        description="Where and when open water alerts' breaches arrive, within the propagation"
        " rule's horizon, starting or arriving at these stations; earliest first"
    )
