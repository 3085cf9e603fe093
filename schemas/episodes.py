"""Regional air episodes, as GET /v1/episodes and air reports list them (docs/evaluation.md §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import City

AqiCategory = Literal[
    "excellent",
    "good",
    "lightly_polluted",
    "moderately_polluted",
    "heavily_polluted",
    "severely_polluted",
]


class EpisodeOut(BaseModel):
    """One regional episode: every city of its rule above the rule's AQI threshold together."""

    id: int
    rule_id: str = Field(description="The regional_episode rule that found it")
    series: Literal["daily", "rolling_24h"] = Field(
        description="Judged on the daily AQI (steps of a day) or the rolling 24-hour AQI (hours)"
    )
    start: datetime = Field(description="Its first step: a day's 00:00 +08:00, or an hour")
    end: datetime | None = Field(
        description="The step after its last one ([start, end)); null while it goes on"
    )
    cities: list[City]
    city_days: int = Field(description="(city, natural day) pairs it covers (天次)")
    peak_aqi: int = Field(description="Its worst city AQI (a daily or rolling 24-hour AQI)")
    peak_category: AqiCategory = Field(description="HJ 633's category of peak_aqi")
    primary_pollutants: list[str] = Field(
        description="Primary pollutants of its city-steps, the most frequent first"
    )
    alert_id: int = Field(description="The alert that announced it (GET /v1/alerts/{alert_id})")
