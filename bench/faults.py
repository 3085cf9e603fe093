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

    .venv/bin/python bench/faults.py kill-worker [--stations 50] [--seconds 60]
    .venv/bin/python bench/faults.py restart-database [--stations 50] [--seconds 60] [--down 10]

`kill-worker` makes its database on the server of ENVLINK_DATABASE_URL when set (dropped at the
end), else on an embedded server in a temporary directory.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import fresh_database  # noqa: E402
from bench.hj212 import POLLUTANTS, bench_catalogue, items_of, mn_of  # noqa: E402
from ingest.sources.hj212.client import Hj212Client, Values  # noqa: E402
from ingest.sources.hj212.protocol import Packet  # noqa: E402
from store.catalogue import seed_catalogue  # noqa: E402
from store.embedded import start_embedded  # noqa: E402
from store.migrate import migrate  # noqa: E402

REPLY_TIMEOUT_S = 5.0  # a data logger sends a packet again when no answer came in this time
WINDOW = 10  # packets a data logger has waiting for an answer at most
PARAMETER_OF = {code: parameter for code, parameter, _ in POLLUTANTS}


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
        return {code: (float(10 + (step + n) % 50), "N") for n, code in enumerate(self.codes)}

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


class WorkerProcess:
    """`envlink worker` serving HJ 212 on `port`, its log in `log_path`."""

    def __init__(self, database_url: str, port: int, log_path: Path) -> None:
        self.env = {
            **os.environ,
            "ENVLINK_DATABASE_URL": database_url,
            "ENVLINK_CONFIG_DIR": str(ROOT / "config"),
            "ENVLINK_HJ212_PORT": str(port),
            "ENVLINK_MQTT_HOST": "",
        }
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-m", "envlink.cli", "worker"],
                env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the worker did not listen on {self.port} in {timeout_s:.0f} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, and the exit status (the worker is killed if it does not stop in time)."""
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
    worker: WorkerProcess,
    stations: int,
    seconds: float,
    fault_after_s: float,
    every_s: float = 0.5,
    drain_s: float = 60.0,
) -> Counts:
    """Run the fleet against the worker for `seconds`, with `fault` injected after fault_after_s."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    port = worker.port
    fleet = [
        Station(i, [c for c, _, _ in POLLUTANTS[: items_of(i)]], port) for i in range(stations)
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
    worker = WorkerProcess(database_url, free_port(), log_dir / "worker.log")
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
    worker = WorkerProcess(database_url, free_port(), log_dir / "worker.log")
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fault", choices=["kill-worker", "restart-database"])
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--down", type=float, default=10.0, help="seconds the database is away")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envlink-faults-") as folder:
        if args.fault == "kill-worker":
            async with fresh_database("envlink_faults") as database:
                counts = await kill_worker(
                    database.url, stations=args.stations, seconds=args.seconds, log_dir=Path(folder)
                )
        else:
            counts = await restart_database(
                Path(folder) / "db",
                stations=args.stations,
                seconds=args.seconds,
                down_s=args.down,
                log_dir=Path(folder),
            )
    print(f"{args.fault}: {args.stations} stations, {args.seconds:.0f} s: {counts.line()}")
    ok = counts.lost == 0 and counts.duplicates == 0 and counts.stored == counts.sent
    print("PASS" if ok else "FAIL: acknowledged readings lost, stored twice or never stored")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
