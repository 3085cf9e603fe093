"""A loop's doorbell: rings are kept until taken; a reconnect also cuts a backoff short."""

from __future__ import annotations

import asyncio
import time

from store.listen import Wakeup


async def test_a_ring_before_the_wait_is_kept_and_taken_once() -> None:
    wakeup = Wakeup()
    wakeup("payload")
    wakeup("another")
    assert await wakeup.wait(1.0) is True
    started = time.monotonic()
    assert await wakeup.wait(0.05) is False
    assert time.monotonic() - started >= 0.05


async def test_a_ring_during_the_wait_ends_it() -> None:
    wakeup = Wakeup()
    asyncio.get_running_loop().call_later(0.05, wakeup.ring)
    started = time.monotonic()
    assert await wakeup.wait(5.0) is True
    assert time.monotonic() - started < 1.0


async def test_a_backoff_ends_on_a_reconnect_not_on_a_notification() -> None:
    wakeup = Wakeup()
    wakeup("a notification")
    started = time.monotonic()
    assert await wakeup.reconnect(0.1) is False
    assert time.monotonic() - started >= 0.1
    asyncio.get_running_loop().call_later(0.05, wakeup, None)
    assert await wakeup.reconnect(5.0) is True
    assert time.monotonic() - started < 1.0
