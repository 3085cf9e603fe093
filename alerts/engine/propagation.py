"""Propagation: raise, move and end the pre-alerts downstream of the tracks a round wrote.

The decisions are the propagation kind's (kinds/propagation.py); this step locks the
downstream subjects, reads their open pre-alerts and writes what changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from alerts.engine.catalogue import ActiveRule, Catalogue
from alerts.engine.jobs import Subject, Written, lock_key
from alerts.engine.kinds import PROPAGATION, PreAlert
from alerts.engine.persist import alert_of, row_of, store
from alerts.rules import Track
from schemas.alerts import AlertState
from schemas.rules import Severity
from store.alerts import NewAlert, lock_subjects, open_alerts, subject_alerts
from store.pool import Conn


async def propagate(
    conn: Conn, catalogue: Catalogue, written: Sequence[Written], now: datetime
) -> int:
    """Pre-alert the stations downstream of water breaches; end them with their source."""
    rules = [r for r in catalogue.rules.values() if r.definition.kind == PROPAGATION.kind]
    if not rules or not written:
        return 0
    events = 0
    for rule in rules:
        wanted, ended = PROPAGATION.follows(rule.definition, written)
        if ended:
            events += await _end(conn, catalogue, rule, ended, now)
        if wanted:
            events += await _raise(conn, catalogue, rule, wanted, now)
    return events


async def _raise(
    conn: Conn,
    catalogue: Catalogue,
    rule: ActiveRule,
    wanted: Sequence[tuple[Written, Severity]],
    now: datetime,
) -> int:
    plans = PROPAGATION.arrivals(rule.definition, catalogue.snapshot, wanted)
    if not plans:
        return 0
    subjects: list[Subject] = [(rule.id, arrival.station.id, None) for _, _, arrival in plans]
    await lock_subjects(conn, [lock_key(s) for s in subjects])
    known: dict[Subject, PreAlert] = {
        (row.rule_id, row.station_id, row.city): PreAlert(
            Track(alert_of(row), [], is_new=False, changed=False),
            list(row.addressed_to),
            row.parameter_id,
            row.source_alert_id or 0,
        )
        for row in await subject_alerts(conn, subjects, since=now)
        if row.state in ("pending", "firing")
    }
    pre_alerts = PROPAGATION.raise_pre_alerts(
        rule.definition, catalogue.snapshot, plans, known, now
    )
    rows = [
        (
            Written(pre.track, rule, subject, pre.parameter_id),
            row_of(
                rule,
                subject,
                pre.parameter_id,
                pre.track.alert,
                pre.addressed_to,
                now,
                source_alert_id=pre.source_alert_id,
            ),
        )
        for subject, pre in pre_alerts.items()
        if pre.track.events
    ]
    return await store(conn, rows, now)


async def _end(
    conn: Conn,
    catalogue: Catalogue,
    rule: ActiveRule,
    ended: Mapping[int, AlertState],
    now: datetime,
) -> int:
    """End the pre-alerts of the ended sources, or hand each to a source still firing."""
    found = [
        r for r in await open_alerts(conn, source_alert_ids=list(ended)) if r.rule_id == rule.id
    ]
    if not found:
        return 0
    await lock_subjects(conn, [lock_key((r.rule_id, r.station_id, r.city)) for r in found])
    sources = await _firing_sources(conn, catalogue, rule, ended)
    successors = PROPAGATION.successors(rule.definition, catalogue.snapshot, sources)
    rows: list[tuple[Written, NewAlert]] = []
    for row in found:
        assert row.source_alert_id is not None and row.station_id is not None
        handed = PROPAGATION.hand_over(
            rule.definition, catalogue.snapshot, alert_of(row), row.station_id, successors
        )
        if handed is None:
            source_alert_id = row.source_alert_id
            track = PROPAGATION.end_pre_alert(
                alert_of(row), ended[source_alert_id], source_alert_id, now
            )
        else:
            track, source_alert_id = handed
        subject = (row.rule_id, row.station_id, row.city)
        new_row = row_of(
            rule,
            subject,
            row.parameter_id,
            track.alert,
            list(row.addressed_to),
            now,
            source_alert_id=source_alert_id,
        )
        rows.append((Written(track, rule, subject, row.parameter_id), new_row))
    return await store(conn, rows, now)


async def _firing_sources(
    conn: Conn, catalogue: Catalogue, rule: ActiveRule, ended: Mapping[int, AlertState]
) -> list[Written]:
    """The alerts of the rule's source rules still firing at a station (not those ending)."""
    assert rule.definition.propagation is not None
    rows = await open_alerts(
        conn, states=("firing",), rule_ids=rule.definition.propagation.from_rules
    )
    return [
        Written(
            Track(alert_of(row), [], is_new=False, changed=False),
            catalogue.rules[row.rule_id],
            (row.rule_id, row.station_id, row.city),
            row.parameter_id,
        )
        for row in rows
        if row.id not in ended and row.station_id is not None and row.rule_id in catalogue.rules
    ]
