"""Faults survived: the HJ 212 worker killed, its database restarted, its webhook receiver down.

A fleet of simulated stations uploads real-time packets (CN 2011, a reply requested) to an
`envlink worker` process, as data loggers do: each keeps every packet the platform has not
acknowledged and sends it again after a reply timeout or a reconnection. Midway the fault is
injected — the worker SIGKILLed (after a fifth of a second stopped) and started again
(`kill-worker`), or its private PostgreSQL stopped for a while and started again
(`restart-database`, an embedded server of its own, never a shared one). When the fleet has sent
for the given time it re-sends until everything is acknowledged, and the database is checked:

    sent          readings the fleet generated (each once, whatever the resends)
    resent        packets written again (not answered within 5 s, or the connection lost)
    acknowledged  readings the platform answered 9014 for
    stored        readings in the database
    duplicates    readings stored more than once (a resend stored as a revision)
    lost          acknowledged readings that are not stored

Nothing acknowledged may be lost and nothing stored twice; with the drain complete every reading
sent is stored. tests/e2e/test_faults.py runs each fault in a bounded form.

Two faults hit notifications. Every station sends NO2 far above its limit, the stations coming
online one after another, so alerts fire all along; the worker notifies a webhook receiver on
loopback that counts what it gets per idempotency key. `webhook-down` takes the receiver down
(its port refuses connections) for `--down` seconds while the alerts fire, then brings it back;
`restart-database-dispatching` stops the private PostgreSQL as soon as a delivery is being
answered (the receiver takes a second each) and starts it again. Counted per notification:

    sent          notifications made, each under an idempotency key of its own
    delivered     of those, how many the receiver got
    duplicates    deliveries of a key after its first
    lost          notifications the receiver never got

Each must be delivered once: none twice, none lost, none dead-lettered.

`mixed-load` runs everything at once: 200 stations over HJ 212 (every tenth sending NO2 far above
its limit), 64 clients reading the API (`envlink api --workers 2`, as docker-compose.yml runs
it), alerts firing and notifying a webhook receiver on loopback; it checks that no request
failed, every reading was stored once, each notification arrived once, nothing was logged as an
error, and each process's memory after warm-up stayed within 20 % to the end.

    .venv/bin/python bench/faults.py kill-worker [--stations 50] [--seconds 60]
    .venv/bin/python bench/faults.py restart-database [--stations 50] [--seconds 60] [--down 10]
    .venv/bin/python bench/faults.py restart-database-dispatching [--stations 50] [--seconds 60]
                                     [--down 10]
    .venv/bin/python bench/faults.py webhook-down [--stations 50] [--down 300] [--retry-max 30]
    .venv/bin/python bench/faults.py mixed-load [--stations 200] [--seconds 600] [--connections 64]
                                     [--api-processes 2]

`kill-worker`, `webhook-down` and `mixed-load` make their database on the server of
ENVLINK_DATABASE_URL when set (dropped at the end), else on an embedded server in a temporary
directory. `--retry-max` is the worker's ENVLINK_NOTIFY_RETRY_MAX_S: the backlog arrives within
about that long of the receiver's return.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import fresh_database  # noqa: E402
from bench.hj212 import POLLUTANTS, bench_catalogue, items_of, mn_of  # noqa: E402
from ingest.sources.hj212.client import Hj212Client, Values  # noqa: E402
from ingest.sources.hj212.protocol import Packet  # noqa: E402
from schemas.notifications import SubscriptionIn  # noqa: E402
from schemas.rules import load_rules  # noqa: E402
from store.catalogue import seed_catalogue  # noqa: E402
from store.embedded import start_embedded  # noqa: E402
from store.keys import create_key  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.rules import seed_rules  # noqa: E402
from store.subscriptions import create_subscription  # noqa: E402

REPLY_TIMEOUT_S = 5.0  # a data logger sends a packet again when no answer came in this time
WINDOW = 10  # packets a data logger has waiting for an answer at most
PARAMETER_OF = {code: parameter for code, parameter, _ in POLLUTANTS}
NO2 = "a21004"
CO = "a21005"
# Readings start this long before the wall clock and advance a second per reading: recent
# enough that no station is taken for silent (after 2 h without data), far enough that none is
# ever in the future.
HEAD_START = timedelta(hours=1)


@dataclass
class Counts:
    """What the fleet did and what the database holds (see the module's docstring)."""

    sent: int
    resent: int
    acknowledged: int
    stored: int
    duplicates: int
    lost: int
    unacknowledged: int
    resumed_s: float  # from the fault's end to the next acknowledgement

    def line(self) -> str:
        return (
            f"sent {self.sent}, resent packets {self.resent}, acknowledged {self.acknowledged}, "
            f"stored {self.stored}, duplicates {self.duplicates}, lost {self.lost}, "
            f"unacknowledged at the end {self.unacknowledged}; "
            f"acknowledgements resumed {self.resumed_s:.2f} s after the fault ended"
        )


@dataclass
class Station:
    """One data logger that keeps what the platform has not acknowledged and sends it again."""

    index: int
    codes: list[str]
    port: int
    hot: bool = False  # sends NO2 far above its 1-hour limit, so alerts fire and notify
    start_after_s: float = 0.0  # comes online this long after the fleet starts
    client: Hj212Client | None = None
    waiting: dict[datetime, float] = field(default_factory=dict)  # data time -> last sent
    acknowledged: set[datetime] = field(default_factory=set)
    acknowledged_at: list[float] = field(default_factory=list)  # time.monotonic()
    generated: int = 0
    frames: int = 0
    _time_of_qn: dict[str, datetime] = field(default_factory=dict)

    @property
    def mn(self) -> str:
        return mn_of(self.index)

    def values(self, step: int) -> Values:
        """Every value within its limits, except NO2 at a hot station."""
        values = {code: (float(10 + (step + n) % 50), "N") for n, code in enumerate(self.codes)}
        values[CO] = (0.5 + step % 50 / 100, "N")  # mg/m3: its 1-hour limit is 10
        if self.hot:
            values[NO2] = (float(400 + step % 50), "N")
        return values

    def on_reply(self, qn: str, packet: Packet, arrived: float) -> None:
        data_time = self._time_of_qn.pop(qn, None)
        if data_time is not None and packet.cn == "9014":
            self.waiting.pop(data_time, None)
            self.acknowledged.add(data_time)
            self.acknowledged_at.append(time.monotonic())

    async def connected(self) -> Hj212Client | None:
        """The live connection, or a new one; None while the platform does not answer."""
        if self.client is not None and self.client.connected:
            return self.client
        if self.client is not None:
            await self.client.close()
            self.client = None
        client = Hj212Client(mn=self.mn, pw="123456", on_reply=self.on_reply, record=False)
        try:
            await client.connect("127.0.0.1", self.port, timeout_s=1.0)
        except (OSError, TimeoutError):
            return None
        self.client = client
        # A reconnected logger sends at once whatever was not acknowledged.
        for data_time in self.waiting:
            self.waiting[data_time] = 0.0
        return client

    def send(self, client: Hj212Client, data_time: datetime, base: datetime) -> None:
        step = int((data_time - base).total_seconds())
        qn, frame = client.upload_frame("2011", data_time, self.values(step))
        self._time_of_qn[qn] = data_time
        self.waiting[data_time] = time.monotonic()
        self.frames += 1
        client.write(frame)

    async def run(
        self, base: datetime, send_until: float, drain_until: float, every_s: float
    ) -> None:
        """Take a reading every `every_s` until send_until; send until all are acknowledged.

        Like a data logger, the station keeps what it could not deliver and has at most WINDOW
        packets waiting for an answer at a time, oldest first.
        """
        await asyncio.sleep(self.start_after_s)
        next_new = time.monotonic() + every_s * (self.index % 10) / 10
        while True:
            now = time.monotonic()
            if now >= drain_until or (now >= send_until and not self.waiting):
                break
            if now >= next_new and now < send_until:
                self.waiting[base + timedelta(seconds=self.generated)] = 0.0  # not sent yet
                self.generated += 1
                next_new += every_s
            client = await self.connected()
            if client is None:
                await asyncio.sleep(0.2)
                continue
            in_flight = sum(now - sent < REPLY_TIMEOUT_S for sent in self.waiting.values())
            due = [t for t, sent in sorted(self.waiting.items()) if now - sent >= REPLY_TIMEOUT_S]
            for data_time in due[: max(0, WINDOW - in_flight)]:
                self.send(client, data_time, base)
            await asyncio.sleep(max(0.0, min(next_new - time.monotonic(), 0.1)))
        if self.client is not None:
            await self.client.close()


class EnvlinkProcess:
    """`envlink worker` (HJ 212 on `port`) or `envlink api` (HTTP on `port`), logging to a file."""

    def __init__(
        self,
        command: str,
        database_url: str,
        port: int,
        log_path: Path,
        settings: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.options = options
        self.env = {
            **os.environ,
            "ENVLINK_DATABASE_URL": database_url,
            "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
            "ENVLINK_MQTT_HOST": "",
            "ENVLINK_HJ212_PORT" if command == "worker" else "ENVLINK_API_PORT": str(port),
            **(settings or {}),
        }
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the process and wait until it listens on its port."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-m", "envlink.cli", self.command, *self.options],
                env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.command} did not listen on {self.port} in {timeout_s:.0f} s")

    def memory(self) -> dict[str, int]:
        """Resident memory in bytes of the process and of each process it started (API workers)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        children = sorted(root.children(recursive=True), key=lambda child: child.pid)
        return {
            self.command: root.memory_info().rss,
            **{f"{self.command} {n}": c.memory_info().rss for n, c in enumerate(children, 1)},
        }

    @property
    def rss(self) -> int:
        """Resident memory in bytes."""
        assert self.process is not None
        rss: int = psutil.Process(self.process.pid).memory_info().rss
        return rss

    def errors(self) -> list[str]:
        """The log's ERROR and CRITICAL lines."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if " ERROR " in line or " CRITICAL " in line]

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process answers nothing until it is killed (or continued)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, and the exit status (the process is killed if it does not stop in time)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def prepare(database_url: str, stations: int) -> None:
    """Migrate, and seed the joint catalogue plus the fleet's stations."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, bench_catalogue(ROOT / "config", stations))


async def count(
    database_url: str, fleet: list[Station], base: datetime, fault_ended: float
) -> Counts:
    """Compare what the fleet sent and had acknowledged with what the database holds."""
    sent: set[tuple[str, str, datetime]] = set()
    acknowledged: set[tuple[str, str, datetime]] = set()
    for station in fleet:
        code = f"bench-a-{station.index:04d}"
        for step in range(station.generated):
            at = base + timedelta(seconds=step)
            keys = {(code, PARAMETER_OF[c], at) for c in station.codes}
            sent |= keys
            if at in station.acknowledged:
                acknowledged |= keys
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (
            await conn.execute(
                """
                SELECT s.code, p.code, r.time FROM reading r
                JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id
                WHERE s.code LIKE 'bench-a-%%' AND r.period_s = 0
                """
            )
        ).fetchall()
        revised = await (
            await conn.execute(
                """
                SELECT count(*) FROM reading_revision v JOIN station s ON s.id = v.station_id
                WHERE s.code LIKE 'bench-a-%%' AND v.period_s = 0
                """
            )
        ).fetchone()
    stored = {(code, parameter, at.astimezone(UTC)) for code, parameter, at in rows}
    assert revised is not None
    return Counts(
        sent=len(sent),
        resent=sum(station.frames - station.generated for station in fleet),
        acknowledged=len(acknowledged),
        stored=len(stored),
        duplicates=int(revised[0]) + len(stored - sent),
        lost=len(acknowledged - stored),
        unacknowledged=sum(len(station.waiting) for station in fleet),
        resumed_s=min(
            (at for station in fleet for at in station.acknowledged_at if at >= fault_ended),
            default=float("inf"),
        )
        - fault_ended,
    )


async def ingest_through(
    fault: Callable[[], Awaitable[None]],
    *,
    database_url: str,
    worker: EnvlinkProcess,
    stations: int,
    seconds: float,
    fault_after_s: float,
    every_s: float = 0.5,
    drain_s: float = 60.0,
    hot_every: int = 0,
    spread_s: float = 0.0,
) -> Counts:
    """Run the fleet against the worker for `seconds`, with `fault` injected after fault_after_s.

    With hot_every n, every n-th station sends NO2 far above its limit. With spread_s, the
    stations come online one after another over that long (the first at once).
    """
    base = datetime.now(UTC).replace(microsecond=0) - HEAD_START
    fleet = [
        Station(
            i,
            [code for code, _, _ in POLLUTANTS[: items_of(i)]],
            worker.port,
            hot=hot_every > 0 and i % hot_every == 0,
            start_after_s=spread_s * i / stations,
        )
        for i in range(stations)
    ]
    started = time.monotonic()
    send_until, drain_until = started + seconds, started + seconds + drain_s
    running = asyncio.gather(*(s.run(base, send_until, drain_until, every_s) for s in fleet))
    await asyncio.sleep(fault_after_s)
    await fault()
    fault_ended = time.monotonic()
    await running
    return await count(database_url, fleet, base, fault_ended)


FROZEN_BEFORE_KILL_S = 0.2


async def kill_worker(database_url: str, *, stations: int, seconds: float, log_dir: Path) -> Counts:
    """SIGKILL the worker in the middle of ingest and start it again.

    The worker is stopped (SIGSTOP) a fifth of a second before it is killed: what the stations
    send meanwhile (a tenth of them each 50 ms) is in its sockets, unanswered, when it dies. A
    kill alone found every packet answered now and then (the worker answers within
    milliseconds), and the run then tested no resend.
    """
    await prepare(database_url, stations)
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log")
    await worker.start()

    async def fault() -> None:
        worker.freeze()
        await asyncio.sleep(FROZEN_BEFORE_KILL_S)
        worker.kill()
        print(f"worker killed at {time.strftime('%X')}; starting it again", flush=True)
        await worker.start()

    try:
        return await ingest_through(
            fault,
            database_url=database_url,
            worker=worker,
            stations=stations,
            seconds=seconds,
            fault_after_s=seconds / 2,
        )
    finally:
        await worker.stop()


async def restart_database(
    data_dir: Path, *, stations: int, seconds: float, down_s: float, log_dir: Path
) -> Counts:
    """Stop the worker's private PostgreSQL in the middle of ingest for down_s, then start it."""
    server = await asyncio.to_thread(start_embedded, data_dir)
    database_url = server.url
    await prepare(database_url, stations)
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log")
    await worker.start()

    async def fault() -> None:
        nonlocal server
        await asyncio.to_thread(server.stop)
        print(f"database stopped at {time.strftime('%X')} for {down_s:.0f} s", flush=True)
        await asyncio.sleep(down_s)
        server = await asyncio.to_thread(start_embedded, data_dir)
        if server.url != database_url:
            raise RuntimeError(f"the database came back elsewhere: {server.url}")

    try:
        return await ingest_through(
            fault,
            database_url=database_url,
            worker=worker,
            stations=stations,
            seconds=seconds,
            fault_after_s=seconds / 3,
        )
    finally:
        await worker.stop()
        await asyncio.to_thread(server.stop)


class Receiver:
    """A webhook endpoint on loopback: answers 200 and counts deliveries per Idempotency-Key.

    `stop` takes it down as a crashed receiver goes down: its port refuses connections and the
    open ones are cut. `start` brings it back on the same port. Each answer takes `delay_s`.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.deliveries: Counter[str] = Counter()
        self.first_at: dict[str, float] = {}  # key -> time.monotonic() of its first delivery
        self.delay_s = delay_s
        self.answering = 0  # requests received and not yet answered
        self.asked = asyncio.Event()  # set by every request as it arrives
        self.port = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
                )
                await reader.readexactly(int(headers.get("content-length", "0")))
                key = headers.get("idempotency-key", "")
                self.deliveries[key] += 1
                self.first_at.setdefault(key, time.monotonic())
                self.answering += 1
                self.asked.set()
                try:
                    await asyncio.sleep(self.delay_s)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                finally:
                    self.answering -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def subscribe_webhook(conn: psycopg.AsyncConnection[Any], hook: str) -> None:
    """The joint rule set, and one webhook subscription of the joint office with no group wait.

    Grouped by rule and station (the default), so each station's NO2 alert is a message of its own.
    """
    await seed_rules(conn, load_rules(ROOT / "config" / "thresholds.yaml"), at=datetime.now(UTC))
    spec = SubscriptionIn(code="bench-hook", channel="webhook", target=hook, group_wait_s=0)
    await create_subscription(
        conn, agency="joint_office", spec=spec, via="api", at=datetime.now(UTC)
    )


@dataclass
class Deliveries:
    """What the outbox made and what the webhook receiver got, counted per idempotency key."""

    sent: int  # notifications made, each under an idempotency key of its own
    delivered: int  # of those, how many the receiver got
    duplicates: int  # deliveries of a key after its first
    lost: int  # notifications the receiver never got
    unknown: int  # keys the receiver got that no notification has
    dead_lettered: int  # notifications given up on
    made_during_fault: int  # notifications made while the fault lasted
    attempts_failed: int  # delivery attempts that failed and were retried
    attempts_during_fault: int  # delivery attempts that ended while the fault lasted
    last_first_delivery_s: float  # from the fault's end to the last key's first delivery

    def line(self) -> str:
        return (
            f"notifications sent {self.sent} ({self.made_during_fault} made during the fault), "
            f"delivered {self.delivered}, duplicates {self.duplicates}, lost {self.lost}, "
            f"unknown keys {self.unknown}, dead-lettered {self.dead_lettered}; "
            f"{self.attempts_failed} attempts failed and were retried, "
            f"{self.attempts_during_fault} ended during the fault; the last notification "
            f"arrived {self.last_first_delivery_s:.1f} s after the fault ended"
        )

    def problems(self) -> list[str]:
        """What broke "each notification delivered once per idempotency key" (nothing, if held)."""
        problems = []
        if self.sent == 0:
            problems.append("no notification was made")
        if (self.lost, self.duplicates, self.unknown, self.dead_lettered) != (0, 0, 0, 0):
            problems.append("notifications lost, delivered twice, unknown or dead-lettered")
        return problems


async def outbox_settled(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether every reading is rolled up, every alert notified and every notification ended."""
    row = await (
        await conn.execute(
            """
            SELECT (SELECT count(*) FROM series_dirty)
                 + (SELECT count(*) FROM alert a WHERE NOT EXISTS
                       (SELECT 1 FROM notification_item i WHERE i.alert_id = a.id))
                 + (SELECT count(*) FROM notification WHERE status = 'pending')
            """
        )
    ).fetchone()
    return row is not None and row[0] == 0


async def count_deliveries(
    database_url: str,
    receiver: Receiver,
    *,
    fault: tuple[datetime, datetime],
    fault_ended: float,
    settle_s: float,
) -> Deliveries:
    """Wait up to settle_s for the outbox to settle, then compare it with what the receiver got.

    `fault` is when the fault began and ended on the wall clock, `fault_ended` on time.monotonic().
    """
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            if await outbox_settled(conn):
                break
            await asyncio.sleep(0.5)
        rows = await (
            await conn.execute("SELECT id, status, created_at FROM notification")
        ).fetchall()
        attempts = await (
            await conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'retry'),"
                " count(*) FILTER (WHERE finished_at >= %s AND finished_at < %s)"
                " FROM delivery_attempt",
                fault,
            )
        ).fetchone()
    made = {f"ntf-{nid}" for nid, _, _ in rows}
    received = set(receiver.deliveries)
    return Deliveries(
        sent=len(made),
        delivered=len(made & received),
        duplicates=sum(n - 1 for n in receiver.deliveries.values()),
        lost=len(made - received),
        unknown=len(received - made),
        dead_lettered=sum(status == "failed" for _, status, _ in rows),
        made_during_fault=sum(fault[0] <= created < fault[1] for _, _, created in rows),
        attempts_failed=int(attempts[0]) if attempts else 0,
        attempts_during_fault=int(attempts[1]) if attempts else 0,
        last_first_delivery_s=max(receiver.first_at.values(), default=fault_ended) - fault_ended,
    )


async def webhook_down(
    database_url: str,
    *,
    stations: int,
    down_s: float,
    log_dir: Path,
    retry_max_s: float = 30.0,
) -> Deliveries:
    """A webhook receiver down for down_s while alerts fire, then back: each delivered once.

    The stations all send NO2 far above its limit and come online one after another over the
    first two thirds of the outage, so alerts fire and notifications are made all through it.
    The worker's retries wait at most retry_max_s (ENVLINK_NOTIFY_RETRY_MAX_S), so the backlog
    is delivered within about that long of the receiver's return.
    """
    await prepare(database_url, stations)
    receiver = Receiver()
    hook = await receiver.start()
    await receiver.stop()  # down before the first alert fires
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await subscribe_webhook(conn, hook)
    retries = {"ENVLINK_NOTIFY_RETRY_BASE_S": "1", "ENVLINK_NOTIFY_RETRY_MAX_S": f"{retry_max_s:g}"}
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log", retries)
    await worker.start()
    went_down = datetime.now(UTC)
    came_back: list[tuple[datetime, float]] = []  # on the wall clock, on time.monotonic()

    async def fault() -> None:
        await asyncio.sleep(down_s)
        await receiver.start()
        came_back.append((datetime.now(UTC), time.monotonic()))
        print(f"webhook receiver back at {time.strftime('%X')} after {down_s:.0f} s", flush=True)

    try:
        counts = await ingest_through(
            fault,
            database_url=database_url,
            worker=worker,
            stations=stations,
            seconds=down_s + 2,
            fault_after_s=0.0,
            hot_every=1,
            spread_s=down_s * 2 / 3,
        )
        if (counts.lost, counts.unacknowledged) != (0, 0):
            raise RuntimeError(f"the fleet's readings were not all stored: {counts.line()}")
        return await count_deliveries(
            database_url,
            receiver,
            fault=(went_down, came_back[0][0]),
            fault_ended=came_back[0][1],
            settle_s=retry_max_s * 2 + 30,
        )
    finally:
        await worker.stop()
        await receiver.stop()


async def restart_database_dispatching(
    data_dir: Path, *, stations: int, seconds: float, down_s: float, log_dir: Path
) -> tuple[Counts, Deliveries]:
    """Stop the worker's private PostgreSQL while notifications are being delivered, then start it.

    The stations all send NO2 far above its limit, coming online one after another over the first
    two thirds of `seconds`; the receiver takes a second to answer each delivery. As soon as one
    is being answered the database stops, so its outcome can only be recorded after the return.
    """
    server = await asyncio.to_thread(start_embedded, data_dir)
    database_url = server.url
    await prepare(database_url, stations)
    receiver = Receiver(delay_s=1.0)
    hook = await receiver.start()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await subscribe_webhook(conn, hook)
    retries = {"ENVLINK_NOTIFY_RETRY_BASE_S": "1", "ENVLINK_NOTIFY_RETRY_MAX_S": "5"}
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log", retries)
    await worker.start()
    outage: list[tuple[datetime, float]] = []  # stopped, started again: wall clock, monotonic

    async def fault() -> None:
        nonlocal server
        await asyncio.wait_for(receiver.asked.wait(), timeout=seconds)  # one being answered
        outage.append((datetime.now(UTC), time.monotonic()))
        await asyncio.to_thread(server.stop)
        print(f"database stopped at {time.strftime('%X')} for {down_s:.0f} s", flush=True)
        await asyncio.sleep(down_s)
        server = await asyncio.to_thread(start_embedded, data_dir)
        outage.append((datetime.now(UTC), time.monotonic()))
        if server.url != database_url:
            raise RuntimeError(f"the database came back elsewhere: {server.url}")

    try:
        counts = await ingest_through(
            fault,
            database_url=database_url,
            worker=worker,
            stations=stations,
            seconds=seconds,
            fault_after_s=0.0,
            hot_every=1,
            spread_s=seconds * 2 / 3,
        )
        deliveries = await count_deliveries(
            database_url,
            receiver,
            fault=(outage[0][0], outage[1][0]),
            fault_ended=outage[1][1],
            settle_s=60,
        )
        return counts, deliveries
    finally:
        await worker.stop()
        await receiver.stop()
        await asyncio.to_thread(server.stop)


def growth(start: float, end: float) -> float:
    """How much memory grew from start to end, as a share of start (infinite from nothing)."""
    return end / start - 1 if start else math.inf


@dataclass
class Mixed:
    """What a mixed-load run did: ingest counts, API answers, alerts, deliveries, memory."""

    ingest: Counts
    api_answers: Counter[int]  # status -> requests; 0: no answer (see api_failures)
    api_failures: Counter[str]  # why requests got no answer: the client's exception
    api_p99_ms: float  # as the clients saw it
    api_served_p99_s: float  # as the API measured it (the upper bound of its histogram bucket)
    alerts: int
    notifications: int
    deliveries: int
    delivered_twice: int
    rss_mb: dict[str, tuple[float, float]]  # process -> (after warm-up, at the end)
    errors: dict[str, list[str]]  # process -> its log's ERROR lines

    def lines(self) -> list[str]:
        answers = ", ".join(f"{n} × {status}" for status, n in sorted(self.api_answers.items()))
        memory = ", ".join(
            f"{name} {start:.0f} → {end:.0f} MB ({growth(start, end) * 100:+.0f} %)"
            for name, (start, end) in self.rss_mb.items()
        )
        return [
            f"ingest: {self.ingest.line()}",
            f"api: {answers}; p99 {self.api_p99_ms:.0f} ms at the clients, "
            f"≤ {self.api_served_p99_s:g} s served"
            + "".join(f"; {n} × {name}" for name, n in self.api_failures.items()),
            f"alerts {self.alerts}, notifications {self.notifications}, webhook deliveries "
            f"{self.deliveries} ({self.delivered_twice} keys delivered more than once)",
            f"RSS: {memory}",
            "errors logged: "
            + ", ".join(f"{name} {len(lines)}" for name, lines in self.errors.items()),
            *(
                f"  {name}: {line[:300]}"
                for name, lines in self.errors.items()
                for line in lines[:3]
            ),
        ]


API_PATHS = (
    "/v1/latest",
    "/v1/latest?area=dongjiang",
    "/v1/stations",
    "/v1/alerts?state=firing",
    "/v1/aqi?city=guangzhou",
)


async def read_api(
    base_url: str, key: str, connections: int, seconds: float, failures: Counter[str]
) -> list[tuple[int, float]]:
    """`connections` clients reading the API in a loop for `seconds`: (status, ms) per request.

    Each client keeps a connection of its own and sends its next request as soon as the last is
    answered (no pause: the API is kept saturated). A request that got no answer counts as
    status 0, and its exception's name in `failures`.
    """
    answers: list[tuple[int, float]] = []
    headers = {"Authorization": f"Bearer {key}"}
    end = time.monotonic() + seconds

    async def client(index: int) -> None:
        turn = index
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, limits=httpx.Limits(max_connections=1), timeout=30
        ) as http:
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    status = (await http.get(API_PATHS[turn % len(API_PATHS)])).status_code
                except httpx.HTTPError as exc:
                    status = 0
                    failures[type(exc).__name__] += 1
                answers.append((status, (time.perf_counter() - started) * 1000))
                turn += 1

    await asyncio.gather(*(client(i) for i in range(connections)))
    return answers


async def served_p99_s(base_url: str, key: str) -> float:
    """The API's own 99th-percentile answer time (GET, all routes), from its /metrics histogram:
    the upper bound of the bucket holding it (inf beyond the last)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {key}"})).text
    buckets: Counter[float] = Counter()
    for line in text.splitlines():
        if line.startswith("envlink_http_request_duration_seconds_bucket{") and (
            'method="GET"' in line and 'route="/metrics"' not in line
        ):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] += float(line.rsplit(" ", 1)[1])
    total = buckets[math.inf]
    return next((le for le in sorted(buckets) if buckets[le] >= 0.99 * total), math.inf)


def api_options(processes: int) -> tuple[str, ...]:
    return ("--workers", str(processes)) if processes > 1 else ()


async def mixed_load(
    database_url: str,
    *,
    stations: int,
    seconds: float,
    connections: int,
    log_dir: Path,
    api_processes: int = 2,
) -> Mixed:
    """HJ 212 stations, API readers and alerts notifying a webhook, all at once for `seconds`.

    The API serves from `api_processes` processes (`envlink api --workers N`), two by default
    as docker-compose.yml runs it.
    """
    await prepare(database_url, stations)
    receiver = Receiver()
    hook = await receiver.start()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await subscribe_webhook(conn, hook)
        _, key = await create_key(conn, agency="joint_office", roles=["reader"], rate_limit=10**7)
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log")
    api = EnvlinkProcess(
        "api", database_url, free_port(), log_dir / "api.log", options=api_options(api_processes)
    )
    await asyncio.gather(worker.start(), api.start())
    answers: list[tuple[int, float]] = []
    failures: Counter[str] = Counter()
    served_p99: list[float] = []
    rss: dict[str, list[int]] = {}  # process -> after warm-up, at the end

    async def load() -> None:
        # Warm-up: every process has served, rolled up and evaluated long enough that its
        # caches, statement plans and allocator pools are in place (20 s of a 60 s run, 30 s of
        # longer ones); what grows after that grows with the load.
        warm_up = min(30.0, seconds / 3)
        reading = asyncio.create_task(
            read_api(f"http://127.0.0.1:{api.port}", key, connections, seconds, failures)
        )
        await asyncio.sleep(warm_up)
        for name, size in {**worker.memory(), **api.memory()}.items():
            rss[name] = [size]
        answers.extend(await reading)
        served_p99.append(await served_p99_s(f"http://127.0.0.1:{api.port}", key))
        for name, size in {**worker.memory(), **api.memory()}.items():
            rss.setdefault(name, [0]).append(size)

    try:
        counts = await ingest_through(
            load,
            database_url=database_url,
            worker=worker,
            stations=stations,
            seconds=seconds,
            fault_after_s=0.0,
            every_s=2.0,
            hot_every=10,
        )
        await asyncio.sleep(5)  # the last notifications' delivery
    finally:
        await asyncio.gather(worker.stop(), api.stop())
        await receiver.stop()
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        alerts, notifications = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM alert), (SELECT count(*) FROM notification)"
            )
        ).fetchone() or (0, 0)
    latencies = sorted(ms for _, ms in answers)
    return Mixed(
        ingest=counts,
        api_answers=Counter(status for status, _ in answers),
        api_failures=failures,
        api_served_p99_s=served_p99[0] if served_p99 else math.nan,
        api_p99_ms=latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        alerts=int(alerts),
        notifications=int(notifications),
        deliveries=receiver.deliveries.total(),
        delivered_twice=sum(n > 1 for n in receiver.deliveries.values()),
        rss_mb={name: (v[0] / 2**20, v[-1] / 2**20) for name, v in rss.items()},
        errors={"worker": worker.errors(), "api": api.errors()},
    )


def mixed_verdict(mixed: Mixed) -> list[str]:
    """What went wrong in a mixed-load run (nothing, when it held)."""
    ingest, problems = mixed.ingest, []
    if (ingest.lost, ingest.duplicates, ingest.stored) != (0, 0, ingest.sent):
        problems.append("readings lost, stored twice or never stored")
    if set(mixed.api_answers) != {200}:
        problems.append(f"API answers other than 200: {dict(mixed.api_answers)}")
    if mixed.alerts == 0 or mixed.deliveries == 0 or mixed.delivered_twice:
        problems.append("alerts did not fire and reach the webhook exactly once each")
    for name, (start, end) in mixed.rss_mb.items():
        if abs(growth(start, end)) > 0.2:
            problems.append(f"{name} RSS moved more than 20 % after warm-up")
    for name, lines in mixed.errors.items():
        problems += [f"{name}: {line}" for line in lines[:5]]
    return problems


def ingest_problems(counts: Counts) -> list[str]:
    if (counts.lost, counts.duplicates, counts.stored) != (0, 0, counts.sent):
        return ["acknowledged readings lost, stored twice or never stored"]
    return []


async def run(args: argparse.Namespace, log_dir: Path) -> tuple[list[str], list[str]]:
    """Run the fault the arguments name: the lines of its report and its problems."""
    if args.fault == "restart-database-dispatching":
        counts, deliveries = await restart_database_dispatching(
            log_dir / "db",
            stations=args.stations,
            seconds=args.seconds,
            down_s=args.down,
            log_dir=log_dir,
        )
        lines = [f"ingest: {counts.line()}", f"notifications: {deliveries.line()}"]
        return lines, ingest_problems(counts) + deliveries.problems()
    if args.fault == "restart-database":
        counts = await restart_database(
            log_dir / "db",
            stations=args.stations,
            seconds=args.seconds,
            down_s=args.down,
            log_dir=log_dir,
        )
        return [counts.line()], ingest_problems(counts)
    async with fresh_database("envlink_faults") as database:
        if args.fault == "mixed-load":
            mixed = await mixed_load(
                database.url,
                stations=args.stations,
                seconds=args.seconds,
                connections=args.connections,
                log_dir=log_dir,
                api_processes=args.api_processes,
            )
            return mixed.lines(), mixed_verdict(mixed)
        if args.fault == "webhook-down":
            deliveries = await webhook_down(
                database.url,
                stations=args.stations,
                down_s=args.down,
                log_dir=log_dir,
                retry_max_s=args.retry_max,
            )
            return [deliveries.line()], deliveries.problems()
        counts = await kill_worker(
            database.url, stations=args.stations, seconds=args.seconds, log_dir=log_dir
        )
        return [counts.line()], ingest_problems(counts)


# Per fault: stations, seconds of sending, seconds the database or the receiver is away.
DEFAULTS = {
    "kill-worker": (50, 60.0, 0.0),
    "restart-database": (50, 60.0, 10.0),
    "restart-database-dispatching": (50, 60.0, 10.0),
    "webhook-down": (50, 0.0, 300.0),
    "mixed-load": (200, 600.0, 0.0),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fault", choices=list(DEFAULTS))
    parser.add_argument("--stations", type=int, help="50, or 200 for mixed-load")
    parser.add_argument("--seconds", type=float, help="60, or 600 for mixed-load")
    parser.add_argument(
        "--down", type=float, help="seconds the database (10) or the webhook receiver (300) is away"
    )
    parser.add_argument("--connections", type=int, default=64, help="API readers (mixed-load)")
    parser.add_argument(
        "--api-processes", type=int, default=2, help="envlink api --workers N (mixed-load)"
    )
    parser.add_argument(
        "--retry-max",
        type=float,
        default=30.0,
        help="longest wait between two delivery attempts (webhook-down)",
    )
    args = parser.parse_args()
    stations, seconds, down = DEFAULTS[args.fault]
    args.stations = args.stations or stations
    args.seconds = args.seconds or seconds
    args.down = args.down or down
    with tempfile.TemporaryDirectory(prefix="envlink-faults-") as folder:
        lines, problems = await run(args, Path(folder))
    took = f"{args.down:.0f} s down" if args.fault == "webhook-down" else f"{args.seconds:.0f} s"
    print(f"{args.fault}: {args.stations} stations, {took}")
    print("\n".join(lines))
    print("PASS" if not problems else "FAIL:\n  " + "\n  ".join(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    asyncio.run(main())
