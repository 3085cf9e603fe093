"""Backfill requests to HJ 212 stations: the `backfill_request` table (migration 0037).

`envlink backfill --station` asks for a station's stored data of a past range: it inserts a
pending row and notifies BACKFILL_CHANNEL. The worker process that holds the station's connection
claims the row, sends the station the history request and records here how the station answers;
the command reads the row back for its progress. A row is open while pending, sent or answered,
and one station has at most one open row, so that its packets belong to one request. The caller
owns every transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from psycopg.rows import class_row

from core.errors import InvalidInput, StationNotFound
from store.coordination import BACKFILL_CHANNEL
from store.pool import Conn

BackfillState = Literal["pending", "sent", "answered", "completed", "failed"]
OPEN_STATES: Final[tuple[BackfillState, ...]] = ("pending", "sent", "answered")
# A request still open this long after its deadline has lost the worker that took it.
ABANDONED_AFTER_S: Final = 10.0
NOT_CONNECTED: Final = "not connected to any running HJ 212 server (nobody took the request)"
ABANDONED: Final = (
    "no outcome by its deadline: the worker holding the station's connection stopped answering"
)


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    """One request and what has come of it so far."""

    id: int
    station_id: int
    station: str
    period_s: int
    begin_time: datetime
    end_time: datetime
    state: BackfillState
    requested_at: datetime
    claim_by: datetime
    deadline: datetime
    worker: str | None
    qn: str | None
    sent_at: datetime | None
    answered_at: datetime | None
    finished_at: datetime | None
    packets: int
    accepted: int
    duplicate: int
    revised: int
    rejected: int
    detail: str | None

    @property
    def finished(self) -> bool:
        return self.state not in OPEN_STATES

    @property
    def readings(self) -> int:
        """Items of the range the pipeline has taken, whatever their outcome."""
        return self.accepted + self.duplicate + self.revised + self.rejected


_COLUMNS: Final = """
    b.id, b.station_id, s.code AS station, b.period_s, b.begin_time, b.end_time, b.state,
    b.requested_at, b.claim_by, b.deadline, b.worker, b.qn, b.sent_at, b.answered_at,
    b.finished_at, b.packets, b.accepted, b.duplicate, b.revised, b.rejected, b.detail
"""


async def request_backfill(
    conn: Conn,
    *,
    station: str,
    period_s: int,
    begin: datetime,
    end: datetime,
    claim_within_s: float,
    timeout_s: float,
) -> BackfillRequest:
    """Insert a pending request for `station`'s periods from `begin` to `end` and announce it.

    StationNotFound for an unknown code; InvalidInput for a station without an HJ 212 MN or one
    with a request still open.
    """
    cur = await conn.execute("SELECT id, hj212_mn FROM station WHERE code = %s", [station])
    row = await cur.fetchone()
    if row is None:
        raise StationNotFound(f"no station with code {station!r}")
    station_id, mn = row
    if not mn:
        raise InvalidInput(
            f"station {station} has no HJ 212 MN in the catalogue, so it is not an HJ 212 station"
        )
    await expire_backfill_requests(conn)
    cur = await conn.execute(
        "INSERT INTO backfill_request (station_id, period_s, begin_time, end_time, claim_by,"
        " deadline)"
        " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s),"
        " now() + make_interval(secs => %s))"
        " ON CONFLICT (station_id) WHERE state IN ('pending', 'sent', 'answered') DO NOTHING"
        " RETURNING id",
        [station_id, period_s, begin, end, min(claim_within_s, timeout_s), timeout_s],
    )
    inserted = await cur.fetchone()
    if inserted is None:
        cur = await conn.execute(
            "SELECT id, state FROM backfill_request"
            " WHERE station_id = %s AND state IN ('pending', 'sent', 'answered')",
            [station_id],
        )
        open_row = await cur.fetchone()
        which = f" {open_row[0]} ({open_row[1]})" if open_row else ""
        raise InvalidInput(
            f"station {station} already has backfill request{which} open; wait for it to finish"
        )
    await conn.execute("SELECT pg_notify(%s, %s)", [BACKFILL_CHANNEL, str(inserted[0])])
    found = await backfill_request(conn, int(inserted[0]))
    assert found is not None
    return found


async def backfill_request(conn: Conn, request_id: int) -> BackfillRequest | None:
    """The request with this id, or None."""
    async with conn.cursor(row_factory=class_row(BackfillRequest)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM backfill_request b JOIN station s ON s.id = b.station_id"
            " WHERE b.id = %s",
            [request_id],
        )
        return await cur.fetchone()


async def claimable_backfill_requests(conn: Conn) -> list[BackfillRequest]:
    """Pending requests whose time to be claimed has not run out, oldest first."""
    async with conn.cursor(row_factory=class_row(BackfillRequest)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM backfill_request b JOIN station s ON s.id = b.station_id"
            " WHERE b.state = 'pending' AND b.claim_by > now() ORDER BY b.id"
        )
        return await cur.fetchall()


async def claim_backfill_request(
    conn: Conn, request_id: int, *, worker: str, qn: str
) -> float | None:
    """Take a pending request for sending (state sent); seconds left to its deadline, or None
    when it is no longer pending (another worker took it, or its time to be claimed ran out)."""
    cur = await conn.execute(
        "UPDATE backfill_request SET state = 'sent', worker = %s, qn = %s, sent_at = now()"
        " WHERE id = %s AND state = 'pending' AND claim_by > now()"
        " RETURNING extract(epoch FROM deadline - now())",
        [worker, qn, request_id],
    )
    row = await cur.fetchone()
    return None if row is None else float(row[0])


async def record_backfill(
    conn: Conn,
    request_id: int,
    *,
    state: BackfillState,
    packets: int,
    accepted: int,
    duplicate: int,
    revised: int,
    rejected: int,
    detail: str | None,
) -> bool:
    """Write a claimed request's state and counts; False if it was already finished."""
    cur = await conn.execute(
        "UPDATE backfill_request SET state = %(state)s, packets = %(packets)s,"
        " accepted = %(accepted)s, duplicate = %(duplicate)s, revised = %(revised)s,"
        " rejected = %(rejected)s, detail = %(detail)s,"
        " answered_at = CASE WHEN %(state)s IN ('answered', 'completed')"
        "   THEN coalesce(answered_at, now()) ELSE answered_at END,"
        " finished_at = CASE WHEN %(state)s IN ('completed', 'failed') THEN now() END"
        " WHERE id = %(id)s AND state IN ('sent', 'answered') RETURNING id",
        {
            "id": request_id,
            "state": state,
            "packets": packets,
            "accepted": accepted,
            "duplicate": duplicate,
            "revised": revised,
            "rejected": rejected,
            "detail": detail,
        },
    )
    return await cur.fetchone() is not None


async def expire_backfill_requests(conn: Conn) -> int:
    """Fail the pending requests nobody claimed in time and the open ones long past their
    deadline (their worker died); how many were failed."""
    cur = await conn.execute(
        "UPDATE backfill_request SET finished_at = now(), state = 'failed',"
        " detail = CASE WHEN state = 'pending' AND claim_by <= now() THEN %s ELSE %s END"
        " WHERE (state = 'pending' AND claim_by <= now())"
        " OR (state IN ('pending', 'sent', 'answered')"
        "     AND deadline + make_interval(secs => %s) <= now())",
        [NOT_CONNECTED, ABANDONED, ABANDONED_AFTER_S],
    )
    return cur.rowcount


__all__ = [
    "ABANDONED",
    "ABANDONED_AFTER_S",
    "NOT_CONNECTED",
    "OPEN_STATES",
    "BackfillRequest",
    "BackfillState",
    "backfill_request",
    "claim_backfill_request",
    "claimable_backfill_requests",
    "expire_backfill_requests",
    "record_backfill",
    "request_backfill",
]
