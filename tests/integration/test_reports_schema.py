"""The report answers are what the OpenAPI document says, field for field, over real PostgreSQL.

GET /v1/reports/air and /v1/reports/water answer the evaluation's JSON unchanged (the same
object alerts.reports builds); each real answer — a month, a city, the region, a year with its
compliance checks, a period across 2026-03-01 in parts, last year's in parts, river sections, a
short station, the estuary's sea point with its area grade — validates against the document's
own schema of the route (JSON Schema 2020-12) and against the pydantic models, which allow no
other field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter

from alerts.evaluation.periods import parse_period
from alerts.reports import air_period_report, water_period_report
from core.settings import Settings
from core.timeutil import CST
from schemas.reports import AirReportOut, WaterPeriodReport
from tests.integration.conftest import reader_client
from tests.integration.test_reports_api import DONGJIANG_NH3N, STATION, _november, air_days
from tests.integration.test_water_report_estuary import _seed as estuary_seed

AIR = TypeAdapter(AirReportOut)
NOVEMBER = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "dg_eeb") as client:
        yield client


async def _validator(client: httpx.AsyncClient, path: str) -> jsonschema.Draft202012Validator:
    """The OpenAPI document's schema of the route's 200 answer, its references resolved."""
    spec = (await client.get("/openapi.json")).json()
    schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return jsonschema.Draft202012Validator({**schema["schema"], "components": spec["components"]})


async def _answer(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _valid(validator: jsonschema.Draft202012Validator, body: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == []


async def test_air_answers_are_the_documented_objects(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await air_days(db, STATION, _november())
    await air_days(db, STATION, {day.replace(year=2025): v for day, v in _november().items()})
    await air_days(db, STATION, dict.fromkeys([date(2026, 2, 27), date(2026, 3, 2)], 70.0))
    validator = await _validator(client, "/v1/reports/air")
    asked = [
        {"scope": "station", "code": STATION, "period": "2026-11"},
        {"scope": "city", "code": "dongguan", "period": "2026-Q4"},
        {"scope": "region", "period": "2026-11"},
        {"scope": "station", "code": STATION, "period": "2026"},
        {"scope": "city", "code": "dongguan", "start": "2026-02-20", "end": "2026-03-10"},
        {"scope": "station", "code": STATION, "start": "2027-02-20", "end": "2027-03-10"},
    ]
    bodies = [await _answer(client, "/v1/reports/air", **params) for params in asked]
    for body in bodies:
        _valid(validator, body)
        AIR.validate_python(body)
    month, _, region, year, across, after = bodies
    # The document's schema is no free-form object: a field more, or one less, fails it.
    assert not validator.is_valid({**month, "extra": 1})
    assert not validator.is_valid({k: v for k, v in month.items() if k != "good_day_share"})
    # What the schema allows is what they hold: a figure and a shortfall, a year's compliance.
    assert month["pollutants"]["pm25"]["value"] == 48
    assert region["pollutants"]["pm25"]["value"]["status"] == "insufficient_data"
    assert "compliance" not in month["pollutants"]["pm25"]
    # 2026 is two parts (2026-03-01); a year's parts are judged for compliance as a year.
    checks = year["parts"][1]["pollutants"]["pm25"]["compliance"]["checks"]
    assert [c["statistic"] for c in checks] == ["mean", "p95"]
    assert len(across["parts"]) == 2
    assert len(after["last_year"]["as_published"]["parts"]) == 2
    # The JSON is the evaluation's, unchanged.
    async with db.connection() as conn:
        built = await air_period_report(conn, "station", STATION, parse_period("2026-11"))
    assert month == built


async def _water_days(
    pool: AsyncConnectionPool, values: dict[tuple[str, str], float], days: list[date]
) -> None:
    """Daily means of each (station, item) on each day."""
    now = datetime.now(CST)
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT s.code, p.code, s.id, p.id FROM station s, parameter p"
            " WHERE s.code = ANY(%s) AND p.code = ANY(%s)",
            [list({s for s, _ in values}), list({i for _, i in values})],
        )
        ids = {(s, i): (sid, pid) for s, i, sid, pid in await cur.fetchall()}
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min,"
                " max, origin, computed_at) VALUES (%s, %s, %s, %s, 4, %s, %s, 'computed', %s)",
                [
                    (*ids[key], day, value, value, value, now)
                    for key, value in values.items()
                    for day in days
                ],
            )


async def test_water_answers_are_the_documented_objects(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    river = {(code, "nh3n"): value for code, value in DONGJIANG_NH3N.items()}
    await _water_days(db, river, NOVEMBER)
    await _water_days(
        db, {("dg-w-shilong", "nh3n"): 0.4}, [date(2026, 10, d) for d in range(1, 11)]
    )
    validator = await _validator(client, "/v1/reports/water")
    asked = [
        {"scope": "river", "code": "dongjiang", "period": "2026-11"},
        {"scope": "area", "code": "shiziyang", "period": "2026-11"},
        {"scope": "city", "code": "guangzhou", "period": "2026-11"},
        {"scope": "station", "code": "dg-w-shilong", "period": "2026-10"},
        {"scope": "reach", "code": "north_main", "period": "2026"},
    ]
    bodies = [await _answer(client, "/v1/reports/water", **params) for params in asked]
    for body in bodies:
        _valid(validator, body)
        WaterPeriodReport.model_validate(body)
    river_report, _, _, short, _ = bodies
    assert not validator.is_valid({**river_report, "sections": [{"code": "x"}]})
    wanjiang = next(s for s in river_report["sections"] if s["code"] == "dg-w-wanjiang")
    assert [e["against"] for e in wanjiang["exceedances"]["class_iii"]] == ["class_iii"]
    assert short["group"] is None
    async with db.connection() as conn:
        built = await water_period_report(conn, "river", "dongjiang", parse_period("2026-11"))
    assert river_report == built


async def test_a_field_the_document_does_not_name_is_refused() -> None:
    # The models allow no other field: an answer that grew one fails the checks above.
    body = {"parts": [], "extra": 1}
    with pytest.raises(ValueError, match="extra"):
        AIR.validate_python(body)


async def test_the_estuarys_sea_point_is_the_documented_object(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    # The estuary's sections and its GB 3097 point (lab samples), ingested and rolled up.
    await estuary_seed(db)
    validator = await _validator(client, "/v1/reports/water")
    area = await _answer(
        client, "/v1/reports/water", scope="area", code="shiziyang", period="2026-11"
    )
    _valid(validator, area)
    WaterPeriodReport.model_validate(area)
    (point,) = area["sea_points"]
    assert (point["code"], point["standard"], point["class"]) == ("gz-w-nansha", "GB 3097-1997", 3)
    assert area["sea_area"]["points"] == 1
