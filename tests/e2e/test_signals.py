"""SIGTERM and SIGINT to real processes: in-flight work finished, exit 0 within 10 s; an open
alert stream of the API ended cleanly at once, not cut at the end of the graceful shutdown.

`envlink api`, `worker` and `serve` as production runs them, and `python3 dev.py demo` stopped
with Ctrl-C as a terminal sends it (to the whole foreground process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import utcnow
from envlink.check import HEARTBEAT_S, liveness
from envlink.runtime import GRACEFUL_SHUTDOWN_S
from ingest.sources.hj212.client import Hj212Client
from store.keys import create_key
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.slow

START_S = 120  # a busy 2-core machine
STOP_S = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def until_healthy(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + START_S
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        while True:
            assert process.poll() is None, "the process ended during start-up"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            await asyncio.sleep(0.2)


async def connected_station(process: subprocess.Popen[str], port: int) -> Hj212Client:
    device = Hj212Client(mn="44010010000086", pw="123456")
    deadline = time.monotonic() + START_S
    while True:
        assert process.poll() is None, "the process ended during start-up"
        try:
            await device.connect("127.0.0.1", port)
            return device
        except OSError:
            assert time.monotonic() < deadline, "the HJ 212 server did not come up"
            await asyncio.sleep(0.2)


async def follow_stream(port: int, key: str, opened: asyncio.Event) -> tuple[list[str], float]:
    """Read the alert stream to its end: its lines, and time.monotonic() when it ended."""
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=STOP_S * 2) as client,
        client.stream("GET", "/v1/alerts/stream", headers={"X-API-Key": key}) as response,
    ):
        assert response.status_code == 200
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            opened.set()
    return lines, time.monotonic()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["api", "worker", "serve"])
async def test_a_stop_signal_finishes_in_flight_work_and_exits_0_within_10_s(
    command: str,
    signum: signal.Signals,
    db: AsyncConnectionPool,
    database_url: str,
    tmp_path: Path,
) -> None:
    api_port, hj212_port = free_port(), free_port()
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": database_url,
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_API_PORT": str(api_port),
        "ENVLINK_HJ212_PORT": str(hj212_port),
        # A frame waits a second for its commit: the signal comes while it is in flight.
        "ENVLINK_HJ212_BATCH_WINDOW_MS": "1000",
        # Nothing else keeps the event loop busy, so the frame is read before the signal.
        "ENVLINK_ALERT_LOOP_ENABLED": "false",
        "ENVLINK_HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
    }
    with (tmp_path / "log").open("w+") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 (Popen returns at once)
            [sys.executable, "-m", "envlink.cli", command],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            station = stream = None
            if command in ("api", "serve"):
                await until_healthy(process, api_port)
                async with db.connection() as conn:
                    _, key = await create_key(conn, agency="gz_eeb", roles=["reader"])
                opened = asyncio.Event()
                stream = asyncio.create_task(follow_stream(api_port, key, opened))
                async with asyncio.timeout(STOP_S):
                    await opened.wait()
            if command in ("worker", "serve"):
                station = await connected_station(process, hj212_port)
                moment = utcnow().replace(microsecond=0) - timedelta(minutes=2)
                # One upload answered: the worker has started and reads what stations send.
                first = await station.upload("2011", moment, {"a34004": (26.5, "N")})
                assert first is not None and first.cn == "9014"
                # A running worker keeps its heartbeat for `envlink check --liveness`.
                assert liveness(tmp_path / "heartbeat", max_age_s=HEARTBEAT_S * 2).ok
                upload = asyncio.create_task(
                    station.upload(
                        "2011", moment + timedelta(minutes=1), {"a34004": (27.5, "N")},
                        timeout_s=STOP_S,
                    )
                )  # fmt: skip
                await asyncio.sleep(0.3)  # read by the server, waiting for its commit
            stopped_at = time.monotonic()
            process.send_signal(signum)
            answer: object = None
            if station is not None:
                answer = await asyncio.gather(upload, return_exceptions=True)
                await station.close()
            try:
                code: int | None = await asyncio.to_thread(process.wait, STOP_S)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - stopped_at
            if stream is not None:
                lines, ended = await stream
                # Ended by the server at once, cleanly (a cut connection raises in httpx).
                assert lines == ["retry: 2000", ""]
                assert ended - stopped_at < GRACEFUL_SHUTDOWN_S
        finally:
            if stream is not None:
                stream.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        log.seek(0)
        output = log.read()
    if command != "api":
        assert getattr(answer[0], "cn", answer) == "9014", output  # type: ignore[index]
    assert (code, "Traceback" in output) == (0, False), output
    assert took < STOP_S
    if command != "api":
        async with db.connection() as conn:
            cur = await conn.execute("SELECT value FROM reading ORDER BY time")
            assert await cur.fetchall() == [(26.5,), (27.5,)]


def test_ctrl_c_on_dev_demo_lets_the_demo_finish_its_own_shutdown(tmp_path: Path) -> None:
    data_dir = tmp_path / "envlink"
    env = {
        **os.environ,
        "ENVLINK_DATA_DIR": str(data_dir),
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_API_PORT": str(free_port()),
        "ENVLINK_HJ212_PORT": str(free_port()),
        "ENVLINK_DATABASE_URL": "",
    }
    # A session of its own: the test sends Ctrl-C to the process group, as a terminal does.
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "dev.py"), "demo"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + START_S
        # Printed once the demo's database is ready, just before it starts serving.
        while not any(line.startswith("EnvLink demo: ") for line in output):
            line = demo.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(output)
            output.append(line)
        assert (data_dir / "pg" / "postmaster.pid").exists()
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
        output.append(rest)
    finally:
        if demo.poll() is None:
            # The demo runs in a process group of its own: stop it as Ctrl-C would, then dev.py.
            for child in psutil.Process(demo.pid).children():
                child.send_signal(signal.SIGINT)
                with contextlib.suppress(psutil.TimeoutExpired):
                    child.wait(30)
                if child.is_running():
                    child.kill()
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    text = "".join(output)
    # 0, or 130 when the Ctrl-C came before serving began (while the printed key was new).
    assert (demo.returncode in (0, 130), "Traceback" in text) == (True, False), text
    # The embedded server was stopped by the demo, not left running.
    assert not (data_dir / "pg" / "postmaster.pid").exists()
