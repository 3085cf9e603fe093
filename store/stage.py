"""The notification stage's state: its cursor over alert_event, and the open notification groups.

The stage reads alert_event through a cursor row it locks for its whole transaction (several
workers may run a stage; one works at a time, the others skip the round). An event id skipped
by the cursor (a transaction still in flight when the cursor passed) is kept as a gap and read
when it appears. The caller owns every transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from store.pool import Conn

CURSOR_NAME = "stage"
# More skipped ids than this in one round means a sequence jump, not transactions in flight.
MAX_NEW_GAPS = 10_000


@dataclass(frozen=True, slots=True)
class CursorState:
    """The stage's position: every event up to last_event_id is read, except the gaps."""

    last_event_id: int
    gaps: dict[int, datetime]


async def lock_cursor(conn: Conn, *, at: datetime) -> CursorState | None:
    """Lock the stage's cursor for this transaction; None while another stage holds it."""
    cur = await conn.execute(
        "SELECT last_event_id FROM notification_cursor WHERE name = %s FOR UPDATE SKIP LOCKED",
        [CURSOR_NAME],
    )
    row = await cur.fetchone()
    if row is None:
        # No row (a fresh test database): the one who inserts it holds it until commit.
        cur = await conn.execute(
            "INSERT INTO notification_cursor (name, last_event_id, updated_at)"
            " VALUES (%s, 0, %s) ON CONFLICT (name) DO NOTHING RETURNING last_event_id",
            [CURSOR_NAME, at],
        )
        row = await cur.fetchone()
        if row is None:
            return None
    gaps = await conn.execute("SELECT event_id, seen_at FROM notification_cursor_gap")
    return CursorState(int(row[0]), {int(e): seen for e, seen in await gaps.fetchall()})


async def advance_cursor(
    conn: Conn,
    *,
    last_event_id: int,
    read_gaps: Sequence[int],
    new_gaps: Sequence[int],
    at: datetime,
    forget_before: datetime,
) -> None:
    """Move the cursor, forget gaps that were read or are too old, and record new gaps."""
    await conn.execute(
        "UPDATE notification_cursor SET last_event_id = %s, updated_at = %s WHERE name = %s",
        [last_event_id, at, CURSOR_NAME],
    )
    await conn.execute(
        "DELETE FROM notification_cursor_gap WHERE event_id = ANY(%s) OR seen_at < %s",
        [list(read_gaps), forget_before],
    )
    if new_gaps:
        await conn.execute(
            "INSERT INTO notification_cursor_gap (event_id, seen_at)"
            " SELECT unnest(%s::bigint[]), %s ON CONFLICT (event_id) DO NOTHING",
            [list(new_gaps)[:MAX_NEW_GAPS], at],
        )


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """An alert event with the facts of its alert that subscriptions match on."""

    id: int
    alert_id: int
    at: datetime
    kind: str
    state: str
    severity: str
    value: float | None
    rule_id: str
    alert_kind: str
    station: str | None
    city: str | None  # None for a regional alert
    area: str | None
    addressed_to: list[int]
    fired_at: datetime | None


async def events_after(
    conn: Conn, *, after_id: int, gap_ids: Iterable[int], limit: int
) -> list[RoutedEvent]:
    """Events after the cursor and those in its gaps that have appeared, in id order."""
    async with conn.cursor(row_factory=class_row(RoutedEvent)) as cur:
        await cur.execute(
            "SELECT e.id, e.alert_id, e.at, e.kind, e.state, e.severity, e.value, a.rule_id,"
            " a.kind AS alert_kind, s.code AS station, coalesce(s.city, a.city) AS city, s.area,"
            " a.addressed_to, a.fired_at"
            " FROM alert_event e JOIN alert a ON a.id = e.alert_id"
            " LEFT JOIN station s ON s.id = a.station_id"
            " WHERE e.id > %(after)s OR e.id = ANY(%(gaps)s)"
            " ORDER BY e.id LIMIT %(limit)s",
            {"after": after_id, "gaps": sorted(gap_ids), "limit": limit},
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event waiting in a group for the next message."""

    id: int
    kind: str
    state: str
    severity: str


@dataclass
class GroupMember:
    """An alert in a group: what its subscriber was last told and what is waiting."""

    alert_id: int
    pending: list[PendingEvent] = field(default_factory=list)
    told: str | None = None
    told_severity: str | None = None
    escalate_at: datetime | None = None
    escalated_at: datetime | None = None


@dataclass
class NotificationGroup:
    """A subscription's open group; `id` None until stored, `members` by alert id."""

    id: int | None
    subscription_id: int
    key: str
    opened_at: datetime
    flush_at: datetime | None = None
    notified_at: datetime | None = None
    repeat_at: datetime | None = None
    wake_at: datetime | None = None
    members: dict[int, GroupMember] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _GroupRow:
    id: int
    subscription_id: int
    key: str
    opened_at: datetime
    flush_at: datetime | None
    notified_at: datetime | None
    repeat_at: datetime | None
    wake_at: datetime | None


@dataclass(frozen=True, slots=True)
class _MemberRow:
    group_id: int
    alert_id: int
    pending: list[list[Any]]
    told: str | None
    told_severity: str | None
    escalate_at: datetime | None
    escalated_at: datetime | None


async def load_groups(
    conn: Conn, *, keys: Sequence[tuple[int, str]], due_at: datetime
) -> list[NotificationGroup]:
    """The open groups with these (subscription, key) and those whose timers are due."""
    async with conn.cursor(row_factory=class_row(_GroupRow)) as cur:
        await cur.execute(
            "SELECT id, subscription_id, key, opened_at, flush_at, notified_at, repeat_at, wake_at"
            " FROM notification_group WHERE (subscription_id, key) IN"
            "  (SELECT * FROM unnest(%(subs)s::int[], %(keys)s::text[]))"
            " OR wake_at <= %(due)s ORDER BY id FOR UPDATE",
            {"subs": [s for s, _ in keys], "keys": [k for _, k in keys], "due": due_at},
        )
        rows = await cur.fetchall()
    groups = {
        row.id: NotificationGroup(
            row.id,
            row.subscription_id,
            row.key,
            row.opened_at,
            row.flush_at,
            row.notified_at,
            row.repeat_at,
            row.wake_at,
        )
        for row in rows
    }
    if groups:
        async with conn.cursor(row_factory=class_row(_MemberRow)) as cur:
            await cur.execute(
                "SELECT group_id, alert_id, pending, told, told_severity, escalate_at,"
                " escalated_at FROM notification_group_member WHERE group_id = ANY(%s)"
                " ORDER BY group_id, alert_id",
                [list(groups)],
            )
            for member in await cur.fetchall():
                groups[member.group_id].members[member.alert_id] = GroupMember(
                    member.alert_id,
                    [PendingEvent(int(e[0]), e[1], e[2], e[3]) for e in member.pending],
                    member.told,
                    member.told_severity,
                    member.escalate_at,
                    member.escalated_at,
                )
    return list(groups.values())


_UPSERT_GROUPS = """
INSERT INTO notification_group (subscription_id, key, opened_at, flush_at, notified_at, repeat_at,
                                wake_at)
SELECT * FROM unnest(%(subs)s::int[], %(keys)s::text[], %(opened)s::timestamptz[],
                     %(flush)s::timestamptz[], %(notified)s::timestamptz[],
                     %(repeat)s::timestamptz[], %(wake)s::timestamptz[])
ON CONFLICT (subscription_id, key) DO UPDATE SET
    flush_at = excluded.flush_at, notified_at = excluded.notified_at,
    repeat_at = excluded.repeat_at, wake_at = excluded.wake_at
RETURNING id, subscription_id, key
"""


async def save_groups(
    conn: Conn, groups: Sequence[NotificationGroup], *, closed: Sequence[NotificationGroup]
) -> None:
    """Write groups and their members back (ids filled in); delete the closed ones."""
    gone = [g.id for g in closed if g.id is not None]
    if gone:
        await conn.execute("DELETE FROM notification_group WHERE id = ANY(%s)", [gone])
    if not groups:
        return
    cur = await conn.execute(
        _UPSERT_GROUPS.encode(),
        {
            "subs": [g.subscription_id for g in groups],
            "keys": [g.key for g in groups],
            "opened": [g.opened_at for g in groups],
            "flush": [g.flush_at for g in groups],
            "notified": [g.notified_at for g in groups],
            "repeat": [g.repeat_at for g in groups],
            "wake": [g.wake_at for g in groups],
        },
    )
    ids = {(int(sub), str(key)): int(gid) for gid, sub, key in await cur.fetchall()}
    for group in groups:
        group.id = ids[(group.subscription_id, group.key)]
    await conn.execute(
        "DELETE FROM notification_group_member WHERE group_id = ANY(%s)",
        [[g.id for g in groups]],
    )
    members = [(g.id, m) for g in groups for m in g.members.values()]
    if members:
        await conn.execute(
            "INSERT INTO notification_group_member (group_id, alert_id, pending, told,"
            " told_severity, escalate_at, escalated_at)"
            " SELECT * FROM unnest(%(groups)s::bigint[], %(alerts)s::bigint[],"
            " %(pending)s::jsonb[], %(told)s::text[], %(severity)s::text[],"
            " %(escalate)s::timestamptz[], %(escalated)s::timestamptz[])",
            {
                "groups": [gid for gid, _ in members],
                "alerts": [m.alert_id for _, m in members],
                "pending": [
                    Jsonb([[e.id, e.kind, e.state, e.severity] for e in m.pending])
                    for _, m in members
                ],
                "told": [m.told for _, m in members],
                "severity": [m.told_severity for _, m in members],
                "escalate": [m.escalate_at for _, m in members],
                "escalated": [m.escalated_at for _, m in members],
            },
        )


async def next_group_wake(conn: Conn) -> datetime | None:
    """The earliest timer of any group (group_wait, group_interval, repeat, escalation)."""
    cur = await conn.execute("SELECT min(wake_at) FROM notification_group")
    row = await cur.fetchone()
    return row[0] if row else None
