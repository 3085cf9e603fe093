"""Pure rule evaluation: given a rule's statistic points and the alert state, decide transitions.

One alert per episode of a rule at a subject (station or city). Its life:

    (none) ─breach─► pending ─for_s held─► firing ─cleared─► resolved
                        │                   │  ▲
                        └─cleared─► resolved (event 'cancelled')
                                            escalated / deescalated (same alert)
    pending/firing/resolved ─the data that fired it is no longer valid─► retracted

Times: a point's `time` is its data time (sample instant or window start) and `span_s` the data
it covers (0 for an instant, 3600 for an hour, 86400 for a day). `pending_since` is a data time
too, so a `for` duration means "the condition held over that much data", whether the data came
live or in a backfill; the sweep promotes a pending alert once the wall clock has passed
pending_since + for_s with no clearing point in between. Wall-clock instants (`now`) only stamp
when EnvLink decided.

Nothing here touches the database: the engine loads the state and the points, calls `replay`
(and `promote_due`, `reassess_trigger`), and writes back what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from schemas.alerts import AlertEventKind, AlertState
from schemas.rules import Direction, Level, Severity, severity_rank

OPEN_STATES: frozenset[str] = frozenset({"pending", "firing"})


@dataclass(frozen=True, slots=True)
class Point:
    """One value of a rule's statistic; None is insufficient data (neither fires nor clears)."""

    time: datetime
    value: float | None
    levels: tuple[Level, ...]
    span_s: int = 0
    period_s: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Alert:
    """An alert as the pure layer sees it; id None until the engine has stored it."""

    id: int | None
    state: AlertState
    severity: Severity
    value: float | None
    opened_at: datetime
    pending_since: datetime | None
    trigger_time: datetime
    trigger_period_s: int
    last_point_at: datetime
    clear_point_at: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    retracted_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True, slots=True)
class Event:
    """One transition of an alert, as it goes into alert_event."""

    kind: AlertEventKind
    state: AlertState
    severity: Severity
    value: float | None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Track:
    """An alert and the transitions this evaluation made; `is_new` when it opened just now."""

    alert: Alert
    events: list[Event]
    is_new: bool
    changed: bool = True


def _beyond(value: float, threshold: float, direction: Direction) -> bool:
    return value > threshold if direction == "above" else value < threshold


def _cleared(value: float, threshold: float, direction: Direction) -> bool:
    return value <= threshold if direction == "above" else value >= threshold


def breaches(value: float | None, levels: Sequence[Level], direction: Direction) -> bool:
    """Whether a value is past the lowest level's trigger (would open an alert)."""
    return value is not None and any(_beyond(value, lv.trigger, direction) for lv in levels)


def severity_for(
    value: float, levels: Sequence[Level], direction: Direction, current: Severity | None
) -> Severity | None:
    """The severity a value calls for, given the severity the alert has now (None: no alert).

    A level is entered past its trigger; a level the alert already holds (or one below it) is
    kept until the value comes back to that level's clear threshold. None means no alert.
    """
    entered = [lv.severity for lv in levels if _beyond(value, lv.trigger, direction)]
    held: list[Severity] = []
    if current is not None:
        held = [
            lv.severity
            for lv in levels
            if severity_rank(lv.severity) <= severity_rank(current)
            and not _cleared(value, lv.clear, direction)
        ]
    candidates: list[Severity] = entered + held
    if not candidates:
        return None
    return max(candidates, key=severity_rank)


def replay(
    open_alert: Alert | None,
    points: Iterable[Point],
    *,
    direction: Direction,
    for_s: int,
    now: datetime,
    covered: Sequence[tuple[datetime, datetime]] = (),
) -> list[Track]:
    """Apply points in time order to the open alert (or to none) and return what changed.

    A point older than the open alert's last point is history the alert already judged: late
    data inside an episode neither splits nor ends it. With no open alert, points inside the
    span [trigger, clear) of a recently closed alert (`covered`) belong to that episode and open
    nothing; anything else that breaches opens a NEW alert, so late data or a revision that
    turns a resolved alert back never reopens it.
    """
    tracks: list[Track] = []
    current = Track(open_alert, [], is_new=False, changed=False) if open_alert else None
    if current is not None:
        tracks.append(current)
    for point in sorted(points, key=lambda p: (p.time, p.period_s)):
        if point.value is None or not point.levels:
            continue
        if current is None:
            if any(start <= point.time < end for start, end in covered):
                continue
            severity = severity_for(point.value, point.levels, direction, None)
            if severity is None:
                continue
            current = Track(_open(point, severity, now), [], is_new=True)
            tracks.append(current)
            if for_s <= 0 or point.span_s >= for_s:
                _fire(current, point, now)
            else:
                current.events.append(_event(current.alert, "pending", point))
            continue
        alert = current.alert
        if point.time < alert.last_point_at:
            continue
        severity = severity_for(point.value, point.levels, direction, alert.severity)
        current.changed = True
        alert.last_point_at = point.time
        alert.value = point.value
        if severity is None:
            _close(current, point, now)
            current = None
            continue
        alert.details["peak"] = _peak(alert.details.get("peak"), point.value, direction)
        if alert.state == "pending":
            # A pending alert follows the data silently; the firing event carries the severity.
            alert.severity = severity
            held = point.time + timedelta(seconds=point.span_s) - _since(alert)
            if held >= timedelta(seconds=for_s):
                _fire(current, point, now)
        elif (kind := level_change(alert.severity, severity)) is not None:
            alert.severity = severity
            current.events.append(_event(alert, kind, point))
    return [track for track in tracks if track.changed or track.events]


def promote_due(alert: Alert, *, for_s: int, now: datetime) -> Track | None:
    """A pending alert whose condition has held for for_s by the wall clock becomes firing."""
    if alert.state != "pending":
        return None
    if now - _since(alert) < timedelta(seconds=for_s):
        return None
    track = Track(replace(alert, details=dict(alert.details)), [], is_new=False)
    track.alert.state = "firing"
    track.alert.fired_at = now
    track.events.append(
        Event("firing", "firing", track.alert.severity, track.alert.value, {"by": "sweep"})
    )
    return track


def reassess_trigger(
    alert: Alert, points: Sequence[Point], *, direction: Direction, now: datetime
) -> Track | None:
    """Re-judge the data behind an alert after a revision inside its span.

    If the point that fired it no longer breaches, a later point of the span that still breaches
    takes over as the trigger (a sustained change stays alerted). If none does and the trigger
    point is gone — its data re-flagged suspect, or inside a maintenance window — the alert was
    raised by data that was wrong, and is retracted.
    """
    if alert.state == "retracted":
        return None
    end = alert.clear_point_at if alert.clear_point_at is not None else alert.last_point_at
    span = sorted(
        (
            p
            for p in points
            if alert.trigger_time <= p.time <= end and p.time != alert.clear_point_at
        ),
        key=lambda p: (p.time, p.period_s),
    )
    qualifying = [p for p in span if breaches(p.value, p.levels, direction)]
    if qualifying and qualifying[0].time == alert.trigger_time:
        return None
    # A trigger point that is still there with a lower value (a corrected reading, a window that
    # filled up) is the data moving on, which replay judges; only data that is gone retracts.
    trigger_present = any(p.time == alert.trigger_time and p.value is not None for p in span)
    if trigger_present and not qualifying:
        return None
    track = Track(replace(alert, details=dict(alert.details)), [], is_new=False)
    moved = track.alert
    if qualifying:
        moved.details["trigger_moved_from"] = alert.trigger_time.isoformat()
        moved.trigger_time = qualifying[0].time
        moved.trigger_period_s = qualifying[0].period_s
        if moved.pending_since is not None and moved.pending_since < qualifying[0].time:
            moved.pending_since = qualifying[0].time
        return track
    moved.state = "retracted"
    moved.retracted_at = now
    track.events.append(
        Event(
            "retracted",
            "retracted",
            moved.severity,
            moved.value,
            {
                "reason": "the data that raised it is no longer valid",
                "trigger_time": alert.trigger_time.isoformat(),
            },
        )
    )
    return track


def _since(alert: Alert) -> datetime:
    return alert.pending_since if alert.pending_since is not None else alert.trigger_time


def _open(point: Point, severity: Severity, now: datetime) -> Alert:
    assert point.value is not None
    return Alert(
        id=None,
        state="pending",
        severity=severity,
        value=point.value,
        opened_at=now,
        pending_since=point.time,
        trigger_time=point.time,
        trigger_period_s=point.period_s,
        last_point_at=point.time,
        details={**point.details, "peak": point.value},
    )


def _fire(track: Track, point: Point, now: datetime) -> None:
    track.alert.state = "firing"
    track.alert.fired_at = now
    track.events.append(_event(track.alert, "firing", point))


def _close(track: Track, point: Point, now: datetime) -> None:
    alert = track.alert
    kind: AlertEventKind = "cancelled" if alert.state == "pending" else "resolved"
    alert.state = "resolved"
    alert.resolved_at = now
    alert.clear_point_at = point.time
    track.events.append(_event(alert, kind, point))


def level_change(old: Severity, new: Severity) -> AlertEventKind | None:
    """The event of an open alert going from severity `old` to `new`; None if the same."""
    if severity_rank(new) == severity_rank(old):
        return None
    return "escalated" if severity_rank(new) > severity_rank(old) else "deescalated"


def _event(alert: Alert, kind: AlertEventKind, point: Point) -> Event:
    details: dict[str, Any] = {"point_time": point.time.isoformat()}
    details.update(point.details)
    return Event(kind, alert.state, alert.severity, point.value, details)


def _peak(previous: Any, value: float, direction: Direction) -> float:
    if not isinstance(previous, int | float):
        return value
    return max(previous, value) if direction == "above" else min(previous, value)
