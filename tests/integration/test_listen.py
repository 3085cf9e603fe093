"""The one listening connection over real PostgreSQL: fan-out, new channels, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from core.errors import DatabaseUnavailable
from store.listen import Listener

NAME = "fanout"


class Heard:
    """Records what one subscriber was handed; None stands for a reconnect."""

    def __init__(self) -> None:
        self.payloads: list[str | None] = []
        self.changed = asyncio.Event()

    def __call__(self, payload: str | None) -> None:
        self.payloads.append(payload)
        self.changed.set()

    async def until(self, count: int, within_s: float = 3.0) -> None:
        async with asyncio.timeout(within_s):
            while len(self.payloads) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def listener(database_url: str) -> AsyncIterator[Listener]:
    started = Listener(database_url, name=NAME)
    yield started
    await started.stop()


async def _notify(pool: AsyncConnectionPool, channel: str, payload: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])


async def _listening_backends(pool: AsyncConnectionPool) -> list[tuple[int, str]]:
    """(pid, last query) of this database's backends opened by the listener under test."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pid, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [f"envlink {NAME} listener"],
        )
        return [(int(pid), str(query)) for pid, query in await cur.fetchall()]


async def test_a_notification_reaches_every_subscriber_of_its_channel_over_one_connection(
    db: AsyncConnectionPool, listener: Listener
) -> None:
    alerts = [Heard(), Heard(), Heard()]
    keys = [Heard(), Heard()]
    for heard in alerts:
        listener.subscribe("envlink_test_alerts", heard)
    for heard in keys:
        listener.subscribe("envlink_test_keys", heard)
    await listener.start()
    [(_, query)] = await _listening_backends(db)
    assert query.startswith("LISTEN ")
    await _notify(db, "envlink_test_alerts", "a1")
    await _notify(db, "envlink_test_keys", "k1")
    await _notify(db, "envlink_test_alerts", "a2")
    await _notify(db, "envlink_test_nobody", "n1")
    for heard in [*alerts, *keys]:
        await heard.until(2 if heard in alerts else 1)
    await asyncio.sleep(0.1)  # nothing more arrives
    assert [heard.payloads for heard in alerts] == [["a1", "a2"]] * 3
    assert [heard.payloads for heard in keys] == [["k1"]] * 2
    assert len(await _listening_backends(db)) == 1


async def test_a_channel_subscribed_after_start_is_listened_on_the_same_connection(
    db: AsyncConnectionPool, listener: Listener
) -> None:
    first = Heard()
    listener.subscribe("envlink_test_first", first)
    await listener.start()
    [(pid, _)] = await _listening_backends(db)
    later = Heard()
    listener.subscribe("envlink_test_later", later)
    async with asyncio.timeout(3):
        await listener.listening("envlink_test_later")
    await _notify(db, "envlink_test_later", "hello")
    await _notify(db, "envlink_test_first", "again")
    await later.until(1)
    await first.until(1)
    assert (later.payloads, first.payloads) == (["hello"], ["again"])
    assert [p for p, _ in await _listening_backends(db)] == [pid]
    listener.unsubscribe("envlink_test_later", later)
    await _notify(db, "envlink_test_later", "unheard")
    await _notify(db, "envlink_test_first", "last")
    await first.until(2)
    assert later.payloads == ["hello"]


async def test_after_its_backend_is_killed_the_listener_reconnects_and_tells_subscribers(
    db: AsyncConnectionPool, listener: Listener
) -> None:
    heard = Heard()
    hooks: list[bool] = []

    async def hook() -> None:
        hooks.append(listener.connected)  # run before the listener says it is back

    listener.subscribe("envlink_test_alerts", heard)
    listener.add_reconnect_hook(hook)
    await listener.start()
    [(pid, _)] = await _listening_backends(db)
    async with db.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    killed = time.monotonic()
    await heard.until(1)  # told of the reconnect
    back_after = time.monotonic() - killed
    assert heard.payloads == [None]
    assert (listener.connected, listener.reconnects, hooks) == (True, 1, [False])
    [(new_pid, _)] = await _listening_backends(db)
    assert new_pid != pid
    # The first retry comes after 50 ms, so with the server up the new connection is at hand
    # long before the 3 s within which service must resume.
    assert back_after < 3.0
    await _notify(db, "envlink_test_alerts", "after")
    await heard.until(2)
    assert heard.payloads == [None, "after"]


async def test_start_gives_up_on_an_unreachable_server_with_a_clear_error() -> None:
    nowhere = Listener("postgresql://nobody@127.0.0.1:1/none", name="nowhere")
    with pytest.raises(DatabaseUnavailable) as raised:
        await nowhere.start(timeout_s=0.5)
    assert str(raised.value) == (
        "cannot listen for notifications at user=nobody dbname=none host=127.0.0.1 port=1:"
        " no connection within 0.5 s"
    )
    assert (nowhere.connected, nowhere.down) == (False, False)
