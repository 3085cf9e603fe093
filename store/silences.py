"""Silences: an agency mutes its messages on some rules, stations, areas or severities for a while.

A silence is never deleted: expiring it ends it early and keeps it for the record. The caller owns
every transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from core.errors import AgencyNotFound, InvalidInput, NotFound
from store.catalogue import unknown_stations
from store.pool import Conn


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: int
    agency_id: int
    agency: str
    rules: list[str] | None
    stations: list[str] | None
    areas: list[str] | None
    severities: list[str] | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_at: datetime | None

    def in_force(self, at: datetime) -> bool:
        """Whether the silence mutes messages at `at`."""
        ended = self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)
        return self.starts_at <= at < ended


_SILENCE = """
SELECT s.id, s.agency_id, g.code AS agency, s.rules, s.stations, s.areas, s.severities,
       s.starts_at, s.ends_at, s.created_by, s.comment, s.created_at, s.expired_at
FROM silence s JOIN agency g ON g.id = s.agency_id
"""


async def create_silence(
    conn: Conn,
    *,
    agency: str,
    rules: Sequence[str] | None,
    stations: Sequence[str] | None,
    areas: Sequence[str] | None,
    severities: Sequence[str] | None,
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
    at: datetime,
) -> SilenceRow:
    """Record a silence of an agency's messages; InvalidInput for an empty span or matchers."""
    if ends_at <= starts_at:
        raise InvalidInput("ends_at must be after starts_at (a silence is [starts_at, ends_at))")
    if stations:
        unknown = await unknown_stations(conn, stations)
        if unknown:
            raise InvalidInput(f"silence: unknown stations {unknown}")
    cur = await conn.execute(
        "INSERT INTO silence (agency_id, rules, stations, areas, severities, starts_at, ends_at,"
        " created_by, comment, created_at) SELECT g.id, %(rules)s, %(stations)s, %(areas)s,"
        " %(severities)s, %(starts)s, %(ends)s, %(by)s, %(comment)s, %(at)s FROM agency g"
        " WHERE g.code = %(agency)s RETURNING id",
        {
            "agency": agency,
            "rules": list(rules) if rules else None,
            "stations": list(stations) if stations else None,
            "areas": list(areas) if areas else None,
            "severities": list(severities) if severities else None,
            "starts": starts_at,
            "ends": ends_at,
            "by": created_by,
            "comment": comment,
            "at": at,
        },
    )
    row = await cur.fetchone()
    if row is None:
        raise AgencyNotFound(f"no agency with code {agency!r}")
    return await get_silence(conn, int(row[0]))


async def get_silence(conn: Conn, silence_id: int) -> SilenceRow:
    """One silence, or NotFound."""
    async with conn.cursor(row_factory=class_row(SilenceRow)) as cur:
        await cur.execute(_SILENCE + " WHERE s.id = %s", [silence_id])
        found = await cur.fetchone()
    if found is None:
        raise NotFound(f"no silence with id {silence_id}")
    return found


async def list_silences(
    conn: Conn, *, agency: str | None = None, ending_after: datetime | None = None
) -> list[SilenceRow]:
    """Silences of an agency (or all) not ended before a time (or any), by start."""
    async with conn.cursor(row_factory=class_row(SilenceRow)) as cur:
        await cur.execute(
            _SILENCE + " WHERE (%(agency)s::text IS NULL OR g.code = %(agency)s)"
            " AND (%(after)s::timestamptz IS NULL"
            "      OR least(s.ends_at, coalesce(s.expired_at, s.ends_at)) > %(after)s)"
            " ORDER BY s.starts_at, s.id",
            {"agency": agency, "after": ending_after},
        )
        return await cur.fetchall()


async def silences_in_force(conn: Conn, *, at: datetime) -> list[SilenceRow]:
    """The silences muting messages at `at`."""
    async with conn.cursor(row_factory=class_row(SilenceRow)) as cur:
        await cur.execute(
            _SILENCE + " WHERE s.starts_at <= %(at)s AND s.ends_at > %(at)s"
            " AND (s.expired_at IS NULL OR s.expired_at > %(at)s) ORDER BY s.id",
            {"at": at},
        )
        return await cur.fetchall()


async def expire_silence(conn: Conn, silence_id: int, *, at: datetime) -> SilenceRow:
    """End a silence now (kept for the record); expiring it again keeps the first time."""
    cur = await conn.execute(
        "UPDATE silence SET expired_at = coalesce(expired_at, %s) WHERE id = %s",
        [at, silence_id],
    )
    if cur.rowcount == 0:
        raise NotFound(f"no silence with id {silence_id}")
    return await get_silence(conn, silence_id)
