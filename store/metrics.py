"""What /metrics reads from the database at each scrape: counts every process keeps there."""

from __future__ import annotations

from dataclasses import dataclass

from store.pool import Conn

OUTCOMES = ("accepted", "duplicate", "revised", "rejected")


@dataclass(frozen=True, slots=True)
class DatabaseCounts:
    """Readings by source and outcome, alert events by kind, notifications waiting to go."""

    readings: dict[tuple[str, str], int]
    alert_transitions: dict[str, int]
    outbox_pending: int


async def database_counts(conn: Conn) -> DatabaseCounts:
    """The counts, read in one round trip.

    The sources' counters are the ones every intake adds to (store.sources); alert events are
    never deleted, so their count only grows; `pending` notifications are the outbox's depth.
    """
    cur = await conn.execute(
        "SELECT 'reading', s.code, o.outcome, o.n"
        " FROM source s CROSS JOIN LATERAL (VALUES ('accepted', s.accepted),"
        " ('duplicate', s.duplicate), ('revised', s.revised), ('rejected', s.rejected))"
        " AS o (outcome, n)"
        " UNION ALL SELECT 'alert', kind, NULL, count(*) FROM alert_event GROUP BY kind"
        " UNION ALL SELECT 'outbox', NULL, NULL, count(*) FROM notification"
        " WHERE status = 'pending'"
    )
    readings: dict[tuple[str, str], int] = {}
    transitions: dict[str, int] = {}
    pending = 0
    for what, name, outcome, count in await cur.fetchall():
        if what == "reading":
            readings[(name, outcome)] = int(count)
        elif what == "alert":
            transitions[name] = int(count)
        else:
            pending = int(count)
    return DatabaseCounts(readings, transitions, pending)
