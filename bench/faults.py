"""Faults survived: the HJ 212 worker killed, or its database restarted, in the middle of ingest.

A fleet of simulated stations uploads real-time packets (CN 2011, a reply requested) to an
`envlink worker` process, as data loggers do: each keeps every packet the platform has not
acknowledged and sends it again after a reply timeout or a reconnection. Midway the fault is
injected — the worker SIGKILLed and started again (`kill-worker`), or its private PostgreSQL
stopped for a while and started again (`restart-database`, an embedded server of its own, never
a shared one). When the fleet has sent for the given time it re-sends until everything is
acknowledged, and the database is checked:

    sent          readings the fleet generated (each once, whatever the resends)
    resent        packets written again (not answered within 5 s, or the connection lost)
    acknowledged  readings the platform answered 9014 for
    stored        readings in the database
    duplicates    readings stored more than once (a resend stored as a revision)
    lost          acknowledged readings that are not stored

Nothing acknowledged may be lost and nothing stored twice; with the drain complete every reading
sent is stored. tests/e2e/test_faults.py runs both in a bounded form.

`mixed-load` runs everything at once: 200 stations over HJ 212 (every tenth sending NO2 far above
its limit), 64 clients reading the API (`envlink api`), alerts firing and notifying a webhook
receiver on loopback; it checks that no request failed, every reading was stored once, each
notification arrived once, nothing was logged as an error, and each process's memory after
warm-up stayed within 20 % to the end.

    .venv/bin/python bench/faults.py kill-worker [--stations 50] [--seconds 60]
    .venv/bin/python bench/faults.py restart-database [--stations 50] [--seconds 60] [--down 10]
    .venv/bin/python bench/faults.py mixed-load [--stations 200] [--seconds 600] [--connections 64]

`kill-worker` and `mixed-load` make their database on the server of ENVLINK_DATABASE_URL when
set (dropped at the end), else on an embedded server in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
        values = {code: (float(10 + (step + n) % 50), "N") for n, code in enumerate(self.codes)}
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

    def __init__(self, command: str, database_url: str, port: int, log_path: Path) -> None:
        self.command = command
        self.env = {
            **os.environ,
            "ENVLINK_DATABASE_URL": database_url,
            "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
            "ENVLINK_MQTT_HOST": "",
            "ENVLINK_HJ212_PORT" if command == "worker" else "ENVLINK_API_PORT": str(port),
        }
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start the process and wait until it listens on its port."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-m", "envlink.cli", self.command],
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
) -> Counts:
    """Run the fleet against the worker for `seconds`, with `fault` injected after fault_after_s.

    With hot_every n, every n-th station sends NO2 far above its limit.
    """
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    fleet = [
        Station(
            i,
            [code for code, _, _ in POLLUTANTS[: items_of(i)]],
            worker.port,
            hot=hot_every > 0 and i % hot_every == 0,
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


async def kill_worker(database_url: str, *, stations: int, seconds: float, log_dir: Path) -> Counts:
    """SIGKILL the worker in the middle of ingest and start it again."""
    await prepare(database_url, stations)
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log")
    await worker.start()

    async def fault() -> None:
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
    """A webhook endpoint on loopback: answers 200 and counts deliveries per Idempotency-Key."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
                )
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.deliveries[headers.get("idempotency-key", "")] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class Mixed:
    """What a mixed-load run did: ingest counts, API answers, alerts, deliveries, memory."""

    ingest: Counts
    api_answers: Counter[int]
    api_p99_ms: float
    alerts: int
    notifications: int
    deliveries: int
    delivered_twice: int
    rss_mb: dict[str, tuple[float, float]]  # process -> (after warm-up, at the end)
    errors: dict[str, list[str]]  # process -> its log's ERROR lines

    def lines(self) -> list[str]:
        answers = ", ".join(f"{n} × {status}" for status, n in sorted(self.api_answers.items()))
        memory = ", ".join(
            f"{name} {start:.0f} → {end:.0f} MB ({(end / start - 1) * 100:+.0f} %)"
            for name, (start, end) in self.rss_mb.items()
        )
        return [
            f"ingest: {self.ingest.line()}",
            f"api: {answers}; p99 {self.api_p99_ms:.0f} ms",
            f"alerts {self.alerts}, notifications {self.notifications}, webhook deliveries "
            f"{self.deliveries} ({self.delivered_twice} keys delivered more than once)",
            f"RSS: {memory}",
            "errors logged: "
            + ", ".join(f"{name} {len(lines)}" for name, lines in self.errors.items()),
        ]


API_PATHS = (
    "/v1/latest",
    "/v1/latest?area=dongjiang",
    "/v1/stations",
    "/v1/alerts?status=active",
    "/v1/aqi?city=guangzhou",
)


async def read_api(
    base_url: str, key: str, connections: int, seconds: float
) -> list[tuple[int, float]]:
    """`connections` clients reading the API in a loop for `seconds`: (status, ms) per request."""
    answers: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as http:
        end = time.monotonic() + seconds

        async def client(index: int) -> None:
            turn = index
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    status = (await http.get(API_PATHS[turn % len(API_PATHS)])).status_code
                except httpx.HTTPError:
                    status = 0
                answers.append((status, (time.perf_counter() - started) * 1000))
                turn += 1

        await asyncio.gather(*(client(i) for i in range(connections)))
    return answers


async def mixed_load(
    database_url: str, *, stations: int, seconds: float, connections: int, log_dir: Path
) -> Mixed:
    """HJ 212 stations, API readers and alerts notifying a webhook, all at once for `seconds`."""
    await prepare(database_url, stations)
    receiver = Receiver()
    hook = await receiver.start()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await seed_rules(
            conn, load_rules(ROOT / "config" / "thresholds.yaml"), at=datetime.now(UTC)
        )
        spec = SubscriptionIn(code="bench-hook", channel="webhook", target=hook, group_wait_s=0)
        await create_subscription(
            conn, agency="joint_office", spec=spec, via="api", at=datetime.now(UTC)
        )
        _, key = await create_key(conn, agency="joint_office", roles=["reader"], rate_limit=10**7)
    worker = EnvlinkProcess("worker", database_url, free_port(), log_dir / "worker.log")
    api = EnvlinkProcess("api", database_url, free_port(), log_dir / "api.log")
    await asyncio.gather(worker.start(), api.start())
    answers: list[tuple[int, float]] = []
    rss: dict[str, list[int]] = {"worker": [], "api": []}

    async def load() -> None:
        warm_up = min(10.0, seconds / 6)
        reading = asyncio.create_task(
            read_api(f"http://127.0.0.1:{api.port}", key, connections, seconds)
        )
        await asyncio.sleep(warm_up)
        rss["worker"].append(worker.rss)
        rss["api"].append(api.rss)
        answers.extend(await reading)
        rss["worker"].append(worker.rss)
        rss["api"].append(api.rss)

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
        if abs(end / start - 1) > 0.2:
            problems.append(f"{name} RSS moved more than 20 % after warm-up")
    for name, lines in mixed.errors.items():
        problems += [f"{name}: {line}" for line in lines[:5]]
    return problems


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fault", choices=["kill-worker", "restart-database", "mixed-load"])
    parser.add_argument("--stations", type=int, help="50, or 200 for mixed-load")
    parser.add_argument("--seconds", type=float, help="60, or 600 for mixed-load")
    parser.add_argument("--down", type=float, default=10.0, help="seconds the database is away")
    parser.add_argument("--connections", type=int, default=64, help="API readers (mixed-load)")
    args = parser.parse_args()
    mixed = args.fault == "mixed-load"
    stations = args.stations or (200 if mixed else 50)
    seconds = args.seconds or (600.0 if mixed else 60.0)
    with tempfile.TemporaryDirectory(prefix="envlink-faults-") as folder:
        log_dir = Path(folder)
        if args.fault == "restart-database":
            counts = await restart_database(
                log_dir / "db",
                stations=stations,
                seconds=seconds,
                down_s=args.down,
                log_dir=log_dir,
            )
        else:
            async with fresh_database("envlink_faults") as database:
                if mixed:
                    report = await mixed_load(
                        database.url,
                        stations=stations,
                        seconds=seconds,
                        connections=args.connections,
                        log_dir=log_dir,
                    )
                else:
                    counts = await kill_worker(
                        database.url, stations=stations, seconds=seconds, log_dir=log_dir
                    )
    print(f"{args.fault}: {stations} stations, {seconds:.0f} s")
    if mixed:
        print("\n".join(report.lines()))
        problems = mixed_verdict(report)
    else:
        print(counts.line())
        problems = []
        if (counts.lost, counts.duplicates, counts.stored) != (0, 0, counts.sent):
            problems.append("acknowledged readings lost, stored twice or never stored")
    print("PASS" if not problems else "FAIL:\n  " + "\n  ".join(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    asyncio.run(main())
