"""Routing alert events into groups and messages, with a controllable clock (no database).

Alertmanager's semantics per subscription: group_wait before a new group's first message (0 s
for critical news), group_interval between messages, repeat_interval reminders while firing and
unacknowledged, resolved and retracted messages, silences that mute messages, escalation. Also
the dispatcher's pure parts: backoff with jitter, the status after an attempt.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.notify import router
from alerts.notify.channels.base import DeliveryResult
from alerts.notify.dispatcher import next_step
from core.retry import Backoff
from store.alerts import AlertNow
from store.silences import SilenceRow
from store.stage import NotificationGroup, RoutedEvent
from store.subscriptions import SubscriptionRow

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)
GZ, DG, OFFICE = 1, 2, 3


def subscription(**changes: Any) -> SubscriptionRow:
    base = SubscriptionRow(
        id=7,
        code="gz-duty",
        agency_id=GZ,
        agency="gz_eeb",
        enabled=True,
        channel="webhook",
        target="http://127.0.0.1/hook",
        secret=None,
        language="zh",
        areas=None,
        cities=None,
        stations=None,
        kinds=None,
        rules=None,
        min_severity="advisory",
        group_by=["rule", "station"],
        group_wait_s=30,
        group_wait_critical_s=0,
        group_interval_s=300,
        repeat_interval_s=3600,
        escalate_after_s=None,
        escalation_channel=None,
        escalation_target=None,
        escalation_secret=None,
        changed_via="api",
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)


class Events:
    """Alert events with increasing ids, as the engine writes them."""

    def __init__(self) -> None:
        self.next_id = 1

    def __call__(
        self,
        alert_id: int,
        kind: str,
        *,
        severity: str = "warning",
        at: datetime = T0,
        state: str | None = None,
        station: str | None = "gz-a-huangpu",
        area: str | None = "dongjiang",
        city: str | None = "guangzhou",
        rule: str = "no2_instant",
        alert_kind: str = "threshold",
        addressed_to: tuple[int, ...] = (GZ, DG, OFFICE),
        fired_at: datetime | None = T0,
    ) -> RoutedEvent:
        if state is None:
            state = kind if kind in ("resolved", "retracted", "pending") else "firing"
        event = RoutedEvent(
            id=self.next_id,
            alert_id=alert_id,
            at=at,
            kind=kind,
            state=state,
            severity=severity,
            value=250.0,
            rule_id=rule,
            alert_kind=alert_kind,
            station=station,
            city=city,
            area=area,
            addressed_to=list(addressed_to),
            fired_at=fired_at,
        )
        self.next_id += 1
        return event


def alert_now(alert_id: int, state: str = "firing", severity: str = "warning") -> AlertNow:
    return AlertNow(
        alert_id,
        "no2_instant",
        "threshold",
        state,
        severity,
        250.0,
        "gz-a-huangpu",
        "guangzhou",
        "dongjiang",
        T0,
        None,
        None,
    )


def group(opened_at: datetime = T0, key: str = "rule=no2_instant,station=gz-a-huangpu") -> Any:
    return NotificationGroup(None, 7, key, opened_at)


def items(out: router.Outgoing | None) -> list[tuple[int, int | None]]:
    assert out is not None
    return list(out.items)


@pytest.fixture
def event() -> Events:
    return Events()


def test_a_subscription_hears_alerts_addressed_to_its_agency_that_pass_its_filters(
    event: Events,
) -> None:
    sub = subscription()
    assert router.matches(sub, event(1, "firing"))
    assert not router.matches(sub, event(1, "firing", addressed_to=(DG,)))
    assert not router.matches(replace(sub, enabled=False), event(1, "firing"))
    assert not router.matches(replace(sub, areas=["shiziyang"]), event(1, "firing"))
    assert router.matches(replace(sub, areas=["dongjiang"]), event(1, "firing"))
    assert not router.matches(replace(sub, cities=["dongguan"]), event(1, "firing"))
    assert not router.matches(replace(sub, stations=["dg-a-humen"]), event(1, "firing"))
    assert not router.matches(replace(sub, kinds=["aqi"]), event(1, "firing"))
    assert not router.matches(replace(sub, rules=["o3_8h"]), event(1, "firing"))
    # A bulletin subscription hears no alert.
    assert not router.matches(replace(sub, kind="bulletin"), event(1, "firing"))
    city_wide = event(2, "firing", station=None, area=None, alert_kind="aqi")
    assert router.matches(replace(sub, areas=["shiziyang"]), city_wide)
    assert not router.matches(replace(sub, stations=["gz-a-huangpu"]), city_wide)
    # A regional episode concerns both cities: any city filter takes it, if addressed to the
    # subscription's agency.
    regional = event(3, "firing", station=None, area=None, city=None, alert_kind="regional_episode")
    assert router.matches(replace(sub, cities=["guangzhou"]), regional)
    assert router.matches(replace(sub, areas=["shiziyang"]), regional)
    assert not router.matches(replace(sub, stations=["gz-a-huangpu"]), regional)
    assert not router.matches(sub, event(4, "firing", city=None, addressed_to=(DG, OFFICE)))


def test_group_keys_follow_group_by(event: Events) -> None:
    firing = event(1, "firing")
    city_wide = event(2, "firing", station=None, area=None, rule="aqi_city")
    assert router.group_key(subscription(), firing) == "rule=no2_instant,station=gz-a-huangpu"
    assert router.group_key(subscription(group_by=["area"]), firing) == "area=dongjiang"
    assert router.group_key(subscription(group_by=["rule"]), firing) == "rule=no2_instant"
    assert router.group_key(subscription(group_by=[]), firing) == "all"
    assert router.group_key(subscription(), city_wide) == "rule=aqi_city,station=city:guangzhou"
    regional = event(3, "firing", station=None, area=None, city=None, rule="regional_episode")
    by_place = subscription(group_by=["rule", "station", "area", "city"])
    assert router.group_key(by_place, regional) == (
        "rule=regional_episode,station=region,area=region,city=region"
    )


def test_pending_acknowledged_and_cancelled_events_are_not_news(event: Events) -> None:
    sub, g = subscription(), group()
    for kind in ("pending", "acknowledged", "cancelled"):
        router.admit(g, sub, event(1, kind, state="pending"), T0)
    router.admit(g, sub, event(1, "escalated", state="pending"), T0)
    assert g.members == {}
    assert g.flush_at is None


def test_group_wait_holds_the_first_message_and_gathers_what_comes_meanwhile(
    event: Events,
) -> None:
    sub, g = subscription(group_by=["rule"]), group(key="rule=no2_instant")
    router.admit(g, sub, event(1, "firing"), T0)
    assert (g.flush_at, g.wake_at) == (T0 + 30 * S, T0 + 30 * S)
    router.admit(g, sub, event(2, "firing", station="gz-a-zengcheng"), T0 + 10 * S)
    assert router.flush(g, sub, T0 + 29 * S, muted={}) is None
    out = router.flush(g, sub, T0 + 30 * S, muted={})
    assert out is not None and out.kind == "firing"
    assert items(out) == [(1, 1), (2, 2)]
    assert (g.notified_at, g.flush_at, g.repeat_at) == (T0 + 30 * S, None, T0 + 3630 * S)
    assert {a: (m.told, m.pending) for a, m in g.members.items()} == {
        1: ("firing", []),
        2: ("firing", []),
    }


def test_critical_news_goes_out_at_once(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing", severity="critical"), T0)
    assert g.flush_at == T0
    assert items(router.flush(g, sub, T0, muted={})) == [(1, 1)]


def test_an_alert_that_resolves_within_group_wait_sends_nothing(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing"), T0)
    router.admit(g, sub, event(1, "resolved"), T0 + 20 * S)
    assert (g.members, g.flush_at, g.wake_at) == ({}, None, None)
    assert router.flush(g, sub, T0 + 30 * S, muted={}) is None
    assert router.is_closed(g)


def test_updates_wait_for_group_interval_but_critical_news_does_not(event: Events) -> None:
    sub, g = subscription(group_by=["rule"]), group(key="rule=no2_instant")
    router.admit(g, sub, event(1, "firing"), T0)
    router.flush(g, sub, T0 + 30 * S, muted={})
    router.admit(g, sub, event(2, "firing", station="gz-a-zengcheng"), T0 + 60 * S)
    assert g.flush_at == T0 + 330 * S  # group_interval after the previous message
    router.admit(g, sub, event(1, "escalated", severity="critical"), T0 + 90 * S)
    assert g.flush_at == T0 + 90 * S
    out = router.flush(g, sub, T0 + 90 * S, muted={})
    assert out is not None and out.kind == "update"
    assert items(out) == [(2, 2), (1, 3)]
    assert g.members[1].told_severity == "critical"
    # Already told critical: a further change waits for group_interval again.
    router.admit(g, sub, event(1, "deescalated"), T0 + 100 * S)
    assert g.flush_at == T0 + 390 * S


def test_a_resolved_message_when_it_clears_then_the_group_closes(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing"), T0)
    router.flush(g, sub, T0 + 30 * S, muted={})
    router.admit(g, sub, event(1, "resolved"), T0 + 100 * S)
    assert g.flush_at == T0 + 330 * S
    out = router.flush(g, sub, T0 + 330 * S, muted={})
    assert out is not None and (out.kind, items(out)) == ("resolved", [(1, 2)])
    assert router.is_closed(g)
    assert (g.repeat_at, g.wake_at) == (None, None)


def test_a_retraction_message_when_it_is_retracted(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing", severity="critical"), T0)
    router.flush(g, sub, T0, muted={})
    router.admit(g, sub, event(1, "retracted"), T0 + 400 * S)
    assert g.flush_at == T0 + 400 * S  # group_interval has passed
    out = router.flush(g, sub, T0 + 400 * S, muted={})
    assert out is not None and (out.kind, items(out)) == ("retracted", [(1, 2)])
    assert router.is_closed(g)


def test_a_retraction_after_the_group_closed_reaches_who_was_told(event: Events) -> None:
    sub = subscription()
    later = group(opened_at=T0 + 3600 * S)
    router.admit(later, sub, event(1, "retracted"), T0 + 3600 * S, told_before=True)
    assert later.flush_at == T0 + 3630 * S
    out = router.flush(later, sub, T0 + 3630 * S, muted={})
    assert out is not None and (out.kind, items(out)) == ("retracted", [(1, 1)])
    stranger = group(opened_at=T0 + 3600 * S)
    router.admit(stranger, sub, event(2, "retracted"), T0 + 3600 * S, told_before=False)
    assert router.is_closed(stranger)


def test_repeats_while_firing_until_the_agency_acknowledges(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing"), T0)
    router.flush(g, sub, T0 + 30 * S, muted={})
    current = {1: alert_now(1)}
    assert router.remind(g, sub, T0 + 3629 * S, current=current, acked=set(), muted={}) is None
    out = router.remind(g, sub, T0 + 3630 * S, current=current, acked=set(), muted={})
    assert out is not None and (out.kind, items(out)) == ("repeat", [(1, None)])
    assert g.repeat_at == T0 + 7230 * S
    assert router.remind(g, sub, T0 + 7230 * S, current=current, acked={1}, muted={}) is None
    assert (g.repeat_at, g.wake_at) == (None, None)


def test_news_below_the_minimum_severity_is_not_heard_until_it_rises(event: Events) -> None:
    sub, g = subscription(min_severity="critical"), group()
    router.admit(g, sub, event(1, "firing"), T0)
    assert g.members == {}
    router.admit(g, sub, event(1, "escalated", severity="critical"), T0 + 10 * S)
    out = router.flush(g, sub, T0 + 10 * S, muted={})
    assert out is not None and (out.kind, items(out)) == ("firing", [(1, 2)])
    # Once told, its way down and its end are news to the subscriber.
    router.admit(g, sub, event(1, "deescalated"), T0 + 20 * S)
    router.admit(g, sub, event(1, "resolved"), T0 + 30 * S)
    out = router.flush(g, sub, T0 + 310 * S, muted={})
    assert out is not None and (out.kind, items(out)) == ("update", [(1, 3), (1, 4)])
    assert router.is_closed(g)


def silence(**changes: Any) -> SilenceRow:
    base = SilenceRow(
        id=1,
        agency_id=GZ,
        agency="gz_eeb",
        rules=None,
        stations=["gz-a-huangpu"],
        areas=None,
        severities=None,
        starts_at=T0,
        ends_at=T0 + 600 * S,
        created_by="gz_eeb:key1",
        comment="calibration",
        created_at=T0,
        expired_at=None,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "muted"),
    [
        ({}, True),
        ({"agency_id": DG}, False),
        ({"stations": ["gz-a-zengcheng"]}, False),
        ({"stations": None, "rules": ["no2_instant"], "severities": ["warning"]}, True),
        ({"stations": None, "rules": ["no2_instant"], "severities": ["critical"]}, False),
        ({"stations": None, "areas": ["shiziyang"]}, False),
        ({"starts_at": T0 + 60 * S}, False),
        ({"expired_at": T0}, False),
    ],
)
def test_silence_matchers(changes: dict[str, Any], muted: bool) -> None:
    found = router.muted_alerts([silence(**changes)], GZ, [alert_now(1)], T0 + 30 * S)
    assert found == ({1: T0 + 600 * S} if muted else {})


def test_a_silence_mutes_messages_until_it_ends_not_the_alert(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing", severity="critical"), T0)
    muted = {1: T0 + 90 * S}
    assert router.flush(g, sub, T0, muted=muted) is None
    assert g.flush_at == T0 + 60 * S  # looks again within a minute (a silence may end early)
    assert router.flush(g, sub, T0 + 60 * S, muted=muted) is None
    assert g.flush_at == T0 + 90 * S
    out = router.flush(g, sub, T0 + 90 * S, muted={})
    assert out is not None and (out.kind, items(out)) == ("firing", [(1, 1)])
    current = {1: alert_now(1)}
    g.repeat_at = T0 + 100 * S
    assert router.remind(g, sub, T0 + 100 * S, current=current, acked=set(), muted={1: T0}) is None


def test_an_alert_that_ends_while_muted_and_unannounced_is_never_sent(event: Events) -> None:
    sub, g = subscription(), group()
    router.admit(g, sub, event(1, "firing", severity="critical"), T0)
    router.flush(g, sub, T0, muted={1: T0 + 600 * S})
    router.admit(g, sub, event(1, "resolved"), T0 + 100 * S)
    assert router.is_closed(g)


def test_an_unacknowledged_alert_escalates_once(event: Events) -> None:
    sub = subscription(
        escalate_after_s=900,
        escalation_channel="wecom",
        escalation_target="http://127.0.0.1/leaders",
    )
    g = group()
    router.admit(g, sub, event(1, "firing", fired_at=T0 - 100 * S), T0)
    assert g.members[1].escalate_at == T0 + 800 * S
    router.flush(g, sub, T0 + 30 * S, muted={})
    assert g.wake_at == T0 + 800 * S
    current = {1: alert_now(1)}
    assert router.escalate(g, sub, T0 + 799 * S, current=current, acked=set(), muted={}) is None
    out = router.escalate(g, sub, T0 + 800 * S, current=current, acked=set(), muted={})
    assert out is not None and out.escalation and items(out) == [(1, None)]
    assert router.escalate(g, sub, T0 + 2000 * S, current=current, acked=set(), muted={}) is None
    assert g.members[1].escalated_at == T0 + 800 * S


def test_an_acknowledged_or_ended_alert_does_not_escalate(event: Events) -> None:
    sub = subscription(
        escalate_after_s=60, escalation_channel="wecom", escalation_target="http://x/leaders"
    )
    acked, ended = group(), group()
    for g in (acked, ended):
        router.admit(g, sub, event(1, "firing"), T0)
    assert (
        router.escalate(acked, sub, T0 + 60 * S, current={1: alert_now(1)}, acked={1}, muted={})
        is None
    )
    gone = {1: alert_now(1, state="resolved")}
    assert router.escalate(ended, sub, T0 + 60 * S, current=gone, acked=set(), muted={}) is None
    assert acked.members[1].escalate_at is None and ended.members[1].escalate_at is None


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    backoff = Backoff(base_s=5, max_s=60)
    assert [backoff.delay_s(n, 0.0) for n in (1, 2, 3, 4, 5, 6)] == [2.5, 5, 10, 20, 30, 30]
    assert [backoff.delay_s(n, 0.999999) for n in (1, 4)] == pytest.approx([5, 40], abs=1e-3)


def test_the_status_after_an_attempt() -> None:
    backoff = Backoff(base_s=10, max_s=600)
    deadline = T0 + 3600 * S
    kwargs: dict[str, Any] = {"deadline_at": deadline, "backoff": backoff, "jitter": 0.5}
    assert next_step(DeliveryResult("sent", 200), attempt=1, now=T0, **kwargs) == (
        "sent",
        None,
        None,
    )
    assert next_step(DeliveryResult("failed", 404, "HTTP 404"), attempt=1, now=T0, **kwargs) == (
        "failed",
        None,
        "HTTP 404",
    )
    retry = DeliveryResult("retry", 503, "HTTP 503")
    assert next_step(retry, attempt=3, now=T0, **kwargs) == ("pending", T0 + 30 * S, "HTTP 503")
    hinted = DeliveryResult("retry", 429, "HTTP 429", retry_after_s=120)
    assert next_step(hinted, attempt=1, now=T0, **kwargs)[1] == T0 + 120 * S
    # The last attempt is made at the deadline; failing there dead-letters.
    assert next_step(retry, attempt=9, now=deadline - 10 * S, **kwargs)[1] == deadline
    status, due, error = next_step(retry, attempt=10, now=deadline, **kwargs)
    assert (status, due) == ("failed", None)
    assert error == "dead-lettered at its deadline after 10 attempts; last: HTTP 503"
