"""An HJ 212 station while the worker's database is stopped and started again.

A private embedded server, never the machine's: the station keeps its TCP connection through the
outage (its frames go unanswered, so it resends them), and its replies resume within 3 s of the
database's return.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from core.timeutil import CST
from ingest.pipeline import Pipeline
from ingest.sources.hj212.protocol import Frame, build_frame, format_datatime
from ingest.sources.hj212.server import Hj212Server
from schemas.catalogue import load_catalogue
from store.catalogue import CatalogueCache, seed_catalogue
from store.embedded import EmbeddedServer, start_embedded
from store.listen import Listener
from store.migrate import migrate
from store.pool import open_pool
from tests.conftest import CONFIG_DIR, HJ212_NOW
from tests.e2e.test_hj212_server import Device

pytestmark = pytest.mark.slow

OUTAGE_S = 8.0
RESUME_WITHIN_S = 3.0
FIRST_READING = HJ212_NOW.astimezone(CST) - timedelta(minutes=30)


def frame(n: int) -> bytes:
    """gz-a-huangpu's n-th real-time upload, one second after the one before."""
    at = format_datatime(FIRST_READING + timedelta(seconds=n))
    return build_frame(
        f"QN={at}{n % 1000:03d};ST=22;CN=2011;PW=123456;MN=44010010000086;Flag=5;"
        f"CP=&&DataTime={at};a34004-Rtd={n}.5,a34004-Flag=N&&"
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the embedded server's socket path must stay short.
    folder = Path(tempfile.mkdtemp(prefix="envlink-outage-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def database(data_dir: Path) -> AsyncIterator[list[EmbeddedServer | None]]:
    """The private server, migrated and seeded, in a list the test may stop it in (None)."""
    server = await asyncio.to_thread(start_embedded, data_dir)
    running: list[EmbeddedServer | None] = [server]
    try:
        async with await psycopg.AsyncConnection.connect(server.url, autocommit=True) as conn:
            await migrate(conn)
            async with conn.transaction():
                await seed_catalogue(conn, load_catalogue(CONFIG_DIR))
        yield running
    finally:
        if running[0] is not None:
            await asyncio.to_thread(running[0].stop)


async def replies(device: Device) -> AsyncIterator[float]:
    """The moment each reply arrives; the connection closing fails the test."""
    while True:
        data = await device.reader.read(65536)
        assert data, "the server closed the station's connection"
        for event in device.decoder.feed(data):
            if isinstance(event, Frame):
                yield time.monotonic()


async def test_a_station_keeps_its_connection_and_is_answered_within_3_s_of_the_return(
    database: list[EmbeddedServer | None], data_dir: Path
) -> None:
    server = database[0]
    assert server is not None
    url = server.url
    # The worker's pool and listening connection, as envlink worker opens them.
    pool = await open_pool(url, name="worker")
    listener = Listener(url, name="worker")
    listener.add_reconnect_hook(pool.check)
    await listener.start()
    # Not listening, with a short age: the catalogue is read again (and fails) during the outage.
    catalogue = CatalogueCache(pool, max_age_s=0.5)
    pipeline = Pipeline(
        pool, earliest=date(2000, 1, 1), catalogue=catalogue, clock=lambda: HJ212_NOW
    )
    hj212 = Hj212Server(pipeline, pool=pool, port=0, clock=lambda: HJ212_NOW)
    await hj212.start()
    device = await Device.open(hj212)
    answered: list[float] = []

    async def receive() -> None:
        async for at in replies(device):
            answered.append(at)

    receiving = asyncio.create_task(receive())
    try:
        sent = 0

        async def send_for(seconds: float, every_s: float) -> None:
            nonlocal sent
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                await device.send(frame(sent))
                sent += 1
                await asyncio.sleep(every_s)
                assert not receiving.done(), receiving

        await send_for(1.0, 0.25)
        assert len(answered) == sent

        await asyncio.to_thread(server.stop)
        database[0] = None
        await send_for(OUTAGE_S, 0.25)
        before_return = len(answered)

        database[0] = await asyncio.to_thread(start_embedded, data_dir)
        back = time.monotonic()
        while len(answered) == before_return:
            assert time.monotonic() - back < RESUME_WITHIN_S + 2, "no reply after the return"
            await send_for(0.1, 0.1)
        resumed_s = answered[before_return] - back
        print(f"replies resumed {resumed_s:.2f} s after the database's return")
        assert resumed_s < RESUME_WITHIN_S
        assert (hj212.connections, hj212.stats.connections, hj212.stats.idle_closed) == (1, 1, 0)
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        await device.close()
        await hj212.stop()
        await listener.stop()
        await pool.close()
