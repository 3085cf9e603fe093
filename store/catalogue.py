"""Agencies, parameters, reaches and stations: seeding from config and reading them back.

Every stage reads the catalogue through one read model: a CatalogueSnapshot (read_catalogue),
held in memory by the process's one CatalogueCache, which reads it again when a seed or change
is announced (notify_catalogue_changed, in the writing transaction). The API's paged listings
and its existence checks read the tables directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TypeVar

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from core.errors import ParameterNotFound, StationNotFound
from schemas.catalogue import Catalogue, ParameterOut, StationOut, StationParameterOut
from schemas.common import Area, City, Medium
from store.coordination import CATALOGUE_CHANNEL
from store.listen import Listener
from store.pool import Conn

log = logging.getLogger(__name__)
RowT = TypeVar("RowT")
# Opens a connection for the block: a pool's `connection`, or a request's own.
Connect = Callable[[], AbstractAsyncContextManager[Conn]]


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
INSERT INTO reach (code, name, name_zh, river, downstream, length_km, velocity_m_s, tidal,
                   tidal_factor, path, approximate)
VALUES (%(code)s, %(name)s, %(name_zh)s, %(river)s, %(downstream)s, %(length_km)s,
        %(velocity_m_s)s, %(tidal)s, %(tidal_factor)s, %(path)s, %(approximate)s)
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_zh = EXCLUDED.name_zh,
    river = EXCLUDED.river, downstream = EXCLUDED.downstream, length_km = EXCLUDED.length_km,
    velocity_m_s = EXCLUDED.velocity_m_s, tidal = EXCLUDED.tidal,
    tidal_factor = EXCLUDED.tidal_factor, path = EXCLUDED.path,
    approximate = EXCLUDED.approximate
WHERE (reach.name, reach.name_zh, reach.river, reach.downstream, reach.length_km,
       reach.velocity_m_s, reach.tidal, reach.tidal_factor, reach.path, reach.approximate)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.name_zh, EXCLUDED.river, EXCLUDED.downstream,
       EXCLUDED.length_km,
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
    """Insert or update the catalogue; rows no longer in config stay (readings refer to them).

    A seed that changed anything tells every process's CatalogueCache when it commits.
    """
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
    dropped = await conn.execute(
        "DELETE FROM station_parameter sp USING station s, parameter p"
        " WHERE sp.station_id = s.id AND sp.parameter_id = p.id"
        " AND NOT (s.code || '/' || p.code = ANY(%s))",
        [[f"{link['station']}/{link['parameter']}" for link in links]],
    )
    if dropped.rowcount or any(report.inserted.values()) or any(report.updated.values()):
        await notify_catalogue_changed(conn)
    return report


async def stations_without_parameters(conn: Conn) -> list[str]:
    """Codes of stations that measure nothing (no station_parameter row): no reading can land."""
    cur = await conn.execute(
        "SELECT s.code FROM station s WHERE NOT EXISTS"
        " (SELECT 1 FROM station_parameter sp WHERE sp.station_id = s.id) ORDER BY s.code"
    )
    return [code for (code,) in await cur.fetchall()]


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


async def list_parameters(conn: Conn) -> list[ParameterOut]:
    """The parameter registry, by code."""
    async with conn.cursor(row_factory=class_row(ParameterOut)) as cur:
        await cur.execute(
            "SELECT code, name, name_zh, grp AS group, unit, decimals, noise, hj212_code AS hj212,"
            " valid_min, valid_max FROM parameter ORDER BY code"
        )
        return await cur.fetchall()


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


async def unknown_stations(conn: Conn, codes: Iterable[str]) -> list[str]:
    """The codes among these that name no station, sorted."""
    cur = await conn.execute(
        "SELECT array(SELECT c FROM unnest(%s::text[]) AS c"
        " WHERE NOT EXISTS (SELECT 1 FROM station WHERE code = c) ORDER BY c)",
        [list(codes)],
    )
    row = await cur.fetchone()
    return list(row[0]) if row else []


# The catalogue as every stage reads it: one snapshot, read in a few queries, served from memory
# by the process's CatalogueCache, re-read when a seed or change is announced on CATALOGUE_CHANNEL.


@dataclass(frozen=True, slots=True)
class StationRef:
    """A station as sources, ingest, the engine and the API know it."""

    id: int
    code: str
    name: str
    name_zh: str
    city: str
    area: str
    medium: str
    agency_id: int
    agency: str  # the agency's code
    lat: float
    lon: float
    hj212_mn: str | None
    hj212_password: str | None
    hj212_crc: str
    background: bool | None
    reach_code: str | None
    river_km: float | None
    water_standard: str | None
    water_body: str | None
    target_class: int | None
    approximate: bool  # its coordinates are approximate


@dataclass(frozen=True, slots=True)
class ParameterRef:
    """A parameter of the registry: its canonical unit, resolution and valid range."""

    id: int
    code: str
    grp: str
    unit: str
    decimals: int | None
    hj212_code: str | None
    valid_min: float
    valid_max: float


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """A station × parameter: the unit the station sends and how often it reports."""

    station_id: int
    parameter_id: int
    parameter: str  # the parameter's code
    grp: str  # the parameter's group
    unit: str
    interval_s: int


@dataclass(frozen=True, slots=True)
class ReachRef:
    """A reach of the river graph: the reaches directly downstream, length and flow."""

    code: str
    downstream: tuple[str, ...]
    length_km: float
    velocity_m_s: float
    tidal: bool
    tidal_factor: float | None


@dataclass(frozen=True, slots=True)
class AgencyRow:
    id: int
    code: str
    name: str
    name_zh: str
    city: str | None


@dataclass(frozen=True)
class CatalogueSnapshot:
    """The whole catalogue at one moment, indexed for the lookups the stages make."""

    stations: dict[str, StationRef]  # by code
    stations_by_id: dict[int, StationRef]
    stations_by_mn: dict[str, StationRef]
    parameters: dict[str, ParameterRef]  # by code
    parameters_by_id: dict[int, ParameterRef]
    parameters_by_hj212: dict[str, ParameterRef]
    station_parameters: dict[tuple[int, int], SeriesRef]  # by (station id, parameter id)
    series_by_station: dict[int, list[SeriesRef]]
    reaches: dict[str, ReachRef]
    agencies: dict[int, AgencyRow]  # by id, ascending
    city_centres: dict[str, tuple[float, float]]  # each city's mean station position
    cities: dict[str, str]  # station code → city
    decimals: dict[str, int | None]  # parameter code → reporting resolution

    @classmethod
    def of(
        cls,
        stations: Iterable[StationRef],
        parameters: Iterable[ParameterRef],
        series: Iterable[SeriesRef],
        reaches: Iterable[ReachRef],
        agencies: Iterable[AgencyRow],
    ) -> CatalogueSnapshot:
        """Index the rows (each list in id or code order)."""
        stations, parameters, series = list(stations), list(parameters), list(series)
        by_station: dict[int, list[SeriesRef]] = {}
        for entry in series:
            by_station.setdefault(entry.station_id, []).append(entry)
        positions: dict[str, list[tuple[float, float]]] = {}
        for station in stations:
            positions.setdefault(station.city, []).append((station.lat, station.lon))
        return cls(
            stations={s.code: s for s in stations},
            stations_by_id={s.id: s for s in stations},
            stations_by_mn={s.hj212_mn: s for s in stations if s.hj212_mn},
            parameters={p.code: p for p in parameters},
            parameters_by_id={p.id: p for p in parameters},
            parameters_by_hj212={p.hj212_code: p for p in parameters if p.hj212_code},
            station_parameters={(s.station_id, s.parameter_id): s for s in series},
            series_by_station=by_station,
            reaches={r.code: r for r in reaches},
            agencies={a.id: a for a in sorted(agencies, key=lambda a: a.id)},
            city_centres={
                city: (sum(lat for lat, _ in at) / len(at), sum(lon for _, lon in at) / len(at))
                for city, at in positions.items()
            },
            cities={s.code: s.city for s in stations},
            decimals={p.code: p.decimals for p in parameters},
        )

    @property
    def agency_ids(self) -> list[int]:
        """Every agency's id, ascending (station and city alerts are addressed to all)."""
        return list(self.agencies)

    def parameter_id(self, code: str) -> int | None:
        """A parameter's id by its code, or None if the registry has no such parameter."""
        parameter = self.parameters.get(code)
        return None if parameter is None else parameter.id

    def parameters_of(self, station: StationRef) -> list[tuple[ParameterRef, SeriesRef]]:
        """A station's parameters with the unit it sends and its interval."""
        return [
            (self.parameters_by_id[s.parameter_id], s)
            for s in self.series_by_station.get(station.id, ())
        ]

    @cached_property
    def stations_out(self) -> dict[str, StationOut]:
        """Every station as the API shows it, by code (in code order): built once a snapshot."""
        ordered = sorted(self.stations.values(), key=_by_code)
        return {station.code: self._station_out(station) for station in ordered}

    def _station_out(self, station: StationRef) -> StationOut:
        return StationOut(
            code=station.code,
            name=station.name,
            name_zh=station.name_zh,
            city=station.city,
            area=station.area,
            medium=station.medium,
            agency=station.agency,
            lat=station.lat,
            lon=station.lon,
            approximate=station.approximate,
            hj212_mn=station.hj212_mn,
            background=station.background,
            reach=station.reach_code,
            river_km=station.river_km,
            water_standard=station.water_standard,
            target_class=station.target_class,
            parameters=[
                StationParameterOut(
                    parameter=parameter.code, unit=parameter.unit, interval_s=series.interval_s
                )
                for parameter, series in self.parameters_of(station)
            ],
        )

    def station_series(self, station_id: int, codes: Iterable[str]) -> list[SeriesRef]:
        """The station's series of these parameter codes."""
        wanted = set(codes)
        return [s for s in self.series_by_station.get(station_id, ()) if s.parameter in wanted]


def _by_code(station: StationRef) -> str:
    return station.code


_STATION_REF = """
SELECT s.id, s.code, s.name, s.name_zh, s.city, s.area, s.medium, s.agency_id, a.code AS agency,
       s.lat, s.lon, s.hj212_mn, s.hj212_password, s.hj212_crc, s.background, s.reach_code,
       s.river_km, s.water_standard, s.water_body, s.target_class, s.approximate
FROM station s JOIN agency a ON a.id = s.agency_id ORDER BY s.id
"""
_PARAMETER_REF = """
SELECT id, code, grp, unit, decimals, hj212_code, valid_min, valid_max FROM parameter ORDER BY id
"""
_SERIES_REF = """
SELECT sp.station_id, sp.parameter_id, p.code AS parameter, p.grp, sp.unit, sp.interval_s
FROM station_parameter sp JOIN parameter p ON p.id = sp.parameter_id
ORDER BY sp.station_id, sp.parameter_id
"""
_REACH_REF = """
SELECT code, downstream, length_km, velocity_m_s, tidal, tidal_factor FROM reach ORDER BY code
"""
_AGENCY_ROW = "SELECT id, code, name, name_zh, city FROM agency ORDER BY id"


async def _rows(conn: Conn, row_type: type[RowT], query: str) -> list[RowT]:
    async with conn.cursor(row_factory=class_row(row_type)) as cur:
        await cur.execute(query.encode())
        return await cur.fetchall()


async def read_catalogue(conn: Conn) -> CatalogueSnapshot:
    """The whole catalogue, read now (in the caller's transaction, if any)."""
    reaches = [
        replace(r, downstream=tuple(r.downstream)) for r in await _rows(conn, ReachRef, _REACH_REF)
    ]
    return CatalogueSnapshot.of(
        await _rows(conn, StationRef, _STATION_REF),
        await _rows(conn, ParameterRef, _PARAMETER_REF),
        await _rows(conn, SeriesRef, _SERIES_REF),
        reaches,
        await _rows(conn, AgencyRow, _AGENCY_ROW),
    )


async def notify_catalogue_changed(conn: Conn) -> None:
    """Tell every process's CatalogueCache to read the catalogue again once this commits."""
    await conn.execute("SELECT pg_notify(%s, '')", [CATALOGUE_CHANNEL])


class CatalogueCache:
    """The process's one catalogue: read once, served from memory, read again when it changes.

    Listening (`listen`), it reads again as soon as a seed or change is announced on
    CATALOGUE_CHANNEL, and after its Listener reconnects (an announcement may have been missed);
    while not listening it reads again when its snapshot is older than `max_age_s`. A read that
    fails once a snapshot is held is not raised: the last good snapshot is served and the read
    tried again after RETRY_S, so no source drops a connection because the database is away for
    a moment. Only the very first read raises.
    """

    RETRY_S = 1.0
    # A read attempted while a snapshot is held waits this long at most (the pool's own timeout
    # is much longer, and every source would wait for it).
    READ_TIMEOUT_S = 2.0

    def __init__(self, pool: AsyncConnectionPool, *, max_age_s: float = 30.0) -> None:
        self._pool = pool
        self._max_age_s = max_age_s
        self._snapshot: CatalogueSnapshot | None = None
        self._listener: Listener | None = None
        # An announcement bumps the generation; a snapshot is current if read since the last.
        self._generation = 0
        self._read_generation = -1
        self._read_at = -math.inf
        self._failed_at = -math.inf
        self._reading: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.reads = 0  # successful reads, for tests and logs

    def listen(self, listener: Listener) -> None:
        """Read again when CATALOGUE_CHANNEL announces a change on `listener`, or it reconnects."""
        self._listener = listener
        listener.subscribe(CATALOGUE_CHANNEL, lambda _payload: self.invalidate())

    def invalidate(self) -> None:
        """Read the catalogue again on the next `get`."""
        self._generation += 1

    async def get(self, *, via: Connect | None = None) -> CatalogueSnapshot:
        """The current snapshot: from memory, or read first when it changed or aged.

        `via` is where to read if a read is due (a request that already holds a connection
        must not wait for a second one); else the read takes a connection from the pool.
        """
        if self._snapshot is not None and not self._due():
            return self._snapshot
        if via is not None and self._reading is None:
            await self._read(via)
        else:
            if self._reading is None:
                self._reading = asyncio.create_task(self._read(self._pool.connection))
            # Shielded: a caller cancelled while waiting does not cancel the read others await.
            await asyncio.shield(self._reading)
        if self._snapshot is None:
            assert self._error is not None
            raise self._error
        return self._snapshot

    def _due(self) -> bool:
        now = time.monotonic()
        if now - self._failed_at < self.RETRY_S:
            return False
        listener = self._listener
        if listener is not None and listener.connected:
            return self._read_generation != self._generation
        if listener is not None and listener.down and self._snapshot is not None:
            return False  # the database is away: its return brings a reconnect and a read
        return self._read_generation != self._generation or now - self._read_at > self._max_age_s

    async def _read(self, connect: Connect) -> None:
        generation = self._generation
        try:
            if self._snapshot is None:
                async with connect() as conn:
                    snapshot = await read_catalogue(conn)
            else:
                async with asyncio.timeout(self.READ_TIMEOUT_S), connect() as conn:
                    snapshot = await read_catalogue(conn)
        except Exception as exc:
            self._failed_at = time.monotonic()
            self._error = exc
            if self._snapshot is not None:
                log.warning(
                    "catalogue: cannot read it (%s: %s); serving the last one read",
                    type(exc).__name__,
                    exc,
                )
        else:
            if generation >= self._read_generation:
                self._snapshot = snapshot
                self._read_generation = generation
            self._read_at = time.monotonic()
            self._failed_at = -math.inf
            self._error = None
            self.reads += 1
        finally:
            if self._reading is asyncio.current_task():
                self._reading = None
