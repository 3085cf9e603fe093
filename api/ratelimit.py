"""Rate limits: this process's share of token buckets that live in PostgreSQL.

Every API process takes tokens from the same bucket row (store/ratelimit.py), so the limit holds
across processes. To spare the database a write per request, a process takes a few tokens at a
time (a lease, 1/20 of the burst) and spends them locally; only when its share is spent does a
request take more, on the request's own connection. No process spends a token the bucket did
not give, so the limit is never exceeded; tokens leased by one process and not yet spent are
unavailable to the others, so a client spread over N processes may be refused up to N leases
early, and a lease unspent for LEASE_LIFETIME_S is dropped. A refusal is remembered until the
bucket's next token is due: a client hammering a spent bucket costs the database nothing.
Each request that finds its process's share spent leases on its own connection: waiting for
another request's lease instead starves the pool, since a request may hold its connection
before its key is admitted, and the one leasing may be waiting for a connection (tried: a
mixed load got bursts of 503 `overloaded` every LEASE_LIFETIME_S).

RateLimiter is pure (the clock is injected); RateLimits takes from the shared buckets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from psycopg.pq import TransactionStatus

from core.settings import Settings
from store.keys import ApiKey
from store.pool import Conn, alone
from store.ratelimit import Taken, forget_idle_buckets, take_tokens

LEASE_LIFETIME_S = 5.0
# A bucket untouched this long is full again (any sane limit refills within the hour).
IDLE_BUCKET_S = 3600.0
# Shares kept before the spent ones are forgotten (client addresses come and go).
MAX_SHARES = 10_000


ConnSource = Callable[[], Awaitable[Conn]]


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket's size: `per_minute` tokens a minute, at most `burst` at once."""

    per_minute: int
    burst: int

    @property
    def per_s(self) -> float:
        return self.per_minute / 60.0

    @property
    def lease(self) -> int:
        """Tokens a process takes from the shared bucket at a time."""
        return max(1, self.burst // 20)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one request, and what its RateLimit-* headers say.

    `reset_s`: when refused, the seconds until a request will be let through (Retry-After);
    when allowed, the seconds until the bucket is full again.
    """

    allowed: bool
    limit: Limit
    remaining: int
    reset_s: int


@dataclass
class _Share:
    tokens: int = 0
    left_in_bucket: float = 0.0  # what the bucket held after this process's last take
    expires_at: float = 0.0
    refused_until: float = 0.0


class RateLimiter:
    """One process's shares of the shared buckets, by bucket name."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._shares: dict[str, _Share] = {}

    def refusal(self, bucket: str, limit: Limit) -> Verdict | None:
        """The refusal still standing for `bucket`, if one is."""
        share = self._shares.get(bucket)
        now = self._clock()
        if share is None or now >= share.refused_until:
            return None
        return Verdict(False, limit, 0, max(1, math.ceil(share.refused_until - now)))

    def spend(self, bucket: str, limit: Limit) -> Verdict | None:
        """Spend a token of this process's share; None when the shared bucket must be asked."""
        if (refused := self.refusal(bucket, limit)) is not None:
            return refused
        share = self._shares.get(bucket)
        if share is None or share.tokens == 0 or self._clock() >= share.expires_at:
            return None
        share.tokens -= 1
        return self._allowed(share, limit)

    def record(self, bucket: str, limit: Limit, taken: Taken) -> Verdict:
        """Add what the shared bucket gave to this process's share and spend a token of it."""
        now = self._clock()
        if bucket not in self._shares and len(self._shares) >= MAX_SHARES:
            self._forget_spent(now)
        share = self._shares.setdefault(bucket, _Share())
        if now >= share.expires_at:
            share.tokens = 0
        share.left_in_bucket = taken.tokens
        if taken.granted == 0:
            if share.tokens > 0:
                # A request of this process leased meanwhile: the bucket is empty, not this share.
                share.tokens -= 1
                return self._allowed(share, limit)
            share.refused_until = now + taken.wait_s
            return Verdict(False, limit, 0, max(1, math.ceil(taken.wait_s)))
        share.tokens += taken.granted - 1
        share.expires_at = now + LEASE_LIFETIME_S
        return self._allowed(share, limit)

    def _forget_spent(self, now: float) -> None:
        self._shares = {
            name: share
            for name, share in self._shares.items()
            if now < share.refused_until or (share.tokens > 0 and now < share.expires_at)
        }

    @staticmethod
    def _allowed(share: _Share, limit: Limit) -> Verdict:
        remaining = share.tokens + math.floor(share.left_in_bucket)
        return Verdict(True, limit, remaining, math.ceil((limit.burst - remaining) / limit.per_s))


def headers(verdict: Verdict) -> dict[str, str]:
    """The RateLimit-* headers of a response (and Retry-After when refused)."""
    found = {
        "RateLimit-Limit": str(verdict.limit.per_minute),
        "RateLimit-Remaining": str(verdict.remaining),
        "RateLimit-Reset": str(verdict.reset_s),
    }
    if not verdict.allowed:
        found["Retry-After"] = str(verdict.reset_s)
    return found


class RateLimits:
    """The limits in force (ENVLINK_RATE_LIMIT_*) and this process's shares of the buckets."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.default = Limit(settings.rate_limit_per_minute, settings.rate_limit_burst)
        per_minute = settings.rate_limit_failed_auth_per_minute
        self.failed_auth = Limit(per_minute, per_minute)
        self.limiter = RateLimiter(clock=clock)

    def for_key(self, key: ApiKey) -> Limit:
        """The key's own limit (a burst worth as many seconds as the default's), or the default."""
        if key.rate_limit is None:
            return self.default
        burst = round(key.rate_limit * self.default.burst / self.default.per_minute)
        return Limit(key.rate_limit, max(1, burst))

    async def admit_key(self, key: ApiKey, conn: ConnSource) -> Verdict:
        """Spend a token of `key`'s bucket: from this process's share, else leased anew.

        `conn` gives the request's connection, asked only when the share is spent.
        """
        limit = self.for_key(key)
        bucket = f"key:{key.id}"
        if (verdict := self.limiter.spend(bucket, limit)) is not None:
            return verdict
        taken = await _take_alone(await conn(), bucket, limit, want=limit.lease)
        return self.limiter.record(bucket, limit, taken)

    def refused_address(self, address: str) -> Verdict | None:
        """The standing refusal of `address` after too many failed authentications, if any."""
        return self.limiter.refusal(f"address:{address}", self.failed_auth)

    async def count_failure(self, address: str, conn: Conn) -> Verdict:
        """Spend a token of `address`'s failed-authentication bucket."""
        bucket = f"address:{address}"
        taken = await _take_alone(conn, bucket, self.failed_auth, want=1)
        async with conn.transaction():
            await forget_idle_buckets(conn, idle_s=IDLE_BUCKET_S)
        return self.limiter.record(bucket, self.failed_auth, taken)


async def _take_alone(conn: Conn, bucket: str, limit: Limit, *, want: int) -> Taken:
    """Take tokens in a transaction of their own, so the bucket's row is locked only briefly.

    Whatever the request's connection ran before (the key check: reads) is committed first.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        await conn.commit()
    async with alone(conn):
        return await take_tokens(
            conn, bucket=bucket, per_s=limit.per_s, burst=limit.burst, want=want
        )
