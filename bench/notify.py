"""Benchmark notification latency: from the commit of a breaching reading to the webhook received.

An instant critical rule (NO2 above 200 ug/m3, clear at 180: critical at once) watches every air
station, and one webhook subscription with the default settings (group_wait 30 s but 0 s for
critical news, group_interval 300 s, repeat_interval 4 h, grouping by rule and station) points at
a local HTTP receiver in this process. Each of N alerts (default 500) is raised by one breaching
reading sent through the ingest pipeline (as POST /v1/readings does) and cleared by one reading
below the clear threshold; the next breach at that station waits until the engine has resolved
the previous alert. The ten air stations run concurrently, one breach/clear sequence each.

By default the pipeline's downstream runs in a real `envlink worker` process on the same
database (alert loop, notification stage, dispatcher; no simulator, no HJ 212 listener); with
--simulate the worker also runs the simulator for every station over HJ 212 (background load);
with --in-process the three loops run in this process instead.

    .venv/bin/python bench/notify.py                     # 500 alerts, embedded server
    .venv/bin/python bench/notify.py --alerts 200 --in-process
    ENVLINK_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python bench/notify.py

Latency of one alert: from just before the breaching reading's `Pipeline.ingest` call (which
commits it and NOTIFYs the alert loop) to the moment the receiver has read the webhook request
whose body carries that alert's `firing` event: ingest → alert loop (rollups, engine) → NOTIFY →
stage (cursor, routing, outbox) → NOTIFY → dispatcher (claim, render, sign, POST). "From
ingest's return" is a lower bound (the commit happens inside the call). The data times lie an
hour ahead of the wall clock (readings up to a day ahead are accepted). The message after the
first at a station also carries the previous alert's `resolved` event (critical news pulls the
group's pending update forward). At the end it checks that every alert was announced exactly
once, each webhook verified against its signature, and every notification is `sent`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.loop import AlertLoop  # noqa: E402
from alerts.notify.channels import build_channels  # noqa: E402
from alerts.notify.channels.base import http_client  # noqa: E402
from alerts.notify.channels.webhook import verify_signature  # noqa: E402
from alerts.notify.dispatcher import Dispatcher  # noqa: E402
from alerts.notify.stage import NotificationStage  # noqa: E402
from bench._common import (  # noqa: E402
    BREACH,
    CLEAR,
    LEAD,
    STEP,
    TIMEOUT_S,
    envlink_worker,
    fresh_database,
    no2_instant_rule,
    percentile,
    print_latencies,
    print_verdict,
    send_reading,
    server_version,
    spread,
)
from core.settings import Settings  # noqa: E402
from ingest.history import HistoryQc  # noqa: E402
from ingest.jobs import create_partitions_ahead  # noqa: E402
from ingest.pipeline import Pipeline  # noqa: E402
from schemas.catalogue import load_catalogue  # noqa: E402
from schemas.notifications import SubscriptionIn  # noqa: E402
from store.catalogue import read_catalogue, seed_catalogue  # noqa: E402
from store.listen import Listener  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.rules import write_rule  # noqa: E402
from store.subscriptions import create_subscription  # noqa: E402

RULE_ID = "bench_no2_critical"
SECRET = "bench-secret"
TARGET_P99_S = 1.0
BENCH_RULE = no2_instant_rule(
    RULE_ID,
    name="Benchmark: NO2 instant above 200 (critical)",
    severity="critical",
    basis="benchmark: the 1-hour Grade II limit, as critical",
)


class Receiver:
    """A local webhook receiver: verifies each request and times each alert's firing event."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.firing: dict[tuple[str, float], float] = {}
        self.firing_wall: dict[tuple[str, float], float] = {}
        self.unverified = 0
        self._waiting: dict[tuple[str, float], asyncio.Future[float]] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def expect(self, station: str, moment: datetime) -> asyncio.Future[float]:
        """A future set to the perf_counter time the alert's firing webhook was read."""
        key = (station, moment.timestamp())
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if key in self.firing:
            future.set_result(self.firing[key])
        else:
            self._waiting[key] = future
        return future

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if not await reader.readline():
                    return
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                arrived = time.perf_counter()
                self._received(headers, body, arrived, time.time())
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def _received(self, headers: dict[str, str], body: bytes, arrived: float, wall: float) -> None:
        self.keys[headers.get("idempotency-key", "?")] += 1
        if not verify_signature(
            SECRET,
            timestamp=headers.get("x-envlink-timestamp", ""),
            body=body,
            signature=headers.get("x-envlink-signature", ""),
            now=time.time(),
        ):
            self.unverified += 1
        for event in orjson.loads(body)["events"]:
            if event["event"] is None or event["event"]["kind"] != "firing":
                continue
            trigger = datetime.fromisoformat(event["alert"]["trigger_time"]).timestamp()
            key = (event["station"]["code"], trigger)
            self.firing.setdefault(key, arrived)
            self.firing_wall.setdefault(key, wall)
            future = self._waiting.pop(key, None)
            if future is not None and not future.done():
                future.set_result(arrived)


async def _resolved(pool: AsyncConnectionPool, station_id: int, moment: datetime) -> None:
    """Wait until the engine has resolved the alert the breach at `moment` raised."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT state FROM alert WHERE rule_id = %s AND station_id = %s"
                " AND trigger_time = %s",
                [RULE_ID, station_id, moment],
            )
            row = await cur.fetchone()
        if row is not None and row[0] == "resolved":
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"alert at station {station_id} for {moment} not resolved in time")


async def station_sequence(
    pool: AsyncConnectionPool,
    pipeline: Pipeline,
    receiver: Receiver,
    station: tuple[int, str],
    count: int,
    base: datetime,
    latencies: list[float],
    after_ingest: list[float],
) -> None:
    """Breach, wait for the firing webhook, clear, wait for resolved; `count` times."""
    station_id, code = station
    for index in range(count):
        moment = base + index * STEP
        fired = receiver.expect(code, moment)
        started = time.perf_counter()
        await send_reading(pipeline, code, moment, BREACH)
        returned = time.perf_counter()
        arrived = await asyncio.wait_for(fired, TIMEOUT_S)
        latencies.append(arrived - started)
        after_ingest.append(arrived - returned)
        await send_reading(pipeline, code, moment + timedelta(seconds=30), CLEAR)
        await _resolved(pool, station_id, moment)


@asynccontextmanager
async def loops_in_process(pool: AsyncConnectionPool, url: str) -> AsyncIterator[None]:
    """The worker's three loops in this process."""
    async with http_client(10.0) as client:
        settings = Settings(database_url=url)
        pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
        runners = [
            AlertLoop(pool, catalogue=pipeline.catalogue_cache, judge=HistoryQc(pipeline).judge),
            NotificationStage(pool),
            Dispatcher(
                pool,
                build_channels(settings, client),
                public_base_url=settings.public_base_url,
                worker="bench",
            ),
        ]
        listener = Listener(url, name="bench")
        await listener.start()
        tasks = [asyncio.create_task(r.run(listener)) for r in runners]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await listener.stop()


async def run(alerts: int, *, in_process: bool, simulate: bool) -> bool:
    receiver = Receiver()
    await receiver.start()
    async with fresh_database() as database:
        url = database.url
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn)
            now = datetime.now(UTC)
            async with conn.transaction():
                await seed_catalogue(conn, load_catalogue(ROOT / "config"))
                await write_rule(conn, BENCH_RULE, via="config", by="bench", at=now)
                subscription = SubscriptionIn(
                    code="bench-webhook",
                    channel="webhook",
                    target=f"http://127.0.0.1:{receiver.port}/envlink",
                    secret=SECRET,
                )
                await create_subscription(
                    conn, agency="gz_eeb", spec=subscription, via="config", at=now
                )
            version = await server_version(conn)
            stations = [
                (s.id, s.code)
                for s in (await read_catalogue(conn)).stations_by_id.values()
                if s.medium == "air"
            ]
        print(f"server: {version}")
        async with AsyncConnectionPool(url, min_size=4, max_size=16, open=False) as pool:
            await create_partitions_ahead(pool)
            pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
            base = datetime.now(UTC).replace(second=0, microsecond=0) + LEAD
            if in_process:
                runner = loops_in_process(pool, url)
                where = "alert loop, stage and dispatcher in this process"
            else:
                # Without --simulate the worker runs no simulator and no HJ 212 listener.
                runner = envlink_worker(
                    url,
                    *(["--simulate"] if simulate else []),
                    env={"ENVLINK_HJ212_ENABLED": "true" if simulate else "false"},
                )
                where = "`envlink worker" + (" --simulate`" if simulate else "`") + " process"
            async with runner:
                # A warm-up alert (not counted) proves the worker listens end to end.
                warm_station = stations[0]
                warm = receiver.expect(warm_station[1], base - STEP)
                warm_started = time.perf_counter()
                deadline = time.monotonic() + 120
                await send_reading(pipeline, warm_station[1], base - STEP, BREACH)
                while not warm.done():
                    if time.monotonic() > deadline:
                        raise RuntimeError("the worker announced nothing within 120 s")
                    await asyncio.sleep(0.05)
                await send_reading(
                    pipeline, warm_station[1], base - STEP + timedelta(seconds=30), CLEAR
                )
                await _resolved(pool, warm_station[0], base - STEP)
                print(
                    f"downstream: {where}; warm-up alert announced in"
                    f" {time.perf_counter() - warm_started:.1f} s",
                    flush=True,
                )
                per_station = spread(alerts, len(stations))
                latencies: list[float] = []
                after_ingest: list[float] = []
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        station_sequence(
                            pool,
                            pipeline,
                            receiver,
                            station,
                            count,
                            base,
                            latencies,
                            after_ingest,
                        )
                        for station, count in zip(stations, per_station, strict=True)
                    )
                )
                took = time.perf_counter() - started
                await asyncio.sleep(0.5)  # anything still in flight would show as a duplicate
            checked = await check(pool, receiver, alerts + 1)
            downstream = await engine_to_webhook(pool, receiver)
    await receiver.stop()
    print(f"alerts: {len(latencies):,} at {len(stations)} air stations in {took:.1f} s")
    p99 = print_latencies("commit -> webhook received", latencies, after_ingest)
    d50, d99 = (percentile([d for d, _ in downstream], f) for f in (0.50, 0.99))
    n50, n99 = (percentile([n for _, n in downstream], f) for f in (0.50, 0.99))
    print(
        "wall clock to the webhook read: from the start of the engine's round (alert.fired_at)"
        f" p50 {d50 * 1000:.1f} ms, p99 {d99 * 1000:.1f} ms; from the start of the stage's round"
        f" (notification.created_at) p50 {n50 * 1000:.1f} ms, p99 {n99 * 1000:.1f} ms"
    )
    return print_verdict(p99, TARGET_P99_S, checked) and checked.startswith("checked")


async def engine_to_webhook(
    pool: AsyncConnectionPool, receiver: Receiver
) -> list[tuple[float, float]]:
    """Per alert, to the webhook read: from the engine's round and from the stage's round."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT s.code, a.trigger_time, a.fired_at, n.created_at FROM alert a"
            " JOIN station s ON s.id = a.station_id"
            " JOIN alert_event e ON e.alert_id = a.id AND e.kind = 'firing'"
            " JOIN notification_item i ON i.event_id = e.id"
            " JOIN notification n ON n.id = i.notification_id WHERE a.rule_id = %s",
            [RULE_ID],
        )
        rows = await cur.fetchall()
    pairs = []
    for code, trigger, fired, made in rows:
        arrived = receiver.firing_wall.get((code, trigger.timestamp()))
        if arrived is not None:
            pairs.append((arrived - fired.timestamp(), arrived - made.timestamp()))
    return pairs


async def check(pool: AsyncConnectionPool, receiver: Receiver, alerts: int) -> str:
    """Every alert announced once, every request signed, every notification sent exactly once."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'sent'),"
            " (SELECT count(*) FROM alert WHERE rule_id = %s) FROM notification",
            [RULE_ID],
        )
        row = await cur.fetchone()
    assert row is not None
    notifications, sent, stored_alerts = (int(v) for v in row)
    problems = []
    if stored_alerts != alerts or len(receiver.firing) != alerts:
        problems.append(
            f"{stored_alerts} alerts stored, {len(receiver.firing)} announced; wanted {alerts}"
        )
    if sent != notifications:
        problems.append(f"{notifications - sent} notifications not sent")
    repeated = [key for key, count in receiver.keys.items() if count > 1]
    if repeated or sum(receiver.keys.values()) != notifications:
        problems.append(f"keys received more than once: {repeated[:5]}")
    if receiver.unverified:
        problems.append(f"{receiver.unverified} requests failed signature verification")
    if problems:
        return "CHECK FAILED: " + "; ".join(problems)
    return (
        f"checked: {alerts} alerts each announced once in {notifications} signed webhooks"
        " (one idempotency key each), all sent"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=500, help="alerts to raise (default 500)")
    parser.add_argument(
        "--in-process", action="store_true", help="run the loops in this process, not a worker"
    )
    parser.add_argument(
        "--simulate", action="store_true", help="the worker also runs the simulator (load)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        return (
            0
            if asyncio.run(run(args.alerts, in_process=args.in_process, simulate=args.simulate))
            else 1
        )
    return 130


if __name__ == "__main__":
    sys.exit(main())
