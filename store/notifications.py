"""Subscriptions, silences, the notification stage's cursor and groups, the outbox and attempts.

The stage reads alert_event through a cursor row it locks for its whole transaction (several
workers may run a stage; one works at a time, the others skip the round). The dispatchers claim
outbox rows with FOR UPDATE SKIP LOCKED under a lease: a claim moves `due_at` past the lease and
sets a token, and only the holder of the token records the outcome. The caller owns every
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from core.errors import AgencyNotFound, InvalidInput, NotFound
from schemas.notifications import SubscriptionConfig, SubscriptionIn, SubscriptionSet
from store.coordination import OUTBOX_CHANNEL
from store.pool import Conn

CURSOR_NAME = "stage"
# More skipped ids than this in one round means a sequence jump, not transactions in flight.
MAX_NEW_GAPS = 10_000


async def notify_outbox(conn: Conn) -> None:
    """Wake the dispatchers; delivered when the transaction commits."""
    await conn.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])


@dataclass(frozen=True, slots=True)
class AgencyRow:
    id: int
    code: str
    name: str
    name_zh: str
    city: str | None


async def agencies(conn: Conn) -> list[AgencyRow]:
    """Every agency, by id."""
    async with conn.cursor(row_factory=class_row(AgencyRow)) as cur:
        await cur.execute("SELECT id, code, name, name_zh, city FROM agency ORDER BY id")
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """One row of `subscription`, with its agency's code."""

    id: int
    code: str
    agency_id: int
    agency: str
    enabled: bool
    channel: str
    target: str
    secret: str | None
    language: str
    areas: list[str] | None
    cities: list[str] | None
    stations: list[str] | None
    kinds: list[str] | None
    rules: list[str] | None
    min_severity: str
    group_by: list[str]
    group_wait_s: int
    group_wait_critical_s: int
    group_interval_s: int
    repeat_interval_s: int
    escalate_after_s: int | None
    escalation_channel: str | None
    escalation_target: str | None
    escalation_secret: str | None
    changed_via: str
    created_at: datetime
    updated_at: datetime


_SUBSCRIPTION = """
SELECT s.id, s.code, s.agency_id, g.code AS agency, s.enabled, s.channel, s.target, s.secret,
       s.language, s.areas, s.cities, s.stations, s.kinds, s.rules, s.min_severity, s.group_by,
       s.group_wait_s, s.group_wait_critical_s, s.group_interval_s, s.repeat_interval_s,
       s.escalate_after_s, s.escalation_channel, s.escalation_target, s.escalation_secret,
       s.changed_via, s.created_at, s.updated_at
FROM subscription s JOIN agency g ON g.id = s.agency_id
"""
# The columns a subscription's definition sets (the same from the file and the API).
_SPEC_COLUMNS = (
    "enabled",
    "channel",
    "target",
    "secret",
    "language",
    "areas",
    "cities",
    "stations",
    "kinds",
    "rules",
    "min_severity",
    "group_by",
    "group_wait_s",
    "group_wait_critical_s",
    "group_interval_s",
    "repeat_interval_s",
    "escalate_after_s",
    "escalation_channel",
    "escalation_target",
    "escalation_secret",
)


def _spec_columns(spec: SubscriptionIn) -> dict[str, Any]:
    filters = spec.filters
    escalation = spec.escalation
    return {
        "enabled": spec.enabled,
        "channel": spec.channel,
        "target": spec.target,
        "secret": spec.secret,
        "language": spec.language,
        "areas": list(filters.areas) if filters.areas else None,
        "cities": list(filters.cities) if filters.cities else None,
        "stations": list(filters.stations) if filters.stations else None,
        "kinds": list(filters.kinds) if filters.kinds else None,
        "rules": list(filters.rules) if filters.rules else None,
        "min_severity": filters.min_severity,
        "group_by": list(spec.group_by),
        "group_wait_s": spec.group_wait_s,
        "group_wait_critical_s": spec.group_wait_critical_s,
        "group_interval_s": spec.group_interval_s,
        "repeat_interval_s": spec.repeat_interval_s,
        "escalate_after_s": escalation.after_s if escalation else None,
        "escalation_channel": escalation.channel if escalation else None,
        "escalation_target": escalation.target if escalation else None,
        "escalation_secret": escalation.secret if escalation else None,
    }


async def list_subscriptions(
    conn: Conn, *, agency: str | None = None, enabled_only: bool = False
) -> list[SubscriptionRow]:
    """Subscriptions of one agency (or all), by id."""
    async with conn.cursor(row_factory=class_row(SubscriptionRow)) as cur:
        await cur.execute(
            _SUBSCRIPTION + " WHERE (%(agency)s::text IS NULL OR g.code = %(agency)s)"
            " AND (NOT %(enabled)s OR s.enabled) ORDER BY s.id",
            {"agency": agency, "enabled": enabled_only},
        )
        return await cur.fetchall()


async def get_subscription(conn: Conn, subscription_id: int) -> SubscriptionRow:
    """One subscription, or NotFound."""
    async with conn.cursor(row_factory=class_row(SubscriptionRow)) as cur:
        await cur.execute(_SUBSCRIPTION + " WHERE s.id = %s", [subscription_id])
        found = await cur.fetchone()
    if found is None:
        raise NotFound(f"no subscription with id {subscription_id}")
    return found


async def _check_codes(conn: Conn, spec: SubscriptionIn) -> None:
    """Station and rule filters must name stations and rules that exist."""
    filters = spec.filters
    if filters.stations:
        cur = await conn.execute(
            "SELECT array(SELECT c FROM unnest(%s::text[]) AS c"
            " WHERE NOT EXISTS (SELECT 1 FROM station WHERE code = c) ORDER BY c)",
            [list(filters.stations)],
        )
        row = await cur.fetchone()
        if row and row[0]:
            raise InvalidInput(f"subscription {spec.code}: unknown stations {row[0]}")


async def create_subscription(
    conn: Conn, *, agency: str, spec: SubscriptionIn, via: str, at: datetime
) -> SubscriptionRow:
    """Add a subscription for an agency; InvalidInput if its code is taken."""
    await _check_codes(conn, spec)
    columns = _spec_columns(spec)
    names = ", ".join(_SPEC_COLUMNS)
    values = ", ".join(f"%({name})s" for name in _SPEC_COLUMNS)
    try:
        cur = await conn.execute(
            (
                "INSERT INTO subscription (code, agency_id, " + names + ", changed_via,"
                " created_at, updated_at) SELECT %(code)s, g.id, " + values + ", %(via)s,"
                " %(at)s, %(at)s FROM agency g WHERE g.code = %(agency)s"
                " ON CONFLICT (code) DO NOTHING RETURNING id"
            ).encode(),
            {**columns, "code": spec.code, "agency": agency, "via": via, "at": at},
        )
    except psycopg.errors.CheckViolation as exc:
        raise InvalidInput(f"subscription {spec.code}: {exc.diag.message_primary}") from None
    row = await cur.fetchone()
    if row is None:
        known = await conn.execute("SELECT 1 FROM agency WHERE code = %s", [agency])
        if await known.fetchone() is None:
            raise AgencyNotFound(f"no agency with code {agency!r}")
        raise InvalidInput(f"a subscription with code {spec.code!r} exists already")
    return await get_subscription(conn, int(row[0]))


async def replace_subscription(
    conn: Conn, subscription_id: int, *, spec: SubscriptionIn, via: str, at: datetime
) -> SubscriptionRow:
    """Replace a subscription's definition (its agency stays); NotFound / InvalidInput."""
    await _check_codes(conn, spec)
    columns = _spec_columns(spec)
    assignments = ", ".join(f"{name} = %({name})s" for name in _SPEC_COLUMNS)
    try:
        cur = await conn.execute(
            (
                "UPDATE subscription SET code = %(code)s, " + assignments + ","
                " changed_via = %(via)s, updated_at = %(at)s WHERE id = %(id)s RETURNING id"
            ).encode(),
            {**columns, "code": spec.code, "via": via, "at": at, "id": subscription_id},
        )
    except psycopg.errors.UniqueViolation:
        raise InvalidInput(f"a subscription with code {spec.code!r} exists already") from None
    if await cur.fetchone() is None:
        raise NotFound(f"no subscription with id {subscription_id}")
    return await get_subscription(conn, subscription_id)


async def delete_subscription(conn: Conn, subscription_id: int, *, at: datetime) -> int:
    """Delete a subscription; its undelivered notifications are cancelled. Returns how many."""
    cur = await conn.execute(
        "UPDATE notification SET status = 'cancelled', claim_token = NULL,"
        " last_error = 'the subscription was deleted', failed_at = %(at)s"
        " WHERE subscription_id = %(id)s AND status = 'pending'",
        {"id": subscription_id, "at": at},
    )
    cancelled = cur.rowcount
    deleted = await conn.execute("DELETE FROM subscription WHERE id = %s", [subscription_id])
    if deleted.rowcount == 0:
        raise NotFound(f"no subscription with id {subscription_id}")
    return cancelled


@dataclass
class SubscriptionSeedReport:
    """What seeding did; `kept` holds the API-changed subscriptions with how the file differs."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [
            f"subscription: {len(self.inserted)} inserted, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.kept)} kept as changed through the API"
        ]
        for code, differences in self.kept.items():
            if differences:
                lines.append(
                    f"  subscription {code} was changed through the API and is kept; "
                    f"subscriptions.yaml differs in: {', '.join(differences)}"
                )
        return lines


async def seed_subscriptions(
    conn: Conn, subscriptions: SubscriptionSet, *, at: datetime
) -> SubscriptionSeedReport:
    """Insert new subscriptions, update those the file owns, never overwrite an API change."""
    report = SubscriptionSeedReport()
    stored = {row.code: row for row in await list_subscriptions(conn)}
    for spec in subscriptions.subscriptions:
        existing = stored.get(spec.code)
        if existing is None:
            await create_subscription(conn, agency=spec.agency, spec=spec, via="config", at=at)
            report.inserted.append(spec.code)
            continue
        differences = _differences(spec, existing)
        if existing.changed_via == "api":
            report.kept[spec.code] = differences
        elif differences:
            await replace_subscription(conn, existing.id, spec=spec, via="config", at=at)
            report.updated.append(spec.code)
        else:
            report.unchanged.append(spec.code)
    return report


def _differences(spec: SubscriptionConfig, row: SubscriptionRow) -> list[str]:
    wanted = {**_spec_columns(spec), "agency": spec.agency}
    return [name for name, value in wanted.items() if getattr(row, name) != value]


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
        cur = await conn.execute(
            "SELECT array(SELECT c FROM unnest(%s::text[]) AS c"
            " WHERE NOT EXISTS (SELECT 1 FROM station WHERE code = c) ORDER BY c)",
            [list(stations)],
        )
        row = await cur.fetchone()
        if row and row[0]:
            raise InvalidInput(f"silence: unknown stations {row[0]}")
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
    city: str
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


@dataclass(frozen=True, slots=True)
class AlertNow:
    """An alert as it stands: what subscriptions and silences match, what a message freezes."""

    id: int
    rule_id: str
    kind: str
    state: str
    severity: str
    value: float | None
    station: str | None
    city: str
    area: str | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None


async def alerts_now(conn: Conn, alert_ids: Iterable[int]) -> list[AlertNow]:
    """The current state and labels of some alerts."""
    async with conn.cursor(row_factory=class_row(AlertNow)) as cur:
        await cur.execute(
            "SELECT a.id, a.rule_id, a.kind, a.state, a.severity, a.value, s.code AS station,"
            " coalesce(s.city, a.city) AS city, s.area, a.fired_at, a.resolved_at, a.retracted_at"
            " FROM alert a LEFT JOIN station s ON s.id = a.station_id WHERE a.id = ANY(%s)",
            [sorted(set(alert_ids))],
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


async def acks_of(conn: Conn, alert_ids: Iterable[int]) -> set[tuple[int, int]]:
    """(alert id, agency id) of every acknowledgement of some alerts."""
    cur = await conn.execute(
        "SELECT alert_id, agency_id FROM alert_ack WHERE alert_id = ANY(%s)",
        [sorted(set(alert_ids))],
    )
    return {(int(a), int(g)) for a, g in await cur.fetchall()}


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


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a message says about an alert besides its state: rule, station, parameter."""

    id: int
    rule_id: str
    rule_version: int
    definition: dict[str, Any]
    kind: str
    state: str
    severity: str
    value: float | None
    city: str | None
    opened_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None
    trigger_time: datetime | None
    details: dict[str, Any]
    station: dict[str, Any] | None
    source_station: dict[str, Any] | None
    parameter: dict[str, Any] | None


_STATION_JSON = (
    "jsonb_build_object('code', {s}.code, 'name', {s}.name, 'name_zh', {s}.name_zh,"
    " 'city', {s}.city, 'area', {s}.area, 'medium', {s}.medium, 'lat', {s}.lat, 'lon', {s}.lon)"
)
_ALERT_FACTS = (
    "SELECT a.id, a.rule_id, a.rule_version, v.definition, a.kind, a.state, a.severity, a.value,"
    " a.city, a.opened_at, a.fired_at, a.resolved_at, a.retracted_at, a.trigger_time, a.details,"
    " CASE WHEN s.id IS NOT NULL THEN " + _STATION_JSON.format(s="s") + " END AS station,"
    " CASE WHEN us.id IS NOT NULL THEN " + _STATION_JSON.format(s="us") + " END"
    " AS source_station,"
    " CASE WHEN p.id IS NOT NULL THEN jsonb_build_object('code', p.code, 'name', p.name,"
    " 'name_zh', p.name_zh, 'unit', p.unit) END AS parameter"
    " FROM alert a"
    " JOIN rule_version v ON v.rule_id = a.rule_id AND v.version = a.rule_version"
    " LEFT JOIN station s ON s.id = a.station_id"
    " LEFT JOIN parameter p ON p.id = a.parameter_id"
    " LEFT JOIN alert src ON src.id = a.source_alert_id"
    " LEFT JOIN station us ON us.id = src.station_id"
    " WHERE a.id = ANY(%s) ORDER BY a.id"
)


async def alert_facts(conn: Conn, alert_ids: Iterable[int]) -> list[AlertFacts]:
    """Rule, station, parameter and upstream station of some alerts."""
    async with conn.cursor(row_factory=class_row(AlertFacts)) as cur:
        await cur.execute(_ALERT_FACTS.encode(), [sorted(set(alert_ids))])
        return await cur.fetchall()


async def city_centres(conn: Conn) -> dict[str, tuple[float, float]]:
    """Each city's mean station position: where a city-wide alert is placed (CAP area)."""
    cur = await conn.execute("SELECT city, avg(lat), avg(lon) FROM station GROUP BY city")
    return {str(city): (float(lat), float(lon)) for city, lat, lon in await cur.fetchall()}


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


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """An alert event with the alert's rule, place and parameter, for the live stream."""

    id: int
    alert_id: int
    at: datetime
    kind: str
    state: str
    severity: str
    value: float | None
    details: dict[str, Any]
    rule_id: str
    alert_kind: str
    station: str | None
    city: str | None
    area: str | None
    parameter: str | None


async def stream_events(conn: Conn, *, after_id: int, limit: int) -> list[StreamEvent]:
    """Events after an id, in id order."""
    async with conn.cursor(row_factory=class_row(StreamEvent)) as cur:
        await cur.execute(
            "SELECT e.id, e.alert_id, e.at, e.kind, e.state, e.severity, e.value, e.details,"
            " a.rule_id, a.kind AS alert_kind, s.code AS station,"
            " coalesce(s.city, a.city) AS city, s.area, p.code AS parameter"
            " FROM alert_event e JOIN alert a ON a.id = e.alert_id"
            " LEFT JOIN station s ON s.id = a.station_id"
            " LEFT JOIN parameter p ON p.id = a.parameter_id"
            " WHERE e.id > %s ORDER BY e.id LIMIT %s",
            [after_id, limit],
        )
        return await cur.fetchall()


async def last_event_id(conn: Conn) -> int:
    """The newest alert event's id (0 when there is none)."""
    cur = await conn.execute("SELECT coalesce(max(id), 0) FROM alert_event")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
