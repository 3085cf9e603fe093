"""The audit log: who changed what through the API (or the command line), and when.

Callers record an entry inside the transaction of the change itself, so a change and its entry
commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from store.pool import Conn


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    key_id: int | None
    agency: str | None
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


async def record_audit(
    conn: Conn,
    *,
    key_id: int | None,
    agency: str | None,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add one entry; `before`/`after` are JSON objects (None where the thing did not exist)."""
    await conn.execute(
        "INSERT INTO audit_log (key_id, agency, action, target, before, after)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [
            key_id,
            agency,
            action,
            target,
            None if before is None else Jsonb(before),
            None if after is None else Jsonb(after),
        ],
    )


async def list_audit(
    conn: Conn,
    *,
    action: str | None = None,
    agency: str | None = None,
    target: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    before_id: int | None = None,
    limit: int,
) -> list[AuditEntry]:
    """Entries newest first, filtered; `target` matches exactly or as a prefix up to ':'."""
    async with conn.cursor(row_factory=class_row(AuditEntry)) as cur:
        await cur.execute(
            "SELECT id, at, key_id, agency, action, target, before, after FROM audit_log"
            " WHERE (%(action)s::text IS NULL OR action = %(action)s)"
            " AND (%(agency)s::text IS NULL OR agency = %(agency)s)"
            " AND (%(target)s::text IS NULL OR target = %(target)s"
            "      OR starts_with(target, %(target)s || ':'))"
            " AND (%(start)s::timestamptz IS NULL OR at >= %(start)s)"
            " AND (%(end)s::timestamptz IS NULL OR at < %(end)s)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {
                "action": action,
                "agency": agency,
                "target": target,
                "start": start,
                "end": end,
                "before": before_id,
                "limit": limit,
            },
        )
        return await cur.fetchall()
