"""Persistence: alert rows in and out of the pure layer's `Alert`s, and writing decided tracks.

A decided track becomes an `alert` row (inserted when new, updated otherwise) and one
`alert_event` row per transition, in three round trips for a whole round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np

from alerts.engine.catalogue import ActiveRule, Catalogue
from alerts.engine.jobs import Subject, Written
from alerts.rules import Alert, Event, Track
from schemas.alerts import AlertState
from schemas.rules import RuleDefinition, Severity
from store.alerts import AlertRow, NewAlert, NewEvent, insert_alerts, insert_events, update_alerts
from store.catalogue import CatalogueSnapshot
from store.pool import Conn


def alert_of(row: AlertRow) -> Alert:
    """A stored alert as the pure layer judges it."""
    trigger = row.trigger_time if row.trigger_time is not None else row.opened_at
    return Alert(
        id=row.id,
        state=cast(AlertState, row.state),
        severity=cast(Severity, row.severity),
        value=row.value,
        opened_at=row.opened_at,
        pending_since=row.pending_since,
        trigger_time=trigger,
        trigger_period_s=row.trigger_period_s or 0,
        last_point_at=row.last_point_at if row.last_point_at is not None else trigger,
        clear_point_at=row.clear_point_at,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        retracted_at=row.retracted_at,
        details=dict(row.details),
    )


def row_of(
    rule: ActiveRule,
    subject: Subject,
    parameter_id: int | None,
    alert: Alert,
    addressed_to: list[int],
    now: datetime,
    *,
    source_alert_id: int | None = None,
) -> NewAlert:
    """The `alert` row of a decided alert."""
    _, station_id, city = subject
    return NewAlert(
        rule_id=rule.id,
        rule_version=rule.version,
        station_id=station_id,
        city=city,
        parameter_id=parameter_id,
        kind=rule.definition.kind,
        state=alert.state,
        severity=alert.severity,
        value=alert.value,
        opened_at=alert.opened_at,
        pending_since=alert.pending_since,
        fired_at=alert.fired_at,
        resolved_at=alert.resolved_at,
        retracted_at=alert.retracted_at,
        last_evaluated_at=now,
        trigger_time=alert.trigger_time,
        trigger_period_s=alert.trigger_period_s,
        last_point_at=alert.last_point_at,
        clear_point_at=alert.clear_point_at,
        details=_jsonable(alert.details),
        addressed_to=list(addressed_to),
        source_alert_id=source_alert_id,
    )


def written(
    catalogue: Catalogue,
    rule: ActiveRule,
    subject: Subject,
    tracks: Sequence[Track],
    now: datetime,
) -> list[tuple[Written, NewAlert]]:
    """A rule's decided tracks at a subject, addressed to its agencies, with their rows."""
    definition = rule.definition
    parameter_id = (
        catalogue.snapshot.parameter_id(definition.parameter) if definition.parameter else None
    )
    agencies = addressees(catalogue.snapshot, definition)
    return [
        (
            Written(track, rule, subject, parameter_id),
            row_of(rule, subject, parameter_id, track.alert, agencies, now),
        )
        for track in tracks
    ]


def addressees(catalogue: CatalogueSnapshot, rule: RuleDefinition) -> list[int]:
    """The agencies a rule's alerts are for: every agency, but a regional episode's are for its
    cities' agencies and the joint office (the agency of no city)."""
    if rule.episode is None:
        return catalogue.agency_ids
    cities = set(rule.episode.cities)
    return [a.id for a in catalogue.agencies.values() if a.city is None or a.city in cities]


async def store(conn: Conn, items: Sequence[tuple[Written, NewAlert]], now: datetime) -> int:
    """Write tracks in three round trips (updates, new alerts, events); returns the events.

    Updates go first: a round may close a subject's open alert and open its next one, and the
    one-open-alert-per-subject index holds at every statement.
    """
    await update_alerts(conn, [(_id(w.track.alert), row) for w, row in items if not w.track.is_new])
    new = [(w.track, row) for w, row in items if w.track.is_new]
    for (track, _), alert_id in zip(
        new, await insert_alerts(conn, [r for _, r in new]), strict=True
    ):
        track.alert.id = alert_id
    events = [(_id(w.track.alert), _event_row(e)) for w, _ in items for e in w.track.events]
    await insert_events(conn, events, at=now)
    return len(events)


def _id(alert: Alert) -> int:
    assert alert.id is not None
    return alert.id


def _event_row(event: Event) -> NewEvent:
    return NewEvent(event.kind, event.state, event.severity, event.value, _jsonable(event.details))


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, np.floating | np.integer):
            return clean(value.item())
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return {str(k): clean(v) for k, v in details.items()}
