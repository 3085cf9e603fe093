"""The HJ 212 door under hostile load, over real sockets: the connection cap, forged log lines.

Connections beyond the cap are closed as soon as they are accepted while the stations already
connected are answered; text a device sends reaches the log escaped, one event per line.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterator

import pytest

from core.logging import FORMAT, OneLineFormatter
from ingest.sources.hj212.protocol import build_frame
from ingest.sources.hj212.server import Hj212Server
from tests.e2e.test_hj212_server import Device
from tests.integration.test_hj212_errors import HUANGPU_2011, HUANGPU_REPLY, until

FORGED_MN = "4401\n2026-11-26 12:00:00,000 CRITICAL envlink: forged\x00"
ESCAPED = " 4401\\n2026-11-26 12:00:00,000 CRITICAL envlink: forged\\x00"
StartServer = Callable[..., Awaitable[Hj212Server]]


async def refused_at_once(server: Hj212Server) -> None:
    """A new connection is closed by the server within half a second, having sent nothing."""
    device = await Device.open(server)
    try:
        async with asyncio.timeout(0.5):
            assert await device.reader.read(1) == b""
    except ConnectionResetError:
        pass  # aborted: the reset may arrive before the read
    finally:
        device.writer.close()


async def test_one_over_the_cap_is_closed_at_once_and_stations_are_still_answered(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=3)
    station = await Device.open(server)
    idle = [await Device.open(server) for _ in range(2)]
    await until(lambda: server.connections == 3)

    await refused_at_once(server)

    await station.send(build_frame(HUANGPU_2011))
    assert await station.frames(1) == [HUANGPU_REPLY]
    assert (server.stats.refused, server.connections) == (1, 3)
    # A place freed is a place taken again.
    await idle[0].close()
    await until(lambda: server.connections == 2)
    again = await Device.open(server)
    await until(lambda: server.connections == 3)
    assert server.stats.refused == 1
    for device in (station, idle[1], again):
        await device.close()


async def test_a_burst_over_the_cap_is_refused_but_the_cap_is_kept(
    start_server: StartServer,
) -> None:
    server = await start_server(max_connections=5)
    burst = await asyncio.gather(*(Device.open(server) for _ in range(20)))
    await until(lambda: server.stats.refused == 15)
    assert server.connections == 5
    for device in burst:
        device.writer.close()


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """What the root logger writes, formatted as a process started by `envlink` formats it."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield text
    finally:
        root.removeHandler(handler)


async def test_a_line_feed_and_a_nul_in_an_mn_reach_the_log_escaped_on_one_line(
    start_server: StartServer, log_text: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await start_server()
    log_text.seek(0)
    log_text.truncate()
    forged = HUANGPU_2011.replace("MN=44010010000086", "MN=" + FORGED_MN)
    device = await Device.open(server)
    await device.send(build_frame(forged))
    assert len(await device.frames(1)) == 1  # quarantined, so answered
    await device.close()

    # The server's warning and the pipeline's report both hold the MN, each on one line.
    lines = log_text.getvalue().splitlines()
    assert [re.sub(r"127\.0\.0\.1:\d+", "PEER", line[24:]) for line in lines] == [
        "WARNING ingest.sources.hj212.server: PEER: unknown MN" + ESCAPED + "; its data is"
        " quarantined",
        "INFO ingest.pipeline: hj212: 1 of 1 items rejected, first: unknown MN" + ESCAPED + ":"
        " no station in the catalogue has this HJ 212 MN",
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]", line) for line in lines)
