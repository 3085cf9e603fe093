"""The live alert stream's fan-out: one reader of committed alert events per API process.

Every open stream (GET /v1/alerts/stream) of the process subscribes to the process's AlertFeed.
The feed is woken by the process's one listening connection (a NOTIFY with every committed
event, or a reconnect), reads the new events once on a pooled connection held for that read
only, and hands them to every subscriber in memory. So N open streams hold no database
connection and cost one read per wake-up, not N. A stream that resumes with Last-Event-ID behind
the feed reads what it missed itself (a pooled connection for the catch-up only), then follows
the feed. The feed runs while anyone subscribes and stops with its last subscriber.

When the server begins to stop, `stop()` ends every open stream at once (each response then
ends cleanly, within the server's graceful shutdown) and any stream opened after it ends as it
starts; EventSource clients come back after `retry` and resume from their Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from api.deps import ApiDatabase
from store.alerts import StreamEvent, last_event_id, stream_events
from store.coordination import ALERT_EVENTS_CHANNEL, KEYS_CHANNEL
from store.listen import Wakeup
from store.pool import Conn, unreachable

log = logging.getLogger(__name__)

# Without a listener (or between notifications) the feed still looks this often.
POLL_S = 15.0
# How long the feed holds back events behind a missing id: event ids are taken from a
# sequence before commit, so a lower id may still be committing (or was rolled back).
GAP_HOLD_S = 2.0
STREAM_BATCH = 500
# A stream this far behind (a client not reading) is ended; it resumes with Last-Event-ID.
MAX_BACKLOG = 5000

T = TypeVar("T")


class StreamEnded(Exception):
    """The feed ended this stream: the database is away, its key was revoked, or it lagged."""


class Subscriber:
    """One open stream's place in the feed: the events handed to it and not yet sent."""

    def __init__(self, key_id: int, floor: int | None) -> None:
        self.key_id = key_id
        # The feed's position when this stream joined: every event after it reaches the queue.
        self.floor = floor
        self.placed = asyncio.Event()
        if floor is not None:
            self.placed.set()
        self._events: deque[StreamEvent] = deque()
        self._ready = asyncio.Event()
        self.ended = False

    def place(self, floor: int) -> None:
        self.floor = floor
        self.placed.set()

    def hand(self, events: list[StreamEvent]) -> None:
        if len(self._events) + len(events) > MAX_BACKLOG:
            self.end()
            return
        self._events.extend(events)
        self._ready.set()

    def end(self) -> None:
        self.ended = True
        self.placed.set()
        self._ready.set()

    async def take(self, within_s: float) -> list[StreamEvent]:
        """The events handed since the last take ([] after `within_s` without any)."""
        if not self._events and not self.ended:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await self._ready.wait()
        if self.ended:
            raise StreamEnded
        self._ready.clear()
        taken = list(self._events)
        self._events.clear()
        return taken


class AlertFeed:
    """The process's reader of alert events, handing each to every open stream."""

    def __init__(self, database: ApiDatabase) -> None:
        self._database = database
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._wakeup = Wakeup()
        self.position: int | None = None  # the newest event handed out, while running
        self.reads = 0  # reads of new events made (one per wake-up, whatever the streams)
        self.stopped = False  # the server is stopping: streams end as they start

    def reopen(self) -> None:
        """Take streams again (the app is served anew after a stop)."""
        self.stopped = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, key_id: int) -> Subscriber:
        """A place in the feed for a stream of key `key_id`; the feed starts if it is idle."""
        subscriber = Subscriber(key_id, self.position)
        if self.stopped:
            subscriber.end()
            return subscriber
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self.position = None
            subscriber.floor = None
            subscriber.placed.clear()
            self._task = asyncio.create_task(self._run(), name="alert-feed")
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers:
            self._wakeup.ring()  # the feed stops at once

    async def stop(self) -> None:
        """End every stream and the feed, and every stream opened after (the server is stopping)."""
        self.stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def read(self, query: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `query` on a pooled connection taken for it only."""
        database = self._database
        database.check_up()
        async with database.pool.connection(timeout=database.timeout_s) as conn:
            return await query(conn)

    async def events_after(self, after_id: int) -> list[StreamEvent]:
        """Up to STREAM_BATCH committed events after `after_id`, in id order."""
        return await self.read(partial(stream_events, after_id=after_id, limit=STREAM_BATCH))

    def _key_revoked(self, payload: str | None) -> None:
        if payload is None or not payload.isdigit():
            return
        for subscriber in [s for s in self._subscribers if s.key_id == int(payload)]:
            subscriber.end()
            self._subscribers.discard(subscriber)

    async def _run(self) -> None:
        listener = self._database.listener
        wakeup = self._wakeup
        try:
            with contextlib.ExitStack() as subscribed:
                if listener is not None:
                    subscribed.enter_context(listener.subscribed(ALERT_EVENTS_CHANNEL, wakeup))
                    subscribed.enter_context(listener.subscribed(KEYS_CHANNEL, self._key_revoked))
                    if listener.connected:
                        await listener.listening(ALERT_EVENTS_CHANNEL)
                self.position = await self.read(last_event_id)
                for subscriber in self._subscribers:
                    if subscriber.floor is None:
                        subscriber.place(self.position)
                await self._follow(wakeup)
        except Exception as exc:
            if unreachable(exc):
                # Streams end cleanly: EventSource comes back after `retry` and resumes from
                # its Last-Event-ID, so nothing is missed.
                log.warning("alert streams ended, no database connection: %s", exc)
            else:
                log.exception("alert feed failed; its streams ended")
        finally:
            for subscriber in self._subscribers:
                subscriber.end()
            self._subscribers.clear()
            self.position = None

    async def _follow(self, wakeup: Wakeup) -> None:
        gap_since: float | None = None
        while self._subscribers:
            assert self.position is not None
            batch = await self.events_after(self.position)
            self.reads += 1
            fresh: list[StreamEvent] = []
            held = False
            for event in batch:
                if event.id > self.position + 1:
                    gap_since = gap_since if gap_since is not None else time.monotonic()
                    if time.monotonic() - gap_since < GAP_HOLD_S:
                        held = True
                        break
                gap_since = None
                fresh.append(event)
                self.position = event.id
            if fresh:
                for subscriber in tuple(self._subscribers):
                    subscriber.hand(fresh)
                    if subscriber.ended:
                        self._subscribers.discard(subscriber)
            if held:
                await asyncio.sleep(0.1)
            elif len(batch) < STREAM_BATCH:
                await wakeup.wait(POLL_S)
