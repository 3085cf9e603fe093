"""The `source` table: one row per way readings arrive, and everything kept on it.

A row is registered on first use (`ensure_source`); an intake adds its counts and marks the last
success, a failure is kept as the last error, a pull keeps its watermark between runs, and
/v1/sources reads it all back. The items an intake rejected are store/intake.py's. The caller
owns every transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from store.intake import escape_text, storable
from store.pool import Conn


async def ensure_source(conn: Conn, *, code: str, kind: str) -> int:
    """The id of source `code`, registering it on first use."""
    cur = await conn.execute(
        "INSERT INTO source (code, kind) VALUES (%s, %s)"
        " ON CONFLICT (code) DO UPDATE SET kind = EXCLUDED.kind RETURNING id",
        [code, kind],
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def record_intake(
    conn: Conn,
    *,
    source_id: int,
    at: datetime,
    accepted: int,
    duplicate: int,
    revised: int,
    rejected: int,
) -> None:
    """Add an intake's counts to its source and mark it successful."""
    await conn.execute(
        "UPDATE source SET accepted = accepted + %s, duplicate = duplicate + %s,"
        " revised = revised + %s, rejected = rejected + %s, last_success_at = %s WHERE id = %s",
        [accepted, duplicate, revised, rejected, at, source_id],
    )


async def record_source_error(conn: Conn, *, source_id: int, at: datetime, error: str) -> None:
    """Remember a source's latest failure (escaped where it quotes what text cannot hold)."""
    error = error[:2000]
    await conn.execute(
        "UPDATE source SET last_error = %s, last_error_at = %s WHERE id = %s",
        [error if storable(error) else escape_text(error), at, source_id],
    )


async def source_watermark(conn: Conn, *, source_id: int) -> dict[str, Any]:
    """A source's watermark document ({} when it has none yet)."""
    cur = await conn.execute("SELECT watermark FROM source WHERE id = %s", [source_id])
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return {}
    return dict(row[0])


# Forward-only: a watermark never moves back, so two overlapping runs (or a late retry of an old
# window) cannot make the next run fetch a window again. Times are compared as timestamps, not
# as text, and kept as whole seconds in UTC (callers pass whole seconds).
_ADVANCE = """
UPDATE source SET watermark = coalesce(watermark, '{}'::jsonb) || jsonb_build_object(%(key)s::text,
    to_char(greatest(%(at)s::timestamptz, (watermark ->> %(key)s::text)::timestamptz)
            AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
WHERE id = %(source)s
RETURNING (watermark ->> %(key)s::text)::timestamptz
"""


async def advance_watermark(conn: Conn, *, source_id: int, key: str, at: datetime) -> datetime:
    """Move one watermark key forward to `at` (never back); returns the key's value now."""
    cur = await conn.execute(_ADVANCE.encode(), {"key": key, "at": at, "source": source_id})
    row = await cur.fetchone()
    assert row is not None, f"source {source_id} does not exist"
    moment: datetime = row[0]
    return moment


async def merge_watermark(conn: Conn, *, source_id: int, values: dict[str, Any]) -> None:
    """Set plain (not forward-only) entries of a source's watermark document."""
    await conn.execute(
        "UPDATE source SET watermark = coalesce(watermark, '{}'::jsonb) || %s WHERE id = %s",
        [Jsonb(values), source_id],
    )


@dataclass(frozen=True, slots=True)
class SourceStatus:
    code: str
    kind: str
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    accepted: int
    duplicate: int
    revised: int
    rejected: int


async def source_statuses(conn: Conn) -> list[SourceStatus]:
    """Every source's counters and last success / error."""
    async with conn.cursor(row_factory=class_row(SourceStatus)) as cur:
        await cur.execute(
            "SELECT code, kind, last_success_at, last_error_at, last_error, accepted, duplicate,"
            " revised, rejected FROM source ORDER BY code"
        )
        return await cur.fetchall()
