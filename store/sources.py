"""Source state kept between runs (watermarks in source.watermark) and what sources look up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from store.pool import Conn


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


async def station_cities(conn: Conn) -> dict[str, str]:
    """Each station's city by station code."""
    cur = await conn.execute("SELECT code, city FROM station")
    return {code: city for code, city in await cur.fetchall()}
