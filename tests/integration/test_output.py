"""What the API shows: values at their published decimals, times in +08:00 or UTC as asked,
period ends, and the water-quality default hour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.rollups import hour_start
from core.settings import Settings
from core.timeutil import CST, utcnow
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from tests.conftest import worker_loop
from tests.integration.conftest import reader_client
from tests.integration.test_engine import HOUR, T0, Feed, _air, _rule, _rules


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "gz_eeb") as client:
        yield client


async def _ingest(pool: AsyncConnectionPool, items: list[ReadingIn]) -> None:
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items), result.rejections
    await worker_loop(pool, pipeline).drain()


def _reading(station: str, parameter: str, unit: str, value: float, **fields: Any) -> ReadingIn:
    return ReadingIn.model_validate(
        {"station": station, "parameter": parameter, "unit": unit, "value": value}
        | {"time": T0, "period_s": 3600}
        | fields
    )


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_values_are_published_half_to_even_and_stored_as_they_came(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _ingest(
        db,
        [
            _reading("gz-a-huangpu", "pressure", "hPa", 1009.8220000000001),
            _reading("gz-a-huangpu", "pm25", "ug/m3", 60.5),
            _reading("gz-a-huangpu", "co", "mg/m3", 1.25),
            _reading("gz-a-huangpu", "air_temp", "degC", -0.04),
            _reading("gz-w-dadun", "ph", "1", 7.125),
            _reading("gz-w-dadun", "nh3n", "mg/L", 0.1235),
        ],
    )
    latest = await _get(client, "/v1/latest")
    assert {(i["station"], i["parameter"]): i["value"] for i in latest["items"]} == {
        ("gz-a-huangpu", "pressure"): 1009.8,
        ("gz-a-huangpu", "pm25"): 60.0,
        ("gz-a-huangpu", "co"): 1.2,
        ("gz-a-huangpu", "air_temp"): 0.0,
        ("gz-w-dadun", "ph"): 7.12,
        ("gz-w-dadun", "nh3n"): 0.124,
    }
    pressure = await _get(client, "/v1/readings", station="gz-a-huangpu", parameter="pressure")
    assert [i["value"] for i in pressure["items"]] == [1009.8]
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT r.value FROM reading r JOIN parameter p ON p.id = r.parameter_id"
            " WHERE p.code = 'pressure'"
        )
        assert await cur.fetchall() == [(1009.8220000000001,)]
    parameters = {p["code"]: p["decimals"] for p in (await _get(client, "/v1/parameters"))["items"]}
    assert (parameters["pm25"], parameters["co"], parameters["ph"], parameters["nh3n"]) == (
        0,
        1,
        2,
        3,
    )


async def test_times_are_local_unless_utc_is_asked_for_and_periods_carry_their_end(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _ingest(
        db,
        [
            _reading("gz-a-huangpu", "pm25", "ug/m3", 30.0),
            _reading("gz-a-huangpu", "pm25", "ug/m3", 31.0, time=T0 + 2 * HOUR, period_s=0),
        ],
    )
    series = {"station": "gz-a-huangpu", "parameter": "pm25"}
    local = (await _get(client, "/v1/readings", **series))["items"]
    assert [(i["time"], i["period_s"], i["period_end"]) for i in local] == [
        ("2026-11-20T08:00:00+08:00", 3600, "2026-11-20T09:00:00+08:00"),
        ("2026-11-20T10:00:00+08:00", 0, None),
    ]
    utc = (await _get(client, "/v1/readings", **series, tz="UTC"))["items"]
    assert [(i["time"], i["period_end"]) for i in utc] == [
        ("2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z"),
        ("2026-11-20T02:00:00Z", None),
    ]
    shanghai = await _get(client, "/v1/readings", **series, tz="Asia/Shanghai")
    assert shanghai["items"] == local
    [latest] = (await _get(client, "/v1/latest", tz="UTC"))["items"]
    assert (latest["time"], latest["period_s"], latest["period_end"]) == (
        "2026-11-20T02:00:00Z",
        0,
        None,
    )
    await _ingest(db, [_reading("gz-a-huangpu", "pm25", "ug/m3", 32.0, time=T0 + 2 * HOUR)])
    [latest] = (await _get(client, "/v1/latest"))["items"]
    assert (latest["time"], latest["period_s"], latest["period_end"], latest["value"]) == (
        "2026-11-20T10:00:00+08:00",
        3600,
        "2026-11-20T11:00:00+08:00",
        32.0,
    )


@pytest.mark.parametrize("zone", ["Europe/Paris", "utc", "+08:00", ""])
async def test_another_zone_is_refused_naming_tz(client: httpx.AsyncClient, zone: str) -> None:
    response = await client.get("/v1/latest", params={"tz": zone})
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "invalid_request",
            "message": "tz: Input should be 'Asia/Shanghai' or 'UTC'",
        }
    }


async def test_alert_timelines_show_point_times_and_values_as_everything_else(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rules(db, _rule("no2_instant"))
    feed = Feed(db)
    await feed.send(_air(250.5, T0), at=T0)
    await feed.send(_air(150.25, T0 + HOUR), at=T0 + HOUR)
    local = await _get(client, "/v1/alerts/1")
    assert (local["trigger_time"], local["value"], local["details"]["peak"]) == (
        "2026-11-20T08:00:00+08:00",
        150.0,
        250.0,
    )
    assert [(e["value"], e["details"]["point_time"]) for e in local["timeline"]] == [
        (250.0, "2026-11-20T08:00:00+08:00"),
        (150.0, "2026-11-20T09:00:00+08:00"),
    ]
    utc = await _get(client, "/v1/alerts/1", tz="UTC")
    assert [(e["at"][-1], e["details"]["point_time"]) for e in utc["timeline"]] == [
        ("Z", "2026-11-20T00:00:00Z"),
        ("Z", "2026-11-20T01:00:00Z"),
    ]
    assert (utc["trigger_time"], utc["opened_at"][-1]) == ("2026-11-20T00:00:00Z", "Z")
    [listed] = (await _get(client, "/v1/alerts", tz="UTC"))["items"]
    assert (listed["trigger_time"], listed["value"]) == ("2026-11-20T00:00:00Z", 150.0)


async def test_water_quality_without_at_takes_the_last_complete_hour(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    for _ in range(2):  # once more if the hour turned meanwhile
        current = hour_start(utcnow())
        last = current - HOUR
        async with db.connection() as conn:
            await conn.execute("TRUNCATE reading, reading_latest, reading_hourly, series_dirty")
        await _ingest(
            db,
            [
                _reading("gz-w-dadun", "do", "mg/L", 7.0, time=last, period_s=0),
                _reading("gz-w-dadun", "do", "mg/L", 3.0, time=current, period_s=0),
            ],
        )
        body = await _get(client, "/v1/water-quality", station="gz-w-dadun")
        if hour_start(utcnow()) == current:
            break
    assert (body["kind"], body["period_start"], body["period_end"]) == (
        "sample",
        last.astimezone(CST).isoformat(),
        current.astimezone(CST).isoformat(),
    )
    [do] = [item for item in body["items"] if item["parameter"] == "do"]
    assert (do["value"], do["time"]) == (7.0, last.astimezone(CST).isoformat())


def _times_in(schema: Any, spec: dict[str, Any], seen: set[str]) -> bool:
    """Whether a response schema holds a date-time anywhere (references followed)."""
    if isinstance(schema, dict):
        if schema.get("format") == "date-time":
            return True
        reference = schema.get("$ref")
        if isinstance(reference, str):
            if reference in seen:
                return False
            seen.add(reference)
            name = reference.rsplit("/", 1)[-1]
            return _times_in(spec["components"]["schemas"][name], spec, seen)
        return any(_times_in(value, spec, seen) for value in schema.values())
    if isinstance(schema, list):
        return any(_times_in(value, spec, seen) for value in schema)
    return False


async def test_every_operation_that_returns_times_takes_tz(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    with_times, with_tz = set(), set()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            for status, response in operation.get("responses", {}).items():
                if status.startswith("2") and _times_in(response.get("content", {}), spec, set()):
                    with_times.add(name)
            if any(p["name"] == "tz" for p in operation.get("parameters", [])):
                with_tz.add(name)
    # The live stream's events and the export's lines carry times too; their bodies
    # (text/event-stream, CSV, NDJSON) have no JSON schema.
    assert with_times | {"GET /v1/alerts/stream", "GET /v1/export"} == with_tz
    assert {"GET /v1/readings", "GET /v1/latest", "GET /v1/alerts/{alert_id}"} <= with_tz
