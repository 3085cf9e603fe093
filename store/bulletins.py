"""Stored monthly bulletins, versioned: a month generated again gets the next version, and the
earlier versions stay as they were. The caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from psycopg.rows import class_row

from store.pool import Conn


@dataclass(frozen=True, slots=True)
class StoredBulletin:
    """One stored version of a month's bulletin (without its bodies)."""

    id: int
    month: date
    version: int
    generated_at: datetime


async def store_bulletin(
    conn: Conn, *, month: date, generated_at: datetime, body: str, html: str, csv_zip: bytes
) -> StoredBulletin:
    """The month's bulletin as its next version (1 for the first)."""
    # One writer a month at a time: the next version is read and taken under the lock.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('bulletin'), %s)", [month.year * 12 + month.month]
    )
    async with conn.cursor(row_factory=class_row(StoredBulletin)) as cur:
        await cur.execute(
            "INSERT INTO bulletin (month, version, generated_at, body, html, csv_zip)"
            " SELECT %(month)s, coalesce(max(version), 0) + 1, %(at)s, %(body)s::jsonb,"
            " %(html)s, %(zip)s FROM bulletin WHERE month = %(month)s"
            " RETURNING id, month, version, generated_at",
            {"month": month, "at": generated_at, "body": body, "html": html, "zip": csv_zip},
        )
        stored = await cur.fetchone()
    assert stored is not None
    return stored


async def bulletin_versions(conn: Conn, month: date) -> list[StoredBulletin]:
    """Every stored version of the month's bulletin, the first first."""
    async with conn.cursor(row_factory=class_row(StoredBulletin)) as cur:
        await cur.execute(
            "SELECT id, month, version, generated_at FROM bulletin WHERE month = %s"
            " ORDER BY version",
            [month],
        )
        return await cur.fetchall()


async def bulletin_body(conn: Conn, month: date, version: int) -> str | None:
    """The JSON of one stored version, or None."""
    cur = await conn.execute(
        "SELECT body::text FROM bulletin WHERE month = %s AND version = %s", [month, version]
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])
