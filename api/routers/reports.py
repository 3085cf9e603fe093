"""Period reports of air and water over a month, quarter, year or date range."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from alerts.evaluation.periods import Period, date_range, parse_period
from alerts.reports import air_period_report, water_period_report
from api.deps import ConnDep, KeyDep
from api.errors import error_responses
from core.errors import InvalidInput
from schemas.common import Day, ErrorOut, Text

router = APIRouter(prefix="/v1", tags=["reports"], responses=error_responses(401, 422, 503))

# The longest start/end range a report evaluates (with its year-earlier range, twice the data).
MAX_RANGE_DAYS = 3 * 366
_PERIOD_HELP = (
    "Either period (YYYY-MM, YYYY-Qn or YYYY) or both start and end (dates, [start, end),"
    f" at most {MAX_RANGE_DAYS} days)"
)


def report_period(period: str | None, start: date | None, end: date | None) -> Period:
    """The period asked for; InvalidInput naming the field otherwise."""
    if period is not None:
        if start is not None or end is not None:
            raise InvalidInput("period: give either period or start and end, not both")
        return parse_period(period)
    if start is None or end is None:
        missing = "start" if start is None else "end"
        raise InvalidInput(f"{missing}: give period, or both start and end")
    if end <= start:
        raise InvalidInput(f"end: {end} must be after start {start}")
    if (end - start).days > MAX_RANGE_DAYS:
        raise InvalidInput(f"end: at most {MAX_RANGE_DAYS} days after start")
    return date_range(start, end)


@router.get(
    "/reports/air",
    responses={
        400: {
            "model": ErrorOut,
            "description": "A code where none is taken (region) or missing (station, city); a"
            " city code that is not guangzhou or dongguan; period and start/end both or neither;"
            " a malformed period; end not after start or too far from it",
        },
        404: {"model": ErrorOut, "description": "code names no air station (scope=station)"},
        422: {"model": ErrorOut, "description": "scope not station, city or region; a bad date"},
    },
)
async def air_report(
    conn: ConnDep,
    key: KeyDep,
    scope: Annotated[Literal["station", "city", "region"], Query(description="What to report")],
    code: Annotated[
        Text | None,
        Query(
            max_length=64,
            description="A station code (scope=station) or city (guangzhou, dongguan);"
            " none for the region",
        ),
    ] = None,
    period: Annotated[Text | None, Query(max_length=16, description=_PERIOD_HELP)] = None,
    start: Annotated[Day | None, Query(description=_PERIOD_HELP)] = None,
    end: Annotated[Day | None, Query(description=_PERIOD_HELP)] = None,
) -> dict[str, Any]:
    """The air evaluation of a period (EVALUATION.md's methods, read from the daily and hourly
    rollups): rule set, valid and category days, good-day share, exceedance and heavy-pollution
    days, each pollutant's statistic against its limit (a year: compliance), the composite index,
    primary-pollutant days and shares, and last year's same period as published and recomputed
    under this period's rule set, with the changes like for like. A statistic short of data is
    `{"status": "insufficient_data", "have", "need"}`. A period across a change of rule set
    (2026-03-01) is `{"parts": [before, after]}`, each a full report under its own rule set."""
    return await air_period_report(conn, scope, code, report_period(period, start, end))


@router.get(
    "/reports/water",
    responses={
        400: {
            "model": ErrorOut,
            "description": "code names no water station of the reach, river, area or city;"
            " period and start/end both or neither; a malformed period; end not after start or"
            " too far from it",
        },
        404: {"model": ErrorOut, "description": "code names no water station (scope=station)"},
        422: {"model": ErrorOut, "description": "scope unknown; code missing; a bad date"},
    },
)
async def water_report(
    conn: ConnDep,
    key: KeyDep,
    scope: Annotated[
        Literal["station", "reach", "river", "area", "city"], Query(description="What to report")
    ],
    code: Annotated[
        Text,
        Query(
            max_length=64,
            description="A station, reach (config/rivers.yaml), river (a reach's `river`),"
            " area (dongjiang, shiziyang) or city (guangzhou, dongguan) code",
        ),
    ],
    period: Annotated[Text | None, Query(max_length=16, description=_PERIOD_HELP)] = None,
    start: Annotated[Day | None, Query(description=_PERIOD_HELP)] = None,
    end: Annotated[Day | None, Query(description=_PERIOD_HELP)] = None,
) -> dict[str, Any]:
    """The water evaluation of a period (GB 3838 sections, GB 3097 sea points): per section the
    period mean and class of each item measured, the section's class and grade, its target and
    compliance, the items beyond the target and beyond class III with multiples, and its CWQI;
    for several sections the shares (I-III, worse than V, compliant), the grade (proportion
    method from 5 sections, else the sections' mean concentrations) and the mean CWQI; sea
    points' area grade; and `last_year`, the same figures a year earlier."""
    return await water_period_report(conn, scope, code, report_period(period, start, end))
