"""Standards as data: HJ 633 AQI, GB 3095 air limits, GB 3838 and GB 3097 water classes."""

from alerts.standards.air_limits import air_edition_for, air_limit
from alerts.standards.aqi import (
    AqiLevel,
    AqiResult,
    aqi_level,
    daily_aqi,
    edition_for,
    edition_for_day,
    hourly_aqi,
    iaqi,
)
from alerts.standards.water import (
    LimitingItem,
    WaterAssessment,
    assess_sea_water,
    assess_surface_water,
    sea_class_label,
    sea_water_class,
    surface_class_label,
    surface_water_class,
)

__all__ = [
    "AqiLevel",
    "AqiResult",
    "LimitingItem",
    "WaterAssessment",
    "air_edition_for",
    "air_limit",
    "aqi_level",
    "assess_sea_water",
    "assess_surface_water",
    "daily_aqi",
    "edition_for",
    "edition_for_day",
    "hourly_aqi",
    "iaqi",
    "sea_class_label",
    "sea_water_class",
    "surface_class_label",
    "surface_water_class",
]
