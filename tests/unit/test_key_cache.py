"""The in-process key cache: expiry honoured at use, TTL, clears that beat slow lookups, and one
lookup for the requests that miss a key at the same time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from store.keys import ApiKey, KeyCache, hash_key

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)


def _key(expires_at: datetime | None = None) -> ApiKey:
    return ApiKey(
        id=1,
        prefix="abcd1234",
        agency="gz_eeb",
        agency_city="guangzhou",
        roles=["reader"],
        label=None,
        created_at=NOW - timedelta(days=1),
        expires_at=expires_at,
        revoked_at=None,
        last_used_at=None,
    )


def test_a_cached_key_is_returned_until_cleared() -> None:
    cache = KeyCache()
    digest = hash_key("elk_one")
    cache.put(digest, _key(), generation=cache.generation)
    assert cache.get(digest, now=NOW) == _key()
    assert cache.get(hash_key("elk_other"), now=NOW) is None
    cache.clear("1")  # a revocation
    assert cache.get(digest, now=NOW) is None


def test_a_key_past_its_expiry_is_not_returned_although_cached() -> None:
    cache = KeyCache(ttl_s=3600)
    digest = hash_key("elk_one")
    cache.put(digest, _key(expires_at=NOW + timedelta(seconds=1)), generation=cache.generation)
    assert cache.get(digest, now=NOW) is not None
    assert cache.get(digest, now=NOW + timedelta(seconds=1)) is None


def test_an_entry_lives_its_ttl_only() -> None:
    cache = KeyCache(ttl_s=0.05)
    digest = hash_key("elk_one")
    cache.put(digest, _key(), generation=cache.generation)
    assert cache.get(digest, now=NOW) is not None
    time.sleep(0.06)
    assert cache.get(digest, now=NOW) is None


def test_a_lookup_that_began_before_a_clear_is_not_stored() -> None:
    cache = KeyCache()
    digest = hash_key("elk_one")
    began = cache.generation
    cache.clear(None)  # the listener reconnected while the database was being asked
    cache.put(digest, _key(), generation=began)
    assert cache.get(digest, now=NOW) is None


def test_a_full_cache_starts_over_rather_than_grow() -> None:
    cache = KeyCache(max_entries=2)
    for n in range(3):
        cache.put(hash_key(f"elk_{n}"), _key(), generation=cache.generation)
    assert [cache.get(hash_key(f"elk_{n}"), now=NOW) is not None for n in range(3)] == [
        False,
        False,
        True,
    ]


class _Fetches:
    """A key lookup that waits until let through, then fails or finds what it is told."""

    def __init__(self, *found: ApiKey | Exception | None) -> None:
        self.found = list(found)
        self.calls = 0
        self.through = asyncio.Event()

    def __call__(self) -> Callable[[], Awaitable[ApiKey | None]]:
        async def fetch() -> ApiKey | None:
            self.calls += 1
            answer = self.found.pop(0)
            await self.through.wait()
            if isinstance(answer, Exception):
                raise answer
            return answer

        return fetch


async def _miss_at_once(cache: KeyCache, fetches: _Fetches, requests: int) -> list[object]:
    digest = hash_key("elk_one")
    asked = [
        asyncio.create_task(cache.look_up(digest, fetches(), now=NOW)) for _ in range(requests)
    ]
    await asyncio.sleep(0)  # every request has missed the key and waits
    fetches.through.set()
    return await asyncio.gather(*asked, return_exceptions=True)


async def test_requests_missing_one_key_at_once_wait_for_one_lookup() -> None:
    cache, fetches = KeyCache(), _Fetches(_key())
    assert await _miss_at_once(cache, fetches, 8) == [_key()] * 8
    assert fetches.calls == 1
    assert cache.get(hash_key("elk_one"), now=NOW) == _key()


async def test_an_unknown_key_is_looked_up_once_for_all_and_not_cached() -> None:
    cache, fetches = KeyCache(), _Fetches(None)
    assert await _miss_at_once(cache, fetches, 8) == [None] * 8
    assert fetches.calls == 1
    assert cache.get(hash_key("elk_one"), now=NOW) is None


async def test_when_the_lookup_fails_the_next_request_looks_the_key_up_itself() -> None:
    cache, fetches = KeyCache(), _Fetches(ConnectionError("database away"), _key())
    answers = await _miss_at_once(cache, fetches, 8)
    assert isinstance(answers[0], ConnectionError)
    assert answers[1:] == [_key()] * 7
    assert fetches.calls == 2


async def test_a_lookup_that_began_before_a_clear_answers_but_is_not_cached() -> None:
    cache, fetches = KeyCache(), _Fetches(_key())
    digest = hash_key("elk_one")
    asked = asyncio.create_task(cache.look_up(digest, fetches(), now=NOW))
    await asyncio.sleep(0)
    cache.clear("1")  # a revocation while the database was being asked
    fetches.through.set()
    assert await asked == _key()
    assert cache.get(digest, now=NOW) is None


async def test_a_cached_key_needs_no_lookup() -> None:
    cache = KeyCache()
    digest = hash_key("elk_one")
    cache.put(digest, _key(), generation=cache.generation)
    fetches = _Fetches()  # any call would fail: nothing to pop
    assert await cache.look_up(digest, fetches(), now=NOW) == _key()
    assert fetches.calls == 0
