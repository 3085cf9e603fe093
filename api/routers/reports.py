"""Period reports of air and water over a month, quarter, year or date range."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse

from alerts.bulletin.assemble import assemble_bulletin, bulletin_month
from alerts.bulletin.page import render_html
from alerts.bulletin.tables import bulletin_zip
from alerts.evaluation.periods import Period, date_range, parse_period
from alerts.reports import air_period_report, water_period_report
from api.deps import ConnDep, KeyDep, SettingsDep
from api.errors import error_responses
from api.output import ZoneDep, in_zone, times_in_zone
from api.pagination import decode_cursor, encode_cursor
from core.errors import InvalidInput, NotFound
from core.signing import BULLETIN_SIGNED_PATH, check_bulletin_link
from core.timeutil import CST, utcnow
from schemas.bulletin import Bulletin
from schemas.common import Day, ErrorOut, Month, Page, Signature, Text
from schemas.reports import AirReportOut, BulletinFormat, StoredBulletinOut, WaterPeriodReport
from store.bulletins import (
    StoredBulletin,
    bulletin_body,
    bulletin_files,
    latest_bulletin_version,
    list_bulletins,
)

router = APIRouter(prefix="/v1", tags=["reports"], responses=error_responses(401, 422, 503))
# The signed bulletin link takes no key: no 401, and no key's rate limit (429).
signed_router = APIRouter(prefix="/v1", tags=["reports"], responses=error_responses(422, 503))

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
    response_model=AirReportOut,
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
    zone: ZoneDep,
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
) -> Response:
    """The air evaluation of a period (docs/evaluation.md §1-§4, read from the daily and hourly
    rollups): rule set, valid and category days, good-day share, exceedance and heavy-pollution
    days, each pollutant's statistic against its limit (a year: compliance), the composite index,
    primary-pollutant days and shares, and last year's same period as published and recomputed
    under this period's rule set, with the changes like for like. A statistic short of data is
    `{"status": "insufficient_data", "have", "need"}`. A period across a change of rule set
    (2026-03-01) is `{"parts": [before, after]}`, each a full report under its own rule set."""
    # The evaluation's JSON as it is: AirReportOut documents it (the tests hold it to it)
    # without a second pass over every figure.
    report = await air_period_report(conn, scope, code, report_period(period, start, end))
    return JSONResponse(report if zone is CST else times_in_zone(report, zone))


@router.get(
    "/reports/water",
    response_model=WaterPeriodReport,
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
) -> Response:
    """The water evaluation of a period (GB 3838 sections, GB 3097 sea points): per section the
    period mean and class of each item measured, the section's class and grade, its target and
    compliance, the items beyond the target and beyond class III with multiples, and its CWQI;
    for several sections the shares (I-III, worse than V, compliant), the grade (proportion
    method from 5 sections, else the sections' mean concentrations) and the mean CWQI; sea
    points' area grade; and `last_year`, the same figures a year earlier."""
    return JSONResponse(
        await water_period_report(conn, scope, code, report_period(period, start, end))
    )


ZIP_CONTENT_TYPE = "application/zip"
HTML_CONTENT_TYPE = "text/html"


@router.get(
    "/reports/bulletin",
    response_model=Bulletin,
    responses={
        200: {
            "description": "format=json: the bulletin. format=csv: a zip of CSV tables (UTF-8"
            " with a byte order mark): summary, air_days, air_pollutants, primary_pollutants,"
            " stations, episodes, aqi_calendar, air_months, water_sections, water_groups, notes."
            " format=html: a printable page in Chinese with an English toggle, charts as inline"
            " SVG, nothing loaded from elsewhere.",
            "content": {ZIP_CONTENT_TYPE: {}, HTML_CONTENT_TYPE: {}},
        },
        400: {"model": ErrorOut, "description": "month is not a month EnvLink handles"},
        422: {"model": ErrorOut, "description": "month not YYYY-MM; format or lang unknown"},
    },
)
async def bulletin(
    conn: ConnDep,
    key: KeyDep,
    zone: ZoneDep,
    month: Annotated[Month, Query(description="YYYY-MM")],
    file_format: Annotated[
        Literal["json", "csv", "html"], Query(alias="format", description="json, csv or html")
    ] = "json",
    lang: Annotated[
        Literal["zh", "en"], Query(description="The HTML page's first language (it toggles)")
    ] = "zh",
) -> Any:
    """The monthly joint bulletin of Guangzhou and Dongguan (docs/evaluation.md §8), assembled from
    the air and water reports of the month: the summary (good-day shares, composite indices
    and their changes on last year like for like), each city's and the region's category days,
    pollutant table and primary-pollutant shares, the month's regional episodes, the stations
    ranked by composite index, the AQI calendar and this year's months for the charts, each
    water section's class against its target and last year's, the rivers' and cities' shares
    and grades, the Dongjiang north main stream's and the Shiziyang estuary's grades, and the
    notes (rule sets, validity, data status)."""
    found = in_zone(await assemble_bulletin(conn, bulletin_month(month), now=utcnow()), zone)
    if file_format == "csv":
        name = f"envlink-bulletin-{found.month}.zip"
        return Response(
            bulletin_zip(found),
            media_type=ZIP_CONTENT_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    if file_format == "html":
        return Response(render_html(found, lang), media_type=f"{HTML_CONTENT_TYPE}; charset=utf-8")
    return found


BULLETINS_PATH = "/reports/bulletins"
STORED_FORMATS: tuple[BulletinFormat, ...] = ("json", "html", "csv")


def stored_out(stored: StoredBulletin) -> StoredBulletinOut:
    """A stored version as the list shows it, with a link to each of its formats."""
    label = f"{stored.month:%Y-%m}"
    base = f"/v1{BULLETINS_PATH}/{label}?version={stored.version}"
    return StoredBulletinOut(
        month=label,
        version=stored.version,
        generated_at=stored.generated_at,
        formats=list(STORED_FORMATS),
        links={f: base if f == "json" else f"{base}&format={f}" for f in STORED_FORMATS},
    )


@router.get(
    BULLETINS_PATH,
    responses={
        400: {"model": ErrorOut, "description": "a cursor this API did not issue; a bad month"},
        422: {"model": ErrorOut, "description": "month not YYYY-MM; limit out of range"},
    },
)
async def stored_bulletins(
    conn: ConnDep,
    key: KeyDep,
    zone: ZoneDep,
    month: Annotated[
        Month | None, Query(description="Only this month's versions (YYYY-MM)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
) -> Page[StoredBulletinOut]:
    """The monthly bulletins the worker generated and stored (on the 1st, for the month
    before; generating a month again adds a version and keeps the earlier ones): the latest
    month first, its latest version first, each with links to its JSON, HTML page and zip of
    CSV tables as they were generated (GET /v1/reports/bulletins/{month})."""
    first = None if month is None else bulletin_month(month).start
    before = None
    if cursor:
        position = decode_cursor(cursor, keys={"month": str, "version": int})
        try:
            before = (date.fromisoformat(position["month"]), int(position["version"]))
        except ValueError:
            raise InvalidInput("cursor: not a cursor this API issued") from None
    rows = await list_bulletins(conn, month=first, before=before, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor({"month": last.month.isoformat(), "version": last.version})
    page = Page[StoredBulletinOut](items=[stored_out(row) for row in rows], next_cursor=next_cursor)
    return in_zone(page, zone)


@router.get(
    BULLETINS_PATH + "/{month}",
    response_model=Bulletin,
    responses={
        200: {
            "description": "format=json: the bulletin as stored. format=csv: its zip of CSV"
            " tables. format=html: its printable page. Each as the worker generated it.",
            "content": {ZIP_CONTENT_TYPE: {}, HTML_CONTENT_TYPE: {}},
            "headers": {
                "X-Bulletin-Version": {
                    "description": "The version answered (the latest when none was asked for)",
                    "schema": {"type": "integer"},
                }
            },
        },
        400: {"model": ErrorOut, "description": "month is not a month EnvLink handles"},
        404: {
            "model": ErrorOut,
            "description": "the month's bulletin was never generated, or has no such version",
        },
        422: {"model": ErrorOut, "description": "month not YYYY-MM; version or format bad"},
    },
)
async def stored_bulletin(
    conn: ConnDep,
    key: KeyDep,
    zone: ZoneDep,
    month: Annotated[Month, Path(description="YYYY-MM")],
    version: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="The stored version; the latest when left out"),
    ] = None,
    file_format: Annotated[
        BulletinFormat, Query(alias="format", description="json, csv (the zip) or html")
    ] = "json",
) -> Response:
    """A stored version of a month's bulletin, as the worker generated it (not assembled
    again): the JSON of GET /v1/reports/bulletin, the zip of CSV tables, or the page."""
    first = bulletin_month(month).start
    if version is None:
        version = await latest_bulletin_version(conn, first)
        if version is None:
            raise NotFound(f"month: no bulletin of {month} was generated")
    headers = {"X-Bulletin-Version": str(version)}
    if file_format == "json":
        body = await bulletin_body(conn, first, version)
        if body is None:
            raise NotFound(f"version: the bulletin of {month} has no stored version {version}")
        if zone is not CST:  # stored with its times in +08:00
            body = in_zone(Bulletin.model_validate_json(body), zone).model_dump_json()
        return Response(body, media_type="application/json", headers=headers)
    stored = await bulletin_files(conn, first, version)
    if stored is None:
        raise NotFound(f"version: the bulletin of {month} has no stored version {version}")
    if file_format == "csv":
        name = f"envlink-bulletin-{month}-v{version}.zip"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(stored.csv_zip, media_type=ZIP_CONTENT_TYPE, headers=headers)
    return Response(stored.html, media_type=f"{HTML_CONTENT_TYPE}; charset=utf-8", headers=headers)


@signed_router.get(
    BULLETIN_SIGNED_PATH.removeprefix("/v1"),
    response_class=Response,
    responses={
        200: {
            "description": "The stored bulletin version as generated: the HTML page (format=html)"
            " or the zip of CSV tables (format=csv)",
            "content": {HTML_CONTENT_TYPE: {}, ZIP_CONTENT_TYPE: {}},
        },
        400: {"model": ErrorOut, "description": "month is not a month EnvLink handles"},
        403: {
            "model": ErrorOut,
            "description": "bad_signature: sig does not match month, version, format and expires"
            " (or the server has no signing key); link_expired: the link is past expires",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        },
        404: {"model": ErrorOut, "description": "no stored version of that month"},
        422: {"model": ErrorOut, "description": "a parameter missing or malformed"},
    },
)
async def signed_bulletin(
    conn: ConnDep,
    settings: SettingsDep,
    month: Annotated[Month, Query(description="YYYY-MM")],
    version: Annotated[int, Query(ge=1, le=2**31 - 1, description="The stored version")],
    expires: Annotated[
        int, Query(ge=0, le=2**40, description="When the link expires, unix seconds")
    ],
    sig: Annotated[
        Signature,
        Query(description="HMAC-SHA256 (hex) of the link with the server's signing key"),
    ],
    file_format: Annotated[
        Literal["html", "csv"], Query(alias="format", description="html or csv (the zip)")
    ] = "html",
) -> Response:
    """A stored bulletin version through the signed link a bulletin message carries: no API key,
    valid for 30 days from the message (ENVLINK_SIGNING_KEY signs it). The page or zip is the
    version as the worker generated it, not assembled again."""
    key = settings.signing_key.get_secret_value() if settings.signing_key else None
    check_bulletin_link(
        key,
        month=month,
        version=version,
        file_format=file_format,
        expires=expires,
        sig=sig,
        now=utcnow(),
    )
    stored = await bulletin_files(conn, bulletin_month(month).start, version)
    if stored is None:
        raise NotFound(f"version: the bulletin of {month} has no stored version {version}")
    if file_format == "csv":
        name = f"envlink-bulletin-{month}-v{version}.zip"
        return Response(
            stored.csv_zip,
            media_type=ZIP_CONTENT_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return Response(stored.html, media_type=f"{HTML_CONTENT_TYPE}; charset=utf-8")
