"""The bare endpoints bench/api.py holds EnvLink's API against: the same SQL, nothing else.

A plain Starlette app, served like `envlink api --workers N` (uvicorn, one pool per process):
each endpoint takes one pooled connection, runs the statements EnvLink's store functions run for
that endpoint (the same text, the same parameters, the same number of round trips) and returns
the rows as they come, serialised by orjson. No key check, no validation models, no rounding
or time zones, no AQI arithmetic: what is left between a request and its rows is the least any
API could do, and EnvLink's figures are read as a share of it.

One exception: for a page of readings EnvLink wraps the page's statement in an aggregate that
sends the whole page as one value of binary records (store.readings.readings_page); bare runs
the page's statement itself and serialises its rows, as a plain endpoint would. Run as is, the
aggregate would leave bare a value to decode: EnvLink's own work, not the least an API does.

    ENVLINK_BENCH_DATABASE_URL=... uvicorn bench.bare_api:create --factory --workers 2

Query parameters are taken as given (a missing one is a 500): the benchmark sends valid ones.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from store.readings import _LATEST, _READINGS_PAGES
from store.rollups import _HOURLY_SLOTS

# The statement EnvLink ran for /v1/stations before it served the stations from its catalogue
# snapshot (store.catalogue.CatalogueSnapshot.stations_out): bare still reads them per request.
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

# As EnvLink's pool per API process (ENVLINK_API_POOL_MAX_SIZE's default).
POOL_SIZE = 10
AQI_POLLUTANTS = ["so2", "no2", "co", "o3", "pm10", "pm25"]

# What /v1/aqi?city= reads: store.rollups.hourly_slots per request (_HOURLY_SLOTS, which EnvLink
# wraps in an aggregate; here its rows are read as a plain endpoint would); the city's
# stations, the parameters and their decimals come from the catalogue EnvLink holds in memory
# (store.catalogue.CatalogueCache), here read once per process at start-up.
_CITY_AIR_STATIONS = (
    "SELECT id, code, city, medium, background, water_standard, water_body, target_class"
    " FROM station WHERE city = %s AND medium = 'air' AND background IS NOT TRUE ORDER BY code"
)
_PARAMETERS_BY_CODE = "SELECT id, code, unit FROM parameter WHERE code = ANY(%s)"
_PARAMETER_DECIMALS = "SELECT code, decimals FROM parameter"
# What /v1/readings finds in the catalogue EnvLink holds in memory, read once at start-up here.
_STATION_IDS = "SELECT code, id FROM station"
_PARAMETER_UNITS = "SELECT code, id, unit, decimals FROM parameter"


def _json(content: object) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def _rows(request: Request, query: str, params: Any) -> list[dict[str, Any]]:
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), params)
        return await cur.fetchall()


def _optional(query: Mapping[str, str], name: str) -> str | None:
    return query.get(name) or None


async def latest(request: Request) -> Response:
    query = request.query_params
    params: dict[str, object] = {
        name: _optional(query, name) for name in ("city", "area", "medium")
    }
    params |= {"stations": None, "now": None}  # as /v1/latest asks store.readings.latest_readings
    return _json({"items": await _rows(request, _LATEST, params)})


async def stations(request: Request) -> Response:
    query = request.query_params
    params: dict[str, object] = {
        name: _optional(query, name) for name in ("city", "area", "medium")
    }
    params |= {"code": None, "after": None, "limit": 1000}
    return _json({"items": await _rows(request, _STATION_OUT, params)})


async def readings(request: Request) -> Response:
    """The page statement store.readings.readings_page aggregates, its rows read in binary."""
    query = request.query_params
    pool: AsyncConnectionPool = request.app.state.pool
    catalogue: dict[str, Any] = request.app.state.catalogue
    parameter = catalogue["parameter_units"][query["parameter"]]
    limit = int(query.get("limit", 1000))
    period = int(query["period_s"]) if "period_s" in query else None
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row, binary=True) as cur:
        await cur.execute(
            _READINGS_PAGES[period is not None, False],
            {
                "station": catalogue["station_ids"][query["station"]],
                "parameter": parameter["id"],
                "start": datetime.fromisoformat(query["start"]) if "start" in query else None,
                "end": datetime.fromisoformat(query["end"]) if "end" in query else None,
                "period": period,
                "after_time": None,
                "after_period": None,
                "limit": limit + 1,
            },
        )
        items = await cur.fetchall()
    return _json({"items": items[:limit], "unit": parameter["unit"]})


async def aqi(request: Request) -> Response:
    pool: AsyncConnectionPool = request.app.state.pool
    catalogue: dict[str, Any] = request.app.state.catalogue
    stations = catalogue["stations"][request.query_params["city"]]
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row, binary=True) as cur:
        await cur.execute(
            _HOURLY_SLOTS,
            {
                "stations": [s["id"] for s in stations],
                "parameters": [p["id"] for p in catalogue["parameters"]],
                "start": hour - timedelta(hours=23),
                "end": hour + timedelta(hours=1),
            },
        )
        hourly = await cur.fetchall()
    return _json({"stations": stations, "hourly": hourly, "decimals": catalogue["decimals"]})


async def _catalogue(pool: AsyncConnectionPool) -> dict[str, Any]:
    """The cities' air stations, the AQI parameters, every parameter's decimals, and the
    station and parameter ids /v1/readings looks up."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        stations = {}
        for city in ("guangzhou", "dongguan"):
            await cur.execute(_CITY_AIR_STATIONS.encode(), [city])
            stations[city] = await cur.fetchall()
        await cur.execute(_PARAMETERS_BY_CODE.encode(), [AQI_POLLUTANTS])
        parameters = await cur.fetchall()
        await cur.execute(_PARAMETER_DECIMALS.encode())
        decimals = await cur.fetchall()
        await cur.execute(_STATION_IDS.encode())
        station_ids = {row["code"]: row["id"] for row in await cur.fetchall()}
        await cur.execute(_PARAMETER_UNITS.encode())
        units = {row["code"]: row for row in await cur.fetchall()}
    return {
        "stations": stations,
        "parameters": parameters,
        "decimals": decimals,
        "station_ids": station_ids,
        "parameter_units": units,
    }


def create() -> Starlette:
    """The bare app of one process, on the database of ENVLINK_BENCH_DATABASE_URL."""
    url = os.environ["ENVLINK_BENCH_DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=False) as pool:
            await pool.wait()
            app.state.pool = pool
            app.state.catalogue = await _catalogue(pool)
            yield

    routes = [
        Route("/v1/latest", latest),
        Route("/v1/stations", stations),
        Route("/v1/readings", readings),
        Route("/v1/aqi", aqi),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
