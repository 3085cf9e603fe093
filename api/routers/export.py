"""Exports: readings or rollups of many series as one streamed CSV or NDJSON file."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.types import Send

from api.deps import ApiDatabase, ConnDep, DatabaseDep, KeyDep, SettingsDep
from api.errors import error_responses
from api.output import ZoneDep
from core.timeutil import as_aware
from schemas.common import Area, City, ErrorOut, Instant, Text
from schemas.readings import INTERVAL_PERIOD_S, Interval
from store.export import ExportFormat, ExportPlan, export_batches, plan_export

router = APIRouter(prefix="/v1", tags=["export"], responses=error_responses(401, 422, 503))

MEDIA_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
}


class ExportResponse(StreamingResponse):
    """A streamed body whose generator is closed when the stream ends, however it ends.

    A client that goes away mid-stream makes the send fail; closing the generator there (rather
    than whenever it is collected) gives its database connection back to the pool at once.
    """

    body_iterator: AsyncGenerator[bytes, None]

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


@router.get(
    "/export",
    response_class=ExportResponse,
    responses={
        200: {
            "description": "The file, as an attachment. CSV: UTF-8 with a byte order mark, a"
            " header row, one reading a line (station,parameter,time,period_s,value,unit,qc;"
            " for 1h and 1d: station,parameter,time,period_s,value,unit,count,coverage,origin)."
            " NDJSON: one JSON object a line, as the items of GET /v1/readings with station and"
            " parameter.",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        },
        400: {"model": ErrorOut, "description": "end not after start, or a span too long"},
        404: {"model": ErrorOut, "description": "an unknown station or parameter"},
    },
)
async def export(
    conn: ConnDep,
    database: DatabaseDep,
    key: KeyDep,
    settings: SettingsDep,
    zone: ZoneDep,
    start: Annotated[Instant, Query(description="First instant (a time without offset is +08:00)")],
    end: Annotated[
        Instant,
        Query(
            description="End of the half-open range; at most ENVLINK_EXPORT_MAX_DAYS after start"
        ),
    ],
    file_format: Annotated[ExportFormat, Query(alias="format")] = "csv",
    station: Annotated[list[Text] | None, Query(description="Repeat for several")] = None,
    parameter: Annotated[list[Text] | None, Query(description="Repeat for several")] = None,
    area: Area | None = None,
    city: City | None = None,
    interval: Annotated[
        Interval, Query(description="raw: the stored readings; 1h, 1d: the rollups")
    ] = "raw",
) -> ExportResponse:
    """Readings of the chosen stations and parameters in [start, end), streamed as a file.

    Series by station code, then parameter code; each in time order. Values are rounded half to
    even to the parameter's decimals, times are +08:00 unless tz=UTC.
    """
    plan = await plan_export(
        conn,
        stations=station,
        parameters=parameter,
        area=area,
        city=city,
        start=as_aware(start),
        end=as_aware(end),
        period_s=INTERVAL_PERIOD_S.get(interval),
        format=file_format,
        utc=zone is UTC,
        max_days=settings.export_max_days,
    )
    return ExportResponse(
        _file(database, plan),
        media_type=MEDIA_TYPES[file_format],
        headers={"Content-Disposition": f'attachment; filename="{plan.file_name()}"'},
    )


async def _file(database: ApiDatabase, plan: ExportPlan) -> AsyncGenerator[bytes, None]:
    """The file's bytes, on a connection of the stream's own, held for as long as it streams.

    The request's connection went back to the pool when the handler returned, so the request
    still holds one at a time; this one goes back when the stream ends or the client leaves.
    """
    if preamble := plan.preamble():
        yield preamble
    database.check_up()
    async with database.pool.connection(timeout=database.timeout_s) as conn:
        async for batch in export_batches(conn, plan):
            yield batch
