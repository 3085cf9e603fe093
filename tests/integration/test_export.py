"""GET /v1/export over real PostgreSQL: the exact CSV and NDJSON of a small known set (byte order
mark, header, zones, rounding half to even, QC), the filters, the file name, and bad requests."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.rounding import round_half_even
from core.settings import Settings
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from store.export import _rounded
from tests.conftest import worker_loop
from tests.integration.conftest import reader_client

DAY = datetime(2026, 11, 1, tzinfo=CST)
NOW = datetime(2026, 12, 2, tzinfo=CST).astimezone(UTC)
RANGE = {"start": "2026-11-01T00:00:00+08:00", "end": "2026-12-01T00:00:00+08:00"}
HEADER = "\ufeffstation,parameter,time,period_s,value,unit,qc\n"


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "dg_eeb") as client:
        yield client


def _reading(
    station: str,
    parameter: str,
    time: datetime,
    value: float | None,
    unit: str,
    *,
    period_s: int = 0,
    qc: QC = QC.VALID,
) -> ReadingIn:
    return ReadingIn.model_validate(
        {
            "station": station,
            "parameter": parameter,
            "time": time,
            "value": value,
            "unit": unit,
            "period_s": period_s,
            "qc": qc,
        }
    )


@pytest.fixture
async def readings(db: AsyncConnectionPool) -> Pipeline:
    """Five readings in November (ties to round half to even, QC states, no value), two outside."""
    items = [
        _reading("gz-a-huangpu", "pm25", DAY, 12.5, "ug/m3", period_s=3600),
        _reading(
            "gz-a-huangpu",
            "pm25",
            DAY + timedelta(hours=1),
            13.5,
            "ug/m3",
            period_s=3600,
            qc=QC.SUSPECT,
        ),
        _reading("gz-a-huangpu", "co", DAY, 0.85, "mg/m3", period_s=3600),
        _reading("dg-w-humen", "do", DAY, 2.675, "mg/L", qc=QC.MAINTENANCE),
        _reading("dg-w-humen", "do", DAY + timedelta(minutes=30), None, "mg/L", qc=QC.INVALID),
        _reading("dg-w-humen", "do", DAY - timedelta(seconds=1), 7.0, "mg/L"),
        _reading("dg-w-humen", "do", DAY + timedelta(days=30), 7.0, "mg/L"),
    ]
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW)
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items), result.rejections
    return pipeline


async def _export(client: httpx.AsyncClient, **params: str | list[str]) -> httpx.Response:
    response = await client.get("/v1/export", params=RANGE | params)
    assert response.status_code == 200, response.text
    return response


async def test_csv_is_exact(client: httpx.AsyncClient, readings: Pipeline) -> None:
    response = await _export(client)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="envlink-readings-20261101-20261201.csv"'
    )
    assert response.content.startswith(b"\xef\xbb\xbf")
    assert response.content.decode("utf-8") == HEADER + (
        "dg-w-humen,do,2026-11-01T00:00:00+08:00,0,2.68,mg/L,maintenance\n"
        "dg-w-humen,do,2026-11-01T00:30:00+08:00,0,,mg/L,invalid\n"
        "gz-a-huangpu,co,2026-11-01T00:00:00+08:00,3600,0.8,mg/m3,valid\n"
        "gz-a-huangpu,pm25,2026-11-01T00:00:00+08:00,3600,12,ug/m3,valid\n"
        "gz-a-huangpu,pm25,2026-11-01T01:00:00+08:00,3600,14,ug/m3,suspect\n"
    )


async def test_csv_in_utc(client: httpx.AsyncClient, readings: Pipeline) -> None:
    response = await _export(client, tz="UTC", station="gz-a-huangpu", parameter="pm25")
    assert response.headers["content-disposition"] == (
        'attachment; filename="envlink-readings-20261031T1600-20261130T1600.csv"'
    )
    assert response.text == HEADER + (
        "gz-a-huangpu,pm25,2026-10-31T16:00:00Z,3600,12,ug/m3,valid\n"
        "gz-a-huangpu,pm25,2026-10-31T17:00:00Z,3600,14,ug/m3,suspect\n"
    )


async def test_ndjson_is_exact(client: httpx.AsyncClient, readings: Pipeline) -> None:
    response = await _export(client, format="ndjson", station="dg-w-humen")
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == (
        'attachment; filename="envlink-readings-20261101-20261201.ndjson"'
    )
    assert response.text == (
        '{"station":"dg-w-humen","parameter":"do","time":"2026-11-01T00:00:00+08:00",'
        '"period_s":0,"period_end":null,"value":2.68,"unit":"mg/L","qc":"maintenance"}\n'
        '{"station":"dg-w-humen","parameter":"do","time":"2026-11-01T00:30:00+08:00",'
        '"period_s":0,"period_end":null,"value":null,"unit":"mg/L","qc":"invalid"}\n'
    )
    hourly = await _export(client, format="ndjson", parameter="co", tz="UTC")
    assert [json.loads(line) for line in hourly.text.splitlines()] == [
        {
            "station": "gz-a-huangpu",
            "parameter": "co",
            "time": "2026-10-31T16:00:00Z",
            "period_s": 3600,
            "period_end": "2026-10-31T17:00:00Z",
            "value": 0.8,
            "unit": "mg/m3",
            "qc": "valid",
        }
    ]


@pytest.mark.parametrize(
    ("params", "lines"),
    [
        ({"area": "shiziyang"}, {"dg-w-humen": 2}),
        ({"city": "guangzhou"}, {"gz-a-huangpu": 3}),
        ({"station": ["gz-a-huangpu", "dg-w-humen"], "parameter": "do"}, {"dg-w-humen": 2}),
        ({"parameter": ["co", "pm25"]}, {"gz-a-huangpu": 3}),
        ({"city": "guangzhou", "area": "shiziyang"}, {}),
        (
            {"start": "2026-11-01T00:30:00+08:00", "end": "2026-11-01T01:00:00+08:00"},
            {"dg-w-humen": 1},
        ),
    ],
)
async def test_filters(
    client: httpx.AsyncClient,
    readings: Pipeline,
    params: dict[str, str | list[str]],
    lines: dict[str, int],
) -> None:
    rows = (await _export(client, **params)).text.splitlines()
    assert rows[0] == HEADER.strip()
    stations = [row.split(",")[0] for row in rows[1:]]
    assert {station: stations.count(station) for station in stations} == lines


async def test_rollups(
    client: httpx.AsyncClient, readings: Pipeline, db: AsyncConnectionPool
) -> None:
    await worker_loop(db, readings, clock=lambda: NOW).drain()
    response = await _export(
        client, interval="1h", station="gz-a-huangpu", parameter="pm25", end="2026-11-01T02:00"
    )
    assert response.headers["content-disposition"] == (
        'attachment; filename="envlink-readings-1h-20261101-20261101T0200.csv"'
    )
    assert response.text == (
        "\ufeffstation,parameter,time,period_s,value,unit,count,coverage,origin\n"
        "gz-a-huangpu,pm25,2026-11-01T00:00:00+08:00,3600,12,ug/m3,1,1,reported\n"
        "gz-a-huangpu,pm25,2026-11-01T01:00:00+08:00,3600,,ug/m3,0,0,computed\n"
    )
    daily = await _export(client, interval="1d", format="ndjson", parameter="do")
    assert [json.loads(line) for line in daily.text.splitlines()] == [
        {
            "station": "dg-w-humen",
            "parameter": "do",
            "time": "2026-11-01T00:00:00+08:00",
            "period_s": 86400,
            "period_end": "2026-11-02T00:00:00+08:00",
            "value": None,
            "unit": "mg/L",
            "count": 0,
            "coverage": 0.0,
            "origin": "computed",
        }
    ]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"start": None}, 422, "start: Field required"),
        ({"end": None}, 422, "end: Field required"),
        (
            {"end": "2026-11-01T00:00:00+08:00"},
            400,
            "end must be after start (the range is half-open [start, end))",
        ),
        (
            {"end": "2027-11-03T00:00:00+08:00"},
            400,
            "end: an export spans at most 366 days (ENVLINK_EXPORT_MAX_DAYS), this one 367;"
            " split it into several",
        ),
        (
            {"station": ["nowhere", "dg-w-humen", "atlantis"]},
            404,
            "station: no station with code 'atlantis', 'nowhere'",
        ),
        ({"parameter": "radon"}, 404, "parameter: no parameter with code 'radon'"),
        ({"format": "xlsx"}, 422, "format: Input should be 'csv' or 'ndjson'"),
        ({"interval": "5m"}, 422, "interval: Input should be 'raw', '1h' or '1d'"),
        ({"tz": "Europe/Paris"}, 422, "tz: Input should be 'Asia/Shanghai' or 'UTC'"),
        ({"area": "pearl"}, 422, "area: Input should be 'dongjiang' or 'shiziyang'"),
        (
            {"start": "yesterday"},
            422,
            "start: must be an ISO 8601 date or time, such as 2026-03-01T08:00:00+08:00",
        ),
    ],
)
async def test_bad_requests_are_4xx_naming_the_field(
    client: httpx.AsyncClient,
    params: dict[str, str | list[str] | None],
    status: int,
    message: str,
) -> None:
    query = {k: v for k, v in (RANGE | params).items() if v is not None}
    response = await client.get("/v1/export", params=query)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"] == message


async def test_needs_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/export", params=RANGE, headers={"X-API-Key": ""})
    assert response.status_code == 401


async def test_rounding_in_sql_is_core_rounding(db: AsyncConnectionPool) -> None:
    """The export rounds in PostgreSQL exactly as core.rounding rounds for the JSON API."""
    generator = random.Random(8170)
    ties = [0.125, 0.135, 2.675, 2.5, 3.5, -2.5, -0.125, 1.005, 1.015, 0.0005, 1e-5, 123456.785]
    values = ties + [generator.uniform(-1000, 1000) for _ in range(500)]
    values += [round(generator.uniform(0, 100), generator.randint(1, 6)) for _ in range(500)]
    async with db.connection() as conn:
        for decimals in range(6):
            cur = await conn.execute(
                (
                    "SELECT " + _rounded("v", decimals) + " FROM unnest(%(values)s::float8[]) v"
                ).encode(),
                {"values": values, "scale": 10**decimals},
            )
            rounded = [row[0] for row in await cur.fetchall()]
            assert rounded == round_half_even(values, decimals), decimals
