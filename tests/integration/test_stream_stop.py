"""The API's alert streams end at once, cleanly, when the server begins to stop
(api.app.end_streams): the open ones and any opened after; served again, streams stay open."""

from __future__ import annotations

import asyncio

import httpx
from psycopg_pool import AsyncConnectionPool

from api.app import create_app, end_streams
from core.settings import Settings
from store.keys import create_key
from tests.integration.test_api_pool import served

OPEN_S = 10


async def _follow(client: httpx.AsyncClient, key: str, opened: asyncio.Event) -> list[str]:
    """The stream's lines up to its end (a cut connection raises in httpx)."""
    async with client.stream("GET", "/v1/alerts/stream", headers={"X-API-Key": key}) as response:
        assert response.status_code == 200
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            opened.set()
    return lines


async def test_streams_end_when_the_server_stops_and_not_after_it_serves_again(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    async with db.connection() as conn:
        _, key = await create_key(conn, agency="gz_eeb", roles=["reader"])
    app = create_app(settings, pool=db)
    for serving in (1, 2):
        async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=OPEN_S) as client:
            opened = asyncio.Event()
            following = asyncio.create_task(_follow(client, key, opened))
            async with asyncio.timeout(OPEN_S):
                await opened.wait()
            # Following the feed (a stream refused as the server stops is not).
            assert (serving, app.state.feed.subscribers) == (serving, 1)
            await end_streams(app)
            async with asyncio.timeout(OPEN_S):
                assert await following == ["retry: 2000", ""]
                # One opened while the server stops ends as it starts.
                assert await _follow(client, key, asyncio.Event()) == ["retry: 2000", ""]
            assert app.state.feed.subscribers == 0
