"""Notifications end to end over real sockets and real processes, in real time.

- A dispatcher in its own process, killed with SIGKILL in the middle of a batch: after a
  restart every notification arrives, and only those it was sending when it died arrive twice,
  under the same idempotency key.
- The worker's loops (alert loop, notification stage, dispatcher) running as they do in
  `envlink worker`: a breaching reading becomes a signed webhook at a local receiver; a receiver
  that is down for a few seconds (backoffs shortened to match) then up gets each message once.
- GET /v1/alerts/stream over a real uvicorn server: events as they happen, and a reconnect with
  Last-Event-ID resumes after the last event received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from psycopg_pool import AsyncConnectionPool

from alerts.loop import AlertLoop
from alerts.notify.channels import build_channels
from alerts.notify.channels.base import http_client
from alerts.notify.channels.webhook import verify_signature
from alerts.notify.dispatcher import Dispatcher
from alerts.notify.stage import NotificationStage
from api.app import create_app
from core.retry import Backoff
from core.settings import Settings
from core.timeutil import utcnow
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from store.alerts import NewEvent, insert_events
from store.listen import Listener
from tests.conftest import ROOT
from tests.integration.test_dispatcher import Receiver, Reply, _outbox, receiving
from tests.integration.test_engine import T0, _air, _query, _rule, _rules
from tests.integration.test_outbox import World, _key, _subscribe

pytestmark = pytest.mark.slow

WAIT_S = 20.0
SECRET = "whsec-e2e"

# The dispatcher process: the real Dispatcher against the test database, as a worker runs it.
DISPATCHER = """
import asyncio, sys
from psycopg_pool import AsyncConnectionPool
from alerts.notify.channels import build_channels
from alerts.notify.channels.base import http_client
from alerts.notify.dispatcher import Dispatcher
from core.retry import Backoff
from core.settings import Settings
from store.listen import Listener

async def main(url: str) -> None:
    async with AsyncConnectionPool(url, min_size=1, max_size=4) as pool:
        listener = Listener(url, name="doomed")
        await listener.start()
        async with http_client(5.0) as client:
            dispatcher = Dispatcher(
                pool, build_channels(Settings(), client), public_base_url="http://envlink.test",
                worker="doomed", concurrency=3, lease_s=2.0, backoff=Backoff(0.2, 1.0),
                poll_s=0.5,
            )
            print("running", flush=True)
            await dispatcher.run(listener)

asyncio.run(main(sys.argv[1]))
"""


async def _until(condition: Any, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _sent(pool: AsyncConnectionPool) -> int:
    rows = await _query(pool, "SELECT count(*) FROM notification WHERE status = 'sent'")
    return int(rows[0][0])


@pytest.fixture
async def world(db: AsyncConnectionPool) -> World:
    await _rules(db, _rule("no2_instant"))
    return World(db)


async def test_a_dispatcher_killed_mid_batch_loses_and_duplicates_nothing_past_the_key(
    world: World, database_url: str, listener: Listener, settings: Settings
) -> None:
    async with receiving(lambda seen: Reply(200, delay_s=0.3)) as receiver:
        await _subscribe(world.pool, "gz", "gz_eeb", target=receiver.url())
        await world.send(450, world.clock.now)
        await world.route(world.clock.now)
        await _outbox(world.pool, receiver.url(), 29)
        # Due now on the wall clock the dispatcher process uses.
        async with world.pool.connection() as conn:
            await conn.execute(
                "UPDATE notification SET due_at = now(), created_at = now(),"
                " deadline_at = now() + interval '1 hour'"
            )
        doomed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            DISPATCHER,
            database_url,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            await _until(lambda: _async(len(receiver.requests) >= 7), "the first deliveries")
        finally:
            doomed.send_signal(signal.SIGKILL)
            await asyncio.wait_for(doomed.wait(), 10)
        assert doomed.returncode == -signal.SIGKILL
        await asyncio.sleep(0.5)  # requests the dead process had already written are answered
        in_flight = {
            f"ntf-{nid}"
            for (nid,) in await _query(
                world.pool, "SELECT id FROM notification WHERE claim_token IS NOT NULL"
            )
        }
        before = Counter(r.key for r in receiver.requests)
        assert 1 <= len(in_flight) <= 3  # its concurrency
        # It died between claiming these and hearing back: some of their requests had reached
        # the receiver, others (claimed but not yet written) had not.
        reached = in_flight & set(before)
        async with http_client(5.0) as client, AsyncConnectionPool(database_url) as pool:
            successor = Dispatcher(
                pool,
                build_channels(settings, client),
                public_base_url="http://envlink.test",
                worker="successor",
                concurrency=3,
                lease_s=2.0,
                poll_s=0.2,
            )
            running = asyncio.create_task(successor.run(listener))
            try:
                await _until(lambda: _count_sent(world.pool, 30), "every notification sent")
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
    received = Counter(r.key for r in receiver.requests)
    assert set(received) == {f"ntf-{i}" for i in range(1, 31)}
    twice = {key for key, count in received.items() if count > 1}
    # Only a request the dead process had already delivered is delivered again, under its key.
    assert twice == reached
    assert max(received.values()) == (2 if reached else 1)
    interrupted = await _query(
        world.pool,
        "SELECT 'ntf-' || notification_id, worker FROM delivery_attempt"
        " WHERE status = 'interrupted' ORDER BY 1",
    )
    assert interrupted == [(key, "doomed") for key in sorted(in_flight)]
    sent_by = await _query(
        world.pool, "SELECT worker, count(*) FROM delivery_attempt WHERE status = 'sent' GROUP BY 1"
    )
    assert sum(count for _, count in sent_by) == 30


async def _async(value: bool) -> bool:
    return value


async def _count_sent(pool: AsyncConnectionPool, wanted: int) -> bool:
    return await _sent(pool) == wanted


@contextlib.asynccontextmanager
async def worker_loops(
    pool: AsyncConnectionPool, settings: Settings, *, backoff: Backoff
) -> AsyncIterator[None]:
    """The alert loop, the notification stage and the dispatcher as a worker runs them."""
    async with http_client(1.0) as client:
        loop = AlertLoop(pool, sweep_s=60)
        stage = NotificationStage(pool, poll_s=1.0)
        dispatcher = Dispatcher(
            pool,
            build_channels(settings, client),
            public_base_url=settings.public_base_url,
            worker="e2e",
            backoff=backoff,
            poll_s=1.0,
        )
        assert settings.database_url is not None
        listener = Listener(settings.database_url, name="e2e")
        await listener.start()
        tasks = [asyncio.create_task(t.run(listener)) for t in (loop, stage, dispatcher)]
        try:
            for ready in (loop.listening, stage.listening, dispatcher.listening):
                await asyncio.wait_for(ready.wait(), WAIT_S)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await listener.stop()


async def _ingest(pool: AsyncConnectionPool, *items: ReadingIn) -> None:
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef(code="e2e", kind="test"))
    assert result.summary["accepted"] == len(items)


async def test_a_breaching_reading_becomes_a_signed_webhook(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    await _rules(db, _rule("no2_instant"))
    async with receiving() as receiver:
        await _subscribe(db, "gz", "gz_eeb", target=receiver.url(), secret=SECRET)
        async with worker_loops(db, settings, backoff=Backoff(0.2, 1.0)):
            started = time.monotonic()
            await _ingest(db, _air(450, utcnow() - timedelta(minutes=1)))
            await _until(lambda: _async(len(receiver.requests) == 1), "the webhook")
            elapsed = time.monotonic() - started
    [request] = receiver.requests
    assert verify_signature(
        SECRET,
        timestamp=request.headers["x-envlink-timestamp"],
        body=request.body,
        signature=request.headers["x-envlink-signature"],
        now=time.time(),
    )
    body = orjson.loads(request.body)
    assert (body["notification"]["kind"], body["events"][0]["event"]["kind"]) == (
        "firing",
        "firing",
    )
    assert elapsed < 5.0
    assert await _query(db, "SELECT status, attempts FROM notification") == [("sent", 1)]


async def test_a_receiver_down_for_a_while_then_up_gets_each_message_once(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    """Real time, shortened: down 3 s with backoffs of 0.2–1 s (minutes with the defaults)."""
    await _rules(db, _rule("no2_air", scope={"medium": "air"}))
    receiver = await Receiver().start()
    try:
        await _subscribe(db, "gz", "gz_eeb", target=receiver.url(), group_by=["station"])
        await receiver.stop()
        async with worker_loops(db, settings, backoff=Backoff(0.2, 1.0)):
            now = utcnow() - timedelta(minutes=1)
            stations = ["gz-a-huangpu", "gz-a-zengcheng", "dg-a-humen", "dg-a-shilong"]
            await _ingest(db, *(_air(450, now, station=s) for s in stations))
            await _until(
                lambda: _failed_attempts(db, 8), "two refused attempts of each notification"
            )
            await asyncio.sleep(3.0)
            await receiver.start()
            await _until(lambda: _count_sent(db, 4), "every notification sent")
    finally:
        await receiver.stop()
    assert Counter(r.key for r in receiver.requests) == {f"ntf-{i}": 1 for i in range(1, 5)}
    refused = await _query(
        db, "SELECT count(*) FROM delivery_attempt WHERE status = 'retry' AND response_code IS NULL"
    )
    assert refused[0][0] >= 8


async def _failed_attempts(pool: AsyncConnectionPool, wanted: int) -> bool:
    rows = await _query(pool, "SELECT count(*) FROM delivery_attempt WHERE status = 'retry'")
    return int(rows[0][0]) >= wanted


@contextlib.asynccontextmanager
async def api_server(pool: AsyncConnectionPool, settings: Settings) -> AsyncIterator[str]:
    config = uvicorn.Config(
        create_app(settings, pool=pool),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await _until(lambda: _async(server.started), "uvicorn")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def _read_events(
    lines: AsyncIterator[str], count: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """The next `count` SSE events of a stream's lines: (id, event name, data)."""
    events: list[tuple[int, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(WAIT_S):
        while len(events) < count:
            line = await anext(lines)
            if line == "":
                if "data" in fields:
                    events.append(
                        (int(fields["id"]), fields["event"], orjson.loads(fields["data"]))
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return events


async def test_the_live_stream_pushes_events_and_resumes_from_last_event_id(
    world: World, settings: Settings
) -> None:
    headers = await _key(world.pool, "dg_eeb", "reader")
    t0 = world.clock.now
    await world.send(250, t0)  # event 1, before anyone listens
    async with (
        api_server(world.pool, settings) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT_S) as client,
    ):
        async with client.stream("GET", "/v1/alerts/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            await asyncio.sleep(0.2)  # the stream starts after the newest event
            await world.send(450, t0 + timedelta(minutes=1))  # event 2: escalated
            [(event_id, name, data)] = await _read_events(response.aiter_lines(), 1)
        assert (event_id, name) == (2, "alert_event")
        assert (data["alert_id"], data["kind"], data["severity"], data["station"]) == (
            1,
            "escalated",
            "critical",
            "gz-a-huangpu",
        )
        assert (data["at"][-6:], data["details"]["point_time"][-6:]) == ("+08:00", "+08:00")
        # Missed while disconnected: the alert resolves, another fires elsewhere.
        await world.send(150, t0 + timedelta(minutes=2))
        await _rules(world.pool, _rule("no2_air", scope={"medium": "air"}))
        await world.send(300, t0 + timedelta(minutes=3), station="dg-a-humen")
        resume = {**headers, "Last-Event-ID": "2"}
        async with client.stream(
            "GET", "/v1/alerts/stream", headers=resume, params={"tz": "UTC"}
        ) as response:
            missed = await _read_events(response.aiter_lines(), 2)
        assert [(i, d["kind"], d["station"]) for i, _, d in missed] == [
            (3, "resolved", "gz-a-huangpu"),
            (4, "firing", "dg-a-humen"),
        ]
        assert [(d["at"][-1], d["details"]["point_time"][-1]) for _, _, d in missed] == [
            ("Z", "Z"),
            ("Z", "Z"),
        ]
        bad = await client.get("/v1/alerts/stream", headers={**headers, "Last-Event-ID": "x"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_input")


async def test_the_stream_waits_for_a_lower_event_id_still_being_committed(
    world: World, settings: Settings
) -> None:
    headers = await _key(world.pool, "gz_eeb", "reader")
    await world.send(250, world.clock.now)  # alert 1, event 1
    received: list[tuple[int, str, dict[str, Any]]] = []

    async def read(response: httpx.Response) -> None:
        lines = response.aiter_lines()
        while True:
            received.extend(await _read_events(lines, 1))

    async with (
        api_server(world.pool, settings) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT_S) as client,
        client.stream("GET", "/v1/alerts/stream", headers=headers) as response,
    ):
        reader = asyncio.create_task(read(response))
        late = await world.pool.getconn()
        try:
            async with late.transaction():
                # Event 2 is taken and held uncommitted while event 3 commits.
                await insert_events(
                    late, [(1, NewEvent("escalated", "firing", "critical", 450))], at=T0
                )
                await world.send(150, world.clock.now + timedelta(minutes=1))
                await asyncio.sleep(0.5)
                assert received == []  # event 3 waits behind event 2
        finally:
            await world.pool.putconn(late)
        await _until(lambda: _async(len(received) == 2), "events 2 and 3")
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    assert [(i, d["kind"]) for i, _, d in received] == [(2, "escalated"), (3, "resolved")]
