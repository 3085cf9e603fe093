"""`GET /v1/limits`: the standards' limits and the rules' thresholds of a station's parameter."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from alerts.limits import rule_levels, standard_limits
from api.deps import CatalogueDep, ConnDep, KeyDep
from api.errors import error_responses
from core.errors import ParameterNotFound, StationNotFound
from core.timeutil import CST, utcnow
from schemas.common import Day, ErrorOut, Text
from schemas.limits import LimitsOut, StandardLimitOut, ThresholdOut
from store.rules import current_rules

router = APIRouter(prefix="/v1", tags=["quality"], responses=error_responses(401, 422, 503))


@router.get(
    "/limits",
    responses={
        404: {
            "model": ErrorOut,
            "description": "station_not_found, or parameter_not_found: no such parameter, or the"
            " station does not measure it",
        }
    },
)
async def limits(
    conn: ConnDep,
    catalogue: CatalogueDep,
    key: KeyDep,
    station: Annotated[Text, Query(description="Station code", examples=["gz-a-huangpu"])],
    parameter: Annotated[Text, Query(description="Parameter code", examples=["pm25"])],
    day: Annotated[
        Day | None,
        Query(alias="date", description="A day (YYYY-MM-DD); default today, Asia/Shanghai"),
    ] = None,
) -> LimitsOut:
    """What a station's parameter is held to on a day: the standards' limits (GB 3095 by the
    edition in force that day, Grade II; GB 3838 or GB 3097 classes, the station's target
    marked) and the levels of the joint rules' thresholds in force that day."""
    found = catalogue.stations.get(station)
    if found is None:
        raise StationNotFound(f"no station with code {station!r}")
    registry = catalogue.parameters.get(parameter)
    if registry is None:
        raise ParameterNotFound(f"no parameter with code {parameter!r}")
    if catalogue.station_parameters.get((found.id, registry.id)) is None:
        raise ParameterNotFound(f"station {station} does not measure {parameter}")
    on = day if day is not None else _today()
    rules = [(rule.definition, rule.version) for rule in await current_rules(conn)]
    return LimitsOut(
        station=station,
        parameter=parameter,
        medium=found.medium,
        unit=registry.unit,
        date=on,
        limits=[
            StandardLimitOut.model_validate(limit, from_attributes=True)
            for limit in standard_limits(found, parameter, on)
        ],
        thresholds=[
            ThresholdOut.model_validate(level, from_attributes=True)
            for level in rule_levels(rules, found, parameter, on)
        ],
    )


def _today() -> date:
    """Today's date in Asia/Shanghai."""
    return utcnow().astimezone(CST).date()
