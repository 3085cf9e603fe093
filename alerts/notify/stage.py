"""The notification stage: alert events in, notifications (the outbox) out.

Each round is one transaction holding the stage's cursor row: read the alert events after the
cursor (and those in its gaps that have appeared since), route them into their subscriptions'
groups, send what the groups' timers say is due (group_wait, group_interval, repeats,
escalations; router.py decides), put those messages in the outbox, advance the cursor, and
NOTIFY the dispatchers. A crash anywhere rolls everything back, so the next round reads the same
events again: nothing is lost and nothing is made twice. Several workers may each run a stage;
while one holds the cursor the others skip the round.

Woken by NOTIFY envlink_alert_events (the engine sends it with every event it commits), by the
earliest group timer, and at least every `poll_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from alerts.notify import router
from alerts.notify.router import Outgoing
from core.retry import RESTART, keep_running, log_failure
from core.timeutil import utcnow
from store.alerts import AlertNow, acks_of, alerts_now
from store.coordination import ALERT_EVENTS_CHANNEL
from store.listen import Listener, Wakeup
from store.outbox import (
    NewItem,
    NewNotification,
    insert_notifications,
    notify_outbox,
    told_alerts,
)
from store.pool import Conn
from store.silences import silences_in_force
from store.stage import (
    MAX_NEW_GAPS,
    NotificationGroup,
    RoutedEvent,
    advance_cursor,
    events_after,
    load_groups,
    lock_cursor,
    next_group_wake,
    save_groups,
)
from store.subscriptions import SubscriptionRow, list_subscriptions

log = logging.getLogger(__name__)

# An event id skipped by the cursor belongs to a transaction still running or rolled back; no
# engine transaction runs this long, so a gap this old is a rolled-back insert.
GAP_TIMEOUT = timedelta(minutes=10)


@dataclass
class StageReport:
    """What one round did."""

    events: int = 0
    routed: int = 0
    notifications: list[int] = field(default_factory=list)
    busy: bool = False  # another stage held the cursor


class NotificationStage:
    """Routes alert events into groups and groups into outbox notifications; one per worker."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        poll_s: float = 5.0,
        batch: int = 1000,
        deadline_s: float = 6 * 3600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._poll_s = poll_s
        self._batch = batch
        self._deadline = timedelta(seconds=deadline_s)
        self._clock = clock
        self.listening = asyncio.Event()

    async def process(self) -> StageReport:
        """One round in one transaction."""
        now = self._clock()
        async with self._pool.connection() as conn, conn.transaction():
            return await self._round(conn, now)

    async def drain(self) -> list[StageReport]:
        """Rounds until the events are read (and every due timer handled); their reports."""
        reports = []
        while True:
            report = await self.process()
            reports.append(report)
            if report.busy or report.events < self._batch:
                return reports

    async def run(self, listener: Listener) -> None:
        """Process until cancelled, woken through `listener`; a failed round backs off."""
        wakeup = Wakeup()
        with listener.subscribed(ALERT_EVENTS_CHANNEL, wakeup):
            await listener.listening(ALERT_EVENTS_CHANNEL)
            self.listening.set()
            try:
                await keep_running(
                    lambda: self._process_when_woken(wakeup),
                    backoff=RESTART,
                    failed=log_failure(log, "notification stage"),
                    sleep=wakeup.reconnect,
                )
            finally:
                self.listening.clear()

    async def _process_when_woken(self, wakeup: Wakeup) -> None:
        while True:
            await self.drain()
            async with self._pool.connection() as conn:
                wake = await next_group_wake(conn)
            wait = self._poll_s
            if wake is not None:
                wait = min(wait, (wake - self._clock()).total_seconds())
            # Woken by the first notification (or a reconnect of the listener, after which
            # events may have been missed); any that came meanwhile cost one more round.
            await wakeup.wait(max(wait, 0.01))

    async def _round(self, conn: Conn, now: datetime) -> StageReport:
        cursor = await lock_cursor(conn, at=now)
        if cursor is None:
            return StageReport(busy=True)
        events = await events_after(
            conn, after_id=cursor.last_event_id, gap_ids=cursor.gaps, limit=self._batch
        )
        report = StageReport(events=len(events))
        subscriptions = {s.id: s for s in await list_subscriptions(conn)}
        by_group: dict[tuple[int, str], list[RoutedEvent]] = defaultdict(list)
        for event in events:
            if not router.routed(event):
                continue
            for subscription in subscriptions.values():
                if router.matches(subscription, event):
                    by_group[(subscription.id, router.group_key(subscription, event))].append(event)
                    report.routed += 1
        groups = {
            (g.subscription_id, g.key): g
            for g in await load_groups(conn, keys=sorted(by_group), due_at=now)
        }
        told = await told_alerts(
            conn,
            [
                (sub, event.alert_id)
                for (sub, key), routed in by_group.items()
                for event in routed
                if event.kind in router.ENDED
                and event.alert_id
                not in (groups[(sub, key)].members if (sub, key) in groups else ())
            ],
        )
        for (sub, key), routed in by_group.items():
            group = groups.setdefault((sub, key), NotificationGroup(None, sub, key, opened_at=now))
            for event in routed:
                router.admit(
                    group, subscriptions[sub], event, now, told_before=(sub, event.alert_id) in told
                )
        outgoing, closed, current = await self._timers(
            conn, subscriptions, list(groups.values()), now
        )
        gone = {id(g) for g in closed}
        await save_groups(conn, [g for g in groups.values() if id(g) not in gone], closed=closed)
        report.notifications = await insert_notifications(
            conn,
            [
                self._notification(out, subscriptions[out.group.subscription_id], current, now)
                for out in outgoing
            ],
        )
        await self._advance(conn, cursor.last_event_id, cursor.gaps, events, now)
        if report.notifications:
            await notify_outbox(conn)
        return report

    async def _timers(
        self,
        conn: Conn,
        subscriptions: dict[int, SubscriptionRow],
        groups: list[NotificationGroup],
        now: datetime,
    ) -> tuple[list[Outgoing], list[NotificationGroup], dict[int, AlertNow]]:
        """Each group's due messages, the groups that closed, and their alerts as they stand."""
        alert_ids = {a for g in groups for a in g.members}
        current = {a.id: a for a in await alerts_now(conn, alert_ids)}
        acks = await acks_of(conn, alert_ids)
        silences = await silences_in_force(conn, at=now)
        outgoing: list[Outgoing] = []
        closed: list[NotificationGroup] = []
        for group in groups:
            subscription = subscriptions.get(group.subscription_id)
            if subscription is None or not subscription.enabled:
                # A disabled subscription's groups go: what they held is no longer wanted.
                closed.append(group)
                continue
            members = [current[a] for a in group.members if a in current]
            muted = router.muted_alerts(silences, subscription.agency_id, members, now)
            acked = {a for a in group.members if (a, subscription.agency_id) in acks}
            sent = router.flush(group, subscription, now, muted=muted)
            reminder = router.remind(
                group, subscription, now, current=current, acked=acked, muted=muted
            )
            escalation = router.escalate(
                group, subscription, now, current=current, acked=acked, muted=muted
            )
            outgoing += [out for out in (sent, reminder, escalation) if out is not None]
            if router.is_closed(group):
                closed.append(group)
        return outgoing, closed, current

    def _notification(
        self,
        out: Outgoing,
        subscription: SubscriptionRow,
        current: dict[int, AlertNow],
        now: datetime,
    ) -> NewNotification:
        if out.escalation:
            assert subscription.escalation_channel and subscription.escalation_target
            channel, target = subscription.escalation_channel, subscription.escalation_target
            secret = subscription.escalation_secret
        else:
            channel, target, secret = subscription.channel, subscription.target, subscription.secret
        items = []
        for alert_id, event_id in out.items:
            alert = current[alert_id]
            items.append(
                NewItem(
                    alert_id,
                    event_id,
                    alert.state,
                    alert.severity,
                    alert.value,
                    alert.fired_at,
                    alert.resolved_at,
                    alert.retracted_at,
                )
            )
        return NewNotification(
            subscription_id=subscription.id,
            agency_id=subscription.agency_id,
            kind=out.kind,
            group_key=out.group.key,
            channel=channel,
            target=target,
            secret=secret,
            language=subscription.language,
            created_at=now,
            deadline_at=now + self._deadline,
            items=tuple(items),
        )

    async def _advance(
        self,
        conn: Conn,
        last_id: int,
        gaps: dict[int, datetime],
        events: list[RoutedEvent],
        now: datetime,
    ) -> None:
        fresh = sorted(e.id for e in events if e.id > last_id)
        read_gaps = [e.id for e in events if e.id in gaps]
        new_last = fresh[-1] if fresh else last_id
        new_gaps: list[int] = []
        for before, after in zip([last_id, *fresh], fresh, strict=False):
            new_gaps += range(before + 1, min(after, before + 1 + MAX_NEW_GAPS - len(new_gaps)))
        expired = any(seen_at < now - GAP_TIMEOUT for seen_at in gaps.values())
        if fresh or read_gaps or expired:
            await advance_cursor(
                conn,
                last_event_id=new_last,
                read_gaps=read_gaps,
                new_gaps=new_gaps,
                at=now,
                forget_before=now - GAP_TIMEOUT,
            )
