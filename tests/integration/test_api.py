"""The HTTP API over real PostgreSQL: keys, stations, readings pagination, latest."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from store.keys import create_key, revoke_key

T0 = datetime(2026, 11, 20, 0, tzinfo=CST)


async def _key(pool: AsyncConnectionPool, **options: object) -> str:
    async with pool.connection() as conn:
        _, plain = await create_key(
            conn,
            agency=str(options.get("agency", "gz_eeb")),
            roles=["reader"],
            expires_at=options.get("expires_at"),  # type: ignore[arg-type]
        )
    return plain


async def _ingest(pool: AsyncConnectionPool, items: list[ReadingIn]) -> None:
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_healthz_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "an API key is required (Authorization: Bearer <key> or X-API-Key)"),
        ({"Authorization": "Bearer elk_nope"}, "the API key is unknown, revoked or expired"),
        ({"X-API-Key": "elk_nope"}, "the API key is unknown, revoked or expired"),
        ({"Authorization": "Basic abc"}, "Authorization header must be 'Bearer <API key>'"),
    ],
)
async def test_missing_or_wrong_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    for path in (
        "/v1/stations",
        "/v1/parameters",
        "/v1/latest",
        "/v1/readings?station=gz-a-huangpu&parameter=pm25",
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.json() == {"error": {"code": "unauthenticated", "message": message}}


async def test_revoked_and_expired_keys_are_401(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    live = await _key(db)
    expired = await _key(db, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    revoked = await _key(db)
    async with db.connection() as conn:
        await revoke_key(conn, 3)
    assert (await client.get("/v1/parameters", headers={"X-API-Key": live})).status_code == 200
    for key in (expired, revoked):
        response = await client.get("/v1/parameters", headers=_auth(key))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


async def test_plain_key_is_not_stored(db: AsyncConnectionPool) -> None:
    plain = await _key(db)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT api_key::text FROM api_key")
        rows = [row[0] for row in await cur.fetchall()]
    secret = plain.split("_", 2)[2]
    assert len(rows) == 1
    assert plain not in rows[0] and secret not in rows[0]


async def test_stations_filter_and_detail(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    key = await _key(db)
    everything = (await client.get("/v1/stations", headers=_auth(key))).json()
    assert everything["next_cursor"] is None
    assert len(everything["items"]) == 20
    response = await client.get(
        "/v1/stations",
        params={"city": "dongguan", "area": "shiziyang", "medium": "water"},
        headers=_auth(key),
    )
    assert [s["code"] for s in response.json()["items"]] == ["dg-w-humen", "dg-w-shatian"]
    detail = (await client.get("/v1/stations/gz-w-dadun", headers=_auth(key))).json()
    assert {k: detail[k] for k in ("code", "city", "area", "medium", "agency", "reach")} == {
        "code": "gz-w-dadun",
        "city": "guangzhou",
        "area": "dongjiang",
        "medium": "water",
        "agency": "gz_eeb",
        "reach": "north_main",
    }
    assert detail["river_km"] == 33.0
    assert {"parameter": "nh3n", "unit": "mg/L", "interval_s": 14400} in detail["parameters"]
    missing = await client.get("/v1/stations/nowhere", headers=_auth(key))
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "station_not_found", "message": "no station with code 'nowhere'"}
    }
    bad = await client.get("/v1/stations", params={"city": "shenzhen"}, headers=_auth(key))
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_request"
    assert "city" in bad.json()["error"]["message"]


async def test_readings_range_is_half_open_and_pages_are_exact(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    hourly = [
        ReadingIn(
            station="gz-a-huangpu",
            parameter="pm25",
            time=T0 + timedelta(hours=h),
            value=float(h),
            unit="ug/m3",
            period_s=3600,
        )
        for h in range(10)
    ]
    instant = [hourly[2].model_copy(update={"period_s": 0, "value": 99.0})]
    await _ingest(db, hourly + instant)
    key = await _key(db)
    params = {
        "station": "gz-a-huangpu",
        "parameter": "pm25",
        "start": (T0 + timedelta(hours=1)).isoformat(),
        "end": (T0 + timedelta(hours=8)).isoformat(),
        "limit": 3,
    }
    pages, cursor = [], None
    while True:
        response = await client.get(
            "/v1/readings",
            params=params | ({"cursor": cursor} if cursor else {}),
            headers=_auth(key),
        )
        assert response.status_code == 200
        body = response.json()
        pages.append([(item["time"], item["period_s"], item["value"]) for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    hour = lambda h: (T0 + timedelta(hours=h)).isoformat()  # noqa: E731
    assert pages == [
        [(hour(1), 3600, 1.0), (hour(2), 0, 99.0), (hour(2), 3600, 2.0)],
        [(hour(3), 3600, 3.0), (hour(4), 3600, 4.0), (hour(5), 3600, 5.0)],
        [(hour(6), 3600, 6.0), (hour(7), 3600, 7.0)],
    ]
    only_hourly = await client.get(
        "/v1/readings", params=params | {"period_s": 3600, "limit": 100}, headers=_auth(key)
    )
    assert only_hourly.status_code == 200, only_hourly.text
    assert [i["value"] for i in only_hourly.json()["items"]] == [float(h) for h in range(1, 8)]
    first = only_hourly.json()["items"][0]
    assert first == {
        "time": "2026-11-20T01:00:00+08:00",
        "period_s": 3600,
        "period_end": "2026-11-20T02:00:00+08:00",
        "value": 1.0,
        "unit": "ug/m3",
        "qc": "valid",
    }


async def test_readings_reject_bad_queries(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    key = await _key(db)
    base = {"station": "gz-a-huangpu", "parameter": "pm25"}
    cases = [
        (base | {"cursor": "garbage"}, 400, "cursor: not a cursor this API issued"),
        (
            base | {"start": "2026-11-02T00:00:00+08:00", "end": "2026-11-01T00:00:00+08:00"},
            400,
            "end must be after start (the range is half-open [start, end))",
        ),
        ({"station": "gz-a-huangpu", "parameter": "radon"}, 404, "no parameter with code 'radon'"),
    ]
    for params, status, message in cases:
        response = await client.get("/v1/readings", params=params, headers=_auth(key))
        assert (response.status_code, response.json()["error"]["message"]) == (status, message)
    too_many = await client.get("/v1/readings", params=base | {"limit": 10001}, headers=_auth(key))
    assert too_many.status_code == 422


async def test_latest_is_exact_per_station_parameter(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hour_start = now.astimezone(CST).replace(minute=0, second=0) - timedelta(hours=2)
    rows = [
        # The hourly mean of 2 h ago ends 1 h ago; the real-time value of 90 min ago is older.
        ReadingIn(
            station="dg-w-humen",
            parameter="do",
            time=hour_start,
            value=5.5,
            unit="mg/L",
            period_s=3600,
        ),
        ReadingIn(
            station="dg-w-humen",
            parameter="do",
            time=now - timedelta(minutes=150),
            value=5.1,
            unit="mg/L",
        ),
        ReadingIn(
            station="dg-w-humen",
            parameter="ph",
            time=now - timedelta(minutes=5),
            value=7.4,
            unit="1",
        ),
        ReadingIn(
            station="dg-w-humen",
            parameter="ph",
            time=now - timedelta(minutes=10),
            value=7.2,
            unit="1",
        ),
        ReadingIn(
            station="gz-a-huangpu",
            parameter="pm25",
            time=now - timedelta(minutes=1),
            value=20.0,
            unit="ug/m3",
        ),
    ]
    await _ingest(db, rows)
    key = await _key(db)
    response = await client.get("/v1/latest", params={"area": "shiziyang"}, headers=_auth(key))
    items = response.json()["items"]
    assert [(i["station"], i["parameter"], i["value"], i["period_s"]) for i in items] == [
        ("dg-w-humen", "do", 5.5, 3600),
        ("dg-w-humen", "ph", 7.4, 0),
    ]
    age = items[1]["age_s"]
    assert 300 <= age <= 310
    assert items[0]["time"] == hour_start.isoformat()
    everything = (await client.get("/v1/latest", headers=_auth(key))).json()["items"]
    assert len(everything) == 3


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/v1/stations",
        "/v1/stations/{code}",
        "/v1/parameters",
        "/v1/readings",
        "/v1/latest",
        "/healthz",
    } <= set(spec["paths"])
    assert (await client.get("/docs")).status_code == 200
