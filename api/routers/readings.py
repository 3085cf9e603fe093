"""Readings of one series, and the latest reading of every station × parameter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from enum import IntEnum
from operator import attrgetter, itemgetter
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Query, Response

from api import columns
from api.deps import CatalogueDep, ConnDep, KeyDep, RequestConnectionDep
from api.errors import error_responses
from api.output import ZoneDep, json_response, steady_zone
from api.pagination import decode_cursor, encode_cursor
from core.errors import InvalidInput, ParameterNotFound, StationNotFound
from core.rounding import round_half_even, round_half_even_array
from core.timeutil import PERIODS_S, as_aware, parse_time, period_end
from schemas.common import QC_BY_CODE, Area, City, Instant, Medium, Page, Text
from schemas.readings import INTERVAL_PERIOD_S, Interval, LatestOut, ReadingOut, RollupOut
from store.pool import Conn
from store.readings import (
    LatestReading,
    PageRow,
    ReadingColumns,
    latest_readings,
    readings_page,
)
from store.rollups import RollupColumns, RollupPoint, rollup_series


class Period(IntEnum):
    """A reading's period in seconds: instant, minute, hour, day."""

    INSTANT = 0
    MINUTE = 60
    HOUR = 3600
    DAY = 86400


router = APIRouter(prefix="/v1", tags=["readings"], responses=error_responses(401, 422, 503))

# Readings, rollups and the latest readings are written as dicts (api.output.json_response): a
# model per item cost several times the query. The dicts hold ReadingOut's, RollupOut's and
# LatestOut's fields in their order.


def _period_end(time: datetime, period_s: int, zone: tzinfo) -> datetime | None:
    """The end of an aggregated reading's period in `zone`; None for an instant."""
    return period_end(time, period_s).astimezone(zone) if period_s else None


_TIME = attrgetter("time")
# A period's length by its seconds, for the ends of a page's periods in a fixed-offset zone.
_LENGTH = {period_s: timedelta(seconds=period_s) for period_s in PERIODS_S}


def reading_items(
    rows: Sequence[PageRow], values: Sequence[float | None], unit: str, zone: tzinfo
) -> list[dict[str, Any]]:
    """ReadingOut items as dicts, with the published `values` and the series' `unit`."""
    fixed = steady_zone(zone, min(rows, key=itemgetter(0))[0] if rows else None)
    if fixed is not None:
        # The same times as below (a fixed offset adds a period as the zone would).
        times = [row[0].astimezone(fixed) for row in rows]
        return [
            {
                "time": local,
                "period_s": period_s,
                "period_end": local + _LENGTH[period_s] if period_s else None,
                "value": value,
                "unit": unit,
                "qc": QC_BY_CODE[qc],
            }
            for local, (_, period_s, _, qc), value in zip(times, rows, values, strict=True)
        ]
    return [
        {
            "time": time.astimezone(zone),
            "period_s": period_s,
            "period_end": _period_end(time, period_s, zone) if period_s else None,
            "value": value,
            "unit": unit,
            "qc": QC_BY_CODE[qc],
        }
        for (time, period_s, _, qc), value in zip(rows, values, strict=True)
    ]


def rollup_items(
    rows: Sequence[RollupPoint],
    values: Sequence[float | None],
    coverages: Sequence[float | None],
    period_s: int,
    zone: tzinfo,
) -> list[dict[str, Any]]:
    """RollupOut items as dicts, with the published `values` and `coverages`."""
    fixed = steady_zone(zone, min(rows, key=_TIME).time if rows else None)
    if fixed is not None:
        length = _LENGTH[period_s]
        return [
            {
                "time": (local := r.time.astimezone(fixed)),
                "period_s": period_s,
                "period_end": local + length,
                "value": value,
                "unit": r.unit,
                "count": r.count,
                "coverage": coverage,
                "origin": r.origin,
            }
            for r, value, coverage in zip(rows, values, coverages, strict=True)
        ]
    return [
        {
            "time": r.time.astimezone(zone),
            "period_s": period_s,
            "period_end": period_end(r.time, period_s).astimezone(zone),
            "value": value,
            "unit": r.unit,
            "count": r.count,
            "coverage": coverage,
            "origin": r.origin,
        }
        for r, value, coverage in zip(rows, values, coverages, strict=True)
    ]


def latest_items(
    rows: Sequence[LatestReading], values: Sequence[float | None], zone: tzinfo
) -> list[dict[str, Any]]:
    """LatestOut items as dicts, with the published `values`."""
    fixed = steady_zone(zone, min(rows, key=_TIME).time if rows else None)
    if fixed is not None:
        return [
            {
                "station": r.station,
                "parameter": r.parameter,
                "time": (local := r.time.astimezone(fixed)),
                "period_s": r.period_s,
                "period_end": local + _LENGTH[r.period_s] if r.period_s else None,
                "value": value,
                "unit": r.unit,
                "qc": r.qc,
                "age_s": r.age_s,
            }
            for r, value in zip(rows, values, strict=True)
        ]
    return [
        {
            "station": r.station,
            "parameter": r.parameter,
            "time": r.time.astimezone(zone),
            "period_s": r.period_s,
            "period_end": _period_end(r.time, r.period_s, zone),
            "value": value,
            "unit": r.unit,
            "qc": r.qc,
            "age_s": r.age_s,
        }
        for r, value in zip(rows, values, strict=True)
    ]


@router.get(
    "/readings",
    response_model=Page[ReadingOut] | Page[RollupOut],
    responses=error_responses(400, 404),
)
async def readings(
    conn: ConnDep,
    key: KeyDep,
    catalogue: CatalogueDep,
    zone: ZoneDep,
    station: Annotated[Text, Query(description="Station code", examples=["gz-a-huangpu"])],
    parameter: Annotated[Text, Query(description="Parameter code", examples=["no2"])],
    start: Instant | None = None,
    end: Instant | None = None,
    interval: Annotated[
        Interval,
        Query(
            description="raw: the stored readings; 1h, 1d: the hourly and daily rollups, with"
            " count and coverage (period_s applies to raw only)"
        ),
    ] = "raw",
    period_s: Annotated[
        Period | None, Query(description="0 (instant), 60, 3600 or 86400 seconds")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    cursor: Text | None = None,
) -> Response:
    """Readings in [start, end), time ascending; times without an offset are Asia/Shanghai."""
    if period_s is not None and interval != "raw":
        raise InvalidInput(f"period_s applies to interval=raw only, not interval={interval}")
    station_ref = catalogue.stations.get(station)
    if station_ref is None:
        raise StationNotFound(f"no station with code {station!r}")
    parameter_ref = catalogue.parameters.get(parameter)
    if parameter_ref is None:
        raise ParameterNotFound(f"no parameter with code {parameter!r}")
    station_id, parameter_id = station_ref.id, parameter_ref.id
    start = as_aware(start) if start else None
    end = as_aware(end) if end else None
    if start and end and end <= start:
        raise InvalidInput("end must be after start (the range is half-open [start, end))")
    if interval != "raw":
        return await _rollups(
            conn,
            station_id=station_id,
            parameter_id=parameter_id,
            period_s=INTERVAL_PERIOD_S[interval],
            start=start,
            end=end,
            limit=limit,
            cursor=cursor,
            zone=zone,
        )
    after = None
    if cursor:
        position = decode_cursor(cursor, keys={"time": str, "period_s": int})
        after = (parse_time(position["time"], field="cursor"), position["period_s"])
    page = await readings_page(
        conn,
        station_id=station_id,
        parameter_id=parameter_id,
        start=start,
        end=end,
        period_s=None if period_s is None else int(period_s),
        after=after,
        limit=limit + 1,
    )
    next_cursor = None
    if len(page) > limit:
        page = page.head(limit)
        next_cursor = encode_cursor(
            {"time": page.time(limit - 1).isoformat(), "period_s": int(page.period_s[-1])}
        )
    values = round_half_even_array(page.value, parameter_ref.decimals)
    fields = reading_fields(page, values, parameter_ref.decimals, parameter_ref.unit, zone)
    if fields is None:
        items = reading_items(page.rows(), _listed(values), parameter_ref.unit, zone)
        return json_response({"items": items, "next_cursor": next_cursor})
    return _page_response(fields, next_cursor)


def reading_fields(
    page: ReadingColumns,
    values: npt.NDArray[np.float64],
    decimals: int | None,
    unit: str,
    zone: tzinfo,
) -> list[tuple[str, columns.Column | bytes]] | None:
    """The fields of a page's ReadingOut items (api.columns.items) with the published `values`
    (rounded to `decimals`), written byte for byte as `reading_items` and json_response write
    them; None where api.columns would not write a column as they do (the caller writes the
    dicts)."""
    if decimals is None:  # values as they arrived: their shortest decimals, written by orjson
        return None
    times = columns.times(page.time_us, zone)
    numbers = columns.numbers(values, decimals)
    if times is None or numbers is None:
        return None
    instant = page.period_s == 0
    ends: columns.Column | bytes = b"null"
    if not instant.all():
        found = columns.times(page.time_us + page.period_s.astype(np.int64) * 1_000_000, zone)
        if found is None:
            return None
        ends = columns.nullable(found, instant)
    return [
        ("time", times),
        ("period_s", columns.choices(page.period_s, _integer)),
        ("period_end", ends),
        ("value", numbers),
        ("unit", orjson.dumps(unit)),
        ("qc", columns.choices(page.qc, _qc_label)),
    ]


def _integer(number: int) -> bytes:
    return b"%d" % number


def _qc_label(code: int) -> bytes:
    return orjson.dumps(QC_BY_CODE[code])


# Coverage is a share: three decimals tell 23 of 24 hours (0.958) from a whole day.
COVERAGE_DECIMALS = 3


async def _rollups(
    conn: Conn,
    *,
    station_id: int,
    parameter_id: int,
    period_s: int,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    cursor: str | None,
    zone: tzinfo,
) -> Response:
    """One page of a series' hourly or daily rollups, keyset-paginated by period start."""
    after = None
    if cursor:
        after = parse_time(decode_cursor(cursor, keys={"time": str})["time"], field="cursor")
    page = await rollup_series(
        conn,
        station_id=station_id,
        parameter_id=parameter_id,
        period_s=period_s,
        start=start,
        end=end,
        after=after,
        limit=limit + 1,
    )
    next_cursor = None
    if len(page) > limit:
        page = page.head(limit)
        next_cursor = encode_cursor({"time": page.time(limit - 1).isoformat()})
    values = round_half_even_array(page.value, page.decimals)
    coverages = round_half_even_array(page.coverage, COVERAGE_DECIMALS)
    fields = rollup_fields(page, values, coverages, period_s, zone)
    if fields is None:
        items = rollup_items(page.rows(), _listed(values), _listed(coverages), period_s, zone)
        return json_response({"items": items, "next_cursor": next_cursor})
    return _page_response(fields, next_cursor)


def rollup_fields(
    page: RollupColumns,
    values: npt.NDArray[np.float64],
    coverages: npt.NDArray[np.float64],
    period_s: int,
    zone: tzinfo,
) -> list[tuple[str, columns.Column | bytes]] | None:
    """The fields of a page's RollupOut items (api.columns.items) with the published `values`
    and `coverages` (rounded), written byte for byte as `rollup_items` and json_response write
    them; None where api.columns would not write a column as they do (the caller writes the
    dicts)."""
    if page.decimals is None:  # values as computed: their shortest decimals, by orjson
        return None
    times = columns.times(page.time_us, zone)
    ends = columns.times(page.time_us + period_s * 1_000_000, zone)
    numbers = columns.numbers(values, page.decimals)
    shares = columns.numbers(coverages, COVERAGE_DECIMALS)
    if times is None or ends is None or numbers is None or shares is None:
        return None
    return [
        ("time", times),
        ("period_s", b"%d" % period_s),
        ("period_end", ends),
        ("value", numbers),
        ("unit", orjson.dumps(page.unit)),
        ("count", columns.integers(page.count)),
        ("coverage", shares),
        ("origin", columns.choices(page.reported, _origin)),
    ]


def _origin(reported: bool) -> bytes:
    return b'"reported"' if reported else b'"computed"'


def _listed(values: npt.NDArray[np.float64]) -> list[float | None]:
    """Rounded values as a list, None where missing (NaN)."""
    return [None if math.isnan(value) else value for value in values.tolist()]


def _page_response(
    fields: list[tuple[str, columns.Column | bytes]], next_cursor: str | None
) -> Response:
    """A page whose items api.columns writes: as json_response writes {items, next_cursor}."""
    after = b',"next_cursor":' + orjson.dumps(next_cursor) + b"}"
    body = columns.items(fields, before=b'{"items":', after=after)
    return Response(body, media_type="application/json")


@router.get("/latest", response_model=Page[LatestOut])
async def latest(
    conn: ConnDep,
    held: RequestConnectionDep,
    key: KeyDep,
    zone: ZoneDep,
    area: Area | None = None,
    city: City | None = None,
    medium: Medium | None = None,
) -> Response:
    """The latest reading (by period end) of every station × parameter, with its age."""
    rows = await latest_readings(conn, city=city, area=area, medium=medium)
    await held.release()  # thousands of items to build: the connection is not needed for that
    values = round_half_even([r.value for r in rows], [r.decimals for r in rows])
    return json_response({"items": latest_items(rows, values, zone), "next_cursor": None})
