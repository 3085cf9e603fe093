"""Rules and alerts API on real PostgreSQL: versions, timelines, acks per agency, maintenance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from schemas.readings import ReadingIn
from schemas.rules import load_rules
from store.keys import create_key
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR
from tests.integration.test_engine import HOUR, T0, Feed, _air, _rule, _rules


async def _key(pool: AsyncConnectionPool, agency: str, *roles: str) -> tuple[int, dict[str, str]]:
    async with pool.connection() as conn:
        key, plain = await create_key(conn, agency=agency, roles=list(roles))
    return key.id, {"Authorization": f"Bearer {plain}"}


async def _seed(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn, conn.transaction():
        await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=T0)


async def test_rules_are_listed_with_version_and_author(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    _, reader = await _key(db, "dg_eeb", "reader")
    response = await client.get("/v1/rules", headers=reader)
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 19
    no2 = next(item for item in items if item["id"] == "no2_1h")
    assert {k: no2[k] for k in ("version", "changed_via", "changed_by", "changed_at")} == {
        "version": 1,
        "changed_via": "config",
        "changed_by": "config:thresholds.yaml",
        "changed_at": "2026-11-20T08:00:00+08:00",
    }
    assert no2["definition"]["ladders"][0]["levels"][0]["trigger"] == 200


async def test_only_the_joint_office_changes_a_rule_and_each_change_is_a_version(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    _, writer = await _key(db, "gz_eeb", "writer", "responder", "admin")
    office_id, office = await _key(db, "joint_office", "joint_office")
    current = (await client.get("/v1/rules/do_low", headers=writer)).json()["definition"]
    body = {"definition": {**current, "for_s": 600}, "comment": "damp out sensor noise"}
    refused = await client.put("/v1/rules/do_low", json=body, headers=writer)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    changed = await client.put("/v1/rules/do_low", json=body, headers=office)
    assert changed.status_code == 200
    answer = changed.json()
    assert (answer["version"], answer["changed_via"], answer["changed_by"], answer["comment"]) == (
        2,
        "api",
        f"joint_office:key{office_id}",
        "damp out sensor noise",
    )
    again = await client.put("/v1/rules/do_low", json=body, headers=office)
    assert again.json()["version"] == 2  # the same definition adds no version
    history = (await client.get("/v1/rules/do_low/versions", headers=writer)).json()["items"]
    assert [(v["version"], v["definition"]["for_s"]) for v in history] == [(1, 0), (2, 600)]


@pytest.mark.parametrize(
    ("change", "status", "code", "message"),
    [
        (
            {"id": "other"},
            400,
            "invalid_input",
            "the definition's id 'other' differs from the path's 'do_low'",
        ),
        ({"parameter": "oxygen"}, 400, "invalid_input", "rule do_low: unknown parameter 'oxygen'"),
        (
            {
                "ladders": [
                    {
                        "standard": "s",
                        "levels": [{"severity": "warning", "trigger": 3, "clear": 2, "basis": "x"}],
                    }
                ]
            },
            422,
            "invalid_request",
            "definition: Value error, rule do_low: warning clear 2.0 must be at or above its"
            " trigger 3.0",
        ),
    ],
)
async def test_a_bad_rule_change_is_refused_with_what_is_wrong(
    db: AsyncConnectionPool,
    client: httpx.AsyncClient,
    change: dict[str, Any],
    status: int,
    code: str,
    message: str,
) -> None:
    await _seed(db)
    _, office = await _key(db, "joint_office", "joint_office")
    current = (await client.get("/v1/rules/do_low", headers=office)).json()["definition"]
    response = await client.put(
        "/v1/rules/do_low", json={"definition": {**current, **change}}, headers=office
    )
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": message}}
    versions = (await client.get("/v1/rules/do_low/versions", headers=office)).json()["items"]
    assert len(versions) == 1


async def test_alerts_list_filters_pages_and_shows_the_timeline(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rules(
        db,
        _rule("no2_instant", scope={"medium": "air"}),
    )
    feed = Feed(db)
    await feed.send(_air(250, T0), _air(260, T0, station="dg-a-humen"), at=T0)
    await feed.send(_air(150, T0 + HOUR), at=T0 + HOUR)
    _, reader = await _key(db, "gz_eeb", "reader")
    everything = (await client.get("/v1/alerts", headers=reader)).json()
    assert [
        (a["id"], a["station"], a["city"], a["area"], a["state"]) for a in everything["items"]
    ] == [
        (2, "dg-a-humen", "dongguan", "shiziyang", "firing"),
        (1, "gz-a-huangpu", "guangzhou", "dongjiang", "resolved"),
    ]
    firing = await client.get("/v1/alerts?state=firing&city=dongguan", headers=reader)
    assert [a["id"] for a in firing.json()["items"]] == [2]
    assert (await client.get("/v1/alerts?area=dongjiang", headers=reader)).json()["items"][0][
        "id"
    ] == 1
    since = (T0 + 2 * HOUR).isoformat()
    live = await client.get("/v1/alerts", params={"since": since}, headers=reader)
    assert [a["id"] for a in live.json()["items"]] == [2]
    page = (await client.get("/v1/alerts?limit=1", headers=reader)).json()
    assert [a["id"] for a in page["items"]] == [2]
    rest = (
        await client.get(f"/v1/alerts?limit=1&cursor={page['next_cursor']}", headers=reader)
    ).json()
    assert ([a["id"] for a in rest["items"]], rest["next_cursor"]) == ([1], None)
    detail = (await client.get("/v1/alerts/1", headers=reader)).json()
    assert (detail["rule_version"], detail["trigger_time"], detail["value"]) == (
        1,
        "2026-11-20T08:00:00+08:00",
        150.0,
    )
    assert [(e["kind"], e["state"], e["value"]) for e in detail["timeline"]] == [
        ("firing", "firing", 250.0),
        ("resolved", "resolved", 150.0),
    ]
    assert detail["addressed_to"] == ["dg_eeb", "gz_eeb", "joint_office"]
    missing = await client.get("/v1/alerts/99", headers=reader)
    assert (missing.status_code, missing.json()["error"]["message"]) == (404, "no alert with id 99")
    bad = await client.get("/v1/alerts?state=open", headers=reader)
    assert bad.status_code == 422


async def test_acknowledge_once_per_agency_with_the_responder_role(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rules(db, _rule("no2_instant"))
    await Feed(db).send(_air(250, T0), at=T0)
    _, reader = await _key(db, "gz_eeb", "reader")
    gz_id, gz = await _key(db, "gz_eeb", "responder")
    dg_id, dg = await _key(db, "dg_eeb", "responder")
    refused = await client.post("/v1/alerts/1/ack", headers=reader)
    assert refused.status_code == 403
    first = await client.post("/v1/alerts/1/ack", json={"comment": "crew sent"}, headers=gz)
    assert (first.status_code, first.json()["created"]) == (200, True)
    repeat = await client.post("/v1/alerts/1/ack", json={"comment": "again"}, headers=gz)
    assert repeat.json()["created"] is False
    other = await client.post("/v1/alerts/1/ack", headers=dg)
    alert = other.json()["alert"]
    assert alert["acknowledged_by"] == ["dg_eeb", "gz_eeb"]
    assert [(a["agency"], a["comment"]) for a in alert["acks"]] == [
        ("gz_eeb", "crew sent"),
        ("dg_eeb", None),
    ]
    acks = [e for e in alert["timeline"] if e["kind"] == "acknowledged"]
    assert [(e["details"]["agency"], e["details"]["key_id"], e["state"]) for e in acks] == [
        ("gz_eeb", gz_id, "firing"),
        ("dg_eeb", dg_id, "firing"),
    ]
    missing = await client.post("/v1/alerts/42/ack", headers=gz)
    assert missing.status_code == 404


async def test_a_pre_alert_is_acknowledged_only_by_the_agency_it_is_addressed_to(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    reading = ReadingIn(station="dg-w-zhongtang", parameter="nh3n", time=T0, value=1.7, unit="mg/L")
    await Feed(db).send(reading, at=T0 + timedelta(minutes=5))
    _, reader = await _key(db, "dg_eeb", "reader")
    pre = (await client.get("/v1/alerts?kind=propagation", headers=reader)).json()["items"]
    # NH3-N 1.7 is class V at a class II section: water_class_sample fires critical (and
    # nh3n_high warning); the louder source sets the pre-alerts' severity (critical -> warning).
    assert [
        (a["station"], a["addressed_to"], a["severity"], a["details"]["eta_s"]) for a in pre[::-1]
    ] == [
        ("gz-w-xintang", ["gz_eeb"], "warning", 12000),
        ("gz-w-dadun", ["gz_eeb"], "warning", 22000),
        ("gz-w-lianhuashan", ["gz_eeb"], "warning", 70000),
        ("dg-w-shatian", ["dg_eeb"], "warning", 96667),
        ("dg-w-humen", ["dg_eeb"], "warning", 123333),
        ("gz-w-nansha", ["gz_eeb"], "warning", 136667),
    ]
    sources = {(a["details"]["source_rule"], a["source_alert_id"]) for a in pre}
    water = (await client.get("/v1/alerts?kind=water_class", headers=reader)).json()["items"]
    assert sources == {("water_class_sample", water[0]["id"])}
    xintang = next(a for a in pre if a["station"] == "gz-w-xintang")
    _, dg = await _key(db, "dg_eeb", "responder")
    refused = await client.post(f"/v1/alerts/{xintang['id']}/ack", headers=dg)
    assert refused.json() == {
        "error": {
            "code": "forbidden",
            "message": f"alert {xintang['id']} is not addressed to dg_eeb, so dg_eeb cannot"
            " acknowledge it",
        }
    }
    _, gz = await _key(db, "gz_eeb", "responder")
    assert (await client.post(f"/v1/alerts/{xintang['id']}/ack", headers=gz)).json()["created"]


async def test_maintenance_windows_belong_to_the_station_owner(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    _, gz_writer = await _key(db, "gz_eeb", "writer")
    _, gz_reader = await _key(db, "gz_eeb", "reader")
    _, dg_admin = await _key(db, "dg_eeb", "admin")
    body = {
        "starts_at": "2026-11-20T09:00:00",
        "ends_at": "2026-11-20T11:00:00+08:00",
        "reason": "PM2.5 analyser calibration",
    }
    created = await client.post(
        "/v1/stations/gz-a-huangpu/maintenance", json=body, headers=gz_writer
    )
    assert created.status_code == 201
    assert {
        k: v for k, v in created.json().items() if k not in ("id", "created_by", "created_at")
    } == {
        "station": "gz-a-huangpu",
        "starts_at": "2026-11-20T09:00:00+08:00",
        "ends_at": "2026-11-20T11:00:00+08:00",
        "reason": "PM2.5 analyser calibration",
    }
    other = await client.post("/v1/stations/gz-a-huangpu/maintenance", json=body, headers=dg_admin)
    assert other.json()["error"]["message"] == (
        "station gz-a-huangpu belongs to gz_eeb; your key is dg_eeb's"
    )
    reader = await client.post(
        "/v1/stations/gz-a-huangpu/maintenance", json=body, headers=gz_reader
    )
    assert reader.status_code == 403
    backwards = {**body, "ends_at": "2026-11-20T08:00:00+08:00"}
    wrong = await client.post(
        "/v1/stations/gz-a-huangpu/maintenance", json=backwards, headers=gz_writer
    )
    assert (wrong.status_code, wrong.json()["error"]["message"]) == (
        400,
        "ends_at must be after starts_at (the window is [starts_at, ends_at))",
    )
    unknown = await client.post("/v1/stations/nowhere/maintenance", json=body, headers=gz_writer)
    assert unknown.status_code == 404
    listed = (await client.get("/v1/stations/gz-a-huangpu/maintenance", headers=gz_reader)).json()
    assert [w["reason"] for w in listed["items"]] == ["PM2.5 analyser calibration"]
