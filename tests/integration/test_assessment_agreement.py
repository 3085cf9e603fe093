"""The API and the alerts assess alike: the same readings, fed through the ingest pipeline and
the alert loop, give /v1/water-quality's class and /v1/aqi's AQI for an hour, and the alert's
point for that hour says the same (alerts/assessment serves both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from schemas.rules import RuleDefinition
from store.rules import write_rule
from tests.conftest import worker_loop
from tests.integration.conftest import reader_client

T0 = datetime(2026, 11, 20, 8, tzinfo=CST)
HOUR = timedelta(hours=1)


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "gz_eeb") as client:
        yield client


async def _rule(pool: AsyncConnectionPool, definition: dict[str, Any]) -> None:
    rule = RuleDefinition.model_validate({"name": {"en": "t", "zh": "t"}, **definition})
    async with pool.connection() as conn, conn.transaction():
        await write_rule(conn, rule, via="config", by="test", at=T0)


async def _send(pool: AsyncConnectionPool, items: list[ReadingIn], at: datetime) -> None:
    """Ingest as of `at`, then one alert-loop pass: history QC, rollups, the engine."""
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: at)
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items), result.rejections
    await worker_loop(pool, pipeline, clock=lambda: at).drain()


async def _query(pool: AsyncConnectionPool, text: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(text.encode())
        return await cur.fetchall()


def _water(parameter: str, at: datetime, value: float) -> ReadingIn:
    unit = "1" if parameter == "ph" else "mg/L"
    return ReadingIn(station="gz-w-dadun", parameter=parameter, time=at, value=value, unit=unit)


async def test_water_class_alert_and_api_agree_hour_by_hour(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rule(
        db,
        {
            "id": "water_class_sample",
            "kind": "water_class",
            "statistic": "water_sample",
            "scope": {"stations": ["gz-w-dadun"]},
            "ladders": [
                {
                    "standard": "GB 3838-2002",
                    "levels": [
                        {"severity": "advisory", "trigger": 0, "clear": 0, "basis": "one class"},
                        {"severity": "warning", "trigger": 1, "clear": 1, "basis": "two"},
                    ],
                }
            ],
        },
    )
    # Dadun's target is class II. The 08:00 nutrients (4-hourly) put it in class III through
    # NH3-N 0.75; DO is sampled three times in that hour, once as low as class IV (4.9), but
    # the hour's mean 5.67 is class III.
    nutrients = [_water("nh3n", T0, 0.75), _water("tp", T0, 0.08), _water("codmn", T0, 3.0)]
    do = [_water("do", T0 + timedelta(minutes=m), v) for m, v in ((0, 6.2), (20, 5.9), (40, 4.9))]
    await _send(db, [*nutrients, *do, _water("ph", T0, 7.5)], T0 + timedelta(minutes=45))
    # Hourly DO after that; the nutrients stand until 11:00 and are missing at 12:00.
    for hour, value in ((1, 6.6), (2, 6.7), (3, 6.6), (4, 6.8)):
        at = T0 + hour * HOUR
        await _send(db, [_water("do", at, value)], at + timedelta(minutes=5))

    events = await _query(
        db,
        "SELECT kind, severity, value, details->>'point_time', details->>'class'"
        " FROM alert_event ORDER BY id",
    )
    assert events == [
        ("firing", "advisory", 1.0, T0.isoformat(), "III"),
        ("resolved", "advisory", 0.0, (T0 + 4 * HOUR).isoformat(), "II"),
    ]
    for _, _, value, point_time, label in events:
        response = await client.get(
            "/v1/water-quality", params={"station": "gz-w-dadun", "at": point_time}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["period_start"], body["label"]) == (point_time, label)
        assert body["overall_class"] - body["target_class"] == value
    # Between the events the alert stays firing, and the API says class III every hour.
    for hour in (1, 2, 3):
        at = (T0 + hour * HOUR).isoformat()
        response = await client.get("/v1/water-quality", params={"station": "gz-w-dadun", "at": at})
        assert response.json()["label"] == "III", at
    first = await client.get(
        "/v1/water-quality", params={"station": "gz-w-dadun", "at": T0.isoformat()}
    )
    do_item = next(i for i in first.json()["items"] if i["parameter"] == "do")
    assert do_item["value"] == 5.67  # the hour's mean, 17.0 / 3, at DO's published decimals


async def test_city_aqi_alert_and_api_agree(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rule(
        db,
        {
            "id": "aqi_city",
            "kind": "aqi",
            "statistic": "mean_1h",
            "scope": {"medium": "air", "city_wide": True},
            "ladders": [
                {
                    "standard": "HJ 633-2026",
                    "levels": [
                        {"severity": "warning", "trigger": 150, "clear": 140, "basis": "IV"}
                    ],
                }
            ],
        },
    )
    stations = ["gz-a-huangpu", "gz-a-zengcheng", "gz-a-panyu", "gz-a-huangge", "gz-a-nansha"]
    clean = {"so2": 8.0, "no2": 30.0, "co": 0.6, "o3": 60.0, "pm10": 40.0}
    items = [
        ReadingIn(
            station=station,
            parameter=code,
            time=T0,
            value=value,
            unit="mg/m3" if code == "co" else "ug/m3",
            period_s=3600,
        )
        for station, pm25 in zip(stations, (120.0, 150.0, 130.0, 125.0, 140.0), strict=True)
        for code, value in {**clean, "pm25": pm25}.items()
    ]
    # The background site is heavily polluted: neither path counts it for the city.
    items.append(
        ReadingIn(
            station="gz-a-maofengshan", parameter="pm25", time=T0, value=400.0, unit="ug/m3",
            period_s=3600,
        )
    )  # fmt: skip
    await _send(db, items, T0 + HOUR)
    alerts = await _query(
        db, "SELECT city, value, details->'sub_indices', details->'primary_pollutants' FROM alert"
    )
    response = await client.get("/v1/aqi", params={"city": "guangzhou", "at": T0.isoformat()})
    body = response.json()
    # Mean PM2.5 133: IAQI 176 (HJ 633-2026, 115-150 -> 150-200).
    assert alerts == [("guangzhou", 176.0, body["sub_indices"], body["primary_pollutants"])]
    assert (body["aqi"], body["primary_pollutants"]) == (176, ["pm25"])
