"""GET /v1/aqi and GET /v1/water-quality over real PostgreSQL, from ingested readings through the
rollups: the hour named by its start, both HJ 633 editions, city means, water classes, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from tests.conftest import worker_loop
from tests.integration.conftest import reader_client

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
UNITS = {"co": "mg/m3", "ph": "1", "water_temp": "degC"}
WATER = {"nh3n", "codmn", "tp", "do"}


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "dg_eeb") as client:
        yield client


def _reading(
    station: str,
    parameter: str,
    time: datetime,
    value: float,
    *,
    period_s: int = 3600,
    qc: QC = QC.VALID,
) -> ReadingIn:
    unit = UNITS.get(parameter, "mg/L" if parameter in WATER else "ug/m3")
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


async def _store(pool: AsyncConnectionPool, items: list[ReadingIn]) -> None:
    """Ingest, then let one alert-loop pass bring the rollups up to date."""
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items), result.rejections
    await worker_loop(pool, pipeline).drain()


def _hour_of_six(station: str, hour: datetime, **values: float) -> list[ReadingIn]:
    return [_reading(station, code, hour, value) for code, value in values.items()]


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _inputs(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        i["key"]: (i["concentration"], i["status"], i["sub_index"], i["origin"])
        for i in body["inputs"]
    }


async def test_hourly_aqi_names_the_hour_by_its_start(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    eight = datetime(2026, 11, 20, 8, tzinfo=CST)
    await _store(
        db,
        [
            *_hour_of_six("gz-a-huangpu", eight, so2=10, no2=30, co=0.8, o3=60, pm10=60, pm25=80),
            _reading("gz-a-huangpu", "pm25", eight - HOUR, 20.0),
        ],
    )
    for at in ("2026-11-20T08:00:00+08:00", "2026-11-20T00:00:00Z", "2026-11-20T08:59:59+08:00"):
        body = await _get(client, "/v1/aqi", station="gz-a-huangpu", kind="hourly", at=at)
        assert body["period_start"] == "2026-11-20T08:00:00+08:00", at
        assert body["period_end"] == "2026-11-20T09:00:00+08:00"
        assert (body["aqi"], body["level"], body["category"], body["color"]) == (
            119,
            "III",
            "Lightly polluted",
            "#FF7E00",
        )
        assert (body["category_zh"], body["primary_pollutants"]) == ("轻度污染", ["pm25"])
        assert (body["edition"], body["published"], body["missing"]) == ("2026", True, [])
        assert body["sub_indices"] == {
            "so2": 4, "no2": 15, "co": 8, "o3": 19, "pm10": 58, "pm25": 119
        }  # fmt: skip
        assert _inputs(body)["pm25"] == (80.0, "valid", 119, "reported")
    # The hour 07:00-08:00 is a different hour: only PM2.5 (IAQI 29), so under HJ 633-2026 the
    # AQI of the incomplete set is not published (it is not above 100).
    body = await _get(client, "/v1/aqi", station="gz-a-huangpu", at="2026-11-20T07:00:00+08:00")
    assert (body["aqi"], body["published"], body["level"]) == (None, False, None)
    assert body["sub_indices"]["pm25"] == 29
    assert body["missing"] == ["so2", "no2", "co", "o3", "pm10"]
    assert _inputs(body)["so2"] == (None, "no_data", None, None)


async def test_hourly_aqi_reports_insufficient_data_under_45_minutes(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    nine, ten = datetime(2026, 11, 20, 9, tzinfo=CST), datetime(2026, 11, 20, 10, tzinfo=CST)
    minutes = [
        _reading("gz-a-huangpu", "pm25", hour + timedelta(minutes=m), 150.0 + m % 5, period_s=60)
        for hour, count in ((nine, 44), (ten, 45))
        for m in range(count)
    ]
    await _store(db, minutes)
    short = await _get(client, "/v1/aqi", station="gz-a-huangpu", at="2026-11-20T09:00+08:00")
    assert _inputs(short)["pm25"] == (None, "insufficient_data", None, None)
    assert (short["aqi"], short["published"], short["sub_indices"]["pm25"]) == (None, False, None)
    enough = await _get(client, "/v1/aqi", station="gz-a-huangpu", at="2026-11-20T10:00+08:00")
    mean = sum(150.0 + m % 5 for m in range(45)) / 45  # 151.8 -> 152 -> IAQI 202 (2026)
    assert _inputs(enough)["pm25"] == (mean, "valid", 202, "computed")
    assert (enough["aqi"], enough["published"], enough["level"]) == (202, True, "V")


async def test_hourly_edition_changes_at_2026_03_01_midnight(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    last_2012 = datetime(2026, 2, 28, 23, tzinfo=CST)
    first_2026 = datetime(2026, 3, 1, 0, tzinfo=CST)
    six = {"so2": 10, "no2": 30, "co": 0.8, "o3": 60, "pm10": 60, "pm25": 70}
    o3_before = [
        _reading("gz-a-huangpu", "o3", last_2012 - HOUR * k, value)
        for k, value in zip(range(1, 7), (58, 62, 58, 62, 58, 62), strict=True)
    ]
    await _store(
        db,
        [
            *_hour_of_six("gz-a-huangpu", last_2012, **six),
            *_hour_of_six("gz-a-huangpu", first_2026, **six),
            *o3_before,
        ],
    )
    old = await _get(client, "/v1/aqi", station="gz-a-huangpu", at="2026-02-28T23:00:00+08:00")
    assert (old["edition"], old["aqi"], old["level"], old["primary_pollutants"]) == (
        "2012",
        94,
        "II",
        ["pm25"],
    )
    # 2012 reads PM on its own breakpoints, without rounding, and adds the O3 8-hour moving mean.
    assert old["sub_indices"] == {
        "so2": 4, "no2": 15, "co": 8, "o3": 19, "o3_8h": 30, "pm10": 55, "pm25": 94
    }  # fmt: skip
    assert _inputs(old)["o3_8h"] == (60.0, "valid", 30, None)
    new = await _get(client, "/v1/aqi", station="gz-a-huangpu", at="2026-03-01T00:00:00+08:00")
    assert (new["edition"], new["aqi"], new["level"], new["primary_pollutants"]) == (
        "2026",
        110,
        "III",
        ["pm25"],
    )
    assert new["sub_indices"] == {
        "so2": 4, "no2": 15, "co": 8, "o3": 19, "pm10": 58, "pm25": 110
    }  # fmt: skip
    assert "o3_8h" not in _inputs(new)


def _day_of_six(station: str, day: datetime, pm25: float) -> list[ReadingIn]:
    """24 hourly means averaging so2 10, no2 30, co 1.0, pm10 60 and `pm25`; O3 150 over 12-20."""
    items = []
    for h in range(24):
        sign = 1 if h % 2 else -1
        o3 = (150.0 if 12 <= h < 20 else 60.0) + 2 * sign
        values = {
            "so2": 10.0 + sign,
            "no2": 30.0 + sign,
            "co": 1.0 + 0.5 * sign,
            "o3": o3,
            "pm10": 60.0 + 2 * sign,
            "pm25": pm25 + 2 * sign,
        }
        items += _hour_of_six(station, day + HOUR * h, **values)
    return items


async def test_daily_aqi_of_a_cst_date_on_both_sides_of_the_edition_change(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _store(
        db,
        _day_of_six("gz-a-huangpu", datetime(2026, 2, 28, tzinfo=CST), pm25=58.0)
        + _day_of_six("gz-a-huangpu", datetime(2026, 3, 1, tzinfo=CST), pm25=58.0),
    )
    old = await _get(client, "/v1/aqi", station="gz-a-huangpu", kind="daily", at="2026-02-28")
    assert (old["day"], old["period_start"], old["period_end"]) == (
        "2026-02-28",
        "2026-02-28T00:00:00+08:00",
        "2026-03-01T00:00:00+08:00",
    )
    assert (old["edition"], old["aqi"], old["primary_pollutants"]) == ("2012", 92, ["o3_8h_max"])
    assert old["sub_indices"] == {
        "so2": 10, "no2": 38, "co": 25, "o3_1h_max": 48, "o3_8h_max": 92, "pm10": 55, "pm25": 79
    }  # fmt: skip
    assert _inputs(old)["o3_8h_max"] == (150.0, "valid", 92, None)
    assert _inputs(old)["o3_1h_max"] == (152.0, "valid", 48, None)
    assert _inputs(old)["pm25"] == (58.0, "valid", 79, "computed")
    # A time names its Asia/Shanghai date: 2026-02-28T16:00Z is 2026-03-01 00:00 +08:00.
    new = await _get(
        client, "/v1/aqi", station="gz-a-huangpu", kind="daily", at="2026-02-28T16:00:00Z"
    )
    assert (new["day"], new["edition"], new["aqi"], new["primary_pollutants"]) == (
        "2026-03-01",
        "2026",
        96,
        ["pm25"],
    )
    assert new["sub_indices"] == {
        "so2": 10, "no2": 38, "co": 25, "o3_8h_max": 92, "pm10": 58, "pm25": 96
    }  # fmt: skip


async def test_daily_aqi_with_19_hours_is_insufficient_data(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    day = datetime(2026, 11, 21, tzinfo=CST)
    hours = [_reading("gz-a-panyu", "pm25", day + HOUR * h, 200.0 + (h % 2)) for h in range(19)]
    await _store(db, hours)
    body = await _get(client, "/v1/aqi", station="gz-a-panyu", kind="daily", at="2026-11-21")
    assert _inputs(body)["pm25"] == (None, "insufficient_data", None, None)
    assert (body["aqi"], body["published"]) == (None, False)
    await _store(db, [_reading("gz-a-panyu", "pm25", day + HOUR * 19, 201.0)])
    body = await _get(client, "/v1/aqi", station="gz-a-panyu", kind="daily", at="2026-11-21")
    # 200.5 rounds half to even (HJ 633-2026) to 200: IAQI 250, not ceil(250.5) = 251; it is
    # published as 200 too.
    assert _inputs(body)["pm25"] == (200.0, "valid", 250, "computed")
    assert (body["aqi"], body["published"], body["level"]) == (250, True, "V")


async def test_city_aqi_averages_concentrations_of_non_background_stations(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    ten = datetime(2026, 11, 20, 10, tzinfo=CST)
    await _store(
        db,
        [
            _reading("gz-a-huangpu", "pm25", ten, 100.0),
            _reading("gz-a-panyu", "pm25", ten, 50.0),
            _reading("gz-a-maofengshan", "pm25", ten, 500.0),  # background: left out
        ],
    )
    body = await _get(client, "/v1/aqi", city="guangzhou", at="2026-11-20T10:00:00+08:00")
    assert body["stations"] == [
        "gz-a-huangge",
        "gz-a-huangpu",
        "gz-a-nansha",
        "gz-a-panyu",
        "gz-a-zengcheng",
    ]
    pm25 = next(i for i in body["inputs"] if i["key"] == "pm25")
    assert (pm25["concentration"], pm25["stations"], pm25["sub_index"]) == (75.0, 2, 114)
    # Mean concentration first: AQI 114, not the mean of the stations' AQIs (137 and 80).
    assert (body["city"], body["aqi"], body["published"], body["primary_pollutants"]) == (
        "guangzhou",
        114,
        True,
        ["pm25"],
    )
    assert body["missing"] == ["so2", "no2", "co", "o3", "pm10"]
    dongguan = await _get(client, "/v1/aqi", city="dongguan", at="2026-11-20T10:00:00+08:00")
    assert (dongguan["aqi"], dongguan["published"]) == (None, False)
    assert {i["status"] for i in dongguan["inputs"]} == {"no_data"}


def _items(body: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {
        i["parameter"]: (i["value"], i["status"], i["item_class"], i["class_label"], i["time"])
        for i in body["items"]
    }


async def _water_day(pool: AsyncConnectionPool) -> None:
    eight = datetime(2026, 11, 20, 8, tzinfo=CST)
    station = "gz-w-dadun"
    await _store(
        pool,
        [
            _reading(station, "nh3n", eight, 0.75, period_s=0),
            _reading(station, "codmn", eight, 3.0, period_s=0),
            _reading(station, "tp", eight, 0.125, period_s=0),
            _reading(station, "do", eight, 7.0, period_s=0),
            _reading(station, "ph", eight, 7.5, period_s=0),
            _reading(station, "water_temp", eight, 20.0, period_s=0),
            _reading(station, "do", eight + HOUR, 6.5, period_s=0),
            _reading(station, "ph", eight + HOUR, 7.75, period_s=0),
            _reading(station, "water_temp", eight + HOUR, 20.5, period_s=0),
            _reading(station, "ph", eight + 2 * HOUR, 9.9, period_s=0, qc=QC.MAINTENANCE),
            _reading(station, "nh3n", eight + 4 * HOUR, 0.25, period_s=0),
            _reading(station, "codmn", eight + 4 * HOUR, 5.0, period_s=0),
            _reading(station, "tp", eight + 4 * HOUR, 0.0625, period_s=0),
        ],
    )


LAB_ITEMS = [
    "cod", "bod5", "cu", "zn", "fluoride", "se", "as", "hg", "cd", "cr6", "pb", "cn", "phenol",
    "petroleum", "las", "sulfide",
]  # fmt: skip


async def test_water_quality_of_a_sample_uses_each_items_cadence(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _water_day(db)
    body = await _get(
        client, "/v1/water-quality", station="gz-w-dadun", at="2026-11-20T09:20+08:00"
    )
    assert (body["kind"], body["period_start"], body["standard"], body["water_body"]) == (
        "sample",
        "2026-11-20T09:00:00+08:00",
        "GB 3838-2002",
        "river",
    )
    assert (body["target_class"], body["target_label"]) == (2, "II")
    assert (body["overall_class"], body["label"], body["description"]) == (3, "III", "good")
    assert (body["description_zh"], body["meets_target"]) == ("良好", False)
    items = _items(body)
    # The 08:00 nutrients stand at 09:00 (4-hourly cadence); DO and pH are the 09:00 values.
    assert items["nh3n"] == (0.75, "valid", 3, "III", "2026-11-20T08:00:00+08:00")
    assert items["tp"] == (0.125, "valid", 3, "III", "2026-11-20T08:00:00+08:00")
    assert items["codmn"] == (3.0, "valid", 2, "II", "2026-11-20T08:00:00+08:00")
    assert items["do"] == (6.5, "valid", 2, "II", "2026-11-20T09:00:00+08:00")
    assert items["ph"] == (7.75, "valid", 1, "I", "2026-11-20T09:00:00+08:00")
    assert items["water_temp"] == (20.5, "valid", None, None, "2026-11-20T09:00:00+08:00")
    assert items["conductivity"] == (None, "no_data", None, None, None)
    assert body["limiting"] == [
        {"parameter": "nh3n", "item_class": 3, "class_label": "III", "value": 0.75,
         "limit": 0.5, "exceedance": 0.5},
        {"parameter": "tp", "item_class": 3, "class_label": "III", "value": 0.125,
         "limit": 0.1, "exceedance": 0.25},
    ]  # fmt: skip
    assert (body["not_measured"], body["insufficient_data"]) == (LAB_ITEMS, [])
    # At 10:00 the only pH is a maintenance reading: insufficient data, not an old value.
    body = await _get(
        client, "/v1/water-quality", station="gz-w-dadun", at="2026-11-20T10:00+08:00"
    )
    assert _items(body)["ph"] == (
        None,
        "insufficient_data",
        None,
        None,
        "2026-11-20T10:00:00+08:00",
    )
    assert _items(body)["do"] == (None, "no_data", None, None, None)
    assert body["insufficient_data"] == ["ph"]
    assert body["not_measured"] == ["do", *LAB_ITEMS]
    assert (body["overall_class"], body["meets_target"]) == (3, False)


async def test_water_quality_of_a_day_uses_the_daily_means(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _water_day(db)
    body = await _get(client, "/v1/water-quality", station="gz-w-dadun", at="2026-11-20")
    assert (body["kind"], body["day"], body["period_end"]) == (
        "daily",
        "2026-11-20",
        "2026-11-21T00:00:00+08:00",
    )
    items = _items(body)
    assert items["nh3n"] == (0.5, "valid", 2, "II", None)  # at the class II limit
    assert items["codmn"] == (4.0, "valid", 2, "II", None)
    assert items["tp"] == (0.094, "valid", 2, "II", None)  # 0.09375, published to 0.001
    assert items["do"] == (6.75, "valid", 2, "II", None)
    # The maintenance pH is left out: 7.625, published half to even to 0.01.
    assert items["ph"] == (7.62, "valid", 1, "I", None)
    assert (body["overall_class"], body["label"], body["meets_target"]) == (2, "II", True)
    assert (body["description"], body["limiting"]) == ("excellent", [])


async def test_sea_water_station_uses_gb3097(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    eight = datetime(2026, 11, 20, 8, tzinfo=CST)
    await _store(
        db,
        [
            _reading("gz-w-nansha", "do", eight, 5.5, period_s=0),
            _reading("gz-w-nansha", "ph", eight, 8.0, period_s=0),
            _reading("gz-w-nansha", "nh3n", eight, 3.0, period_s=0),
        ],
    )
    body = await _get(
        client, "/v1/water-quality", station="gz-w-nansha", at="2026-11-20T08:00+08:00"
    )
    assert (body["standard"], body["target_class"], body["target_label"]) == (
        "GB 3097-1997",
        3,
        "3",
    )
    assert (body["overall_class"], body["label"], body["meets_target"]) == (2, "2", True)
    # NH3-N is not GB 3097's inorganic nitrogen: it is never classified here.
    assert _items(body)["nh3n"][:3] == (3.0, "valid", None)
    assert "din" in body["not_measured"]


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "message"),
    [
        ("/v1/aqi", {"station": "gz-a-nowhere"}, 404, "station_not_found",
         "no station with code 'gz-a-nowhere'"),
        ("/v1/water-quality", {"station": "gz-w-nowhere"}, 404, "station_not_found",
         "no station with code 'gz-w-nowhere'"),
        ("/v1/water-quality", {"station": "gz-a-huangpu"}, 400, "invalid_input",
         "station gz-a-huangpu is an air station; water quality needs a water station"
         " (ask /v1/aqi for air stations)"),
        ("/v1/aqi", {"station": "gz-w-dadun"}, 400, "invalid_input",
         "station gz-w-dadun is a water station; the AQI needs an air station"
         " (ask /v1/water-quality for water stations)"),
        ("/v1/aqi", {"station": "gz-a-huangpu", "at": "yesterday"}, 400, "invalid_input",
         "at: 'yesterday' is not an ISO 8601 / RFC 3339 time"),
        ("/v1/aqi", {"station": "gz-a-huangpu", "kind": "daily", "at": "2026-13-01"}, 400,
         "invalid_input", "at: '2026-13-01' is not a date (YYYY-MM-DD) or a time"),
        ("/v1/water-quality", {"station": "gz-w-dadun", "at": "08:00"}, 400, "invalid_input",
         "at: '08:00' is not an ISO 8601 / RFC 3339 time"),
        ("/v1/aqi", {}, 422, "invalid_request",
         "give exactly one of station=<air station code> or city=<city>"),
        ("/v1/aqi", {"station": "gz-a-huangpu", "city": "guangzhou"}, 422, "invalid_request",
         "give exactly one of station=<air station code> or city=<city>"),
    ],
)  # fmt: skip
async def test_bad_requests_say_what_was_wrong(
    client: httpx.AsyncClient,
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
    message: str,
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/aqi", {"station": "gz-a-huangpu", "kind": "weekly"}, "kind"),
        ("/v1/aqi", {"city": "shenzhen"}, "city"),
        ("/v1/water-quality", {}, "station"),
        ("/v1/water-quality", {"station": "gz-w-dadun", "kind": "hourly"}, "kind"),
    ],
)
async def test_invalid_query_values_name_the_field(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field}: ")


async def test_quality_endpoints_need_a_key(settings: Settings, db: AsyncConnectionPool) -> None:
    transport = httpx.ASGITransport(app=create_app(settings, pool=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://envlink") as anonymous:
        for path in ("/v1/aqi?station=gz-a-huangpu", "/v1/water-quality?station=gz-w-dadun"):
            assert (await anonymous.get(path)).status_code == 401
