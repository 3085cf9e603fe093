"""The situation in one call: an area's, a city's or some stations' state, alerts and arrivals."""

from __future__ import annotations

from datetime import tzinfo
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from alerts.situation import Selection, Situation, StationNow, situation
from api.deps import CatalogueDep, ConnDep, KeyDep
from api.errors import error_responses
from api.output import ZoneDep, in_zone
from api.routers.alerts import alert_out
from api.routers.quality import published_aqi, published_water
from core.rounding import round_half_even
from core.timeutil import period_end, utcnow
from schemas.common import Area, City, ErrorOut, Text
from schemas.situation import (
    ArrivalOut,
    ReachOut,
    SeriesOut,
    SituationOut,
    SituationStationOut,
    TrendOut,
)

router = APIRouter(prefix="/v1", tags=["situation"], responses=error_responses(401, 422, 503))

MAX_STATIONS = 100
# A slope per hour is published two places finer than its parameter's values.
_SLOPE_EXTRA_DECIMALS = 2
_ONE_OF = "give exactly one of area, city or station"


def _invalid(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query",), "msg": message, "type": "value_error"}])


def _selection(area: Area | None, city: City | None, station: str | None) -> Selection:
    """The one selection asked for; 422 (invalid_request) naming the fields otherwise."""
    given = [
        name for name, value in (("area", area), ("city", city), ("station", station)) if value
    ]
    if len(given) != 1:
        got = " and ".join(given) if given else "none"
        raise _invalid(f"{_ONE_OF} (got {got})")
    if station is None:
        return Selection(area=area, city=city)
    codes = [code.strip() for code in station.split(",")]
    if any(not code for code in codes):
        raise _invalid("station: an empty station code in the list (codes are comma-separated)")
    unique = tuple(dict.fromkeys(codes))
    if len(unique) > MAX_STATIONS:
        raise _invalid(f"station: at most {MAX_STATIONS} station codes, not {len(unique)}")
    return Selection(stations=unique)


@router.get(
    "/situation",
    responses={
        404: {"model": ErrorOut, "description": "A station code names no station"},
        422: {
            "model": ErrorOut,
            "description": "Not exactly one of area, city or station; an unknown area or city;"
            f" an empty code or more than {MAX_STATIONS} codes in station",
        },
    },
)
async def situation_now(
    conn: ConnDep,
    catalogue: CatalogueDep,
    key: KeyDep,
    zone: ZoneDep,
    area: Annotated[Area | None, Query(description="One of area, city or station")] = None,
    city: Annotated[City | None, Query(description="One of area, city or station")] = None,
    station: Annotated[
        Text | None,
        Query(
            max_length=4000,
            description=f"One of area, city or station: up to {MAX_STATIONS} station codes,"
            " comma-separated",
        ),
    ] = None,
) -> SituationOut:
    """The situation now, in one call: every station's state, latest values with their 3-hour
    trends, AQI or water class of the last complete hour; the open alerts; when open water
    alerts' breaches arrive downstream."""
    selection = _selection(area, city, station)
    found = await situation(conn, catalogue, selection, now=utcnow())
    return _situation_out(selection, found, catalogue.decimals, zone)


def _situation_out(
    selection: Selection, found: Situation, decimals: dict[str, int | None], zone: tzinfo
) -> SituationOut:
    """The response, times in `zone`: built there directly, as a large page is (api/output.py),
    and only the nested results of other endpoints shifted by `in_zone`."""
    return SituationOut(
        area=selection.area,
        city=selection.city,
        stations_asked=list(selection.stations) if selection.stations is not None else None,
        generated_at=found.generated_at.astimezone(zone),
        hour=found.hour.astimezone(zone),
        reaches=[
            ReachOut(code=r.code, name=r.name, name_zh=r.name_zh, downstream=r.downstream)
            for r in found.reaches
        ],
        stations=[_station_out(s, decimals, zone) for s in found.stations],
        alerts=[in_zone(alert_out(a, decimals), zone) for a in found.alerts],
        arrivals=[
            ArrivalOut(
                alert_id=a.alert_id,
                from_station=a.from_station,
                station=a.station,
                eta=a.eta.astimezone(zone),
                hours=round(a.eta_s / 3600, 2),
                distance_km=round(a.distance_km, 3),
                direction=a.direction,
            )
            for a in found.arrivals
        ],
    )


def _station_out(
    now: StationNow, decimals: dict[str, int | None], zone: tzinfo
) -> SituationStationOut:
    readings = [s.reading for s in now.series]
    places = [r.decimals for r in readings]
    values = round_half_even([r.value for r in readings], places)
    slopes = round_half_even(
        [s.trend.slope_per_hour for s in now.series],
        [None if p is None else p + _SLOPE_EXTRA_DECIMALS for p in places],
    )
    series = [
        SeriesOut(
            parameter=reading.parameter,
            time=reading.time.astimezone(zone),
            period_s=reading.period_s,
            period_end=period_end(reading.time, reading.period_s).astimezone(zone)
            if reading.period_s
            else None,
            value=value,
            unit=reading.unit,
            qc=reading.qc,
            age_s=reading.age_s,
            trend=TrendOut(
                slope_per_hour=slope, direction=entry.trend.direction, points=entry.trend.points
            ),
        )
        for entry, reading, value, slope in zip(now.series, readings, values, slopes, strict=True)
    ]
    station = now.station
    aqi = in_zone(published_aqi(now.aqi, decimals), zone) if now.aqi is not None else None
    water = now.water_class
    return SituationStationOut(
        code=station.code,
        name=station.name,
        name_zh=station.name_zh,
        medium=station.medium,
        city=station.city,
        reach=station.reach,
        river_km=station.river_km,
        state=now.state,
        aqi=aqi,
        water_class=in_zone(published_water(water, decimals), zone) if water is not None else None,
        series=series,
    )
