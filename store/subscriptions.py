"""Subscriptions: who is told what, through which channel; seeded from config, changed by the API.

A subscription from subscriptions.yaml is the file's until the API changes it; seeding never
overwrites an API change. The caller owns every transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from core.errors import AgencyNotFound, InvalidInput, NotFound
from schemas.notifications import SubscriptionConfig, SubscriptionIn, SubscriptionSet
from store.catalogue import unknown_stations
from store.outbox import cancel_notifications
from store.pool import Conn


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
    kind: str = "alerts"


_SUBSCRIPTION = """
SELECT s.id, s.code, s.agency_id, g.code AS agency, s.enabled, s.channel, s.target, s.secret,
       s.language, s.areas, s.cities, s.stations, s.kinds, s.rules, s.min_severity, s.group_by,
       s.group_wait_s, s.group_wait_critical_s, s.group_interval_s, s.repeat_interval_s,
       s.escalate_after_s, s.escalation_channel, s.escalation_target, s.escalation_secret,
       s.changed_via, s.created_at, s.updated_at, s.kind
FROM subscription s JOIN agency g ON g.id = s.agency_id
"""
# The columns a subscription's definition sets (the same from the file and the API).
_SPEC_COLUMNS = (
    "enabled",
    "channel",
    "target",
    "secret",
    "language",
    "kind",
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
        "kind": spec.kind,
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


async def bulletin_link_subscriptions(conn: Conn) -> list[str]:
    """Codes of the enabled bulletin subscriptions that send links (every channel but e-mail,
    which attaches the files), by id."""
    cur = await conn.execute(
        "SELECT code FROM subscription WHERE kind = 'bulletin' AND enabled"
        " AND channel <> 'email' ORDER BY id"
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def get_subscription(conn: Conn, subscription_id: int) -> SubscriptionRow:
    """One subscription, or NotFound."""
    async with conn.cursor(row_factory=class_row(SubscriptionRow)) as cur:
        await cur.execute(_SUBSCRIPTION + " WHERE s.id = %s", [subscription_id])
        found = await cur.fetchone()
    if found is None:
        raise NotFound(f"no subscription with id {subscription_id}")
    return found


async def _check_codes(conn: Conn, spec: SubscriptionIn) -> None:
    """Station filters must name stations that exist."""
    if spec.filters.stations:
        unknown = await unknown_stations(conn, spec.filters.stations)
        if unknown:
            raise InvalidInput(f"subscription {spec.code}: unknown stations {unknown}")


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
    cancelled = await cancel_notifications(
        conn, subscription_id=subscription_id, reason="the subscription was deleted", at=at
    )
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
