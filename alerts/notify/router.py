"""From alert events to notifications: who hears of an event, in which group, and when.

Pure logic over the stage's rows; the stage (stage.py) loads groups, subscriptions, silences and
alert states, calls these functions with its clock, and writes back what they changed. The
semantics are Prometheus Alertmanager's, per subscription:

- A group is keyed on the subscription and the alert labels its `group_by` names (rule and
  station by default; coarser: by rule, by area, by city, or one group for everything).
- group_wait: the first message of a new group waits this long, so alerts that come together go
  out together; an alert that ends within it is never announced. News at critical severity waits
  only group_wait_critical_s (0 by default): emergencies go out at once, also in a group that
  has spoken recently.
- group_interval: later messages of a group (updates: new alerts, escalations, resolutions) wait
  until this long after the group's previous message.
- repeat_interval: while an alert the subscriber was told of still fires and its agency has not
  acknowledged it, a reminder without new events goes out this often.
- A group whose alerts have all ended, and who were told so, closes; the next alert opens a new
  group (and waits group_wait again).
- Silences mute messages, not alerts: a muted alert's news waits in its group until the silence
  ends; news that no longer matters by then (an alert that ended unannounced) is dropped.
- Escalation: an alert still firing and unacknowledged by the subscription's agency
  `escalate_after_s` after it fired is sent, once, to the subscription's escalation target.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.notifications import NotificationKind
from schemas.rules import Severity, severity_rank
from store.alerts import AlertNow
from store.silences import SilenceRow
from store.stage import GroupMember, NotificationGroup, PendingEvent, RoutedEvent
from store.subscriptions import SubscriptionRow

ROUTED_KINDS = frozenset({"firing", "escalated", "deescalated", "resolved", "retracted"})
ENDED = frozenset({"resolved", "retracted"})
# A group holding muted news looks again at least this often (a silence may be ended early).
HELD_RECHECK = timedelta(seconds=60)
GROUP_LABELS = ("rule", "station", "area", "city", "kind")
REGION = "region"  # the label of a regional alert's place


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message a group sends now: (alert id, event id or None) items, in order."""

    group: NotificationGroup
    kind: NotificationKind
    items: tuple[tuple[int, int | None], ...]

    @property
    def escalation(self) -> bool:
        """Sent to the subscription's escalation target, not its own."""
        return self.kind == "escalation"


def routed(event: RoutedEvent) -> bool:
    """Whether an event is news for subscribers: an alert firing, changing level or ending."""
    return event.kind in ROUTED_KINDS and (event.kind in ENDED or event.state == "firing")


def matches(subscription: SubscriptionRow, event: RoutedEvent) -> bool:
    """Whether the subscription's agency and filters (all but severity) take the event's alert
    (an alerts subscription's; a bulletin subscription takes none).

    A city-wide alert has no station and no area: it matches any area filter, never a station
    filter. A regional alert has no city either: its addressees are its cities' agencies, and it
    matches any city filter.
    """
    if not subscription.enabled or subscription.agency_id not in event.addressed_to:
        return False
    if subscription.kind != "alerts":
        return False
    areas = subscription.areas
    if areas is not None and event.area is not None and event.area not in areas:
        return False
    cities = subscription.cities if event.city is not None else None
    checks = (
        (cities, event.city),
        (subscription.stations, event.station),
        (subscription.kinds, event.alert_kind),
        (subscription.rules, event.rule_id),
    )
    return all(wanted is None or value in wanted for wanted, value in checks)


def label(event: RoutedEvent, name: str) -> str:
    """An alert's value of a grouping label; city-wide and regional alerts stand in for station
    and area (and a regional alert for the city)."""
    place = f"city:{event.city}" if event.city is not None else REGION
    if name == "rule":
        return event.rule_id
    if name == "station":
        return event.station or place
    if name == "area":
        return event.area or place
    if name == "city":
        return event.city or REGION
    if name == "kind":
        return event.alert_kind
    raise ValueError(f"unknown group label {name!r}; use one of {GROUP_LABELS}")


def group_key(subscription: SubscriptionRow, event: RoutedEvent) -> str:
    """The key of the event's group within the subscription."""
    return ",".join(f"{name}={label(event, name)}" for name in subscription.group_by) or "all"


def admit(
    group: NotificationGroup,
    subscription: SubscriptionRow,
    event: RoutedEvent,
    now: datetime,
    *,
    told_before: bool = False,
) -> None:
    """Queue one event in its group for the next message and set the group's timers.

    `told_before`: the subscriber was sent a message about this alert by a group that has
    since closed (a resolved alert being retracted), so its end is news to them.
    """
    if not routed(event):
        return
    member = group.members.get(event.alert_id)
    if member is None and told_before:
        member = group.members[event.alert_id] = GroupMember(event.alert_id, told="firing")
    heard = member is not None and (member.told is not None or bool(member.pending))
    if not heard and severity_rank(_severity(event.severity)) < severity_rank(
        _severity(subscription.min_severity)
    ):
        return
    if event.kind in ENDED and (member is None or member.told is None):
        # Never announced (it ended within group_wait, or while muted): nothing to say.
        group.members.pop(event.alert_id, None)
        if group.notified_at is None and not any(m.pending for m in group.members.values()):
            group.flush_at = None
        rewake(group)
        return
    if member is None:
        member = group.members[event.alert_id] = GroupMember(event.alert_id)
    critical_news = (
        event.severity == "critical"
        and event.kind in ("firing", "escalated")
        and member.told_severity != "critical"
    )
    member.pending.append(PendingEvent(event.id, event.kind, event.state, event.severity))
    if event.kind in ENDED:
        member.escalate_at = None
    elif (
        subscription.escalate_after_s is not None
        and member.escalate_at is None
        and member.escalated_at is None
    ):
        member.escalate_at = (event.fired_at or event.at) + timedelta(
            seconds=subscription.escalate_after_s
        )
    if group.notified_at is None:
        wait = subscription.group_wait_critical_s if critical_news else subscription.group_wait_s
        due = max(now, group.opened_at + timedelta(seconds=wait))
    else:
        due = max(now, group.notified_at + timedelta(seconds=subscription.group_interval_s))
        if critical_news:
            due = min(due, now + timedelta(seconds=subscription.group_wait_critical_s))
    group.flush_at = due if group.flush_at is None else min(group.flush_at, due)
    rewake(group)


def flush(
    group: NotificationGroup,
    subscription: SubscriptionRow,
    now: datetime,
    *,
    muted: Mapping[int, datetime],
) -> Outgoing | None:
    """The group's message of its queued events, if its flush is due; muted alerts wait.

    `muted` maps the group's muted alerts to the end of the silence muting each.
    """
    if group.flush_at is None or group.flush_at > now:
        return None
    sent: list[tuple[PendingEvent, int]] = []
    held: list[int] = []
    for member in group.members.values():
        if not member.pending:
            continue
        if member.alert_id in muted:
            held.append(member.alert_id)
            continue
        sent += [(event, member.alert_id) for event in member.pending]
        last = member.pending[-1]
        member.told = last.state
        member.told_severity = last.severity
        member.pending = []
    group.flush_at = None
    if held:
        group.flush_at = min(min(muted[a] for a in held), now + HELD_RECHECK)
    if not sent:
        rewake(group)
        return None
    sent.sort(key=lambda pair: pair[0].id)
    kinds = {event.kind for event, _ in sent}
    kind: NotificationKind
    if kinds <= ENDED:
        kind = "retracted" if kinds == {"retracted"} else "resolved"
    elif group.notified_at is None:
        kind = "firing"
    else:
        kind = "update"
    group.notified_at = now
    for alert_id, member in list(group.members.items()):
        if member.told in ENDED and not member.pending:
            del group.members[alert_id]
    firing = any(m.told == "firing" for m in group.members.values())
    group.repeat_at = now + timedelta(seconds=subscription.repeat_interval_s) if firing else None
    rewake(group)
    return Outgoing(group, kind, tuple((alert_id, event.id) for event, alert_id in sent))


def remind(
    group: NotificationGroup,
    subscription: SubscriptionRow,
    now: datetime,
    *,
    current: Mapping[int, AlertNow],
    acked: Collection[int],
    muted: Mapping[int, datetime],
) -> Outgoing | None:
    """A reminder of the alerts still firing unacknowledged by the agency, if one is due.

    `acked` holds the group's alerts the subscription's agency has acknowledged: an
    acknowledgement by one city stops the reminders to that city only.
    """
    if group.repeat_at is None or group.repeat_at > now:
        return None
    for alert_id, member in list(group.members.items()):
        alert = current.get(alert_id)
        if not member.pending and (alert is None or alert.state != "firing"):
            # Its end is not routed yet (or it was told by a group keyed otherwise): the
            # resolved event will reach the subscriber through its own group.
            del group.members[alert_id]
    items = tuple(
        (alert_id, None)
        for alert_id, member in sorted(group.members.items())
        if member.told == "firing"
        and not member.pending
        and alert_id not in acked
        and alert_id not in muted
    )
    waiting = any(m.told == "firing" and a not in acked for a, m in group.members.items())
    group.repeat_at = now + timedelta(seconds=subscription.repeat_interval_s) if waiting else None
    rewake(group)
    return Outgoing(group, "repeat", items) if items else None


def escalate(
    group: NotificationGroup,
    subscription: SubscriptionRow,
    now: datetime,
    *,
    current: Mapping[int, AlertNow],
    acked: Collection[int],
    muted: Mapping[int, datetime],
) -> Outgoing | None:
    """The escalation of the group's alerts unacknowledged past escalate_after_s, once each."""
    items: list[tuple[int, int | None]] = []
    for alert_id, member in sorted(group.members.items()):
        if member.escalate_at is None or member.escalate_at > now:
            continue
        alert = current.get(alert_id)
        firing = alert is not None and alert.state == "firing"
        if not firing or alert_id in acked or subscription.escalation_target is None:
            member.escalate_at = None
        elif alert_id in muted:
            member.escalate_at = min(muted[alert_id], now + HELD_RECHECK)
        else:
            items.append((alert_id, None))
            member.escalated_at = now
            member.escalate_at = None
    rewake(group)
    return Outgoing(group, "escalation", tuple(items)) if items else None


def muted_alerts(
    silences: Iterable[SilenceRow],
    agency_id: int,
    alerts: Iterable[AlertNow],
    now: datetime,
) -> dict[int, datetime]:
    """The alerts an agency's silences mute now, each with the latest end among its silences."""
    muted: dict[int, datetime] = {}
    mine = [s for s in silences if s.agency_id == agency_id and s.in_force(now)]
    if not mine:
        return muted
    for alert in alerts:
        for silence in mine:
            if silences_alert(silence, alert):
                end = silence.ends_at if silence.expired_at is None else silence.expired_at
                muted[alert.id] = max(muted.get(alert.id, end), end)
    return muted


def silences_alert(silence: SilenceRow, alert: AlertNow) -> bool:
    """Whether every matcher the silence gives takes the alert (its current severity)."""
    checks = (
        (silence.rules, alert.rule_id),
        (silence.stations, alert.station),
        (silence.areas, alert.area),
        (silence.severities, alert.severity),
    )
    return all(wanted is None or value in wanted for wanted, value in checks)


def is_closed(group: NotificationGroup) -> bool:
    """A group with no alert left: everything it held has ended and been told (or dropped)."""
    return not group.members


def rewake(group: NotificationGroup) -> None:
    """Set the group's wake time to its earliest timer."""
    timers = [group.flush_at, group.repeat_at, *(m.escalate_at for m in group.members.values())]
    due = [t for t in timers if t is not None]
    group.wake_at = min(due) if due else None


def _severity(value: str) -> Severity:
    if value == "critical":
        return "critical"
    return "warning" if value == "warning" else "advisory"
