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


async def list_bulletins(
    conn: Conn,
    *,
    month: date | None = None,
    before: tuple[date, int] | None = None,
    limit: int = 100,
) -> list[StoredBulletin]:
    """Stored versions, the latest month first and its latest version first; only `month`'s
    when given; only those after `before` (a month and version) in that order."""
    where: list[str] = []
    args: dict[str, object] = {"limit": limit}
    if month is not None:
        where.append("month = %(month)s")
        args["month"] = month
    if before is not None:
        where.append("(month, version) < (%(before_month)s, %(before_version)s)")
        args["before_month"], args["before_version"] = before
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    async with conn.cursor(row_factory=class_row(StoredBulletin)) as cur:
        await cur.execute(
            "SELECT id, month, version, generated_at FROM bulletin"
            f" {condition} ORDER BY month DESC, version DESC LIMIT %(limit)s",
            args,
        )
        return await cur.fetchall()


async def latest_bulletin_version(conn: Conn, month: date) -> int | None:
    """The month's latest stored version, or None when it was never generated."""
    cur = await conn.execute("SELECT max(version) FROM bulletin WHERE month = %s", [month])
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def bulletin_body(conn: Conn, month: date, version: int) -> str | None:
    """The JSON of one stored version, or None."""
    cur = await conn.execute(
        "SELECT body::text FROM bulletin WHERE month = %s AND version = %s", [month, version]
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True, slots=True)
class BulletinFiles:
    """One stored version's page and CSV zip, as generated."""

    month: date
    version: int
    generated_at: datetime
    html: str
    csv_zip: bytes


async def bulletin_files(conn: Conn, month: date, version: int) -> BulletinFiles | None:
    """The page and zip of one stored version, or None."""
    async with conn.cursor(row_factory=class_row(BulletinFiles)) as cur:
        await cur.execute(
            "SELECT month, version, generated_at, html, csv_zip FROM bulletin"
            " WHERE month = %s AND version = %s",
            [month, version],
        )
        return await cur.fetchone()


async def delivered_bulletins(conn: Conn, notification_ids: list[int]) -> dict[int, BulletinFiles]:
    """The bulletin version each of these notifications delivers (those that deliver one)."""
    cur = await conn.execute(
        "SELECT n.id, b.month, b.version, b.generated_at, b.html, b.csv_zip"
        " FROM notification n JOIN bulletin b ON b.id = n.bulletin_id WHERE n.id = ANY(%s)",
        [notification_ids],
    )
    return {int(row[0]): BulletinFiles(*row[1:]) for row in await cur.fetchall()}


async def queue_bulletin_deliveries(
    conn: Conn, stored: StoredBulletin, *, at: datetime, deadline_at: datetime
) -> list[int]:
    """One outbox notification per enabled bulletin subscription for this version, due now.

    A subscription is given a version once (the unique index on subscription and version): queuing
    again adds nothing. Returns the ids of the notifications added.
    """
    cur = await conn.execute(
        "INSERT INTO notification (subscription_id, agency_id, kind, group_key, channel, target,"
        " secret, language, status, created_at, deadline_at, due_at, bulletin_id)"
        " SELECT s.id, s.agency_id, 'bulletin', %(key)s, s.channel, s.target, s.secret,"
        " s.language, 'pending', %(at)s, %(deadline)s, %(at)s, %(bulletin)s"
        " FROM subscription s WHERE s.kind = 'bulletin' AND s.enabled ORDER BY s.id"
        " ON CONFLICT (subscription_id, bulletin_id) WHERE bulletin_id IS NOT NULL DO NOTHING"
        " RETURNING id",
        {
            "key": f"bulletin/{stored.month:%Y-%m}/v{stored.version}",
            "at": at,
            "deadline": deadline_at,
            "bulletin": stored.id,
        },
    )
    return sorted(int(row[0]) for row in await cur.fetchall())
