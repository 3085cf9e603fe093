"""`GET /v1/limits` on real PostgreSQL: GB 3095 limits and the joint rules' levels by the edition
in force on the date (the 2026-03-01 and 2031-01-01 boundaries, docs/standards.md §1), GB 3838 and
GB 3097 classes with the station's target, and the refusals that name what was wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from core.timeutil import CST, utcnow
from schemas.rules import load_rules
from store.keys import create_key
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with db.connection() as conn, conn.transaction():
        await seed_rules(
            conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=utcnow() - timedelta(days=1)
        )
        _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    transport = httpx.ASGITransport(app=create_app(settings, pool=db))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://envlink", headers={"X-API-Key": plain}
    ) as client:
        yield client


async def _limits(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/limits", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _standard(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (limit["standard"], limit["edition"], limit["averaging"], limit["comparison"],
         limit["limit"], limit["target"])
        for limit in body["limits"]
    ]  # fmt: skip


def _levels(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (level["rule"], level["statistic"], level["standard"], level["severity"],
         level["trigger"], level["clear"])
        for level in body["thresholds"]
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("day", "standard", "edition", "day_limit", "year_limit", "warning"),
    [
        ("2026-02-28", "GB 3095-2012", "2012", 75.0, 35.0, (75.0, 70.0)),
        ("2026-03-01", "GB 3095-2026 (transition limits)", "2026_transition", 60.0, 30.0,
         (60.0, 55.0)),
        ("2030-12-31", "GB 3095-2026 (transition limits)", "2026_transition", 60.0, 30.0,
         (60.0, 55.0)),
        ("2031-01-01", "GB 3095-2026 (final limits)", "2026_final", 50.0, 25.0, (50.0, 45.0)),
    ],
)  # fmt: skip
async def test_pm25_limits_follow_the_edition_in_force_on_the_date(
    client: httpx.AsyncClient,
    day: str,
    standard: str,
    edition: str,
    day_limit: float,
    year_limit: float,
    warning: tuple[float, float],
) -> None:
    body = await _limits(client, station="gz-a-huangpu", parameter="pm25", date=day)
    assert {k: body[k] for k in ("station", "parameter", "medium", "unit", "date")} == {
        "station": "gz-a-huangpu", "parameter": "pm25", "medium": "air", "unit": "ug/m3",
        "date": day,
    }  # fmt: skip
    assert _standard(body) == [
        (standard, edition, "24h", "<=", day_limit, True),
        (standard, edition, "annual", "<=", year_limit, True),
    ]
    assert [(x["level"], x["grade"], x["water_class"]) for x in body["limits"]] == [
        ("Grade II", 2, None)
    ] * 2
    assert _levels(body) == [
        ("pm25_24h", "day_mean", standard, "warning", *warning),
        ("pm25_24h", "day_mean", standard, "critical", 150.0, 140.0),
    ]


async def test_so2_gets_every_averaging_and_every_rule_on_it(client: httpx.AsyncClient) -> None:
    before = await _limits(client, station="dg-a-yuanling", parameter="so2", date="2026-02-28")
    assert [(x["averaging"], x["limit"]) for x in before["limits"]] == [
        ("1h", 500.0), ("24h", 150.0), ("annual", 60.0)
    ]  # fmt: skip
    assert [(x["rule"], x["severity"], x["trigger"]) for x in before["thresholds"]] == [
        ("so2_1h", "warning", 500.0), ("so2_1h", "critical", 650.0),
        ("so2_24h", "warning", 150.0),
    ]  # fmt: skip
    final = await _limits(client, station="dg-a-yuanling", parameter="so2", date="2031-01-01")
    # The final limits give no SO2 annual value (docs/standards.md §3.1 lists none).
    assert [(x["averaging"], x["limit"]) for x in final["limits"]] == [("1h", 150.0), ("24h", 50.0)]
    assert [x["trigger"] for x in final["thresholds"]] == [150.0, 500.0, 50.0]


async def test_the_date_defaults_to_today_in_shanghai(client: httpx.AsyncClient) -> None:
    body = await _limits(client, station="gz-a-huangpu", parameter="o3")
    assert body["date"] == utcnow().astimezone(CST).date().isoformat()
    assert [(x["averaging"], x["limit"]) for x in body["limits"]] == [("1h", 200.0), ("8h", 160.0)]
    assert [(x["rule"], x["statistic"]) for x in body["thresholds"]] == [
        ("o3_1h", "mean_1h"), ("o3_1h", "mean_1h"), ("o3_8h", "o3_max_8h"), ("o3_8h", "o3_max_8h")
    ]  # fmt: skip


async def test_surface_water_gives_every_class_and_marks_the_target(
    client: httpx.AsyncClient,
) -> None:
    nh3n = await _limits(client, station="dg-w-shilong", parameter="nh3n", date="2026-03-01")
    assert nh3n["unit"] == "mg/L"
    assert [(x["level"], x["comparison"], x["limit"], x["target"]) for x in nh3n["limits"]] == [
        ("I", "<=", 0.15, False), ("II", "<=", 0.5, True), ("III", "<=", 1.0, False),
        ("IV", "<=", 1.5, False), ("V", "<=", 2.0, False),
    ]  # fmt: skip
    assert {x["standard"] for x in nh3n["limits"]} == {"GB 3838-2002"}
    assert _levels(nh3n) == [
        ("nh3n_high", "instant", "GB 3838-2002", "warning", 1.5, 1.35),
        ("nh3n_high", "instant", "GB 3838-2002", "critical", 2.0, 1.8),
    ]
    oxygen = await _limits(client, station="dg-w-wanjiang", parameter="do", date="2026-03-01")
    classes = [
        (x["water_class"], x["comparison"], x["limit"], x["target"]) for x in oxygen["limits"]
    ]
    assert classes == [
        (1, ">=", 7.5, False), (2, ">=", 6.0, False), (3, ">=", 5.0, True),
        (4, ">=", 3.0, False), (5, ">=", 2.0, False),
    ]  # fmt: skip
    assert [(x["direction"], x["severity"], x["trigger"]) for x in oxygen["thresholds"]] == [
        ("below", "warning", 3.0), ("below", "critical", 2.0)
    ]  # fmt: skip
    ph = await _limits(client, station="dg-w-shilong", parameter="ph", date="2026-03-01")
    assert [(x["comparison"], x["limit"]) for x in ph["limits"]] == [(">=", 6.0), ("<=", 9.0)] * 5


async def test_sea_water_station_gets_gb3097_and_unlisted_items_none(
    client: httpx.AsyncClient,
) -> None:
    oxygen = await _limits(client, station="gz-w-nansha", parameter="do", date="2026-03-01")
    assert [(x["standard"], x["level"], x["comparison"], x["limit"], x["target"])
            for x in oxygen["limits"]] == [
        ("GB 3097-1997", "1", ">", 6.0, False), ("GB 3097-1997", "2", ">", 5.0, False),
        ("GB 3097-1997", "3", ">", 4.0, True), ("GB 3097-1997", "4", ">", 3.0, False),
    ]  # fmt: skip
    # NH3-N is not GB 3097's inorganic nitrogen: no sea-water limit, the rule's levels only.
    nh3n = await _limits(client, station="gz-w-nansha", parameter="nh3n", date="2026-03-01")
    assert nh3n["limits"] == []
    assert [x["rule"] for x in nh3n["thresholds"]] == ["nh3n_high", "nh3n_high"]
    # Conductivity: no standard; its estuary rule watches a rate of change, not a level.
    conductivity = await _limits(client, station="gz-w-nansha", parameter="conductivity")
    assert (conductivity["limits"], conductivity["thresholds"]) == ([], [])


@pytest.mark.parametrize(
    ("params", "status", "code", "message"),
    [
        ({"station": "gz-a-nowhere", "parameter": "pm25"}, 404, "station_not_found",
         "no station with code 'gz-a-nowhere'"),
        ({"station": "gz-a-huangpu", "parameter": "radon"}, 404, "parameter_not_found",
         "no parameter with code 'radon'"),
        ({"station": "gz-a-huangpu", "parameter": "nh3n"}, 404, "parameter_not_found",
         "station gz-a-huangpu does not measure nh3n"),
    ],
)  # fmt: skip
async def test_unknown_codes_are_named(
    client: httpx.AsyncClient, params: dict[str, str], status: int, code: str, message: str
) -> None:
    response = await client.get("/v1/limits", params=params)
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"parameter": "pm25"}, "station"),
        ({"station": "gz-a-huangpu"}, "parameter"),
        ({"station": "gz-a-huangpu", "parameter": "pm25", "date": "2026-13-01"}, "date"),
        ({"station": "gz-a-huangpu", "parameter": "pm25", "date": "1066-10-14"}, "date"),
    ],
)
async def test_bad_queries_name_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/v1/limits", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"{field}: "), error
