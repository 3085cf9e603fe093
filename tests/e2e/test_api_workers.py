"""`envlink api --workers 2` as production runs it: two processes serve, SIGTERM stops them all
(an open alert stream of each ended cleanly at once, no traceback)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psutil
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

from envlink.cli import _parser
from envlink.runtime import GRACEFUL_SHUTDOWN_S
from store.keys import create_key
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.slow

WORKERS = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def api_port() -> int:
    return _free_port()


@pytest.fixture
def api(database_url: str, api_port: int) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": database_url,
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_API_PORT": str(api_port),
        "ENVLINK_RATE_LIMITS": "off",  # one key makes up to 160 requests
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "envlink.cli", "api", "--workers", str(WORKERS)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def _key(database_url: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        _, plain = await create_key(conn, agency="dg_eeb", roles=["reader"])
    return {"Authorization": f"Bearer {plain}"}


async def _listeners(database_url: str) -> int:
    """How many API processes hold their listening connection to the database."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'envlink api listener'"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _serving_pid(workers: list[psutil.Process], api_port: int, client_port: int) -> int:
    """The worker process holding the server side of the client's TCP connection."""
    for worker in workers:
        for connection in worker.net_connections(kind="tcp"):
            if (
                connection.laddr
                and connection.laddr.port == api_port
                and connection.raddr
                and connection.raddr.port == client_port
            ):
                return worker.pid
    raise AssertionError(f"no worker holds the connection from port {client_port}")


async def _a_stream_on_each(
    base: str, headers: dict[str, str], workers: list[psutil.Process], api_port: int
) -> list[tuple[httpx.AsyncClient, asyncio.Task[tuple[list[str], float]]]]:
    """An open alert stream served by each worker: its client, and the task reading it to its
    end (its lines, and time.monotonic() when it ended)."""
    streams: dict[int, tuple[httpx.AsyncClient, asyncio.Task[tuple[list[str], float]]]] = {}

    async def follow(
        client: httpx.AsyncClient, opened: asyncio.Future[int]
    ) -> tuple[list[str], float]:
        async with client.stream("GET", "/v1/alerts/stream", headers=headers) as response:
            assert response.status_code == 200
            _, port = response.extensions["network_stream"].get_extra_info("client_addr")
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if not opened.done():
                    opened.set_result(port)
        return lines, time.monotonic()

    for _ in range(40):
        client = httpx.AsyncClient(base_url=base, timeout=30)
        opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        following = asyncio.create_task(follow(client, opened))
        async with asyncio.timeout(10):
            pid = _serving_pid(workers, api_port, await opened)
        if pid in streams:
            following.cancel()
            await client.aclose()
        else:
            streams[pid] = (client, following)
        if len(streams) == len(workers):
            return list(streams.values())
    raise AssertionError(f"no stream served by each worker: {sorted(streams)}")


async def test_two_worker_processes_serve_and_sigterm_stops_them_all(
    db: AsyncConnectionPool, database_url: str, api: subprocess.Popen[str], api_port: int
) -> None:
    headers = await _key(database_url)
    base = f"http://127.0.0.1:{api_port}"
    parent = psutil.Process(api.pid)
    deadline = time.monotonic() + 120  # a busy 2-core machine
    async with httpx.AsyncClient(base_url=base, timeout=10) as probe:
        while True:
            assert api.poll() is None, api.stdout.read() if api.stdout else ""
            try:
                if (await probe.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            await asyncio.sleep(0.2)
    # Each process listens on one connection of its own once it has started.
    while await _listeners(database_url) < WORKERS:
        assert time.monotonic() < deadline, "the API processes did not all start"
        await asyncio.sleep(0.2)
    assert await _listeners(database_url) == WORKERS
    # uvicorn's spawned workers: the API processes (a resource tracker may sit beside them).
    workers = [
        child
        for child in parent.children()
        if "multiprocessing.resource_tracker" not in " ".join(child.cmdline())
    ]
    assert len(workers) == WORKERS

    served_by: set[int] = set()
    # Each client has a connection of its own; the kernel hands each to one worker.
    for _ in range(20):
        clients = [httpx.AsyncClient(base_url=base, timeout=10) for _ in range(8)]
        try:
            answers = await asyncio.gather(
                *(client.get("/v1/stations", headers=headers) for client in clients)
            )
            assert [a.status_code for a in answers] == [200] * len(clients)
            for answer in answers:
                _, client_port = answer.extensions["network_stream"].get_extra_info("client_addr")
                served_by.add(_serving_pid(workers, api_port, client_port))
        finally:
            for client in clients:
                await client.aclose()
        if len(served_by) == WORKERS:
            break
    assert served_by == {worker.pid for worker in workers}

    streams = await _a_stream_on_each(base, headers, workers, api_port)
    api.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert await asyncio.to_thread(api.wait, 20) == 0
    for stream, opened in streams:
        lines, ended = await opened
        # Ended by the server at once, cleanly (a cut connection raises in httpx).
        assert lines == ["retry: 2000", ""]
        assert ended - stopped_at < GRACEFUL_SHUTDOWN_S
        await stream.aclose()
    output = api.stdout.read() if api.stdout else ""
    assert "Traceback" not in output, output
    assert [
        worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers
    ] == [False] * WORKERS


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_a_worker_count_below_one_is_refused(
    workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(["api", "--workers", workers])
    assert stopped.value.code == 2
    assert f"argument --workers: must be a whole number of at least 1, not {workers!r}" in (
        capsys.readouterr().err
    )


def _count(text: str, route: str, status: str) -> float:
    """The value of envlink_http_requests_total for GET `route` and `status` in a scrape."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {"method": "GET", "route": route, "status": status}
            if sample.name == "envlink_http_requests_total" and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_metrics_add_up_every_process(
    api: subprocess.Popen[str], api_port: int, database_url: str
) -> None:
    headers = await _key(database_url)
    base = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 120  # a busy 2-core machine
    while await _listeners(database_url) < WORKERS:
        assert api.poll() is None, api.stdout.read() if api.stdout else ""
        assert time.monotonic() < deadline, "the API processes did not all start"
        await asyncio.sleep(0.2)
    workers = [
        child
        for child in psutil.Process(api.pid).children()
        if "multiprocessing.resource_tracker" not in " ".join(child.cmdline())
    ]
    metrics_dir = workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
    served_by: set[int] = set()
    sent = 0
    while len(served_by) < WORKERS:
        assert time.monotonic() < deadline, "one process served every request"
        clients = [httpx.AsyncClient(base_url=base, timeout=10) for _ in range(4)]
        try:
            answers = await asyncio.gather(
                *(client.get("/v1/stations", headers=headers) for client in clients)
            )
            assert [a.status_code for a in answers] == [200] * len(clients)
            sent += len(clients)
            for answer in answers:
                _, client_port = answer.extensions["network_stream"].get_extra_info("client_addr")
                served_by.add(_serving_pid(workers, api_port, client_port))
        finally:
            for client in clients:
                await client.aclose()
    # Whichever process answers a scrape, it counts the requests of both.
    scrapes = []
    for _ in range(4):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            scrapes.append(await client.get("/metrics"))
    assert [_count(s.text, "/v1/stations", "200") for s in scrapes] == [float(sent)] * 4
    assert sorted(await asyncio.to_thread(os.listdir, metrics_dir)) == sorted(
        f"{kind}_{worker.pid}.db"
        for worker in workers
        for kind in ("counter", "gauge_livesum", "histogram")
    )
    api.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(api.wait, 20) == 0
    assert not await asyncio.to_thread(os.path.exists, metrics_dir)
