"""Rate limits: the shared bucket's arithmetic, and 429s over real HTTP from real app processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.errors import SettingsError
from core.settings import Settings, load_settings
from store.keys import create_key
from store.ratelimit import Taken, take_tokens
from tests.integration.test_api_pool import served

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


async def _take(pool: AsyncConnectionPool, want: int, at: datetime) -> Taken:
    async with pool.connection() as conn:
        return await take_tokens(conn, bucket="key:9", per_s=2.0, burst=10, want=want, at=at)


async def test_a_bucket_gives_its_burst_then_refills_at_its_rate(db: AsyncConnectionPool) -> None:
    assert await _take(db, 4, T0) == Taken(granted=4, tokens=6.0, wait_s=0.0)
    assert await _take(db, 4, T0) == Taken(granted=4, tokens=2.0, wait_s=0.0)
    assert await _take(db, 4, T0) == Taken(granted=2, tokens=0.0, wait_s=0.5)
    assert await _take(db, 1, T0 + timedelta(seconds=0.25)) == Taken(0, 0.5, 0.25)
    assert await _take(db, 1, T0 + timedelta(seconds=0.5)) == Taken(1, 0.0, 0.5)
    # A long quiet spell refills it to the burst, no further.
    assert await _take(db, 20, T0 + timedelta(hours=1)) == Taken(10, 0.0, 0.5)
    # A clock reading older than the bucket's last one counts as no time passed.
    assert await _take(db, 1, T0) == Taken(0, 0.0, 0.5)


def _limited(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(
        update={"rate_limits": "on", "rate_limit_per_minute": 6, "rate_limit_burst": 3} | changes
    )


async def _key(pool: AsyncConnectionPool, rate_limit: int | None = None) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["reader"], rate_limit=rate_limit)
    return {"Authorization": f"Bearer {plain}"}


def _rate_headers(answer: httpx.Response) -> dict[str, str]:
    names = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")
    return {name: answer.headers[name] for name in names if name in answer.headers}


async def test_a_key_past_its_burst_gets_429_with_the_headers(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    headers = await _key(db)
    async with (
        served(create_app(_limited(settings))) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        answers = [await client.get("/v1/parameters", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    # 6 a minute is a token every 10 s: the bucket is full again 10 s after each request.
    assert [_rate_headers(a) for a in answers[:3]] == [
        {"RateLimit-Limit": "6", "RateLimit-Remaining": str(left), "RateLimit-Reset": reset}
        for left, reset in ((2, "10"), (1, "20"), (0, "30"))
    ]
    assert _rate_headers(answers[3]) == {
        "RateLimit-Limit": "6",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "10",
        "Retry-After": "10",
    }
    assert answers[3].json() == {
        "error": {
            "code": "rate_limited",
            "message": "this API key's limit is 6 a minute; try again in 10 s",
        }
    }


async def test_a_key_of_its_own_rate_has_a_burst_as_long_as_the_default(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    own, default = await _key(db, rate_limit=12), await _key(db)
    async with (
        served(create_app(_limited(settings))) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        mine = [await client.get("/v1/parameters", headers=own) for _ in range(7)]
        others = [await client.get("/v1/parameters", headers=default) for _ in range(4)]
    # Twelve a minute: a burst of 3 × 12 / 6 = 6.
    assert [a.status_code for a in mine] == [200] * 6 + [429]
    assert mine[0].headers["RateLimit-Limit"] == "12"
    assert mine[6].headers["Retry-After"] == "5"
    assert [a.status_code for a in others] == [200, 200, 200, 429]


async def test_two_app_processes_share_one_bucket(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    headers = await _key(db)
    # A burst of 40 is leased two tokens at a time.
    shared = _limited(settings, rate_limit_burst=40)
    first, second = create_app(shared), create_app(shared)
    async with (
        served(first) as first_base,
        served(second) as second_base,
        httpx.AsyncClient() as client,
    ):
        assert first.state.database.pool is not second.state.database.pool
        answers = []
        for _ in range(30):
            for base in (first_base, second_base):
                answers.append(await client.get(f"{base}/v1/parameters", headers=headers))
    assert Counter(a.status_code for a in answers) == {200: 40, 429: 20}
    # Each process spent every token it leased before either was refused.
    assert [a.status_code for a in answers[:40]] == [200] * 40


async def test_an_address_that_presents_bad_keys_is_refused_for_a_while(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    good = await _key(db)
    limited = _limited(settings, rate_limit_failed_auth_per_minute=3)
    async with served(create_app(limited)) as base, httpx.AsyncClient(base_url=base) as client:
        bad = {"Authorization": "Bearer elk_00000000_guess"}
        guesses = [await client.get("/v1/parameters", headers=bad) for _ in range(5)]
        # Once refused, even a good key is not checked from this address (it is not cached).
        refused_good = await client.get("/v1/parameters", headers=good)
        no_key = await client.get("/v1/parameters")
    assert [a.status_code for a in guesses] == [401, 401, 401, 429, 429]
    assert guesses[3].json()["error"] == {
        "code": "rate_limited",
        "message": "too many unknown keys from this address; try again in 20 s",
    }
    assert _rate_headers(guesses[3]) == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "20",
        "Retry-After": "20",
    }
    assert refused_good.status_code == 429
    assert no_key.status_code == 401  # no key at all costs no check and is not counted


async def test_limits_off_let_everything_through_without_headers(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    headers = await _key(db)
    off = _limited(settings, rate_limits="off", rate_limit_failed_auth_per_minute=1)
    async with served(create_app(off)) as base, httpx.AsyncClient(base_url=base) as client:
        answers = await asyncio.gather(
            *(client.get("/v1/parameters", headers=headers) for _ in range(10))
        )
        bad = [
            await client.get("/v1/parameters", headers={"X-API-Key": "elk_guess"}) for _ in range(3)
        ]
    assert Counter(a.status_code for a in answers) == {200: 10}
    assert [_rate_headers(a) for a in answers] == [{}] * 10
    assert [a.status_code for a in bad] == [401] * 3


@pytest.mark.parametrize("value", ["maybe", ""])
def test_the_switch_takes_on_or_off(value: str, settings: Settings) -> None:
    with pytest.raises(SettingsError, match="ENVLINK_RATE_LIMITS"):
        load_settings(rate_limits=value)
