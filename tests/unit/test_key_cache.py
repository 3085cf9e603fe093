"""The in-process key cache: expiry honoured at use, TTL, and clears that beat slow lookups."""

from __future__ import annotations

import time
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
