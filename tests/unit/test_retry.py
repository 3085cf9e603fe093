"""core.retry: backoff waits, loops that keep running, calls retried a bounded number of times."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.retry import Backoff, keep_running, retry

# No jitter and millisecond waits: the waits are exact and the tests take no time.
EXACT = Backoff(base_s=0.001, max_s=0.008, jitter=0.0)


class Flaky:
    """A session or attempt that fails `failures` times (optionally after making progress)."""

    def __init__(
        self,
        failures: int,
        *,
        error: type[Exception] = ConnectionError,
        progress_each: bool = False,
        lasts_s: float = 0.0,
    ) -> None:
        self.failures = failures
        self.error = error
        self.progress_each = progress_each
        self.lasts_s = lasts_s
        self.calls = 0
        self.rounds = 0
        self.waits: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.progress_each:
            self.rounds += 1
        if self.lasts_s:
            await asyncio.sleep(self.lasts_s)
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"

    async def failed(self, exc: Exception, delay: float) -> None:
        self.waits.append(delay)


def test_waits_double_up_to_the_maximum_and_the_jitter_takes_its_share_off() -> None:
    backoff = Backoff(base_s=1, max_s=8, jitter=0.2)
    assert [backoff.delay_s(n, 0.0) for n in range(1, 7)] == pytest.approx(
        [0.8, 1.6, 3.2, 6.4, 6.4, 6.4]
    )
    assert [backoff.delay_s(n, 1.0) for n in (1, 4, 9)] == [1, 8, 8]
    assert Backoff(base_s=5, max_s=60).delay_s(3, 0.5) == 15.0  # equal jitter: 20 · (1/2 + 1/4)


def test_random_waits_stay_between_their_floor_and_ceiling() -> None:
    random.seed(212)
    backoff = Backoff(base_s=2, max_s=30)
    waits = [backoff.delay_s(3) for _ in range(1000)]
    assert 4 <= min(waits) <= max(waits) <= 8
    assert len({round(w, 6) for w in waits}) == 1000  # drawn, not fixed


async def test_a_session_is_started_again_with_growing_waits_until_it_returns() -> None:
    session = Flaky(5)
    assert await keep_running(session, backoff=EXACT, failed=session.failed) == "done"
    assert session.calls == 6
    assert session.waits == [0.001, 0.002, 0.004, 0.008, 0.008]


async def test_a_session_that_made_progress_starts_the_waits_over() -> None:
    session = Flaky(4, progress_each=True)
    await keep_running(
        session, backoff=EXACT, failed=session.failed, progress=lambda: session.rounds
    )
    assert session.waits == [0.001] * 4


async def test_a_session_that_lasted_longer_than_the_longest_wait_starts_the_waits_over() -> None:
    session = Flaky(3, lasts_s=0.02)
    await keep_running(session, backoff=EXACT, failed=session.failed)
    assert session.waits == [0.001] * 3


async def test_a_failure_outside_retry_on_ends_the_loop() -> None:
    session = Flaky(2, error=KeyError)
    with pytest.raises(KeyError):
        await keep_running(
            session, backoff=EXACT, failed=session.failed, retry_on=(ConnectionError,)
        )
    assert (session.calls, session.waits) == (1, [])


async def test_a_call_is_retried_while_it_fails_retryably_and_then_given_up() -> None:
    call = Flaky(5)
    with pytest.raises(ConnectionError, match="failure 3"):
        await retry(call, attempts=3, backoff=EXACT, retryable=lambda _: True, failed=call.failed)
    assert (call.calls, call.waits) == (3, [0.001, 0.002])
    second = Flaky(1)
    assert (
        await retry(
            second, attempts=3, backoff=EXACT, retryable=lambda _: True, failed=second.failed
        )
        == "done"
    )
    assert (second.calls, second.waits) == (2, [0.001])


async def test_a_failure_that_is_not_retryable_is_raised_at_once() -> None:
    call = Flaky(5, error=PermissionError)
    with pytest.raises(PermissionError):
        await retry(
            call,
            attempts=3,
            backoff=EXACT,
            retryable=lambda exc: isinstance(exc, ConnectionError),
            failed=call.failed,
        )
    assert (call.calls, call.waits) == (1, [])
