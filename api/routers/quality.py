"""AQI (HJ 633) of stations and cities, and water quality (GB 3838 / GB 3097) of stations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from alerts.aqi_service import city_aqi, station_aqi, water_quality
from alerts.rollups import hour_start
from api.deps import CatalogueDep, ConnDep, KeyDep, RequestConnectionDep
from api.errors import error_responses
from api.output import ZoneDep, in_zone
from core.errors import InvalidInput
from core.rounding import round_half_even
from core.timeutil import CST, FIRST_YEAR, LAST_YEAR, in_years, parse_time, utcnow
from schemas.common import City, Text
from schemas.quality import AqiKind, AqiOut, WaterKind, WaterQualityOut

router = APIRouter(prefix="/v1", tags=["quality"], responses=error_responses(401, 422, 503))

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


def _last_complete_hour() -> datetime:
    return hour_start(utcnow()) - timedelta(hours=1)


def _yesterday() -> date:
    """The natural day (Asia/Shanghai) before today's."""
    return utcnow().astimezone(CST).date() - timedelta(days=1)


# Exceedance multiples are published to two decimals (docs/evaluation.md §3, §5).
EXCEEDANCE_DECIMALS = 2


def published_aqi(result: AqiOut, decimals: Mapping[str, int | None]) -> AqiOut:
    """Concentrations at their parameters' published decimals (one rounding pass)."""
    concentrations = round_half_even(
        [item.concentration for item in result.inputs],
        [decimals.get(item.parameter) for item in result.inputs],
    )
    inputs = [
        item.model_copy(update={"concentration": concentration})
        for item, concentration in zip(result.inputs, concentrations, strict=True)
    ]
    return result.model_copy(update={"inputs": inputs})


def published_water(result: WaterQualityOut, decimals: Mapping[str, int | None]) -> WaterQualityOut:
    """Values at their parameters' published decimals, exceedance multiples at two (one
    rounding pass)."""
    shown: list[tuple[float | None, str]] = [
        *((item.value, item.parameter) for item in result.items),
        *((item.value, item.parameter) for item in result.limiting),
    ]
    values = round_half_even([v for v, _ in shown], [decimals.get(p) for _, p in shown])
    exceedances = round_half_even(
        [item.exceedance for item in result.limiting], EXCEEDANCE_DECIMALS
    )
    count = len(result.items)
    items = [
        item.model_copy(update={"value": value})
        for item, value in zip(result.items, values[:count], strict=True)
    ]
    limiting = [
        item.model_copy(update={"value": value, "exceedance": exceedance})
        for item, value, exceedance in zip(
            result.limiting, values[count:], exceedances, strict=True
        )
    ]
    return result.model_copy(update={"items": items, "limiting": limiting})


@router.get("/aqi", responses=error_responses(400, 404))
async def aqi(
    conn: ConnDep,
    held: RequestConnectionDep,
    catalogue: CatalogueDep,
    key: KeyDep,
    zone: ZoneDep,
    station: Annotated[
        Text | None,
        Query(
            description="Air station code; give this or `city`, not both",
            examples=["gz-a-huangpu"],
        ),
    ] = None,
    city: Annotated[
        City | None,
        Query(description="City AQI from non-background stations; give this or `station`"),
    ] = None,
    kind: AqiKind = "hourly",
    at: Annotated[Text | None, Query(description=AT_HELP)] = None,
) -> AqiOut:
    """Real-time (hourly) or daily AQI; default: the last complete hour, or yesterday.

    Give exactly one of `station` or `city`: neither or both is a 422 `invalid_request`.
    """
    if (station is None) == (city is None):
        # A rule across two parameters, which OpenAPI cannot state in the parameters' schemas:
        # refused as the schema's own violations are, 422 invalid_request.
        raise RequestValidationError(
            [{"loc": (), "msg": "give exactly one of station=<air station code> or city=<city>"}]
        )
    moment = _parse_at(at)
    if moment is None:
        moment = _last_complete_hour() if kind == "hourly" else _yesterday()
    if station is not None:
        result = await station_aqi(conn, catalogue, station=station, kind=kind, at=moment)
    else:
        assert city is not None
        result = await city_aqi(conn, catalogue, city=city, kind=kind, at=moment)
    await held.release()  # its reads are done: publishing and serialising need no connection
    return in_zone(published_aqi(result, catalogue.decimals), zone)


@router.get("/water-quality", responses=error_responses(400, 404))
async def water_quality_of(
    conn: ConnDep,
    catalogue: CatalogueDep,
    key: KeyDep,
    zone: ZoneDep,
    station: Annotated[Text, Query(description="Water station code", examples=["gz-w-dadun"])],
    kind: Annotated[
        WaterKind | None, Query(description="sample (default for a time) or daily (for a date)")
    ] = None,
    at: Annotated[Text | None, Query(description=AT_HELP)] = None,
) -> WaterQualityOut:
    """Single-factor class of a sample or a day; default: the last complete hour, or yesterday."""
    moment = _parse_at(at)
    if kind is None:
        kind = "sample" if moment is None or isinstance(moment, datetime) else "daily"
    if moment is None:
        moment = _last_complete_hour() if kind == "sample" else _yesterday()
    result = await water_quality(conn, catalogue, station=station, kind=kind, at=moment)
    return in_zone(published_water(result, catalogue.decimals), zone)
