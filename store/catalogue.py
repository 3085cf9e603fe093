"""Agencies, parameters, reaches and stations: seeding from config and reading them back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from core.errors import ParameterNotFound, StationNotFound
from schemas.catalogue import Catalogue, ParameterOut, StationOut, StationParameterOut
from schemas.common import Area, City, Medium
from store.pool import Conn


@dataclass
class SeedReport:
    """How many catalogue rows a seed inserted, changed or left as they were, per table."""

    inserted: dict[str, int]
    updated: dict[str, int]
    unchanged: dict[str, int]

    def lines(self) -> list[str]:
        return [
            f"{table}: {self.inserted[table]} inserted, {self.updated[table]} updated, "
            f"{self.unchanged[table]} unchanged"
            for table in self.inserted
        ]


async def _upsert(
    conn: Conn, table: str, sql: str, rows: list[dict[str, object]], report: SeedReport
) -> None:
    inserted = updated = 0
    async with conn.cursor() as cur:
        for row in rows:
            await cur.execute(sql.encode(), row)
            result = await cur.fetchone()
            if result is None:
                continue
            if result[0]:
                inserted += 1
            else:
                updated += 1
    report.inserted[table] = inserted
    report.updated[table] = updated
    report.unchanged[table] = len(rows) - inserted - updated


# Each upsert returns a row only when it inserted or changed something, so an unchanged catalogue
# is reported as such and re-seeding writes nothing.
_AGENCY = """
INSERT INTO agency (code, name, name_zh, city) VALUES (%(code)s, %(name)s, %(name_zh)s, %(city)s)
ON CONFLICT (code) DO UPDATE
SET name = EXCLUDED.name, name_zh = EXCLUDED.name_zh, city = EXCLUDED.city
WHERE (agency.name, agency.name_zh, agency.city)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.name_zh, EXCLUDED.city)
RETURNING xmax = 0
"""
_PARAMETER = """
INSERT INTO parameter (code, name, name_zh, grp, unit, decimals, noise, hj212_code, valid_min,
                       valid_max)
VALUES (%(code)s, %(name)s, %(name_zh)s, %(group)s, %(unit)s, %(decimals)s, %(noise)s, %(hj212)s,
        %(valid_min)s, %(valid_max)s)
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_zh = EXCLUDED.name_zh,
    grp = EXCLUDED.grp, unit = EXCLUDED.unit, decimals = EXCLUDED.decimals,
    noise = EXCLUDED.noise, hj212_code = EXCLUDED.hj212_code, valid_min = EXCLUDED.valid_min,
    valid_max = EXCLUDED.valid_max
WHERE (parameter.name, parameter.name_zh, parameter.grp, parameter.unit, parameter.decimals,
       parameter.noise, parameter.hj212_code, parameter.valid_min, parameter.valid_max)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.name_zh, EXCLUDED.grp, EXCLUDED.unit,
       EXCLUDED.decimals, EXCLUDED.noise, EXCLUDED.hj212_code, EXCLUDED.valid_min,
       EXCLUDED.valid_max)
RETURNING xmax = 0
"""
_REACH = """
INSERT INTO reach (code, name, name_zh, downstream, length_km, velocity_m_s, tidal, tidal_factor,
                   path, approximate)
VALUES (%(code)s, %(name)s, %(name_zh)s, %(downstream)s, %(length_km)s, %(velocity_m_s)s,
        %(tidal)s, %(tidal_factor)s, %(path)s, %(approximate)s)
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_zh = EXCLUDED.name_zh,
    downstream = EXCLUDED.downstream, length_km = EXCLUDED.length_km,
    velocity_m_s = EXCLUDED.velocity_m_s, tidal = EXCLUDED.tidal,
    tidal_factor = EXCLUDED.tidal_factor, path = EXCLUDED.path,
    approximate = EXCLUDED.approximate
WHERE (reach.name, reach.name_zh, reach.downstream, reach.length_km, reach.velocity_m_s,
       reach.tidal, reach.tidal_factor, reach.path, reach.approximate)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.name_zh, EXCLUDED.downstream, EXCLUDED.length_km,
       EXCLUDED.velocity_m_s, EXCLUDED.tidal, EXCLUDED.tidal_factor, EXCLUDED.path,
       EXCLUDED.approximate)
RETURNING xmax = 0
"""
_STATION_COLUMNS = (
    "name",
    "name_zh",
    "city",
    "area",
    "medium",
    "agency_id",
    "lat",
    "lon",
    "approximate",
    "hj212_mn",
    "hj212_password",
    "hj212_crc",
    "background",
    "reach_code",
    "river_km",
    "water_standard",
    "water_body",
    "target_class",
)
_STATION = (
    "INSERT INTO station (code, " + ", ".join(_STATION_COLUMNS) + ")"
    " SELECT %(code)s, %(name)s, %(name_zh)s, %(city)s, %(area)s, %(medium)s, agency.id,"
    " %(lat)s, %(lon)s, %(approximate)s, %(hj212_mn)s, %(hj212_password)s, %(hj212_crc)s,"
    " %(background)s, %(reach)s, %(river_km)s, %(water_standard)s, %(water_body)s,"
    " %(target_class)s FROM agency WHERE agency.code = %(agency)s"
    " ON CONFLICT (code) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATION_COLUMNS)
    + " WHERE ("
    + ", ".join(f"station.{c}" for c in _STATION_COLUMNS)
    + ") IS DISTINCT FROM ("
    + ", ".join(f"EXCLUDED.{c}" for c in _STATION_COLUMNS)
    + ") RETURNING xmax = 0"
)
_STATION_PARAMETER = """
INSERT INTO station_parameter (station_id, parameter_id, unit, interval_s)
SELECT station.id, parameter.id, %(unit)s, %(interval_s)s FROM station, parameter
WHERE station.code = %(station)s AND parameter.code = %(parameter)s
ON CONFLICT (station_id, parameter_id) DO UPDATE
SET unit = EXCLUDED.unit, interval_s = EXCLUDED.interval_s
WHERE (station_parameter.unit, station_parameter.interval_s)
      IS DISTINCT FROM (EXCLUDED.unit, EXCLUDED.interval_s)
RETURNING xmax = 0
"""


async def seed_catalogue(conn: Conn, catalogue: Catalogue) -> SeedReport:
    """Insert or update the catalogue; rows no longer in config stay (readings refer to them)."""
    report = SeedReport({}, {}, {})
    await _upsert(conn, "agency", _AGENCY, [a.model_dump() for a in catalogue.agencies], report)
    await _upsert(
        conn, "parameter", _PARAMETER, [p.model_dump() for p in catalogue.parameters], report
    )
    reaches = [{**r.model_dump(), "path": Jsonb(r.path)} for r in catalogue.reaches]
    await _upsert(conn, "reach", _REACH, reaches, report)
    stations = []
    for station in catalogue.stations:
        row = station.model_dump(exclude={"hj212", "parameters", "parameter_set"})
        row["hj212_mn"] = station.hj212.mn if station.hj212 else None
        row["hj212_password"] = station.hj212.password if station.hj212 else None
        row["hj212_crc"] = station.hj212.crc if station.hj212 else "hj212"
        stations.append(row)
    await _upsert(conn, "station", _STATION, stations, report)
    links = [
        {"station": code, "parameter": parameter, **spec.model_dump()}
        for code, specs in catalogue.station_parameters.items()
        for parameter, spec in specs.items()
    ]
    await _upsert(conn, "station_parameter", _STATION_PARAMETER, links, report)
    await conn.execute(
        "DELETE FROM station_parameter sp USING station s, parameter p"
        " WHERE sp.station_id = s.id AND sp.parameter_id = p.id"
        " AND NOT (s.code || '/' || p.code = ANY(%s))",
        [[f"{link['station']}/{link['parameter']}" for link in links]],
    )
    return report


@dataclass(frozen=True, slots=True)
class StationRef:
    """What ingest needs to know of a station to accept its readings."""

    id: int
    code: str
    agency: str
    medium: str
    hj212_mn: str | None
    hj212_password: str | None
    hj212_crc: str


@dataclass(frozen=True, slots=True)
class ParameterRef:
    id: int
    code: str
    unit: str
    hj212_code: str | None
    valid_min: float
    valid_max: float


@dataclass(frozen=True, slots=True)
class StationParameterRef:
    station_id: int
    parameter_id: int
    unit: str
    interval_s: int


async def station_refs(conn: Conn) -> list[StationRef]:
    """Every station, as ingest sees it."""
    async with conn.cursor(row_factory=class_row(StationRef)) as cur:
        await cur.execute(
            "SELECT s.id, s.code, a.code AS agency, s.medium, s.hj212_mn, s.hj212_password,"
            " s.hj212_crc FROM station s JOIN agency a ON a.id = s.agency_id ORDER BY s.id"
        )
        return await cur.fetchall()


async def stations_without_parameters(conn: Conn) -> list[str]:
    """Codes of stations that measure nothing (no station_parameter row): no reading can land."""
    cur = await conn.execute(
        "SELECT s.code FROM station s WHERE NOT EXISTS"
        " (SELECT 1 FROM station_parameter sp WHERE sp.station_id = s.id) ORDER BY s.code"
    )
    return [code for (code,) in await cur.fetchall()]


async def parameter_refs(conn: Conn) -> list[ParameterRef]:
    """Every parameter of the registry."""
    async with conn.cursor(row_factory=class_row(ParameterRef)) as cur:
        await cur.execute(
            "SELECT id, code, unit, hj212_code, valid_min, valid_max FROM parameter ORDER BY id"
        )
        return await cur.fetchall()


async def station_parameter_refs(conn: Conn) -> list[StationParameterRef]:
    """Every station × parameter with the unit the station sends and its interval."""
    async with conn.cursor(row_factory=class_row(StationParameterRef)) as cur:
        await cur.execute(
            "SELECT station_id, parameter_id, unit, interval_s FROM station_parameter"
            " ORDER BY station_id, parameter_id"
        )
        return await cur.fetchall()


_STATION_OUT = """
SELECT s.code, s.name, s.name_zh, s.city, s.area, s.medium, a.code AS agency, s.lat, s.lon,
       s.approximate, s.hj212_mn, s.background, s.reach_code AS reach, s.river_km,
       s.water_standard, s.target_class,
       coalesce(json_agg(json_build_object('parameter', p.code, 'unit', p.unit,
                                           'interval_s', sp.interval_s) ORDER BY p.id)
                FILTER (WHERE p.id IS NOT NULL), '[]') AS parameters
FROM station s
JOIN agency a ON a.id = s.agency_id
LEFT JOIN station_parameter sp ON sp.station_id = s.id
LEFT JOIN parameter p ON p.id = sp.parameter_id
WHERE (%(city)s::text IS NULL OR s.city = %(city)s)
  AND (%(area)s::text IS NULL OR s.area = %(area)s)
  AND (%(medium)s::text IS NULL OR s.medium = %(medium)s)
  AND (%(code)s::text IS NULL OR s.code = %(code)s)
  AND (%(after)s::text IS NULL OR s.code > %(after)s)
GROUP BY s.id, a.code
ORDER BY s.code
LIMIT %(limit)s
"""


async def list_stations(
    conn: Conn,
    *,
    city: str | None = None,
    area: str | None = None,
    medium: str | None = None,
    after: str | None = None,
    limit: int = 1000,
) -> list[StationOut]:
    """Stations matching the filters, by code, starting after `after`."""
    params = {"city": city, "area": area, "medium": medium, "code": None, "after": after}
    return await _stations(conn, {**params, "limit": limit})


@dataclass(frozen=True, slots=True)
class PlacedStation:
    """A station with its names, its place on the river and what its assessment needs."""

    id: int
    code: str
    name: str
    name_zh: str
    city: City
    area: Area
    medium: Medium
    background: bool | None
    reach: str | None
    river_km: float | None
    water_standard: str | None
    water_body: str | None
    target_class: int | None


async def placed_stations(
    conn: Conn,
    *,
    area: str | None = None,
    city: str | None = None,
    codes: Sequence[str] | None = None,
) -> list[PlacedStation]:
    """The stations of an area, a city or a list of codes (each filter None: any), by code."""
    async with conn.cursor(row_factory=class_row(PlacedStation)) as cur:
        await cur.execute(
            "SELECT id, code, name, name_zh, city, area, medium, background,"
            " reach_code AS reach, river_km, water_standard, water_body, target_class"
            " FROM station WHERE (%(area)s::text IS NULL OR area = %(area)s)"
            " AND (%(city)s::text IS NULL OR city = %(city)s)"
            " AND (%(codes)s::text[] IS NULL OR code = ANY(%(codes)s)) ORDER BY code",
            {"area": area, "city": city, "codes": list(codes) if codes is not None else None},
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class NamedReach:
    code: str
    name: str
    name_zh: str
    downstream: list[str]


async def named_reaches(conn: Conn) -> list[NamedReach]:
    """The river graph's reaches with their names, by code."""
    async with conn.cursor(row_factory=class_row(NamedReach)) as cur:
        await cur.execute("SELECT code, name, name_zh, downstream FROM reach ORDER BY code")
        return await cur.fetchall()


async def get_station(conn: Conn, code: str) -> StationOut:
    """One station by code, or StationNotFound."""
    rows = await _stations(
        conn,
        {"city": None, "area": None, "medium": None, "code": code, "after": None, "limit": 1},
    )
    if not rows:
        raise StationNotFound(f"no station with code {code!r}")
    return rows[0]


async def _stations(conn: Conn, params: dict[str, object]) -> list[StationOut]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STATION_OUT.encode(), params)
        rows = await cur.fetchall()
    return [
        StationOut(**{**row, "parameters": [StationParameterOut(**p) for p in row["parameters"]]})
        for row in rows
    ]


async def list_parameters(conn: Conn) -> list[ParameterOut]:
    """The parameter registry, by code."""
    async with conn.cursor(row_factory=class_row(ParameterOut)) as cur:
        await cur.execute(
            "SELECT code, name, name_zh, grp AS group, unit, decimals, noise, hj212_code AS hj212,"
            " valid_min, valid_max FROM parameter ORDER BY code"
        )
        return await cur.fetchall()


async def parameter_decimals(conn: Conn) -> dict[str, int | None]:
    """Each parameter's reporting resolution (decimal places), by code."""
    cur = await conn.execute("SELECT code, decimals FROM parameter")
    return {code: decimals for code, decimals in await cur.fetchall()}


async def series_ids(conn: Conn, *, station: str, parameter: str) -> tuple[int, int]:
    """The ids of a station and a parameter by code; StationNotFound / ParameterNotFound."""
    cur = await conn.execute(
        "SELECT (SELECT id FROM station WHERE code = %s),"
        " (SELECT id FROM parameter WHERE code = %s)",
        [station, parameter],
    )
    row = await cur.fetchone()
    assert row is not None
    if row[0] is None:
        raise StationNotFound(f"no station with code {station!r}")
    if row[1] is None:
        raise ParameterNotFound(f"no parameter with code {parameter!r}")
    return int(row[0]), int(row[1])


@dataclass(frozen=True, slots=True)
class AgencyRow:
    id: int
    code: str
    name: str
    name_zh: str
    city: str | None


async def agencies(conn: Conn) -> list[AgencyRow]:
    """Every agency, by id."""
    async with conn.cursor(row_factory=class_row(AgencyRow)) as cur:
        await cur.execute("SELECT id, code, name, name_zh, city FROM agency ORDER BY id")
        return await cur.fetchall()


async def city_centres(conn: Conn) -> dict[str, tuple[float, float]]:
    """Each city's mean station position: where a city-wide alert is placed (CAP area)."""
    cur = await conn.execute("SELECT city, avg(lat), avg(lon) FROM station GROUP BY city")
    return {str(city): (float(lat), float(lon)) for city, lat, lon in await cur.fetchall()}


async def unknown_stations(conn: Conn, codes: Iterable[str]) -> list[str]:
    """The codes among these that name no station, sorted."""
    cur = await conn.execute(
        "SELECT array(SELECT c FROM unnest(%s::text[]) AS c"
        " WHERE NOT EXISTS (SELECT 1 FROM station WHERE code = c) ORDER BY c)",
        [list(codes)],
    )
    row = await cur.fetchone()
    return list(row[0]) if row else []


async def station_cities(conn: Conn) -> dict[str, str]:
    """Each station's city by station code."""
    cur = await conn.execute("SELECT code, city FROM station")
    return {code: city for code, city in await cur.fetchall()}
