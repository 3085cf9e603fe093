"""One listening connection per process, shared by everything in it that waits for a NOTIFY.

LISTEN holds its connection for as long as it listens, so that connection cannot come from a
pool, and one per waiting stage (or per SSE stream) would cost a backend each. Instead each
process keeps ONE autocommit connection, LISTENs there on every channel somebody subscribed to
(store/coordination.py names them) and hands each notification to the subscribers of its channel.

When the connection is lost the listener reconnects by itself, retrying after FIRST_RETRY_S and
then at most every RECONNECT_MAX_S, and tells every subscriber, because notifications sent
meanwhile are gone: caches drop what they hold, loops do a round. Whether it is connected is
also the process's quickest way to know that the database is away, without waiting on a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

from psycopg import sql

from core.errors import DatabaseUnavailable
from store.pool import Conn, dedicated_connection, redact

log = logging.getLogger(__name__)

# Reconnection: the first retry after 50 ms, then doubling up to a second, so a process hears
# its channels again within about a second of the database's return.
FIRST_RETRY_S = 0.05
RECONNECT_MAX_S = 1.0
# libpq's smallest useful connect timeout: an unreachable host costs this per attempt.
CONNECT_TIMEOUT_S = 2

Callback = Callable[[str | None], None]
"""Receives each notification's payload, or None after a reconnect (notifications may have been
missed meanwhile). It runs in the listener's task, so it must be quick and must not block."""

ReconnectHook = Callable[[], Awaitable[object]]


class Listener:
    """The process's listening connection: subscriptions per channel, reconnection, liveness."""

    def __init__(self, url: str, *, name: str, reconnect_max_s: float = RECONNECT_MAX_S) -> None:
        self._url = url
        self.name = name
        self._reconnect_max_s = reconnect_max_s
        self._subscribers: dict[str, list[Callback]] = {}
        self._hooks: list[ReconnectHook] = []
        self._task: asyncio.Task[None] | None = None
        self._live = False
        self._listened: frozenset[str] = frozenset()
        self._new_channel = asyncio.Event()
        self._changed = asyncio.Event()
        self.reconnects = 0  # connections made after the first

    @property
    def connected(self) -> bool:
        """Whether notifications reach this process now."""
        return self._live

    @property
    def down(self) -> bool:
        """Started but without its connection: the database is away, or was until a moment ago."""
        return self._task is not None and not self._live

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Hand every notification on `channel` (and every reconnect) to `callback`."""
        callbacks = self._subscribers.setdefault(channel, [])
        callbacks.append(callback)
        if channel not in self._listened:
            self._new_channel.set()

    def unsubscribe(self, channel: str, callback: Callback) -> None:
        """Stop handing notifications to `callback`; its channel stays listened (costs nothing)."""
        callbacks = self._subscribers.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)

    @contextlib.contextmanager
    def subscribed(self, channel: str, callback: Callback) -> Iterator[None]:
        """`callback` subscribed to `channel` for the duration of the block."""
        self.subscribe(channel, callback)
        try:
            yield
        finally:
            self.unsubscribe(channel, callback)

    def add_reconnect_hook(self, hook: ReconnectHook) -> None:
        """Await `hook` after each reconnect, before the listener says it is connected again.

        For work that must be done before the process trusts the database again, such as
        replacing a pool's connections that died with the server.
        """
        self._hooks.append(hook)

    async def listening(self, channel: str) -> None:
        """Return once notifications on `channel` reach this process (subscribe first)."""
        while not (self._live and channel in self._listened):
            await self._changed.wait()

    async def start(self, *, timeout_s: float = 15.0) -> None:
        """Connect and listen; raises DatabaseUnavailable if no connection is made in time."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name=f"listener-{self.name}")
        try:
            async with asyncio.timeout(timeout_s):
                while not self._live:
                    await self._changed.wait()
        except TimeoutError:
            await self.stop()
            raise DatabaseUnavailable(
                f"cannot listen for notifications at {redact(self._url)}: no connection"
                f" within {timeout_s:g} s"
            ) from None

    async def stop(self) -> None:
        """Close the connection; subscriptions are kept for a later start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.0
        lost = False
        while True:
            try:
                conn = await dedicated_connection(
                    self._url,
                    application_name=f"envlink {self.name} listener",
                    connect_timeout=CONNECT_TIMEOUT_S,
                )
            except DatabaseUnavailable as exc:
                log.debug("%s listener: %s", self.name, exc)
            else:
                try:
                    await self._session(conn, reconnected=lost)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    lost = True
                    log.warning("%s listener: connection lost (%s); reconnecting", self.name, exc)
                finally:
                    if self._live:
                        delay = 0.0  # it worked for a while: the next attempt comes quickly
                    self._set_live(False)
                    with contextlib.suppress(Exception):
                        await conn.close()
            delay = min(max(delay * 2, FIRST_RETRY_S), self._reconnect_max_s)
            # Jitter: the processes of a restarted database do not all reconnect at once.
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))

    async def _session(self, conn: Conn, *, reconnected: bool) -> None:
        listened: set[str] = set()
        await self._listen(conn, listened)
        if reconnected:
            for hook in self._hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("%s listener: a reconnect hook failed", self.name)
            self.reconnects += 1
            log.info("%s listener: connected again", self.name)
        # Connected and told, with no await in between: whoever trusts `connected` (a cache)
        # has already dropped what a missed notification might have invalidated.
        self._set_live(True)
        if reconnected:
            self._deliver_to_all(None)
        while True:
            await self._listen(conn, listened)
            await self._receive_until_new_channel(conn, listened)

    async def _listen(self, conn: Conn, listened: set[str]) -> None:
        self._new_channel.clear()
        new = sorted(set(self._subscribers) - listened)
        if not new:
            return
        await conn.execute(
            sql.SQL("; ").join(sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in new)
        )
        listened.update(new)
        self._listened = frozenset(listened)
        self._announce()

    async def _receive_until_new_channel(self, conn: Conn, listened: set[str]) -> None:
        """Deliver notifications until somebody subscribes to a channel not yet listened.

        The wait for notifications holds the connection, so a LISTEN must interrupt it; that
        only happens when a subscription names a new channel, which is rare after start-up.
        """
        if set(self._subscribers) - listened:
            return
        receiving = asyncio.create_task(self._receive(conn))
        new_channel = asyncio.create_task(self._new_channel.wait())
        try:
            await asyncio.wait((receiving, new_channel), return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiving.cancel()
            new_channel.cancel()
            await asyncio.gather(receiving, new_channel, return_exceptions=True)
        if not receiving.cancelled():
            receiving.result()  # the connection was lost: raise why

    async def _receive(self, conn: Conn) -> None:
        async for notify in conn.notifies():
            for callback in tuple(self._subscribers.get(notify.channel, ())):
                self._call(callback, notify.payload)

    def _deliver_to_all(self, payload: str | None) -> None:
        for callbacks in tuple(self._subscribers.values()):
            for callback in tuple(callbacks):
                self._call(callback, payload)

    def _call(self, callback: Callback, payload: str | None) -> None:
        try:
            callback(payload)
        except Exception:
            log.exception("%s listener: a subscriber failed", self.name)

    def _set_live(self, live: bool) -> None:
        if self._live != live:
            self._live = live
            self._announce()

    def _announce(self) -> None:
        """Wake everyone waiting for a change of state (start, listening)."""
        self._changed.set()
        self._changed = asyncio.Event()


class Wakeup:
    """A loop's doorbell: rung by each notification on its channel, each reconnect, or `ring()`.

    Subscribe it as a Listener callback. A ring is kept until a wait takes it, so a notification
    that arrives while the loop is busy costs one more round, never a missed one.
    """

    def __init__(self) -> None:
        self._rung = asyncio.Event()
        self._reconnected = asyncio.Event()

    def __call__(self, payload: str | None) -> None:
        if payload is None:
            self._reconnected.set()
        self._rung.set()

    def ring(self) -> None:
        """Wake the loop from within the process (work of its own finished, say)."""
        self._rung.set()

    async def wait(self, within_s: float) -> bool:
        """Wait until rung, for `within_s` seconds at most; whether it was rung."""
        return await self._take(self._rung, within_s)

    async def reconnect(self, within_s: float) -> bool:
        """Wait until the listener reconnects, for `within_s` seconds at most (a backoff)."""
        return await self._take(self._reconnected, within_s)

    async def _take(self, event: asyncio.Event, within_s: float) -> bool:
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(within_s, 0.0)):
                    await event.wait()
        rung = event.is_set()
        self._rung.clear()
        self._reconnected.clear()
        return rung
