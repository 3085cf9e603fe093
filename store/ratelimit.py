"""Token buckets in PostgreSQL, shared by every API process (table rate_bucket, migration 0033)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from store.pool import Conn


@dataclass(frozen=True, slots=True)
class Taken:
    """What one take from a bucket gave: whole tokens, the rest, the wait for the next token."""

    granted: int
    tokens: float
    wait_s: float


async def take_tokens(
    conn: Conn,
    *,
    bucket: str,
    per_s: float,
    burst: float,
    want: int,
    at: datetime | None = None,
) -> Taken:
    """Take up to `want` tokens from `bucket` (created full); `at` None is the server's clock.

    The bucket's row stays locked until the caller's transaction ends: keep that transaction
    to this call alone, or every other process taking from the same bucket waits for it.
    """
    async with conn.cursor(row_factory=class_row(Taken)) as cur:
        await cur.execute(
            "SELECT granted, tokens, wait_s FROM rate_take(%s, %s, %s, %s, %s)",
            [bucket, per_s, burst, want, at],
        )
        taken = await cur.fetchone()
    assert taken is not None
    return taken


async def forget_idle_buckets(conn: Conn, *, idle_s: float) -> int:
    """Delete buckets untouched for `idle_s` (a refill full by then, the same as no row)."""
    cur = await conn.execute(
        "DELETE FROM rate_bucket WHERE updated_at < now() - make_interval(secs => %s)", [idle_s]
    )
    return cur.rowcount
