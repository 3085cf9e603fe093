"""A process's share of the shared token buckets, on a clock the test moves; the documented 429."""

from __future__ import annotations

from api.app import create_app
from api.ratelimit import LEASE_LIFETIME_S, Limit, RateLimiter, Verdict, headers
from core.settings import Settings
from store.ratelimit import Taken

LIMIT = Limit(per_minute=600, burst=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_is_a_twentieth_of_the_burst_and_at_least_one() -> None:
    assert LIMIT.lease == 5
    assert Limit(per_minute=60, burst=10).lease == 1
    assert LIMIT.per_s == 10.0


def test_a_lease_is_spent_locally_then_the_bucket_is_asked_again() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.spend("key:1", LIMIT) is None
    first = limiter.record("key:1", LIMIT, Taken(granted=5, tokens=95.0, wait_s=0.0))
    # Five tokens taken, one spent: four here, 95 in the bucket; 1 short of full = 0.1 s.
    assert first == Verdict(allowed=True, limit=LIMIT, remaining=99, reset_s=1)
    spent = [limiter.spend("key:1", LIMIT) for _ in range(4)]
    assert [v.remaining if v else None for v in spent] == [98, 97, 96, 95]
    assert limiter.spend("key:1", LIMIT) is None


def test_an_empty_bucket_refuses_until_its_next_token_without_asking_again() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    refused = limiter.record("key:1", LIMIT, Taken(granted=0, tokens=0.25, wait_s=0.075))
    assert refused == Verdict(allowed=False, limit=LIMIT, remaining=0, reset_s=1)
    clock.now += 0.07
    assert limiter.spend("key:1", LIMIT) == Verdict(False, LIMIT, 0, 1)
    assert limiter.refusal("key:1", LIMIT) == Verdict(False, LIMIT, 0, 1)
    clock.now += 0.01
    assert limiter.spend("key:1", LIMIT) is None
    assert limiter.refusal("key:1", LIMIT) is None


def test_retry_after_rounds_the_wait_up_to_whole_seconds() -> None:
    limiter = RateLimiter(clock=Clock())
    slow = Limit(per_minute=6, burst=3)
    refused = limiter.record("key:2", slow, Taken(granted=0, tokens=0.05, wait_s=9.5))
    assert refused.reset_s == 10
    assert headers(refused) == {
        "RateLimit-Limit": "6",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "10",
        "Retry-After": "10",
    }


def test_a_lease_unspent_for_its_lifetime_is_dropped() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.record("key:1", LIMIT, Taken(granted=5, tokens=95.0, wait_s=0.0))
    clock.now += LEASE_LIFETIME_S
    assert limiter.spend("key:1", LIMIT) is None
    again = limiter.record("key:1", LIMIT, Taken(granted=5, tokens=90.0, wait_s=0.0))
    assert again.remaining == 94  # the four dropped tokens are not counted twice


def test_buckets_are_apart() -> None:
    limiter = RateLimiter(clock=Clock())
    limiter.record("key:1", LIMIT, Taken(granted=0, tokens=0.0, wait_s=5.0))
    assert limiter.spend("key:2", LIMIT) is None
    assert limiter.refusal("address:127.0.0.1", LIMIT) is None


def test_allowed_headers_have_no_retry_after() -> None:
    allowed = Verdict(allowed=True, limit=LIMIT, remaining=42, reset_s=6)
    assert headers(allowed) == {
        "RateLimit-Limit": "600",
        "RateLimit-Remaining": "42",
        "RateLimit-Reset": "6",
    }


def test_a_lease_that_finds_the_bucket_empty_spends_what_a_concurrent_lease_brought() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    # Two requests find the share spent and both ask the bucket; the first gets its last five.
    assert limiter.spend("key:1", LIMIT) is None
    assert limiter.spend("key:1", LIMIT) is None
    limiter.record("key:1", LIMIT, Taken(granted=5, tokens=0.0, wait_s=0.1))
    second = limiter.record("key:1", LIMIT, Taken(granted=0, tokens=0.0, wait_s=0.1))
    assert (second.allowed, second.remaining) == (True, 3)
    assert [limiter.spend("key:1", LIMIT) is not None for _ in range(3)] == [True] * 3
    assert limiter.spend("key:1", LIMIT) is None


def test_every_keyed_operation_documents_its_429_and_the_probes_do_not() -> None:
    spec = create_app(Settings(database_url="postgresql://unused@localhost/none")).openapi()
    limited = {
        (method, path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if "429" in operation["responses"]
    }
    every = {(m, p) for p, operations in spec["paths"].items() for m in operations}
    # The probes, and the bulletin's signed link: keyless, so no key's bucket to spend.
    assert every - limited == {
        ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
        ("get", "/v1/reports/bulletin/signed"),
    }  # fmt: skip
    answer = spec["paths"]["/v1/stations"]["get"]["responses"]["429"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
    assert sorted(answer["headers"]) == [
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "Retry-After",
    ]
