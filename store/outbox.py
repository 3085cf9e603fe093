"""The outbox: notifications and their items, claims, delivery attempts, and their listings.

The dispatchers claim outbox rows with FOR UPDATE SKIP LOCKED under a lease: a claim moves
`due_at` past the lease and sets a token, and only the holder of the token records the outcome.
The caller owns every transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from store.coordination import OUTBOX_CHANNEL
from store.pool import Conn


async def notify_outbox(conn: Conn) -> None:
    """Wake the dispatchers; delivered when the transaction commits."""
    await conn.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])


@dataclass(frozen=True, slots=True)
class NewItem:
    alert_id: int
    event_id: int | None
    state: str
    severity: str
    value: float | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewNotification:
    """A message to put in the outbox, due at once."""

    subscription_id: int
    agency_id: int
    kind: str
    group_key: str
    channel: str
    target: str
    secret: str | None
    language: str
    created_at: datetime
    deadline_at: datetime
    items: tuple[NewItem, ...]


_INSERT_NOTIFICATIONS = """
INSERT INTO notification (subscription_id, agency_id, kind, group_key, channel, target, secret,
                          language, status, created_at, deadline_at, due_at)
SELECT n.sub, n.agency, n.kind, n.key, n.channel, n.target, n.secret, n.language, 'pending',
       n.created, n.deadline, n.created
FROM unnest(%(sub)s::int[], %(agency)s::int2[], %(kind)s::text[], %(key)s::text[],
            %(channel)s::text[], %(target)s::text[], %(secret)s::text[], %(language)s::text[],
            %(created)s::timestamptz[], %(deadline)s::timestamptz[])
     WITH ORDINALITY AS n(sub, agency, kind, key, channel, target, secret, language, created,
                          deadline, ord)
ORDER BY n.ord
RETURNING id
"""


async def insert_notifications(conn: Conn, notifications: Sequence[NewNotification]) -> list[int]:
    """Put messages in the outbox with their items; returns their ids in the order given."""
    if not notifications:
        return []
    cur = await conn.execute(
        _INSERT_NOTIFICATIONS.encode(),
        {
            "sub": [n.subscription_id for n in notifications],
            "agency": [n.agency_id for n in notifications],
            "kind": [n.kind for n in notifications],
            "key": [n.group_key for n in notifications],
            "channel": [n.channel for n in notifications],
            "target": [n.target for n in notifications],
            "secret": [n.secret for n in notifications],
            "language": [n.language for n in notifications],
            "created": [n.created_at for n in notifications],
            "deadline": [n.deadline_at for n in notifications],
        },
    )
    # Ids come from one sequence in insertion order (the ORDER BY), so sorting restores it.
    ids = sorted(int(row[0]) for row in await cur.fetchall())
    items = [
        (nid, position, item)
        for nid, n in zip(ids, notifications, strict=True)
        for position, item in enumerate(n.items)
    ]
    await conn.execute(
        "INSERT INTO notification_item (notification_id, position, alert_id, event_id, state,"
        " severity, value, fired_at, resolved_at, retracted_at)"
        " SELECT * FROM unnest(%(n)s::bigint[], %(pos)s::int2[], %(alert)s::bigint[],"
        " %(event)s::bigint[], %(state)s::text[], %(severity)s::text[], %(value)s::float8[],"
        " %(fired)s::timestamptz[], %(resolved)s::timestamptz[], %(retracted)s::timestamptz[])",
        {
            "n": [nid for nid, _, _ in items],
            "pos": [pos for _, pos, _ in items],
            "alert": [i.alert_id for _, _, i in items],
            "event": [i.event_id for _, _, i in items],
            "state": [i.state for _, _, i in items],
            "severity": [i.severity for _, _, i in items],
            "value": [i.value for _, _, i in items],
            "fired": [i.fired_at for _, _, i in items],
            "resolved": [i.resolved_at for _, _, i in items],
            "retracted": [i.retracted_at for _, _, i in items],
        },
    )
    return ids


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    """A notification claimed for one attempt, with the claim it replaced (if it was lost)."""

    id: int
    subscription_id: int | None
    agency_id: int
    kind: str
    group_key: str
    channel: str
    target: str
    secret: str | None
    language: str
    created_at: datetime
    deadline_at: datetime
    attempts: int
    claim_token: UUID
    claimed_at: datetime
    lost_token: UUID | None
    lost_claimed_at: datetime | None
    lost_claimed_by: str | None


# The CTE reads the previous claim before the update replaces it: a token still set means the
# dispatcher that held it stopped before recording an outcome.
_CLAIM = """
WITH due AS (
    SELECT id, claim_token, claimed_at, claimed_by FROM notification
    WHERE status = 'pending' AND due_at <= %(now)s
    ORDER BY due_at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notification n
SET attempts = n.attempts + 1, claim_token = gen_random_uuid(), claimed_at = %(now)s,
    claimed_by = %(worker)s, due_at = %(now)s + make_interval(secs => %(lease)s)
FROM due WHERE n.id = due.id
RETURNING n.id, n.subscription_id, n.agency_id, n.kind, n.group_key, n.channel, n.target,
          n.secret, n.language, n.created_at, n.deadline_at, n.attempts, n.claim_token,
          n.claimed_at, due.claim_token AS lost_token, due.claimed_at AS lost_claimed_at,
          due.claimed_by AS lost_claimed_by
"""


async def claim_notifications(
    conn: Conn, *, now: datetime, limit: int, lease_s: float, worker: str
) -> list[ClaimedNotification]:
    """Claim up to `limit` due notifications for one attempt each, skipping others' claims.

    An interrupted earlier claim is recorded as an attempt with status 'interrupted'.
    """
    async with conn.cursor(row_factory=class_row(ClaimedNotification)) as cur:
        await cur.execute(
            _CLAIM.encode(), {"now": now, "limit": limit, "lease": lease_s, "worker": worker}
        )
        claimed = sorted(await cur.fetchall(), key=lambda c: c.id)
    lost = [c for c in claimed if c.lost_token is not None]
    if lost:
        await conn.execute(
            "INSERT INTO delivery_attempt (notification_id, attempt, started_at, finished_at,"
            " status, error, worker)"
            " SELECT n, a, s, %(now)s, 'interrupted',"
            " 'the dispatcher stopped before recording an outcome; its claim expired', w"
            " FROM unnest(%(n)s::bigint[], %(a)s::int[], %(s)s::timestamptz[], %(w)s::text[])"
            " AS l(n, a, s, w)",
            {
                "now": now,
                "n": [c.id for c in lost],
                "a": [c.attempts - 1 for c in lost],
                "s": [c.lost_claimed_at for c in lost],
                "w": [c.lost_claimed_by or "?" for c in lost],
            },
        )
    return claimed


@dataclass(frozen=True, slots=True)
class ItemPayload:
    """One item of a notification, with the event it reports."""

    notification_id: int
    position: int
    alert_id: int
    event_id: int | None
    state: str
    severity: str
    value: float | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None
    event_at: datetime | None
    event_kind: str | None
    event_state: str | None
    event_severity: str | None
    event_value: float | None


async def notification_items(conn: Conn, notification_ids: Sequence[int]) -> list[ItemPayload]:
    """The items of some notifications, in order."""
    async with conn.cursor(row_factory=class_row(ItemPayload)) as cur:
        await cur.execute(
            "SELECT i.notification_id, i.position, i.alert_id, i.event_id, i.state, i.severity,"
            " i.value, i.fired_at, i.resolved_at, i.retracted_at, e.at AS event_at,"
            " e.kind AS event_kind, e.state AS event_state, e.severity AS event_severity,"
            " e.value AS event_value"
            " FROM notification_item i LEFT JOIN alert_event e ON e.id = i.event_id"
            " WHERE i.notification_id = ANY(%s) ORDER BY i.notification_id, i.position",
            [list(notification_ids)],
        )
        return await cur.fetchall()


async def record_attempt(
    conn: Conn,
    *,
    notification_id: int,
    token: UUID,
    attempt: int,
    started_at: datetime,
    finished_at: datetime,
    outcome: str,
    response_code: int | None,
    error: str | None,
    worker: str,
    status: str,
    due_at: datetime | None,
) -> bool:
    """Record an attempt and the notification's new status; False if the claim was lost.

    The attempt is recorded either way (it happened); the status changes only under the token.
    """
    await conn.execute(
        "INSERT INTO delivery_attempt (notification_id, attempt, started_at, finished_at,"
        " status, response_code, error, worker) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [notification_id, attempt, started_at, finished_at, outcome, response_code, error, worker],
    )
    cur = await conn.execute(
        "UPDATE notification SET status = %(status)s, due_at = coalesce(%(due)s, due_at),"
        " claim_token = NULL, claimed_at = NULL, claimed_by = NULL,"
        " sent_at = CASE WHEN %(status)s = 'sent' THEN %(at)s END,"
        " failed_at = CASE WHEN %(status)s = 'failed' THEN %(at)s END,"
        " last_error = %(error)s"
        " WHERE id = %(id)s AND claim_token = %(token)s",
        {
            "status": status,
            "due": due_at,
            "at": finished_at,
            "error": error,
            "id": notification_id,
            "token": token,
        },
    )
    return cur.rowcount == 1


async def next_due(conn: Conn) -> datetime | None:
    """When the earliest pending notification is due."""
    cur = await conn.execute("SELECT min(due_at) FROM notification WHERE status = 'pending'")
    row = await cur.fetchone()
    return row[0] if row else None


@dataclass(frozen=True, slots=True)
class NotificationRow:
    """A notification as the API lists it (never its secret)."""

    id: int
    kind: str
    status: str
    agency: str
    subscription: str | None
    channel: str
    target: str
    language: str
    group_key: str
    created_at: datetime
    due_at: datetime
    deadline_at: datetime
    sent_at: datetime | None
    failed_at: datetime | None
    attempts: int
    last_error: str | None


_NOTIFICATIONS = """
SELECT n.id, n.kind, n.status, g.code AS agency, s.code AS subscription, n.channel, n.target,
       n.language, n.group_key, n.created_at, n.due_at, n.deadline_at, n.sent_at, n.failed_at,
       n.attempts, n.last_error
FROM notification n JOIN agency g ON g.id = n.agency_id
LEFT JOIN subscription s ON s.id = n.subscription_id
WHERE (%(status)s::text IS NULL OR n.status = %(status)s)
  AND (%(agency)s::text IS NULL OR g.code = %(agency)s)
  AND (%(alert)s::bigint IS NULL
       OR EXISTS (SELECT 1 FROM notification_item i
                  WHERE i.notification_id = n.id AND i.alert_id = %(alert)s))
  AND (%(before)s::bigint IS NULL OR n.id < %(before)s)
ORDER BY n.id DESC LIMIT %(limit)s
"""


async def list_notifications(
    conn: Conn,
    *,
    status: str | None = None,
    agency: str | None = None,
    alert_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[NotificationRow]:
    """Notifications newest first, by status, agency and the alert they cover."""
    async with conn.cursor(row_factory=class_row(NotificationRow)) as cur:
        await cur.execute(
            _NOTIFICATIONS.encode(),
            {
                "status": status,
                "agency": agency,
                "alert": alert_id,
                "before": before_id,
                "limit": limit,
            },
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class AttemptRow:
    notification_id: int
    attempt: int
    started_at: datetime
    finished_at: datetime
    status: str
    response_code: int | None
    error: str | None
    worker: str


async def attempts_of(conn: Conn, notification_ids: Sequence[int]) -> list[AttemptRow]:
    """The delivery attempts of some notifications, in order."""
    async with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        await cur.execute(
            "SELECT notification_id, attempt, started_at, finished_at, status, response_code,"
            " error, worker FROM delivery_attempt WHERE notification_id = ANY(%s)"
            " ORDER BY notification_id, id",
            [list(notification_ids)],
        )
        return await cur.fetchall()


async def told_alerts(conn: Conn, pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (subscription, alert) pairs among these whose subscription was sent the alert."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    cur = await conn.execute(
        "SELECT DISTINCT n.subscription_id, i.alert_id FROM notification_item i"
        " JOIN notification n ON n.id = i.notification_id"
        " WHERE (n.subscription_id, i.alert_id) IN"
        "  (SELECT * FROM unnest(%s::int[], %s::bigint[])) AND n.kind <> 'escalation'",
        [[s for s, _ in wanted], [a for _, a in wanted]],
    )
    return {(int(s), int(a)) for s, a in await cur.fetchall()}


async def cancel_notifications(
    conn: Conn, *, subscription_id: int, reason: str, at: datetime
) -> int:
    """Cancel a subscription's undelivered notifications with a reason; returns how many."""
    cur = await conn.execute(
        "UPDATE notification SET status = 'cancelled', claim_token = NULL,"
        " last_error = %(reason)s, failed_at = %(at)s"
        " WHERE subscription_id = %(id)s AND status = 'pending'",
        {"id": subscription_id, "reason": reason, "at": at},
    )
    return cur.rowcount
