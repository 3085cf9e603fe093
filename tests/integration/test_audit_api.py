"""The audit log: every write through the API leaves one entry, in the write's transaction."""

from __future__ import annotations

import httpx
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from store.keys import create_key
from tests.integration.test_engine import T0, Feed, _air, _rule, _rules


async def _key(pool: AsyncConnectionPool, agency: str, *roles: str) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency=agency, roles=list(roles))
    return {"Authorization": f"Bearer {plain}"}


SUBSCRIPTION = {
    "code": "gz-robot",
    "channel": "wecom",
    "target": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=robot-secret",
    "filters": {"min_severity": "warning"},
}


async def test_every_write_is_in_the_audit_log_with_key_agency_and_change(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _rules(db, _rule("no2_instant"))
    await Feed(db).send(_air(250, T0), at=T0)
    gz = await _key(db, "gz_eeb", "writer", "responder", "admin")  # key 1
    office = await _key(db, "joint_office", "joint_office", "admin")  # key 2
    push = {"readings": [
        {"station": "gz-a-huangpu", "parameter": "no2", "time": "2026-11-20T09:00:00+08:00",
         "value": 41.0, "unit": "ug/m3"},
        {"station": "gz-a-huangpu", "parameter": "no2", "time": "2026-11-20T09:01:00+08:00",
         "value": 41.0, "unit": "furlongs"},
    ]}  # fmt: skip
    window = {"starts_at": "2026-11-20T09:00:00", "ends_at": "2026-11-20T11:00:00", "reason": "x"}
    silence = {"stations": ["gz-a-huangpu"], "ends_at": "2099-01-01T00:00:00", "comment": "x"}
    rule = (await client.get("/v1/rules/no2_instant", headers=gz)).json()["definition"]
    steps: list[tuple[str, str, object, dict[str, str]]] = [
        ("POST", "/v1/readings", push, gz),
        ("POST", "/v1/alerts/1/ack", {"comment": "on it"}, gz),
        ("POST", "/v1/alerts/1/ack", {"comment": "twice"}, gz),  # no change, no entry
        ("POST", "/v1/stations/gz-a-huangpu/maintenance", window, gz),
        ("POST", "/v1/silences", silence, gz),
        ("DELETE", "/v1/silences/1", None, gz),
        ("POST", "/v1/subscriptions", SUBSCRIPTION, gz),
        ("PUT", "/v1/subscriptions/1", {**SUBSCRIPTION, "language": "en"}, gz),
        ("DELETE", "/v1/subscriptions/1", None, gz),
        ("PUT", "/v1/rules/no2_instant", {"definition": {**rule, "for_s": 60}}, office),
        ("POST", "/v1/keys", {"agency": "dg_eeb", "roles": ["reader"]}, office),
        ("DELETE", "/v1/keys/3", None, office),
    ]
    for method, path, body, headers in steps:
        answer = await client.request(method, path, json=body, headers=headers)
        assert answer.status_code in (200, 201), (path, answer.text)
    page = await client.get("/v1/audit?limit=100&tz=UTC", headers=office)
    assert page.status_code == 200
    entries = page.json()["items"][::-1]
    assert [(e["key_id"], e["agency"], e["action"], e["target"]) for e in entries] == [
        (1, "gz_eeb", "readings.push", "source:push:gz_eeb"),
        (1, "gz_eeb", "alert.ack", "alert:1"),
        (1, "gz_eeb", "maintenance.create", "maintenance:1"),
        (1, "gz_eeb", "silence.create", "silence:1"),
        (1, "gz_eeb", "silence.end", "silence:1"),
        (1, "gz_eeb", "subscription.create", "subscription:1"),
        (1, "gz_eeb", "subscription.change", "subscription:1"),
        (1, "gz_eeb", "subscription.delete", "subscription:1"),
        (2, "joint_office", "rule.change", "rule:no2_instant"),
        (2, "joint_office", "key.create", "key:3"),
        (2, "joint_office", "key.revoke", "key:3"),
    ]
    by_action = {e["action"]: e for e in entries}
    assert (by_action["readings.push"]["before"], by_action["readings.push"]["after"]) == (
        None,
        {"received": 2, "accepted": 1, "duplicate": 0, "revised": 0, "rejected": 1,
         "stations": ["gz-a-huangpu"]},
    )  # fmt: skip
    assert by_action["alert.ack"]["after"] == {"agency": "gz_eeb", "comment": "on it"}
    assert by_action["maintenance.create"]["after"]["starts_at"] == "2026-11-20T01:00:00Z"
    assert (by_action["silence.end"]["before"]["active"], by_action["silence.end"]["after"]
            ["active"]) == (True, False)  # fmt: skip
    changed = by_action["subscription.change"]
    assert (changed["before"]["language"], changed["after"]["language"]) == ("zh", "en")
    assert changed["after"]["target"] == (
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***"
    )
    assert "robot-secret" not in page.text
    assert by_action["subscription.delete"]["after"] is None
    rule_change = by_action["rule.change"]
    assert (rule_change["before"]["version"], rule_change["after"]["version"]) == (1, 2)
    assert rule_change["after"]["definition"]["for_s"] == 60
    assert (by_action["key.revoke"]["before"]["state"], by_action["key.revoke"]["after"]
            ["state"]) == ("active", "revoked")  # fmt: skip
    assert entries[0]["at"].endswith("Z")


async def test_the_audit_log_filters_and_pages(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    office = await _key(db, "joint_office", "admin")  # key 1
    for agency in ("gz_eeb", "dg_eeb", "gz_eeb"):
        body = {"agency": agency, "roles": ["reader"]}
        assert (await client.post("/v1/keys", json=body, headers=office)).status_code == 201
    await client.delete("/v1/keys/3", headers=office)

    async def targets(query: str) -> list[str]:
        answer = await client.get(f"/v1/audit?{query}", headers=office)
        assert answer.status_code == 200, answer.text
        return [e["target"] for e in answer.json()["items"]]

    assert await targets("action=key.revoke") == ["key:3"]
    assert await targets("target=key:2") == ["key:2"]
    assert await targets("target=key") == ["key:3", "key:4", "key:3", "key:2"]
    assert await targets("agency=joint_office&action=key.create") == ["key:4", "key:3", "key:2"]
    assert await targets("agency=gz_eeb") == []
    assert await targets("end=2000-01-01T00:00:00") == []
    assert len(await targets("start=2000-01-01T00:00:00")) == 4
    first = (await client.get("/v1/audit?limit=3", headers=office)).json()
    assert [e["target"] for e in first["items"]] == ["key:3", "key:4", "key:3"]
    rest = (await client.get(f"/v1/audit?limit=3&cursor={first['next_cursor']}",
                             headers=office)).json()  # fmt: skip
    assert ([e["target"] for e in rest["items"]], rest["next_cursor"]) == (["key:2"], None)
    for query, message in [
        ("action=key.delete", "action: Input should be 'readings.push'"),
        ("start=2026-01-02T00:00:00&end=2026-01-01T00:00:00", "end: must be after start"),
        ("cursor=nope", "cursor: not a cursor this API issued"),
    ]:
        answer = await client.get(f"/v1/audit?{query}", headers=office)
        assert answer.status_code in (400, 422)
        assert answer.json()["error"]["message"].startswith(message), answer.text


async def test_only_admins_and_the_joint_office_read_the_audit_log(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    for roles in (("admin",), ("joint_office",)):
        answer = await client.get("/v1/audit", headers=await _key(db, "dg_eeb", *roles))
        assert answer.status_code == 200
    reader = await _key(db, "dg_eeb", "reader", "writer", "responder")
    refused = await client.get("/v1/audit", headers=reader)
    assert (refused.status_code, refused.json()["error"]["message"]) == (
        403,
        "the audit log needs the admin or joint_office role;"
        " the key has ['reader', 'responder', 'writer']",
    )


async def test_a_write_whose_audit_entry_fails_is_not_kept(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    transport = httpx.ASGITransport(app=create_app(settings, pool=db), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://envlink")
    responder = await _key(db, "dg_eeb", "responder")
    body = {"stations": ["dg-a-humen"], "ends_at": "2099-01-01T00:00:00", "comment": "x"}
    async with db.connection() as conn:
        await conn.execute(
            "ALTER TABLE audit_log ADD CONSTRAINT test_refuse CHECK (action <> 'silence.create')"
        )
    try:
        async with client:
            failed = await client.post("/v1/silences", json=body, headers=responder)
        assert failed.status_code == 500
    finally:
        async with db.connection() as conn:
            await conn.execute("ALTER TABLE audit_log DROP CONSTRAINT test_refuse")
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM silence")
        assert await cur.fetchone() == (0,)
