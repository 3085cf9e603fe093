"""Exports: the readings or rollups of many series as CSV or NDJSON, written by PostgreSQL.

Each series is one `COPY (SELECT …) TO STDOUT` whose rows come out already formatted (times in
the zone asked for, values rounded half to even to the parameter's decimals, QC as its name), so
the API and the CLI only pass bytes along, a batch at a time: memory stays flat whatever the
export's size, and the formatting runs at the server's speed instead of Python's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal

import orjson
from psycopg.rows import class_row

from core.errors import InvalidInput, ParameterNotFound, StationNotFound
from core.timeutil import CST
from schemas.common import QC_BY_CODE
from store.pool import Conn

ExportFormat = Literal["csv", "ndjson"]

# Lines fetched and handed on at a time: about 200 KiB of CSV.
FETCH_ROWS = 3000

RAW_COLUMNS: tuple[str, ...] = ("station", "parameter", "time", "period_s", "value", "unit", "qc")
ROLLUP_COLUMNS = (*RAW_COLUMNS[:-1], "count", "coverage", "origin")
# Decimal places of the rollups' coverage (as GET /v1/readings?interval= shows it).
COVERAGE_DECIMALS = 3


@dataclass(frozen=True, slots=True)
class ExportSeries:
    """One station × parameter to export, with what its rows show."""

    station_id: int
    parameter_id: int
    station: str
    parameter: str
    unit: str
    decimals: int | None


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What an export holds: its series (in file order), period, resolution, format and zone."""

    series: Sequence[ExportSeries]
    start: datetime
    end: datetime
    period_s: int | None  # None: the stored readings; 3600, 86400: the rollups
    format: ExportFormat
    utc: bool

    @property
    def columns(self) -> tuple[str, ...]:
        return RAW_COLUMNS if self.period_s is None else ROLLUP_COLUMNS

    def preamble(self) -> bytes:
        """What the file starts with: for CSV a byte order mark (Excel reads UTF-8 by it) and
        the header row; nothing for NDJSON."""
        if self.format == "ndjson":
            return b""
        return "\ufeff".encode() + ",".join(self.columns).encode() + b"\n"

    def file_name(self) -> str:
        """envlink-readings[-1h|-1d]-<start>-<end>.<csv|ndjson>, dates in the plan's zone."""
        resolution = {None: "", 3600: "-1h", 86400: "-1d"}[self.period_s]
        zone = UTC if self.utc else CST
        bounds = "-".join(_compact(moment.astimezone(zone)) for moment in (self.start, self.end))
        return f"envlink-readings{resolution}-{bounds}.{self.format}"


def _compact(moment: datetime) -> str:
    """20261101, or 20261101T0830 for a time that is not midnight."""
    if moment.time() == time(0):
        return moment.strftime("%Y%m%d")
    return moment.strftime("%Y%m%dT%H%M")


@dataclass(frozen=True, slots=True)
class UnknownCodes:
    stations: list[str]
    parameters: list[str]


async def unknown_codes(
    conn: Conn, *, stations: Sequence[str], parameters: Sequence[str]
) -> UnknownCodes:
    """The station and parameter codes among these that name nothing, each sorted."""
    cur = await conn.execute(
        "SELECT array(SELECT c FROM unnest(%(stations)s::text[]) AS c"
        "             WHERE NOT EXISTS (SELECT 1 FROM station WHERE code = c) ORDER BY c),"
        "       array(SELECT c FROM unnest(%(parameters)s::text[]) AS c"
        "             WHERE NOT EXISTS (SELECT 1 FROM parameter WHERE code = c) ORDER BY c)",
        {"stations": list(stations), "parameters": list(parameters)},
    )
    row = await cur.fetchone()
    assert row is not None
    return UnknownCodes(stations=list(row[0]), parameters=list(row[1]))


# A series is what a station measures, or has ever sent (reading_latest keeps one row per
# series written), so readings of a parameter the catalogue no longer lists are exported too.
_SERIES = """
SELECT s.id AS station_id, p.id AS parameter_id, s.code AS station, p.code AS parameter, p.unit,
       p.decimals
FROM (SELECT station_id, parameter_id FROM station_parameter
      UNION SELECT station_id, parameter_id FROM reading_latest) AS x
JOIN station s ON s.id = x.station_id
JOIN parameter p ON p.id = x.parameter_id
WHERE (%(stations)s::text[] IS NULL OR s.code = ANY(%(stations)s))
  AND (%(parameters)s::text[] IS NULL OR p.code = ANY(%(parameters)s))
  AND (%(area)s::text IS NULL OR s.area = %(area)s)
  AND (%(city)s::text IS NULL OR s.city = %(city)s)
ORDER BY s.code, p.code
"""


async def export_series(
    conn: Conn,
    *,
    stations: Sequence[str] | None,
    parameters: Sequence[str] | None,
    area: str | None,
    city: str | None,
) -> list[ExportSeries]:
    """The series the filters select (None: no filter), by station code, then parameter code."""
    async with conn.cursor(row_factory=class_row(ExportSeries)) as cur:
        await cur.execute(
            _SERIES.encode(),
            {
                "stations": list(stations) if stations is not None else None,
                "parameters": list(parameters) if parameters is not None else None,
                "area": area,
                "city": city,
            },
        )
        return await cur.fetchall()


async def export_count(conn: Conn, plan: ExportPlan) -> int:
    """How many rows the export holds (for a progress bar)."""
    if not plan.series:
        return 0
    table, start = ("reading", "r.time")
    if plan.period_s is not None:
        table, start = _ROLLUP_TABLES[plan.period_s]
    cur = await conn.execute(
        (
            "SELECT count(*) FROM " + table + " AS r"
            " JOIN unnest(%(stations)s::int[], %(parameters)s::int2[])"
            " AS w(station_id, parameter_id)"
            " ON r.station_id = w.station_id AND r.parameter_id = w.parameter_id"
            " WHERE " + start + " >= %(start)s AND " + start + " < %(end)s"
        ).encode(),
        {
            "stations": [s.station_id for s in plan.series],
            "parameters": [s.parameter_id for s in plan.series],
            "start": plan.start,
            "end": plan.end,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


# Each rollup table and the expression of its period's start instant.
_ROLLUP_TABLES = {
    3600: ("reading_hourly", "r.hour"),
    86400: ("reading_daily", "(r.day::timestamp AT TIME ZONE 'Asia/Shanghai')"),
}


async def export_batches(conn: Conn, plan: ExportPlan) -> AsyncIterator[bytes]:
    """The export's lines, formatted, a batch of FETCH_ROWS at a time (the preamble not included).

    Reads through a server-side cursor per series in a transaction of its own on `conn` (which
    must hold no other), so only one batch is ever in memory.
    """
    async with conn.transaction():
        # The formatting below relies on these: ISO timestamps, shortest exact float text.
        await conn.execute("SET LOCAL datestyle = 'ISO, YMD'")
        await conn.execute("SET LOCAL extra_float_digits = 1")
        for series in plan.series:
            query, params = _line_query(plan, series)
            async with conn.cursor(name="export") as cur:
                await cur.execute(query.encode(), params)
                while rows := await cur.fetchmany(FETCH_ROWS):
                    yield "".join([row[0] for row in rows]).encode()


# Values rounded half to even to the parameter's decimals exactly as core.rounding does: in
# double precision, except within a hair of a half, where the value's shortest decimal text is
# rounded as a numeric (2.675 → 2.68 at two places, where the double lies just below .675).
_SCALED = "({value} * %(scale)s::float8)"
_ROUNDED = """CASE
  WHEN NOT abs({s}) < 4503599627370496 THEN {value}
  WHEN abs(abs({s} - trunc({s})) - 0.5) <= 1e-9 * greatest(1, abs({s})) THEN
    ((CASE WHEN abs({n} - trunc({n})) = 0.5 THEN 2 * round({n} / 2) ELSE round({n}) END)
     / %(scale)s::numeric)::float8 + 0.0
  ELSE round({s}) / %(scale)s::float8 + 0.0
END"""


def _rounded(value: str, decimals: int | None, key: str = "scale") -> str:
    """SQL for `value` rounded half to even to `decimals` (the scale bound as %(key)s)."""
    if decimals is None:
        return value
    numeric = f"({value}::text::numeric * %(scale)s::numeric)"
    sql = _ROUNDED.format(s=_SCALED.format(value=value), n=numeric, value=value)
    return sql.replace("%(scale)s", f"%({key})s")


def _instant(expression: str, utc: bool) -> str:
    """SQL for an RFC 3339 text of a timestamptz, +08:00 or Z."""
    zone, suffix = ("UTC", "Z") if utc else ("Asia/Shanghai", "+08:00")
    return f"(replace(({expression} AT TIME ZONE '{zone}')::text, ' ', 'T') || '{suffix}')"


# QC names by stored code; codes without a state have none.
_QC_NAMES = [QC_BY_CODE[code].value if code in QC_BY_CODE else None for code in range(32)]


@dataclass(frozen=True, slots=True)
class _Column:
    """An exported column: its name, its SQL in CSV (None: not in CSV) and as a JSON value."""

    name: str
    csv: str | None
    json: str


def _text(expression: str) -> str:
    """JSON of a text expression that never needs escaping (times, QC names, origins)."""
    return f"coalesce('\"' || {expression} || '\"', 'null')"


def _number(expression: str) -> str:
    return f"coalesce(({expression})::text, 'null')"


def _columns(plan: ExportPlan, decimals: int | None) -> list[_Column]:
    """The columns of one series' rows, over the subquery `x` of _source()."""
    start = _instant("x.start", plan.utc)
    end = (
        "CASE WHEN x.period_s > 0 THEN "
        + _instant("(x.start + make_interval(secs => x.period_s))", plan.utc)
        + " END"
    )
    value = _rounded("x.value", decimals)
    head = [
        _Column("station", "%(station)s::text", "%(station_json)s::text"),
        _Column("parameter", "%(parameter)s::text", "%(parameter_json)s::text"),
        _Column("time", start, _text(start)),
        _Column("period_s", "x.period_s", "x.period_s::text"),
        _Column("period_end", None, _text(end)),
        _Column("value", value, _number(value)),
        _Column("unit", "%(unit)s::text", "%(unit_json)s::text"),
    ]
    if plan.period_s is None:
        qc = "(%(qc_names)s::text[])[x.qc + 1]"
        return [*head, _Column("qc", qc, _text(qc))]
    coverage = _rounded("x.coverage", COVERAGE_DECIMALS, "coverage_scale")
    return [
        *head,
        _Column("count", "x.count", "x.count::text"),
        _Column("coverage", coverage, _number(coverage)),
        _Column("origin", "x.origin", _text("x.origin")),
    ]


def _source(plan: ExportPlan) -> str:
    """The rows of one series (start, period_s, value, and qc or count, coverage, origin)."""
    if plan.period_s is None:
        return (
            "SELECT r.time AS start, r.period_s, r.value, r.qc FROM reading r"
            " WHERE r.station_id = %(station_id)s AND r.parameter_id = %(parameter_id)s"
            " AND r.time >= %(start)s AND r.time < %(end)s ORDER BY r.time, r.period_s"
        )
    table, start = _ROLLUP_TABLES[plan.period_s]
    if plan.period_s == 3600:
        count, coverage = "r.samples", "r.coverage_s / 3600.0"
    else:
        # As store.rollups.rollup_series: water days count samples, the others hours.
        count = "r.hours"
        coverage = (
            "CASE WHEN p.grp IN ('water', 'lab') THEN r.hours * sp.interval_s / 86400.0"
            " ELSE r.hours / 24.0 END"
        )
    return (
        f"SELECT {start} AS start, {plan.period_s} AS period_s, r.value, {count} AS count,"
        f" (CASE WHEN r.origin = 'reported' THEN 1.0 ELSE least(1.0, {coverage}) END)::float8"
        f" AS coverage, r.origin FROM {table} r"
        " JOIN parameter p ON p.id = r.parameter_id"
        " LEFT JOIN station_parameter sp"
        " ON sp.station_id = r.station_id AND sp.parameter_id = r.parameter_id"
        " WHERE r.station_id = %(station_id)s AND r.parameter_id = %(parameter_id)s"
        f" AND {start} >= %(start)s AND {start} < %(end)s ORDER BY 1"
    )


def _line_query(plan: ExportPlan, series: ExportSeries) -> tuple[str, dict[str, object]]:
    """The query of one series' lines (each ending in a newline) and its parameters."""
    params: dict[str, object] = {
        "station_id": series.station_id,
        "parameter_id": series.parameter_id,
        "start": plan.start,
        "end": plan.end,
        "station": _csv_text(series.station),
        "parameter": _csv_text(series.parameter),
        "unit": _csv_text(series.unit),
        "station_json": orjson.dumps(series.station).decode(),
        "parameter_json": orjson.dumps(series.parameter).decode(),
        "unit_json": orjson.dumps(series.unit).decode(),
        "scale": 10**series.decimals if series.decimals is not None else None,
        "coverage_scale": 10**COVERAGE_DECIMALS,
        "qc_names": _QC_NAMES,
    }
    columns = _columns(plan, series.decimals)
    if plan.format == "csv":
        # Times, numbers, QC names and origins never need CSV quoting; the text constants are
        # quoted by _csv_text where they need it.
        line = " || ',' || ".join(
            f"coalesce(({c.csv})::text, '')" for c in columns if c.csv is not None
        )
    else:
        line = "'{' || " + " || ',' || ".join(f"'\"{c.name}\":' || {c.json}" for c in columns)
        line += " || '}'"
    return f"SELECT {line} || E'\\n' FROM ({_source(plan)}) x", params


def _csv_text(text: str) -> str:
    """A CSV field of `text`, quoted where it holds a comma, a quote or a line break."""
    if any(char in text for char in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


async def plan_export(
    conn: Conn,
    *,
    stations: Sequence[str] | None,
    parameters: Sequence[str] | None,
    area: str | None,
    city: str | None,
    start: datetime,
    end: datetime,
    period_s: int | None,
    format: ExportFormat,
    utc: bool,
    max_days: int,
) -> ExportPlan:
    """Check an export's request and resolve its series; InvalidInput or NotFound naming the field.

    An export names its period, and at most `max_days` of it (ENVLINK_EXPORT_MAX_DAYS): one
    holds a connection for as long as it streams.
    """
    if end <= start:
        raise InvalidInput("end must be after start (the range is half-open [start, end))")
    if end - start > timedelta(days=max_days):
        days = (end - start) / timedelta(days=1)
        raise InvalidInput(
            f"end: an export spans at most {max_days} days (ENVLINK_EXPORT_MAX_DAYS), this one"
            f" {days:g}; split it into several"
        )
    unknown = await unknown_codes(conn, stations=stations or [], parameters=parameters or [])
    if unknown.stations:
        raise StationNotFound("station: no station with code " + _codes(unknown.stations))
    if unknown.parameters:
        raise ParameterNotFound("parameter: no parameter with code " + _codes(unknown.parameters))
    series = await export_series(
        conn, stations=stations or None, parameters=parameters or None, area=area, city=city
    )
    return ExportPlan(series, start, end, period_s, format, utc)


def _codes(codes: Sequence[str]) -> str:
    return ", ".join(repr(code) for code in codes)
