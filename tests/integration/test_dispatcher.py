"""The dispatcher on real PostgreSQL, delivering to a local HTTP receiver over loopback sockets.

Notifications come from the real engine and stage (or, for volume, straight into the outbox).
The dispatcher's clock is the test's, so backoffs and deadlines of minutes take no time; the
receiver is real (asyncio, HTTP/1.1) and can answer 500, stall past the client timeout, or be
stopped so connections are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import xmlschema
from psycopg_pool import AsyncConnectionPool

from alerts.notify.channels import build_channels
from alerts.notify.channels.base import http_client
from alerts.notify.channels.webhook import verify_signature
from alerts.notify.dispatcher import Dispatcher
from api.app import create_app
from core.retry import Backoff
from core.settings import Settings
from store.outbox import NewItem, NewNotification, insert_notifications
from tests.conftest import ROOT
from tests.integration.test_engine import T0, _query, _rule, _rules
from tests.integration.test_outbox import World, _key, _subscribe

S = timedelta(seconds=1)
SECRET = "whsec-test-0123"
CLIENT_TIMEOUT_S = 0.5


@dataclass
class Seen:
    """One request as the receiver read it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]


@dataclass
class Reply:
    status: int = 200
    delay_s: float = 0.0


@dataclass
class Receiver:
    """A local HTTP/1.1 receiver: records every request and answers as `answer` says."""

    answer: Callable[[Seen], Reply] = field(default=lambda seen: Reply())
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections: from now on connections are refused."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def accepted(self) -> list[Seen]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(request_line.decode().split()[1], headers, body)
                self.requests.append(seen)
                reply = self.answer(seen)
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                seen.status = reply.status
                text = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (reply.status, len(text), text)
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def receiving(answer: Callable[[Seen], Reply] | None = None) -> AsyncIterator[Receiver]:
    receiver = await Receiver(answer or (lambda seen: Reply())).start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(CLIENT_TIMEOUT_S) as opened:
        yield opened


def dispatcher(
    pool: AsyncConnectionPool,
    client: httpx.AsyncClient,
    settings: Settings,
    clock: Callable[[], datetime],
    **options: Any,
) -> Dispatcher:
    return Dispatcher(
        pool,
        build_channels(settings, client),
        public_base_url="https://envlink.example.cn",
        clock=clock,
        jitter=lambda: 0.0,
        backoff=options.pop("backoff", Backoff(base_s=10, max_s=120)),
        **options,
    )


async def attempts(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    """(notification, attempt, status, response code, error) in order."""
    return await _query(
        pool,
        "SELECT notification_id, attempt, status, response_code, error FROM delivery_attempt"
        " ORDER BY notification_id, id",
    )


async def statuses(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await _query(pool, "SELECT id, status, attempts FROM notification ORDER BY id")


@pytest.fixture
async def world(db: AsyncConnectionPool) -> World:
    await _rules(db, _rule("no2_instant"))
    return World(db)


async def _alert_notified(world: World, target: str, **fields: Any) -> None:
    """A critical alert at Huangpu and its firing notification to `target` (gz_eeb)."""
    await _subscribe(world.pool, "gz", "gz_eeb", target=target, **fields)
    await world.send(450, T0)
    await world.route(T0)


async def test_a_webhook_arrives_signed_with_its_idempotency_key(
    world: World, client: httpx.AsyncClient, settings: Settings
) -> None:
    async with receiving() as receiver:
        await _alert_notified(world, receiver.url(), secret=SECRET)
        sent = await dispatcher(world.pool, client, settings, Clock()).drain()
    assert [(a.notification_id, a.status) for a in sent] == [(1, "sent")]
    [request] = receiver.requests
    assert request.path == "/hook"
    assert request.key == "ntf-1"
    assert verify_signature(
        SECRET,
        timestamp=request.headers["x-envlink-timestamp"],
        body=request.body,
        signature=request.headers["x-envlink-signature"],
        now=float(request.headers["x-envlink-timestamp"]),
    )
    body = orjson.loads(request.body)
    assert body["notification"]["id"] == "ntf-1"
    assert (body["notification"]["kind"], body["notification"]["agency"]["code"]) == (
        "firing",
        "gz_eeb",
    )
    [event] = body["events"]
    assert (event["alert"]["id"], event["alert"]["state"], event["alert"]["severity"]) == (
        1,
        "firing",
        "critical",
    )
    assert (event["event"]["kind"], event["alert"]["value"], event["alert"]["threshold"]) == (
        "firing",
        450.0,
        400.0,
    )
    assert (event["station"]["code"], event["parameter"]["code"]) == ("gz-a-huangpu", "no2")
    assert (event["rule"]["id"], event["rule"]["standard"]) == ("no2_instant", "GB 3095-2026")
    assert event["links"]["cap"] == "https://envlink.example.cn/v1/alerts/1.cap"
    assert await attempts(world.pool) == [(1, 1, "sent", 200, None)]
    assert await statuses(world.pool) == [(1, "sent", 1)]


@pytest.mark.parametrize(
    ("failure", "code", "error", "received"),
    [
        (Reply(500), 500, 'HTTP 500: {"ok": true}', 2),
        (Reply(200, delay_s=1.0), None, "timed out after 0.5 s (ReadTimeout)", 2),
        (None, None, "cannot connect: All connection attempts failed", 1),
    ],
    ids=["500", "timeout", "refused"],
)
async def test_transient_failures_are_retried_after_a_backoff(
    world: World,
    client: httpx.AsyncClient,
    settings: Settings,
    failure: Reply | None,
    code: int | None,
    error: str,
    received: int,
) -> None:
    clock = Clock()
    async with receiving() as receiver:
        receiver.answer = lambda seen: failure or Reply()
        if failure is None:
            await receiver.stop()  # nothing listens on the port: connections are refused
        await _alert_notified(world, receiver.url())
        sender = dispatcher(world.pool, client, settings, clock)
        [first] = await sender.drain()
        assert (first.status, first.due_at) == ("pending", T0 + 5 * S)  # half of 10 s, no jitter
        assert await sender.drain() == []  # not due yet
        if failure is None:
            await receiver.start()
        receiver.answer = lambda seen: Reply()
        clock.now = T0 + 5 * S
        [second] = await sender.drain()
        assert second.status == "sent"
    assert await attempts(world.pool) == [(1, 1, "retry", code, error), (1, 2, "sent", 200, None)]
    # The stalled request reached the receiver too: the re-send carries the same key.
    assert [r.key for r in receiver.requests] == ["ntf-1"] * received


async def test_a_refusal_is_dead_lettered_at_once(
    world: World, client: httpx.AsyncClient, settings: Settings
) -> None:
    async with receiving(lambda seen: Reply(404)) as receiver:
        await _alert_notified(world, receiver.url())
        [attempt] = await dispatcher(world.pool, client, settings, Clock()).drain()
    assert attempt.status == "failed"
    assert await statuses(world.pool) == [(1, "failed", 1)]


async def test_undelivered_by_the_deadline_is_dead_lettered_and_shown(
    world: World, client: httpx.AsyncClient, settings: Settings
) -> None:
    clock = Clock()
    world.stage = type(world.stage)(world.pool, clock=world.clock, deadline_s=60)
    async with receiving(lambda seen: Reply(503)) as receiver:
        await _alert_notified(world, receiver.url())
        sender = dispatcher(world.pool, client, settings, clock)
        done = []
        for _ in range(10):
            done += await sender.drain()
            clock.now += 25 * S
    # Waits 5, 10, then up to the deadline (60 s after the notification was made); the attempt
    # made past it is the last.
    assert [(a.attempt, a.status, a.due_at) for a in done] == [
        (1, "pending", T0 + 5 * S),
        (2, "pending", T0 + 35 * S),
        (3, "pending", T0 + 60 * S),
        (4, "failed", None),
    ]
    assert len(receiver.requests) == 4
    api = create_app(settings, pool=world.pool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://envlink"
    ) as http:
        headers = await _key(world.pool, "dg_eeb", "reader")
        failed = (await http.get("/v1/notifications?status=failed", headers=headers)).json()
        detail = (await http.get("/v1/alerts/1", headers=headers)).json()
        pending = (await http.get("/v1/notifications?status=pending", headers=headers)).json()
    [dead] = failed["items"]
    assert (dead["id"], dead["key"], dead["kind"], dead["agency"], dead["attempts"]) == (
        1,
        "ntf-1",
        "firing",
        "gz_eeb",
        4,
    )
    assert dead["last_error"] == (
        'dead-lettered at its deadline after 4 attempts; last: HTTP 503: {"ok": true}'
    )
    assert dead["items"] == [
        {
            "alert_id": 1,
            "event_id": 1,
            "event_kind": "firing",
            "state": "firing",
            "severity": "critical",
        }
    ]
    assert pending["items"] == []
    [delivery] = detail["deliveries"]
    assert (delivery["status"], delivery["subscription"]) == ("failed", "gz")
    assert [(a["attempt"], a["status"], a["response_code"]) for a in delivery["attempt_log"]] == [
        (1, "retry", 503),
        (2, "retry", 503),
        (3, "retry", 503),
        (4, "retry", 503),
    ]


async def test_a_receiver_down_for_minutes_gets_each_notification_once(
    world: World, client: httpx.AsyncClient, settings: Settings
) -> None:
    """Five minutes of refused connections on the dispatcher's clock, then the receiver is up."""
    await _rules(world.pool, _rule("no2_air", scope={"medium": "air"}))
    clock = Clock()
    async with receiving() as receiver:
        await _subscribe(world.pool, "gz", "gz_eeb", target=receiver.url(), group_by=["station"])
        await receiver.stop()
        stations = ["gz-a-huangpu", "gz-a-zengcheng", "dg-a-humen", "dg-a-shilong"]
        for station in stations:
            await world.send(450, T0, station=station)
        made = await world.route(T0)
        assert len(made) == 4
        sender = dispatcher(world.pool, client, settings, clock, backoff=Backoff(10, 60))
        tries = 0
        while clock.now < T0 + 300 * S:
            tries += len(await sender.drain())
            clock.now += 7 * S
        # Each tried at 0, 7, 21 and 42 s, then every 35 s (the 30 s cap, polled every 7 s).
        assert receiver.requests == [] and tries == 4 * 11
        await receiver.start()
        while len(await _query(world.pool, "SELECT 1 FROM notification WHERE status = 'sent'")) < 4:
            await sender.drain()
            clock.now += 7 * S
            assert clock.now < T0 + 600 * S
    assert Counter(r.key for r in receiver.accepted) == {f"ntf-{i}": 1 for i in range(1, 5)}
    assert [row[1] for row in await statuses(world.pool)] == ["sent"] * 4


async def _outbox(pool: AsyncConnectionPool, target: str, count: int) -> None:
    """`count` reminders of alert 1 straight into the outbox, due now."""
    item = NewItem(1, None, "firing", "critical", 450.0, T0, None, None)
    async with pool.connection() as conn, conn.transaction():
        sub = (await (await conn.execute("SELECT id FROM subscription")).fetchone() or [0])[0]
        agency = (await (await conn.execute("SELECT id FROM agency LIMIT 1")).fetchone() or [0])[0]
        await insert_notifications(
            conn,
            [
                NewNotification(
                    subscription_id=sub,
                    agency_id=agency,
                    kind="repeat",
                    group_key="test",
                    channel="webhook",
                    target=target,
                    secret=None,
                    language="en",
                    created_at=T0,
                    deadline_at=T0 + 3600 * S,
                    items=(item,),
                )
                for _ in range(count)
            ],
        )


async def test_two_dispatchers_never_send_the_same_notification(
    world: World, client: httpx.AsyncClient, settings: Settings, database_url: str
) -> None:
    async with receiving(lambda seen: Reply(200, delay_s=0.002)) as receiver:
        await _alert_notified(world, receiver.url())
        await _outbox(world.pool, receiver.url(), 199)
        async with AsyncConnectionPool(database_url, min_size=2, max_size=4) as other_pool:
            first = dispatcher(world.pool, client, settings, Clock(), worker="one", concurrency=5)
            second = dispatcher(other_pool, client, settings, Clock(), worker="two", concurrency=5)
            done = await asyncio.gather(first.drain(), second.drain())
    assert sum(len(d) for d in done) == 200
    assert min(len(d) for d in done) > 0  # both took part
    assert Counter(r.key for r in receiver.requests) == {f"ntf-{i}": 1 for i in range(1, 201)}
    counts = await _query(
        world.pool,
        "SELECT count(*), count(DISTINCT notification_id), max(attempt) FROM delivery_attempt",
    )
    assert counts == [(200, 200, 1)]


async def test_an_outcome_whose_connection_was_cut_is_recorded_and_not_sent_again(
    world: World, client: httpx.AsyncClient, settings: Settings, database_url: str
) -> None:
    """The database drops the dispatcher's connection while the receiver is answering."""
    asked = asyncio.Event()

    def answer(seen: Seen) -> Reply:
        asked.set()
        return Reply(200, delay_s=0.3)

    async with receiving(answer) as receiver:
        await _alert_notified(world, receiver.url())
        cut = "envlink cut-mid-delivery"
        async with AsyncConnectionPool(
            database_url, min_size=1, max_size=1, kwargs={"application_name": cut}
        ) as pool:
            sending = asyncio.create_task(dispatcher(pool, client, settings, Clock()).drain())
            await asyncio.wait_for(asked.wait(), timeout=10)
            terminated = await _query(
                world.pool,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                cut,
            )
            assert terminated == [(1,)]
            [attempted] = await sending
    assert (attempted.status, attempted.recorded) == ("sent", True)
    assert [r.key for r in receiver.requests] == ["ntf-1"]
    assert await attempts(world.pool) == [(1, 1, "sent", 200, None)]
    assert await statuses(world.pool) == [(1, "sent", 1)]


async def test_cap_by_webhook_and_by_api_validates_against_the_cap_schema(
    world: World, client: httpx.AsyncClient, settings: Settings
) -> None:
    schema = xmlschema.XMLSchema(ROOT / "schemas" / "cap" / "CAP-v1.2.xsd")
    async with receiving() as receiver:
        await _alert_notified(world, receiver.url(), channel="webhook_cap", language="both")
        await dispatcher(world.pool, client, settings, Clock()).drain()
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/cap+xml; charset=utf-8"
    schema.validate(request.body.decode())
    document = schema.to_dict(request.body.decode())
    assert (document["msgType"], document["info"][0]["severity"]) == ("Alert", "Severe")
    api = create_app(settings, pool=world.pool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://envlink"
    ) as http:
        headers = await _key(world.pool, "gz_eeb", "reader")
        cap = await http.get("/v1/alerts/1.cap", headers=headers)
        missing = await http.get("/v1/alerts/99.cap", headers=headers)
    assert cap.status_code == 200
    assert cap.headers["content-type"] == "application/cap+xml; charset=utf-8"
    schema.validate(cap.text)
    assert schema.to_dict(cap.text)["identifier"] == document["identifier"]
    assert missing.status_code == 404
