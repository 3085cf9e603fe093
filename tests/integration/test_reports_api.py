"""GET /v1/reports/air over real PostgreSQL: rollup rows written as the rollup loop writes them,
figures checked against a month worked out by hand (docs/evaluation.md §3's example month)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from core.timeutil import CST
from tests.integration.conftest import reader_client

STATION = "dg-a-shilong"
# Every day's values but PM2.5 (µg/m³, CO mg/m³): IAQIs SO2 10, NO2 25, CO 12.5, PM10 30,
# O3 MDA8 40 (O3 80 all day long), so PM2.5 decides the day's AQI once above 40.
STEADY = {"so2": 10.0, "no2": 20.0, "co": 0.5, "pm10": 30.0}
O3 = 80.0


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "dg_eeb") as client:
        yield client


async def air_days(pool: AsyncConnectionPool, station: str, pm25: dict[date, float]) -> None:
    """Daily rollups of `station` for each day (PM2.5 as given, the rest STEADY) and its 24
    hourly O3 means."""
    now = datetime.now(CST)
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT (SELECT id FROM station WHERE code = %s), code, id FROM parameter"
            " WHERE code IN ('so2', 'no2', 'co', 'o3', 'pm10', 'pm25')",
            [station],
        )
        rows = await cur.fetchall()
        sid = rows[0][0]
        ids = {code: pid for _, code, pid in rows}
        daily = [
            (sid, ids[code], day, value, 24, value, value, "computed", now)
            for day, fine in pm25.items()
            for code, value in {**STEADY, "pm25": fine}.items()
        ]
        hourly = [
            (sid, ids["o3"], datetime.combine(day, time(), CST) + timedelta(hours=h), O3,
             1, 3600, O3, O3, "computed", now)
            for day in pm25
            for h in range(24)
        ]  # fmt: skip
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min,"
                " max, origin, computed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                daily,
            )
            await c.executemany(
                "INSERT INTO reading_hourly (station_id, parameter_id, hour, value, samples,"
                " coverage_s, min, max, origin, computed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                hourly,
            )


def _november() -> dict[date, float]:
    """2026-11 (HJ 633-2026): 10 优 (PM2.5 20), 14 良 (50: AQI 80), 4 轻度 (90: AQI 127),
    1 中度 (130: AQI 171), and the 30th without data."""
    fine = [20.0] * 10 + [50.0] * 14 + [90.0] * 4 + [130.0]
    return {date(2026, 11, 1) + timedelta(days=i): value for i, value in enumerate(fine)}


async def _get(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/reports/air", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_month_worked_by_hand(db: AsyncConnectionPool, client: httpx.AsyncClient) -> None:
    await air_days(db, STATION, _november())
    report = await _get(client, scope="station", code=STATION, period="2026-11")
    assert report["scope"] == {"kind": "station", "code": STATION, "stations": [STATION]}
    assert report["period"] == {
        "start": "2026-11-01", "end": "2026-12-01", "kind": "month", "label": "2026-11",
    }  # fmt: skip
    assert report["rule_set"]["name"] == (
        "HJ 663-2026 / GB 3095-2026 (transition limits) / HJ 633-2026"
    )
    assert (report["days"], report["valid_days"]) == (30, 29)
    assert report["category_days"] == {
        "excellent": 10, "good": 14, "lightly_polluted": 4, "moderately_polluted": 1,
        "heavily_polluted": 0, "severely_polluted": 0,
    }  # fmt: skip
    assert (report["good_days"], report["good_day_share"]) == (24, 82.8)
    assert (report["exceedance_days"], report["exceedance_share"]) == (5, 17.2)
    assert report["heavy_pollution_days"] == 0
    pollutants = report["pollutants"]
    # PM2.5: (10·20 + 14·50 + 4·90 + 130) / 29 = 47.93 → 48 against the 2026 annual 30.
    assert pollutants["pm25"] == {
        "statistic": "mean", "value": 48, "unit": "ug/m3", "valid_days": 29, "limit": 30,
        "limit_averaging": "annual", "exceedance_multiple": 0.6,
    }  # fmt: skip
    assert pollutants["o3"]["statistic"] == "mda8_p90"
    assert (pollutants["o3"]["value"], pollutants["o3"]["exceedance_multiple"]) == (80, None)
    assert (pollutants["co"]["statistic"], pollutants["co"]["value"]) == ("p95", 0.5)
    assert {p: v["value"] for p, v in pollutants.items()} == {
        "so2": 10, "no2": 20, "co": 0.5, "o3": 80, "pm10": 30, "pm25": 48,
    }  # fmt: skip
    # Terms rounded half to even first: 10/60 .17, 20/40 .5, 0.5/4 .12, 80/160 .5, 30/60 .5,
    # 48/30 1.6.
    assert report["composite_index"]["terms"] == {
        "so2": 0.17, "no2": 0.5, "co": 0.12, "o3": 0.5, "pm10": 0.5, "pm25": 1.6,
    }  # fmt: skip
    assert report["composite_index"]["value"] == 3.39
    assert report["composite_index"]["primary"] == ["pm25"]
    # AQI > 50 on 19 days, PM2.5 primary on each of them.
    assert report["days_with_primary_pollutant"] == 19
    assert report["primary_pollutant_days"]["pm25"] == 19
    assert report["primary_pollutant_shares"]["pm25"] == 100.0
    assert report["primary_pollutant_shares"]["o3"] == 0.0
    last_year = report["last_year"]
    assert last_year["as_published"]["period"]["label"] == "2025-11"
    assert last_year["as_published"]["rule_set"]["name"] == (
        "HJ 663-2013 / GB 3095-2012 / HJ 633-2012"
    )
    assert last_year["like_for_like"]["rule_set"]["name"] == report["rule_set"]["name"]
    assert last_year["like_for_like"]["pollutants"]["pm25"]["value"] == {
        "status": "insufficient_data", "have": 0, "need": 27,
    }  # fmt: skip
    assert last_year["changes"]["basis"] == "like_for_like"
    assert last_year["changes"]["composite_index_percent"] is None
    assert last_year["changes"]["category_days"]["excellent"] == 10

    # The city is the mean of its assessment stations; only one reported, so the same figures.
    city = await _get(client, scope="city", code="dongguan", period="2026-11")
    assert city["scope"]["stations"] == ["dg-a-humen", "dg-a-machong", STATION, "dg-a-yuanling"]
    assert (city["good_day_share"], city["composite_index"]["value"]) == (82.8, 3.39)
    # The region: Guangzhou has no data, so every statistic is short (never half a region).
    region = await _get(client, scope="region", period="2026-11")
    assert region["pollutants"]["pm25"]["value"] == {
        "status": "insufficient_data", "have": 0, "need": 27,
    }  # fmt: skip


async def test_a_year_earlier_recomputed_like_for_like(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await air_days(db, STATION, _november())
    last = {day.replace(year=2025): value for day, value in _november().items()}
    await air_days(db, STATION, last)
    report = await _get(client, scope="station", code=STATION, period="2026-11")
    before = report["last_year"]["as_published"]
    # Under HJ 633-2012 PM2.5 50 is AQI 69 and 90 is 119, 130 is 171: the same categories.
    assert before["category_days"]["lightly_polluted"] == 4
    # GB 3095-2012's PM2.5 annual limit is 35: 48/35 = 1.37 as published; 1.6 like for like.
    assert before["composite_index"]["terms"]["pm25"] == 1.37
    like = report["last_year"]["like_for_like"]
    assert like["composite_index"]["terms"]["pm25"] == 1.6
    assert report["last_year"]["changes"]["composite_index_percent"] == 0.0
    assert report["last_year"]["changes"]["good_day_share_points"] == 0.0


async def test_a_period_across_2026_03_01_is_two_parts(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    # PM2.5 70 is 良 (AQI 94) under HJ 633-2012 and 轻度 (AQI 109) under HJ 633-2026.
    days = [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)]
    await air_days(db, STATION, dict.fromkeys(days, 70.0))
    body = await _get(client, scope="station", code=STATION, start="2026-02-20", end="2026-03-10")
    before, after = body["parts"]
    assert (before["period"]["start"], before["period"]["end"]) == ("2026-02-20", "2026-03-01")
    assert (after["period"]["start"], after["period"]["end"]) == ("2026-03-01", "2026-03-10")
    assert before["rule_set"]["hj633"] == "HJ 633-2012"
    assert after["rule_set"]["hj633"] == "HJ 633-2026"
    assert (before["category_days"]["good"], before["category_days"]["lightly_polluted"]) == (2, 0)
    assert (after["category_days"]["good"], after["category_days"]["lightly_polluted"]) == (0, 2)
    assert (before["good_day_share"], after["good_day_share"]) == (100.0, 0.0)
    # February's 25 of 28 days scaled to 9 days: ⌈8.04⌉ = 9; March's 27 of 31 to 9: ⌈7.84⌉ = 8.
    assert before["pollutants"]["pm25"]["value"] == {
        "status": "insufficient_data", "have": 2, "need": 9,
    }  # fmt: skip
    assert after["pollutants"]["pm25"]["value"] == {
        "status": "insufficient_data", "have": 2, "need": 8,
    }  # fmt: skip
    assert before["composite_index"]["value"] == {
        "status": "insufficient_data", "have": 0, "need": 6,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"scope": "planet", "period": "2026"}, 422, "scope"),
        ({"scope": "city", "code": "shanghai", "period": "2026"}, 400, "code: 'shanghai'"),
        ({"scope": "city", "period": "2026"}, 400, "code: scope city needs a code"),
        ({"scope": "region", "code": "dongguan", "period": "2026"}, 400, "code: the region"),
        ({"scope": "station", "code": "nowhere", "period": "2026"}, 404, "code: no air station"),
        ({"scope": "station", "code": "dg-w-shilong", "period": "2026"}, 404, "code: no air"),
        ({"scope": "region", "period": "2026-13"}, 400, "period '2026-13': month 13 is not 1..12"),
        ({"scope": "region", "period": "Nov 2026"}, 400, "period 'Nov 2026' is not YYYY-MM"),
        ({"scope": "region"}, 400, "start: give period, or both start and end"),
        ({"scope": "region", "start": "2026-01-01"}, 400, "end: give period"),
        ({"scope": "region", "start": "2026-02-01", "end": "2026-02-01"}, 400, "end: 2026-02-01"),
        ({"scope": "region", "start": "2020-01-01", "end": "2026-01-01"}, 400, "end: at most"),
        ({"scope": "region", "start": "2026-13-01", "end": "2027-01-01"}, 422, "start"),
        ({"scope": "region", "period": "2026", "start": "2026-01-01"}, 400, "period: give"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, params: dict[str, str], status: int, message: str
) -> None:
    response = await client.get("/v1/reports/air", params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


# --- water ------------------------------------------------------------------------------------

# docs/evaluation.md §5's example river: six sections II, II, III, III, IV, 劣V by their NH3-N means
# (GB 3838 limits I 0.15, II 0.5, III 1.0, IV 1.5, V 2.0 mg/L).
DONGJIANG_NH3N = {
    "dg-w-shilong": 0.4, "dg-w-zhongtang": 0.4, "gz-w-xintang": 0.8, "gz-w-dadun": 0.8,
    "dg-w-shijie": 1.2, "dg-w-wanjiang": 2.5,
}  # fmt: skip


async def _water_days(
    pool: AsyncConnectionPool, values: dict[str, float], days: list[date]
) -> None:
    """Daily NH3-N means of each station on each day."""
    now = datetime.now(CST)
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT s.code, s.id, p.id FROM station s, parameter p"
            " WHERE s.code = ANY(%s) AND p.code = 'nh3n'",
            [list(values)],
        )
        ids = {code: (sid, pid) for code, sid, pid in await cur.fetchall()}
        async with conn.cursor() as c:
            await c.executemany(
                "INSERT INTO reading_daily (station_id, parameter_id, day, value, hours, min,"
                " max, origin, computed_at) VALUES (%s, %s, %s, %s, 4, %s, %s, 'computed', %s)",
                [
                    (*ids[code], day, value, value, value, now)
                    for code, value in values.items()
                    for day in days
                ],
            )


async def _water(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/reports/water", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_river_by_the_proportion_method(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    november = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    await _water_days(db, DONGJIANG_NH3N, november)
    report = await _water(client, scope="river", code="dongjiang", period="2026-11")
    assert report["scope"]["stations"] == [
        "dg-w-shilong", "dg-w-zhongtang", "gz-w-xintang", "gz-w-dadun", "dg-w-shijie",
        "dg-w-wanjiang",
    ]  # fmt: skip
    sections = {s["code"]: s for s in report["sections"]}
    assert {code: s["class"] for code, s in sections.items()} == {
        "dg-w-shilong": 2, "dg-w-zhongtang": 2, "gz-w-xintang": 3, "gz-w-dadun": 3,
        "dg-w-shijie": 4, "dg-w-wanjiang": 6,
    }  # fmt: skip
    shijie = sections["dg-w-shijie"]
    assert shijie["items"]["nh3n"]["values"] == 30
    assert (shijie["target"]["class"], shijie["compliant"]) == (2, False)
    # Against the target (II, 0.5): (1.2 - 0.5)/0.5 = 1.4; against class III (1.0): 0.2.
    assert [(e["item"], e["multiple"], e["against"]) for e in shijie["exceedances"]["target"]] == [
        ("nh3n", 1.4, "target")
    ]
    assert [e["multiple"] for e in shijie["exceedances"]["class_iii"]] == [0.2]
    assert shijie["cwqi"] == 1.2
    assert sections["dg-w-shilong"]["compliant"] is True
    assert sections["dg-w-shilong"]["exceedances"] == {"target": [], "class_iii": []}
    # 4 of 6 in I-III (66.7 %), 1 worse than V (16.7 %) → 轻度污染; 2 of 6 meet their target.
    # CWQI: (0.4 + 0.4 + 0.8 + 0.8 + 1.2 + 2.5)/6 = 1.0167.
    group = report["group"]
    assert group["sections"] == 6
    assert (group["good_share"], group["worse_than_v_share"]) == (66.7, 16.7)
    assert (group["method"], group["grade_zh"]) == ("proportion", "轻度污染")
    assert (group["compliant_share"], group["cwqi"]) == (33.3, 1.02)
    assert report["last_year"]["period"]["label"] == "2025-11"
    assert [s["class"] for s in report["last_year"]["sections"]] == [None] * 6

    # Under 5 sections the means are classed: the north main stream's three, NH3-N 2/3 → III.
    reach = await _water(client, scope="reach", code="north_main", period="2026-11")
    assert reach["group"]["method"] == "mean_concentration"
    assert (reach["group"]["mean_class"], reach["group"]["sections"]) == (3, 3)


async def test_a_short_month_is_insufficient(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _water_days(db, {"dg-w-shilong": 0.4}, [date(2026, 10, d) for d in range(1, 11)])
    report = await _water(client, scope="station", code="dg-w-shilong", period="2026-10")
    (section,) = report["sections"]
    assert report["group"] is None
    assert section["class"] is None
    assert section["insufficient_data"] == {
        "nh3n": {"status": "insufficient_data", "have": 10, "need": 20}
    }


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"scope": "river", "period": "2026"}, 422, "code"),
        ({"scope": "lake", "code": "x", "period": "2026"}, 422, "scope"),
        ({"scope": "river", "code": "nile", "period": "2026"}, 400, "code: no water station"),
        ({"scope": "station", "code": "dg-a-shilong", "period": "2026"}, 404, "code: no water"),
        (
            {"scope": "city", "code": "dongguan", "period": "2026-Q5"},
            400,
            "period '2026-Q5' is not",
        ),
        ({"scope": "city", "code": "dongguan"}, 400, "start: give period"),
    ],
)
async def test_water_bad_input_names_the_field(
    client: httpx.AsyncClient, params: dict[str, str], status: int, message: str
) -> None:
    response = await client.get("/v1/reports/water", params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
