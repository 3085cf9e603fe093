"""The notification stage on real PostgreSQL, fed by the real engine, with a controllable clock.

Readings go through the ingest pipeline and the alert loop (tests.integration.test_engine.Feed),
the engine writes alert events, and the stage (alerts/notify/stage.py) turns them into outbox
rows as of the time the test sets. Also: the durable cursor (crash in a round, events committed
out of id order), subscriptions seeded from config and managed through the admin API, silences.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.notify import stage as stage_module
from alerts.notify.stage import NotificationStage
from core.errors import InvalidInput
from schemas.common import QC
from schemas.notifications import SubscriptionIn, SubscriptionSet, load_subscriptions
from store.alerts import NewEvent, acknowledge, insert_events
from store.keys import create_key
from store.silences import create_silence
from store.subscriptions import create_subscription, delete_subscription, seed_subscriptions
from tests.conftest import CONFIG_DIR
from tests.integration.test_engine import HOUR, T0, Feed, _air, _query, _rule, _rules

S = timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def _subscribe(pool: AsyncConnectionPool, code: str, agency: str, **fields: Any) -> int:
    spec = SubscriptionIn.model_validate(
        {"code": code, "channel": "webhook", "target": f"http://127.0.0.1:9/{code}", **fields}
    )
    async with pool.connection() as conn, conn.transaction():
        row = await create_subscription(conn, agency=agency, spec=spec, via="api", at=T0)
    return row.id


class World:
    """The engine fed through ingest, and a stage whose clock the test moves."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.feed = Feed(pool)
        self.clock = Clock()
        self.stage = NotificationStage(pool, clock=self.clock)

    async def send(self, value: float, at: datetime, **options: Any) -> None:
        await self.feed.send(_air(value, at, **options), at=at)

    async def route(self, at: datetime) -> list[tuple[Any, ...]]:
        """Run the stage at `at`; the notifications it made: (code, kind, [(alert, event kind)])."""
        self.clock.now = at
        made = [n for report in await self.stage.drain() for n in report.notifications]
        return await notifications(self.pool, made)


async def notifications(pool: AsyncConnectionPool, ids: list[int] | None = None) -> list[Any]:
    rows = await _query(
        pool,
        "SELECT n.id, s.code, n.kind, n.target,"
        " array_agg(ARRAY[i.alert_id::text, coalesce(e.kind, '-')] ORDER BY i.position)"
        " FROM notification n JOIN subscription s ON s.id = n.subscription_id"
        " JOIN notification_item i ON i.notification_id = n.id"
        " LEFT JOIN alert_event e ON e.id = i.event_id"
        " WHERE %s::bigint[] IS NULL OR n.id = ANY(%s) GROUP BY n.id, s.code ORDER BY n.id",
        ids,
        ids,
    )
    return [(code, kind, [(int(a), k) for a, k in pairs]) for _, code, kind, _, pairs in rows]


@pytest.fixture
async def world(db: AsyncConnectionPool) -> World:
    await _rules(db, _rule("no2_instant"))
    return World(db)


async def test_group_wait_then_a_resolved_message_after_group_interval(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(250, T0)
    assert await world.route(T0) == []  # the group opens: group_wait starts
    assert await world.route(T0 + 29 * S) == []
    assert await world.route(T0 + 30 * S) == [("gz", "firing", [(1, "firing")])]
    assert await world.route(T0 + 31 * S) == []
    await world.send(150, T0 + 60 * S)
    assert await world.route(T0 + 61 * S) == []
    assert await world.route(T0 + 330 * S) == [("gz", "resolved", [(1, "resolved")])]
    groups = await _query(world.pool, "SELECT count(*) FROM notification_group")
    assert groups == [(0,)]


async def test_an_alert_resolved_within_group_wait_sends_nothing(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(250, T0)
    await world.route(T0 + 5 * S)
    await world.send(150, T0 + 10 * S)
    assert await world.route(T0 + 11 * S) == []
    assert await world.route(T0 + 3600 * S) == []
    assert await _query(world.pool, "SELECT count(*) FROM notification_group") == [(0,)]


async def test_critical_goes_out_at_once_and_escalations_update_the_group(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(450, T0)
    assert await world.route(T0) == [("gz", "firing", [(1, "firing")])]
    await world.send(350, T0 + 60 * S)  # de-escalated to warning: an update, after the interval
    assert await world.route(T0 + 60 * S) == []
    assert await world.route(T0 + 300 * S) == [("gz", "update", [(1, "deescalated")])]
    await world.send(450, T0 + 400 * S)  # critical again: at once
    assert await world.route(T0 + 400 * S) == [("gz", "update", [(1, "escalated")])]


async def test_a_retracted_alert_gets_a_retraction_message(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(40, T0)
    await world.send(600, T0 + HOUR)
    assert await world.route(T0 + HOUR) == [("gz", "firing", [(1, "firing")])]
    await world.send(600, T0 + HOUR, qc=QC.SUSPECT)  # re-flagged: the alert is retracted
    assert await world.route(T0 + HOUR + 300 * S) == [("gz", "retracted", [(1, "retracted")])]


async def test_repeats_stop_for_the_city_that_acknowledged_only(world: World) -> None:
    gz = await _subscribe(world.pool, "gz", "gz_eeb", repeat_interval_s=3600)
    await _subscribe(world.pool, "dg", "dg_eeb", repeat_interval_s=3600)
    await world.send(450, T0)
    assert sorted(await world.route(T0)) == [
        ("dg", "firing", [(1, "firing")]),
        ("gz", "firing", [(1, "firing")]),
    ]
    assert sorted(await world.route(T0 + 3600 * S)) == [
        ("dg", "repeat", [(1, "-")]),
        ("gz", "repeat", [(1, "-")]),
    ]
    async with world.pool.connection() as conn, conn.transaction():
        key, _ = await create_key(conn, agency="gz_eeb", roles=["responder"])
        await acknowledge(conn, alert_id=1, agency="gz_eeb", key_id=key.id, at=T0, comment=None)
    # The acknowledgement is an event too; it is no news to either city.
    assert await world.route(T0 + 3700 * S) == []
    assert await world.route(T0 + 7200 * S) == [("dg", "repeat", [(1, "-")])]
    groups = await _query(
        world.pool, "SELECT subscription_id, repeat_at FROM notification_group ORDER BY 1"
    )
    assert groups == [(gz, None), (gz + 1, T0 + 10800 * S)]


async def test_a_silence_mutes_messages_to_its_agency_until_it_ends(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await _subscribe(world.pool, "dg", "dg_eeb")
    async with world.pool.connection() as conn, conn.transaction():
        await create_silence(
            conn,
            agency="gz_eeb",
            rules=None,
            stations=["gz-a-huangpu"],
            areas=None,
            severities=None,
            starts_at=T0,
            ends_at=T0 + 90 * S,
            created_by="gz_eeb:key1",
            comment="analyser being replaced",
            at=T0,
        )
    await world.send(450, T0)
    assert await world.route(T0) == [("dg", "firing", [(1, "firing")])]
    assert await world.route(T0 + 60 * S) == []
    assert await world.route(T0 + 90 * S) == [("gz", "firing", [(1, "firing")])]
    alert_state = await _query(world.pool, "SELECT state FROM alert")
    assert alert_state == [("firing",)]  # the silence muted messages, not the alert


async def test_an_unacknowledged_alert_escalates_to_the_escalation_target(world: World) -> None:
    escalation = {"after_s": 900, "channel": "webhook", "target": "http://127.0.0.1:9/leaders"}
    await _subscribe(world.pool, "gz", "gz_eeb", escalation=escalation)
    await _subscribe(world.pool, "dg", "dg_eeb", escalation=escalation)
    await world.send(450, T0)
    await world.route(T0)
    async with world.pool.connection() as conn, conn.transaction():
        key, _ = await create_key(conn, agency="dg_eeb", roles=["responder"])
        await acknowledge(conn, alert_id=1, agency="dg_eeb", key_id=key.id, at=T0, comment=None)
    assert await world.route(T0 + 899 * S) == []
    assert await world.route(T0 + 900 * S) == [("gz", "escalation", [(1, "-")])]
    targets = await _query(world.pool, "SELECT target FROM notification WHERE kind = 'escalation'")
    assert targets == [("http://127.0.0.1:9/leaders",)]
    assert await world.route(T0 + 2000 * S) == []


async def test_filters_and_coarser_grouping(world: World) -> None:
    await _rules(world.pool, _rule("no2_any", scope={"medium": "air"}))
    await _subscribe(world.pool, "gz-area", "gz_eeb", group_by=["area"])
    await _subscribe(world.pool, "dg-critical", "dg_eeb", filters={"min_severity": "critical"})
    await _subscribe(world.pool, "gz-shiziyang", "gz_eeb", filters={"areas": ["shiziyang"]})
    await world.send(250, T0)
    await world.send(260, T0, station="gz-a-zengcheng")
    assert await world.route(T0) == []
    made = await world.route(T0 + 30 * S)
    # One message for everything in the area; no_any and no2_instant both fired at Huangpu.
    assert made == [("gz-area", "firing", [(1, "firing"), (2, "firing"), (3, "firing")])]
    alerts = await _query(
        world.pool,
        "SELECT a.id, a.rule_id, s.code FROM alert a JOIN station s ON s.id = a.station_id"
        " ORDER BY a.id",
    )
    assert alerts == [
        (1, "no2_any", "gz-a-huangpu"),
        (2, "no2_instant", "gz-a-huangpu"),
        (3, "no2_any", "gz-a-zengcheng"),
    ]


async def test_a_crash_in_a_round_loses_and_doubles_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(450, T0)

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the worker died here")

    with monkeypatch.context() as patched:
        patched.setattr(stage_module, "advance_cursor", crash)
        with pytest.raises(RuntimeError, match="the worker died here"):
            await world.route(T0)
    assert await notifications(world.pool) == []
    assert await world.route(T0) == [("gz", "firing", [(1, "firing")])]
    assert await world.route(T0 + S) == []
    assert await _query(world.pool, "SELECT last_event_id FROM notification_cursor") == [(1,)]


async def test_an_event_committed_after_a_higher_id_is_not_skipped(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(250, T0)  # alert 1, event 1 (warning: group_wait)
    late = await world.pool.getconn()
    try:
        async with late.transaction():
            # Takes event id 2 and holds it uncommitted while event 3 commits.
            await insert_events(
                late, [(1, NewEvent("escalated", "firing", "critical", 450))], at=T0
            )
            await world.send(150, T0 + 10 * S)  # event 3: resolved, committed first
            assert await world.route(T0 + 11 * S) == []
            gaps = await _query(world.pool, "SELECT event_id FROM notification_cursor_gap")
            assert gaps == [(2,)]
    finally:
        await world.pool.putconn(late)
    # Event 2 is visible now: read from the gap (critical news, at once).
    made = await world.route(T0 + 12 * S)
    assert made == [("gz", "firing", [(1, "escalated")])]
    assert await _query(world.pool, "SELECT event_id FROM notification_cursor_gap") == []


async def test_two_stages_never_route_the_same_events(world: World) -> None:
    await _subscribe(world.pool, "gz", "gz_eeb")
    assert await world.route(T0) == []  # the cursor row exists from the first round on
    await world.send(450, T0)
    other = NotificationStage(world.pool, clock=world.clock)
    async with world.pool.connection() as holder, holder.transaction():
        await holder.execute("SELECT * FROM notification_cursor FOR UPDATE")
        assert (await other.process()).busy
    first, second = await other.process(), await world.stage.process()
    assert (len(first.notifications), len(second.notifications)) == (1, 0)


async def test_seed_loads_the_disabled_placeholders_and_keeps_api_changes(
    db: AsyncConnectionPool,
) -> None:
    subscriptions = load_subscriptions(CONFIG_DIR / "subscriptions.yaml")
    async with db.connection() as conn, conn.transaction():
        first = await seed_subscriptions(conn, subscriptions, at=T0)
        again = await seed_subscriptions(conn, subscriptions, at=T0)
    assert (len(first.inserted), len(again.unchanged)) == (6, 6)
    enabled = await _query(db, "SELECT count(*) FILTER (WHERE enabled) FROM subscription")
    assert enabled == [(0,)]
    changed = subscriptions.subscriptions[0].model_copy(update={"language": "en"})
    edited = SubscriptionSet(subscriptions=[changed, *subscriptions.subscriptions[1:]])
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE subscription SET enabled = true, changed_via = 'api'"
            " WHERE code = 'gz-duty-webhook'"
        )
        report = await seed_subscriptions(conn, edited, at=T0)
    assert report.kept == {"gz-duty-webhook": ["enabled", "language"]}
    assert await _query(db, "SELECT language, enabled FROM subscription WHERE id = 1") == [
        ("zh", True)
    ]


async def test_deleting_a_subscription_cancels_its_undelivered_notifications(world: World) -> None:
    sid = await _subscribe(world.pool, "gz", "gz_eeb")
    await world.send(450, T0)
    assert await world.route(T0) == [("gz", "firing", [(1, "firing")])]
    async with world.pool.connection() as conn, conn.transaction():
        cancelled = await delete_subscription(conn, sid, at=T0 + S)
    assert cancelled == 1
    assert await _query(
        world.pool, "SELECT subscription_id, status, last_error, failed_at FROM notification"
    ) == [(None, "cancelled", "the subscription was deleted", T0 + S)]


async def test_station_filters_must_name_stations_that_exist(db: AsyncConnectionPool) -> None:
    with pytest.raises(InvalidInput) as refused:
        await _subscribe(db, "gz", "gz_eeb", filters={"stations": ["zz-b", "gz-a-huangpu", "zz-a"]})
    assert str(refused.value) == "subscription gz: unknown stations ['zz-a', 'zz-b']"
    assert await _query(db, "SELECT count(*) FROM subscription") == [(0,)]


async def _key(pool: AsyncConnectionPool, agency: str, *roles: str) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency=agency, roles=list(roles))
    return {"Authorization": f"Bearer {plain}"}


async def test_admins_manage_their_agency_subscriptions_and_never_see_secrets(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    admin = await _key(db, "gz_eeb", "admin")
    reader = await _key(db, "gz_eeb", "reader", "responder")
    other = await _key(db, "dg_eeb", "admin")
    body = {
        "code": "gz-hook",
        "channel": "webhook",
        "target": "https://hooks.example.cn/gz",
        "secret": "s3cret",
        "filters": {"min_severity": "warning", "areas": ["dongjiang"]},
    }
    refused = await client.post("/v1/subscriptions", json=body, headers=reader)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
    created = await client.post("/v1/subscriptions", json=body, headers=admin)
    assert created.status_code == 201
    out = created.json()
    assert "secret" not in out and out["has_secret"] is True
    assert (out["agency"], out["group_wait_s"], out["group_wait_critical_s"]) == ("gz_eeb", 30, 0)
    assert (out["group_by"], out["changed_via"]) == (["rule", "station"], "api")
    twice = await client.post("/v1/subscriptions", json=body, headers=admin)
    assert twice.json()["error"] == {
        "code": "invalid_input",
        "message": "a subscription with code 'gz-hook' exists already",
    }
    bad = await client.post(
        "/v1/subscriptions", json={**body, "code": "x", "target": "not a url"}, headers=admin
    )
    assert bad.status_code == 422
    assert "a webhook target is an http(s) URL, not 'not a url'" in bad.json()["error"]["message"]
    sid = out["id"]
    foreign = await client.get(f"/v1/subscriptions/{sid}", headers=other)
    assert foreign.json()["error"]["message"] == (
        f"subscription {sid} belongs to gz_eeb; your key is dg_eeb's"
    )
    changed = await client.put(
        f"/v1/subscriptions/{sid}", json={**body, "secret": None, "language": "en"}, headers=admin
    )
    assert (changed.json()["language"], changed.json()["has_secret"]) == ("en", True)
    assert await _query(db, "SELECT secret FROM subscription") == [("s3cret",)]
    listed = (await client.get("/v1/subscriptions", headers=admin)).json()["items"]
    assert [s["code"] for s in listed] == ["gz-hook"]
    assert (await client.get("/v1/subscriptions", headers=other)).json()["items"] == []
    deleted = await client.delete(f"/v1/subscriptions/{sid}", headers=admin)
    assert deleted.json() == {"deleted": sid, "cancelled_notifications": 0}
    assert (await client.get(f"/v1/subscriptions/{sid}", headers=admin)).status_code == 404


async def test_responders_silence_their_agency_messages(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    responder = await _key(db, "dg_eeb", "responder")
    reader = await _key(db, "dg_eeb", "reader")
    body = {
        "stations": ["dg-a-humen"],
        "ends_at": "2099-01-01T00:00:00+08:00",
        "comment": "station under repair",
    }
    refused = await client.post("/v1/silences", json=body, headers=reader)
    assert refused.status_code == 403
    nothing = await client.post(
        "/v1/silences", json={"ends_at": body["ends_at"], "comment": "all"}, headers=responder
    )
    assert nothing.status_code == 422
    unknown = await client.post(
        "/v1/silences", json={**body, "stations": ["nowhere"]}, headers=responder
    )
    assert unknown.json()["error"]["message"] == "silence: unknown stations ['nowhere']"
    created = await client.post("/v1/silences", json=body, headers=responder)
    assert created.status_code == 201
    silence = created.json()
    assert (silence["agency"], silence["active"], silence["stations"]) == (
        "dg_eeb",
        True,
        ["dg-a-humen"],
    )
    assert silence["created_by"].startswith("dg_eeb:key")
    listed = (await client.get("/v1/silences", headers=responder)).json()["items"]
    assert [s["id"] for s in listed] == [silence["id"]]
    ended = await client.delete(f"/v1/silences/{silence['id']}", headers=responder)
    assert (ended.json()["active"], ended.json()["expired_at"] is not None) == (False, True)
    assert (await client.get("/v1/silences", headers=responder)).json()["items"] == []
    everything = (await client.get("/v1/silences?ended=true", headers=responder)).json()
    assert len(everything["items"]) == 1
