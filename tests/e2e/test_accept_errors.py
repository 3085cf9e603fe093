"""A process out of file descriptors: accept() fails for every waiting connection, the log says
so once per interval (not once per attempt), and the connections it holds are still served.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from core.logging import ACCEPT_FAILED
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# An echo server whose open-files limit leaves room for about a dozen connections.
SERVER = """
import asyncio, os, resource, sys
from core.logging import configure_logging, quiet_accept_errors

async def echo(reader, writer):
    while data := await reader.read(100):
        writer.write(data)
        await writer.drain()

async def main():
    configure_logging("INFO")
    quiet_accept_errors(asyncio.get_running_loop())
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=200)
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(4)
    # Python 3.11 logs its handlers' tasks cancelled at interpreter shutdown as errors.
    sys.stderr.flush()
    os._exit(0)

asyncio.run(main())
"""


def test_accept_errors_are_logged_once_and_held_connections_still_served() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    clients: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        first = socket.create_connection(("127.0.0.1", port), timeout=2)
        first.sendall(b"ping")
        assert first.recv(100) == b"ping"
        # Far more connections than descriptors: the kernel queues them, accept() fails.
        for _ in range(60):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(1.0)
        first.sendall(b"still here")
        assert first.recv(100) == b"still here"
        first.close()
        _, errors = server.communicate(timeout=10)
    finally:
        for client in clients:
            client.close()
        if server.poll() is None:
            server.kill()
            server.wait()
    lines = errors.splitlines()
    failed = [line for line in lines if ACCEPT_FAILED in line]
    assert len(failed) == 1, errors
    assert "Too many open files; new connections wait until descriptors are free" in failed[0]
    assert "Traceback" not in errors
