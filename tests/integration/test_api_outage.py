"""The API while its database is stopped and started again (a private embedded server).

Never the machine's server: this test stops the one it started itself, in a folder of its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from api.app import create_app
from core.settings import Settings
from schemas.catalogue import load_catalogue
from store.catalogue import seed_catalogue
from store.embedded import EmbeddedServer, start_embedded
from store.keys import create_key
from store.migrate import migrate
from tests.conftest import CONFIG_DIR
from tests.integration.test_api_pool import database_of, served


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the embedded server's socket path must stay short.
    folder = Path(tempfile.mkdtemp(prefix="envlink-outage-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def _prepare(url: str) -> dict[str, str]:
    """Migrate and seed the private database; the headers of a fresh key."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, load_catalogue(CONFIG_DIR))
            _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    return {"Authorization": f"Bearer {plain}"}


async def test_a_stopped_database_is_503_at_once_and_the_api_recovers_when_it_returns(
    data_dir: Path,
) -> None:
    server: EmbeddedServer | None = await asyncio.to_thread(start_embedded, data_dir)
    assert server is not None
    try:
        headers = await _prepare(server.url)
        app = create_app(Settings(database_url=server.url, config_dir=CONFIG_DIR))
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/v1/stations", headers=headers)).status_code == 200
            listener = database_of(app).listener
            assert listener is not None

            await asyncio.to_thread(server.stop)
            server = None
            stopped = time.monotonic()
            for path in ("/healthz", "/readyz", "/v1/stations", "/healthz", "/v1/stations"):
                answer = await client.get(path, headers=headers)
                assert (answer.status_code, answer.json()["error"]["code"]) == (
                    503,
                    "database_unavailable",
                ), path
                assert answer.headers["retry-after"] == "5"
                assert time.monotonic() - stopped < 2.0, path
            assert listener.connected is False
            # /metrics still answers, without the counts kept in the database.
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "envlink_database_up 0.0\n" in metrics.text
            assert "envlink_readings_total" not in metrics.text

            server = await asyncio.to_thread(start_embedded, data_dir)
            back = time.monotonic()
            while (await client.get("/healthz")).status_code != 200:
                assert time.monotonic() - back < 3.0, "the API did not recover within 3 s"
                await asyncio.sleep(0.05)
            assert (await client.get("/readyz")).json() == {
                "status": "ready",
                "database": "ok",
                "migrations": "current",
            }
            stations = await client.get("/v1/stations", headers=headers)
            assert stations.status_code == 200
            assert len(stations.json()["items"]) == 20
            assert (listener.connected, listener.reconnects) == (True, 1)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
