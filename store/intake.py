"""Sources (ingest health counters, watermarks) and the quarantine of rejected readings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

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
    """Remember a source's latest failure."""
    await conn.execute(
        "UPDATE source SET last_error = %s, last_error_at = %s WHERE id = %s",
        [error[:2000], at, source_id],
    )


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    station_id: int | None
    station_code: str | None
    parameter_code: str | None
    reason: str
    payload: str


async def quarantine(
    conn: Conn, rows: Sequence[QuarantineRow], *, source_id: int | None, received_at: datetime
) -> None:
    """Keep rejected input with its raw payload and the reason."""
    if not rows:
        return
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY rejected_reading (received_at, source_id, station_id, station_code,"
            " parameter_code, reason, payload) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            await copy.write_row(
                (
                    received_at,
                    source_id,
                    row.station_id,
                    row.station_code,
                    row.parameter_code,
                    row.reason,
                    row.payload,
                )
            )


@dataclass(frozen=True, slots=True)
class RejectedReading:
    id: int
    received_at: datetime
    source_id: int | None
    station_code: str | None
    parameter_code: str | None
    reason: str
    payload: str


async def rejected_readings(conn: Conn, *, limit: int = 100) -> list[RejectedReading]:
    """The newest quarantined items first."""
    async with conn.cursor(row_factory=class_row(RejectedReading)) as cur:
        await cur.execute(
            "SELECT id, received_at, source_id, station_code, parameter_code, reason, payload"
            " FROM rejected_reading ORDER BY id DESC LIMIT %s",
            [limit],
        )
        return await cur.fetchall()


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
