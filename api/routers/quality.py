"""AQI (HJ 633) of stations and cities, and water quality (GB 3838 / GB 3097) of stations."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from alerts.aqi_service import city_aqi, station_aqi, water_quality
from alerts.rollups import hour_start
from api.deps import ConnDep, KeyDep
from core.errors import InvalidInput
from core.timeutil import CST, FIRST_YEAR, LAST_YEAR, in_years, parse_time, utcnow
from schemas.common import City, Text
from schemas.quality import AqiKind, AqiOut, WaterKind, WaterQualityOut

router = APIRouter(prefix="/v1", tags=["quality"])

AT_HELP = (
    "An hour by its START (the hour 08:00-09:00 is 2026-03-01T08:00:00+08:00; a time inside the"
    " hour names that hour) or a day (2026-03-01); without an offset, Asia/Shanghai."
)


def _parse_at(text: str | None) -> datetime | date | None:
    """`at` as a date (YYYY-MM-DD) or an aware instant; InvalidInput names the field."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"at: {text!r} is not a date (YYYY-MM-DD) or a time") from None
        if not in_years(day):
            raise InvalidInput(f"at: {text!r} is outside the years {FIRST_YEAR}-{LAST_YEAR}")
        return day
    return parse_time(text, field="at")


@router.get("/aqi")
async def aqi(
    conn: ConnDep,
    key: KeyDep,
    station: Annotated[Text | None, Query(description="Air station code")] = None,
    city: Annotated[City | None, Query(description="City AQI from non-background stations")] = None,
    kind: AqiKind = "hourly",
    at: Annotated[Text | None, Query(description=AT_HELP)] = None,
) -> AqiOut:
    """Real-time (hourly) or daily AQI; default: the last complete hour, or yesterday."""
    if (station is None) == (city is None):
        raise InvalidInput("give exactly one of station=<air station code> or city=<city>")
    moment = _parse_at(at)
    if moment is None:
        now = utcnow()
        moment = hour_start(now) - timedelta(hours=1)
        if kind == "daily":
            moment = now.astimezone(CST).date() - timedelta(days=1)
    if station is not None:
        return await station_aqi(conn, station=station, kind=kind, at=moment)
    assert city is not None
    return await city_aqi(conn, city=city, kind=kind, at=moment)


@router.get("/water-quality")
async def water_quality_of(
    conn: ConnDep,
    key: KeyDep,
    station: Annotated[Text, Query(description="Water station code")],
    kind: Annotated[
        WaterKind | None, Query(description="sample (default for a time) or daily (for a date)")
    ] = None,
    at: Annotated[Text | None, Query(description=AT_HELP)] = None,
) -> WaterQualityOut:
    """Single-factor class of a station's sample or day; default: now, or yesterday (daily)."""
    moment = _parse_at(at)
    if kind is None:
        kind = "sample" if moment is None or isinstance(moment, datetime) else "daily"
    if moment is None:
        now = utcnow()
        moment = now if kind == "sample" else now.astimezone(CST).date() - timedelta(days=1)
    return await water_quality(conn, station=station, kind=kind, at=moment)
