"""Trying again: exponential backoff with jitter, for reconnecting loops and retried requests.

Every wait is drawn partly at random, so processes that failed together (a database restart, a
broker or receiver down) come back spread out instead of all at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from logging import Logger
from typing import TypeVar

T = TypeVar("T")
# Told of each failure and the wait before the next try.
FailureHook = Callable[[Exception, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """After n failures in a row, wait up to base_s·2^(n-1), at most max_s.

    The last `jitter` share of each wait is random: with the default half, a wait is between
    half and all of its ceiling ("equal jitter"), so none comes back too soon.
    """

    base_s: float
    max_s: float
    jitter: float = 0.5

    def delay_s(self, failures: int, draw: float | None = None) -> float:
        """The wait after `failures` failures in a row (1, 2, …); `draw` in [0, 1), else random."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 60))
        share = random.random() if draw is None else draw
        return ceiling * (1 - self.jitter + self.jitter * share)


# A long-running loop whose connection failed (the database restarting): back within a second
# at first, never more than half a minute later.
RESTART = Backoff(base_s=0.5, max_s=30.0)


async def keep_running(
    session: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    failed: FailureHook,
    progress: Callable[[], int] = lambda: 0,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run `session` until it returns, starting it again after each failure in `retry_on`.

    Waits grow with failures in a row. A session that worked (`progress()` grew while it ran,
    or it lasted longer than the longest wait) starts the count over, so a loop that ran for a
    day and then lost its connection comes back at once. `failed` hears of each failure before
    the wait; other exceptions and cancellation end it. `sleep` waits out the backoff (a loop
    woken by a listener passes one that a reconnect cuts short).
    """
    failures = 0
    while True:
        before, started = progress(), time.monotonic()
        try:
            return await session()
        except retry_on as exc:
            worked = progress() > before or time.monotonic() - started > backoff.max_s
            failures = 1 if worked else failures + 1
            delay = backoff.delay_s(failures)
            await failed(exc, delay)
            await sleep(delay)


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff: Backoff,
    retryable: Callable[[Exception], bool],
    failed: FailureHook,
) -> T:
    """Call `attempt` up to `attempts` times while it fails retryably; the last failure is raised.

    `failed` hears of each failure that is tried again, with the wait before the next attempt.
    """
    for failures in range(1, attempts + 1):
        try:
            return await attempt()
        except Exception as exc:
            if failures == attempts or not retryable(exc):
                raise
            delay = backoff.delay_s(failures)
            await failed(exc, delay)
            await asyncio.sleep(delay)
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def log_failure(log: Logger, what: str) -> FailureHook:
    """A hook that logs a failure with its traceback and the wait: `<what> failed; retrying …`."""

    async def logged(exc: Exception, delay: float) -> None:
        log.error("%s failed; retrying in %.1f s", what, delay, exc_info=exc)

    return logged
