"""One assessment of air and water for the API and the alert engine alike: pure, numpy in.

`period` names the periods (hour, natural day; room for months and years), `observed` holds a
statistic over consecutive periods and its validity, `air` computes a
station's and a city's AQI inputs and AQI (HJ 633), `water` a station's class (GB 3838 / GB
3097) and which of its items' values a sample takes. Nothing here reads the database: the
callers (alerts/aqi_service.py for the API, alerts/engine for the alerts) read the rollups and
pass arrays in.
"""

from alerts.assessment.air import (
    AQI_POLLUTANTS,
    DAY_MEANS,
    aqi,
    aqi_inputs,
    city_inputs,
    city_means,
    daily_inputs,
    hourly_inputs,
    rolling_24h_inputs,
    stacked,
    values_at,
)
from alerts.assessment.observed import Observed, status_of
from alerts.assessment.period import DAY, HOUR, Period
from alerts.assessment.water import (
    WATER_ITEMS,
    Standing,
    WaterSite,
    sample_hours,
    standing,
    water_class,
)

__all__ = [
    "AQI_POLLUTANTS",
    "DAY",
    "DAY_MEANS",
    "HOUR",
    "WATER_ITEMS",
    "Observed",
    "Period",
    "Standing",
    "WaterSite",
    "aqi",
    "aqi_inputs",
    "city_inputs",
    "city_means",
    "daily_inputs",
    "hourly_inputs",
    "rolling_24h_inputs",
    "sample_hours",
    "stacked",
    "standing",
    "status_of",
    "values_at",
    "water_class",
]
