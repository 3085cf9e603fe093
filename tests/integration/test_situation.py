"""GET /v1/situation over real PostgreSQL: readings in through the pipeline and the alert loop,
the joint rule set in force. The service (alerts/situation.py) is judged at exact times; the API
at the wall clock, against /v1/aqi and /v1/water-quality for the same hour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg import AsyncCursor
from psycopg_pool import AsyncConnectionPool

from alerts.rollups import hour_start
from alerts.situation import Selection, Situation, situation
from core.settings import Settings
from core.timeutil import CST, utcnow
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from schemas.rules import load_rules
from store.alerts import NewAlert, acknowledge, create_maintenance_window, insert_alerts
from store.catalogue import read_catalogue
from store.keys import create_key
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR, worker_loop
from tests.integration.conftest import reader_client

T0 = datetime(2026, 11, 20, 8, tzinfo=CST)
HOUR = timedelta(hours=1)
FIVE_MINUTES = timedelta(minutes=5)
FEED = SourceRef(code="test", kind="test")
UNITS = {
    "turbidity": "NTU",
    "do": "mg/L",
    "ph": "1",
    "nh3n": "mg/L",
    "co": "mg/m3",
    "water_temp": "degC",
}
DONGJIANG_WATER = [
    "dg-w-shilong", "dg-w-zhongtang", "gz-w-xintang", "gz-w-dadun", "dg-w-shijie",
    "dg-w-wanjiang",
]  # fmt: skip
DONGJIANG_AIR = [
    "dg-a-shilong", "dg-a-yuanling", "gz-a-huangpu", "gz-a-maofengshan", "gz-a-zengcheng"
]  # fmt: skip


@pytest.fixture
async def rules(db: AsyncConnectionPool) -> AsyncConnectionPool:
    """The joint rule set (config/thresholds.yaml) in force."""
    async with db.connection() as conn, conn.transaction():
        await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=T0 - 24 * HOUR)
    return db


def _reading(
    station: str, parameter: str, time: datetime, value: float, *, period_s: int = 3600
) -> ReadingIn:
    return ReadingIn.model_validate(
        {
            "station": station,
            "parameter": parameter,
            "time": time,
            "value": value,
            "unit": UNITS.get(parameter, "ug/m3"),
            "period_s": period_s,
        }
    )


async def _store(pool: AsyncConnectionPool, items: list[ReadingIn], *, now: datetime) -> None:
    """Ingest as of `now`, then let the alert loop roll the readings up."""
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: now)
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=FEED)
    assert result.count("accepted") == len(items), result.rejections
    await worker_loop(pool, pipeline, clock=lambda: now).drain()


async def _situation(pool: AsyncConnectionPool, now: datetime, **selection: Any) -> Situation:
    async with pool.connection() as conn:
        return await situation(conn, await read_catalogue(conn), Selection(**selection), now=now)


def _states(found: Situation) -> dict[str, str]:
    return {s.station.code: s.state for s in found.stations}


async def test_states_at_exact_times(rules: AsyncConnectionPool) -> None:
    # DO's 08:00-09:00 mean ends at 09:00; DO reports hourly. dg-w-zhongtang reports on.
    await _store(
        rules,
        [
            _reading("dg-w-shilong", "do", T0, 7.0),
            _reading("dg-w-zhongtang", "do", T0 + 2 * HOUR, 7.0),
        ],
        now=T0 + 4 * HOUR,
    )
    picked = ("dg-w-shilong", "dg-w-zhongtang", "dg-w-shijie")
    ends = T0 + HOUR

    async def states(now: datetime) -> dict[str, str]:
        return _states(await _situation(rules, now, stations=picked))

    # dg-w-shijie never sent anything: silent throughout.
    assert await states(ends + 2 * HOUR - timedelta(seconds=1)) == {
        "dg-w-shilong": "reporting", "dg-w-zhongtang": "reporting", "dg-w-shijie": "silent",
    }  # fmt: skip
    # Exactly two intervals without a reading: late. The staleness rule (station_silent) fires
    # past two intervals, so one second later the station is silent, as its alert says.
    assert (await states(ends + 2 * HOUR))["dg-w-shilong"] == "late"
    assert (await states(ends + 2 * HOUR + timedelta(seconds=1)))["dg-w-shilong"] == "silent"
    async with rules.connection() as conn, conn.transaction():
        await create_maintenance_window(
            conn,
            station_id=await _station_id(conn, "dg-w-shilong"),
            starts_at=ends + 3 * HOUR,
            ends_at=ends + 4 * HOUR,
            reason="probe cleaning",
            created_by="test",
            at=ends,
        )
    assert (await states(ends + 3 * HOUR - timedelta(seconds=1)))["dg-w-shilong"] == "silent"
    assert (await states(ends + 3 * HOUR))["dg-w-shilong"] == "maintenance"
    assert (await states(ends + 4 * HOUR - timedelta(seconds=1)))["dg-w-shilong"] == "maintenance"
    assert (await states(ends + 4 * HOUR))["dg-w-shilong"] == "silent"


async def _station_id(conn: Any, code: str) -> int:
    cur = await conn.execute("SELECT id FROM station WHERE code = %s", [code])
    row = await cur.fetchone()
    return int(row[0])


async def test_latest_values_and_their_three_hour_trends(rules: AsyncConnectionPool) -> None:
    now = T0 + 3 * HOUR + timedelta(minutes=20)
    end = T0 + 3 * HOUR
    await _store(
        rules,
        [
            # DO falls 0.5 mg/L an hour: -1.5 over 3 h, beyond its noise of 0.2.
            *[_reading("dg-w-shilong", "do", T0 + i * HOUR, 8.0 - 0.5 * i) for i in range(3)],
            # pH rises 0.025 an hour: 0.075 over 3 h, within its noise of 0.1.
            *[_reading("dg-w-shilong", "ph", T0 + i * HOUR, 7.0 + 0.025 * i) for i in range(3)],
            # Water temperature: two points only.
            *[_reading("dg-w-shilong", "water_temp", T0 + i * HOUR, 20.0) for i in (1, 2)],
            # The 05:00 DO mean is outside the 3 hours up to the 10:00 one: not a point.
            _reading("dg-w-shilong", "do", T0 - 3 * HOUR, 1.0),
            # Real-time turbidity every 5 minutes for 3 hours, rising 2 NTU an hour: the newest
            # of each 15 minutes up to the 11:00 reading is fitted, 12 points.
            *[
                _reading(
                    "dg-w-shilong", "turbidity", end - i * FIVE_MINUTES, 20 - i / 6, period_s=0
                )
                for i in range(37)
            ],
        ],
        now=now,
    )
    found = await _situation(rules, now, stations=("dg-w-shilong",))
    [station] = found.stations
    series = {s.reading.parameter: s for s in station.series}
    assert sorted(series) == ["do", "ph", "turbidity", "water_temp"]
    turbidity = series["turbidity"]
    assert (turbidity.reading.time, turbidity.reading.period_s) == (end, 0)
    assert (turbidity.trend.direction, turbidity.trend.points) == ("rising", 12)
    assert turbidity.trend.slope_per_hour == pytest.approx(2.0, abs=1e-9)
    do = series["do"]
    assert (do.reading.time, do.reading.period_s, do.reading.value) == (T0 + 2 * HOUR, 3600, 7.0)
    assert do.reading.age_s == 20 * 60  # from the period's end, 11:00, to 11:20
    assert (do.trend.slope_per_hour, do.trend.direction, do.trend.points) == (-0.5, "falling", 3)
    ph = series["ph"].trend
    assert (ph.direction, ph.points) == ("steady", 3)
    assert ph.slope_per_hour == pytest.approx(0.025, abs=1e-12)
    water_temp = series["water_temp"].trend
    assert (water_temp.slope_per_hour, water_temp.direction, water_temp.points) == (
        None,
        "unknown",
        2,
    )


def _alert(rule_id: str, kind: str, station_id: int, trigger: datetime) -> NewAlert:
    return NewAlert(
        rule_id=rule_id,
        rule_version=1,
        station_id=station_id,
        city=None,
        parameter_id=None,
        kind=kind,
        state="firing",
        severity="warning",
        value=None,
        opened_at=trigger,
        pending_since=None,
        fired_at=trigger,
        resolved_at=None,
        retracted_at=None,
        last_evaluated_at=trigger,
        trigger_time=trigger,
        trigger_period_s=3600,
        last_point_at=trigger,
        clear_point_at=None,
        details={},
        addressed_to=[1, 2, 3],
    )


async def test_arrivals_of_a_seeded_alert_with_exact_etas(rules: AsyncConnectionPool) -> None:
    async with rules.connection() as conn, conn.transaction():
        shilong = await _station_id(conn, "dg-w-shilong")
        humen = await _station_id(conn, "dg-w-humen")
        # A DO breach at Shilong travels; a silent station at Humen does not.
        breach, silent = await insert_alerts(
            conn,
            [
                _alert("do_low", "threshold", shilong, T0),
                _alert("station_silent", "staleness", humen, T0),
            ],
        )
        key, _ = await create_key(conn, agency="gz_eeb", roles=["responder"])
        await acknowledge(
            conn, alert_id=breach, agency="gz_eeb", key_id=key.id, at=T0, comment=None
        )
    # Shilong is 2 km above the split (0.8 m/s: 2500 s); the south branch runs at 0.4 m/s, the
    # north main stream at 0.5, Shiziyang at 0.3 (reached first by the north main stream, at
    # 2500 + 84000 s). gz-w-nansha (183,167 s) is beyond the rule's 48 hours.
    expected = [
        ("dg-w-shijie", 22500.0, "2026-11-20T14:15:00+08:00", 10.0),
        ("dg-w-zhongtang", 46500.0, "2026-11-20T20:55:00+08:00", 24.0),
        ("dg-w-wanjiang", 57500.0, "2026-11-20T23:58:20+08:00", 24.0),
        ("gz-w-xintang", 58500.0, "2026-11-21T00:15:00+08:00", 30.0),
        ("gz-w-dadun", 68500.0, "2026-11-21T03:01:40+08:00", 35.0),
        ("gz-w-lianhuashan", 116500.0, "2026-11-21T16:21:40+08:00", 53.0),
        ("dg-w-shatian", 143166.67, "2026-11-21T23:46:06.666667+08:00", 61.0),
        ("dg-w-humen", 169833.33, "2026-11-22T07:10:33.333333+08:00", 69.0),
    ]
    found = await _situation(rules, T0 + HOUR, area="dongjiang")
    assert [
        (a.alert_id, a.from_station, a.station, round(a.eta_s, 2),
         a.eta.astimezone(CST).isoformat(), round(a.distance_km, 3))
        for a in found.arrivals
    ] == [(breach, "dg-w-shilong", *row) for row in expected]  # fmt: skip
    assert [(a.id, a.acknowledged_by) for a in found.alerts] == [(breach, ["gz_eeb"])]
    # Shiziyang sees the breach arriving from upstream, and its own silent station's alert.
    downstream = await _situation(rules, T0 + HOUR, area="shiziyang")
    assert [a.station for a in downstream.arrivals] == [
        "gz-w-lianhuashan", "dg-w-shatian", "dg-w-humen"
    ]  # fmt: skip
    assert [a.id for a in downstream.alerts] == [silent]


class _CountingCursor(AsyncCursor[Any]):
    executed = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        _CountingCursor.executed += 1
        return await super().execute(*args, **kwargs)


async def test_a_fixed_number_of_queries_whatever_the_stations(
    rules: AsyncConnectionPool,
) -> None:
    now = T0 + 2 * HOUR
    await _store(
        rules,
        [_reading(code, "do", T0 + i * HOUR, 7.0) for code in DONGJIANG_WATER for i in range(2)],
        now=now,
    )
    counts = {}
    one_of_each = Selection(stations=("dg-w-shilong", "gz-a-huangpu"))
    async with rules.connection() as conn:
        catalogue = await read_catalogue(conn)  # the process's snapshot, held in memory
        conn.cursor_factory = _CountingCursor
        try:
            for selection in (one_of_each, Selection(area="dongjiang")):
                _CountingCursor.executed = 0
                found = await situation(conn, catalogue, selection, now=now)
                counts[len(found.stations)] = _CountingCursor.executed
        finally:
            conn.cursor_factory = AsyncCursor
    assert counts == {2: 10, 11: 10}


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
async def client(
    rules: AsyncConnectionPool, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(rules, settings, "dg_eeb") as client:
        yield client


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_area_city_and_stations_select_and_order(client: httpx.AsyncClient) -> None:
    body = await _get(client, "/v1/situation", area="dongjiang")
    assert (body["area"], body["city"], body["stations_asked"]) == ("dongjiang", None, None)
    assert [r["code"] for r in body["reaches"]] == [
        "dongjiang_upper", "north_main", "south_branch", "shiziyang"
    ]  # fmt: skip
    assert body["reaches"][0]["downstream"] == ["north_main", "south_branch"]
    assert [s["code"] for s in body["stations"]] == DONGJIANG_WATER + DONGJIANG_AIR
    assert {s["state"] for s in body["stations"]} == {"silent"}  # no data at all
    assert body["generated_at"].endswith("+08:00")

    body = await _get(client, "/v1/situation", city="guangzhou")
    assert [s["code"] for s in body["stations"]] == [
        "gz-w-xintang", "gz-w-dadun", "gz-w-lianhuashan", "gz-w-nansha", "gz-a-huangge",
        "gz-a-huangpu", "gz-a-maofengshan", "gz-a-nansha", "gz-a-panyu", "gz-a-zengcheng",
    ]  # fmt: skip

    body = await _get(
        client, "/v1/situation", station="gz-a-huangpu, dg-w-humen,dg-w-shilong,gz-a-huangpu"
    )
    assert body["stations_asked"] == ["gz-a-huangpu", "dg-w-humen", "dg-w-shilong"]
    assert [s["code"] for s in body["stations"]] == ["dg-w-shilong", "dg-w-humen", "gz-a-huangpu"]
    shilong = body["stations"][0]
    assert (shilong["medium"], shilong["reach"], shilong["river_km"]) == (
        "water",
        "dongjiang_upper",
        28.0,
    )
    assert (shilong["name_zh"], shilong["aqi"], shilong["series"]) == ("石龙", None, [])


@pytest.mark.parametrize(
    ("params", "status", "code", "message"),
    [
        ({}, 422, "invalid_request", "give exactly one of area, city or station (got none)"),
        (
            {"area": "dongjiang", "city": "dongguan"},
            422,
            "invalid_request",
            "give exactly one of area, city or station (got area and city)",
        ),
        ({"area": "pearl"}, 422, "invalid_request", "area: "),
        ({"city": "shenzhen"}, 422, "invalid_request", "city: "),
        ({"station": "dg-w-humen,,gz-a-huangpu"}, 422, "invalid_request", "station: an empty"),
        ({"station": ",".join(f"s{i}" for i in range(101))}, 422, "invalid_request", "station: "),
        ({"station": "dg-w-humen\x00"}, 422, "invalid_request", "station: "),
        ({"area": "dongjiang", "tz": "Mars"}, 422, "invalid_request", "tz: "),
        (
            {"station": "dg-w-humen,nowhere,atlantis"},
            404,
            "station_not_found",
            "station: no station with code atlantis, nowhere",
        ),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], status: int, code: str, message: str
) -> None:
    response = await client.get("/v1/situation", params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].startswith(message), error["message"]


async def test_aqi_and_water_class_are_those_of_the_quality_api(
    rules: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    now = utcnow()
    hour = hour_start(now) - HOUR
    air = dict(so2=10, no2=30, co=0.8, o3=60, pm10=60, pm25=80)
    await _store(
        rules,
        [
            *[_reading("gz-a-huangpu", code, hour, value) for code, value in air.items()],
            _reading("dg-w-shilong", "do", hour, 5.5),
            _reading("dg-w-shilong", "nh3n", hour, 0.4),
            _reading("dg-w-shilong", "ph", hour, 7.1),
        ],
        now=now,
    )
    body = await _get(client, "/v1/situation", station="gz-a-huangpu,dg-w-shilong", tz="UTC")
    at = body["hour"]
    assert at == hour.isoformat().replace("+00:00", "Z")
    shilong, huangpu = body["stations"]
    aqi = await _get(client, "/v1/aqi", station="gz-a-huangpu", at=at, tz="UTC")
    assert huangpu["aqi"] == aqi
    assert (aqi["aqi"], aqi["primary_pollutants"]) == (119, ["pm25"])
    assert huangpu["water_class"] is None
    water = await _get(client, "/v1/water-quality", station="dg-w-shilong", at=at, tz="UTC")
    assert shilong["water_class"] == water
    assert water["overall_class"] == 3
    assert (shilong["aqi"], shilong["state"], huangpu["state"]) == (None, "reporting", "reporting")
    series = {s["parameter"]: s for s in shilong["series"]}
    assert series["do"]["value"] == 5.5
    assert series["do"]["period_end"] == (hour + HOUR).isoformat().replace("+00:00", "Z")
    assert series["do"]["trend"] == {"slope_per_hour": None, "direction": "unknown", "points": 1}
