"""Timers and staleness: what the wall clock decides, with no new data to wake it.

A pending alert whose `for` duration has passed fires (not while its station is in
maintenance); a station's silence is judged against the staleness rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from alerts.engine.catalogue import Catalogue
from alerts.engine.jobs import Subject, Written, lock_key
from alerts.engine.kinds import STALENESS
from alerts.engine.persist import alert_of, row_of, store, written
from alerts.engine.propagation import propagate
from alerts.rules import promote_due, replay
from store.alerts import (
    NewAlert,
    lock_subjects,
    maintenance_windows,
    open_alerts,
    series_silence,
    subject_alerts,
)
from store.pool import Conn


async def in_maintenance(conn: Conn, now: datetime, station_ids: Sequence[int] | None) -> set[int]:
    """The stations (of these, or all) in a maintenance window now."""
    return {
        w.station_id
        for w in await maintenance_windows(conn, station_ids=station_ids, ending_after=now)
        if w.starts_at <= now
    }


async def promote_pending(conn: Conn, catalogue: Catalogue, now: datetime) -> int:
    """Pending alerts whose `for` duration has passed become firing (not during maintenance)."""
    due = []
    for row in await open_alerts(conn, states=["pending"]):
        rule = catalogue.rules.get(row.rule_id)
        if rule is None or row.pending_since is None:
            continue
        if now - row.pending_since >= timedelta(seconds=rule.definition.for_s):
            due.append(row)
    if not due:
        return 0
    busy = await in_maintenance(conn, now, sorted({r.station_id for r in due if r.station_id}))
    subjects: list[Subject] = [
        (r.rule_id, r.station_id, r.city) for r in due if r.station_id not in busy
    ]
    if not subjects:
        return 0
    await lock_subjects(conn, [lock_key(s) for s in subjects])
    promoted: list[tuple[Written, NewAlert]] = []
    for row in await subject_alerts(conn, subjects, since=now):
        rule = catalogue.rules.get(row.rule_id)
        if rule is None or row.state != "pending":
            continue
        track = promote_due(alert_of(row), for_s=rule.definition.for_s, now=now)
        if track is None:
            continue
        subject = (row.rule_id, row.station_id, row.city)
        new_row = row_of(rule, subject, row.parameter_id, track.alert, list(row.addressed_to), now)
        promoted.append((Written(track, rule, subject, row.parameter_id), new_row))
    events = await store(conn, promoted, now)
    return events + await propagate(conn, catalogue, [w for w, _ in promoted], now)


async def staleness(
    conn: Conn, catalogue: Catalogue, now: datetime, *, station_ids: Sequence[int] | None
) -> int:
    """Judge the silence of these stations (or all) against every staleness rule."""
    rules = [r for r in catalogue.rules.values() if r.definition.kind == STALENESS.kind]
    if not rules:
        return 0
    busy = await in_maintenance(conn, now, station_ids)
    events = 0
    for rule in rules:
        silences = await series_silence(
            conn, max_interval_s=STALENESS.max_interval_s(rule.definition), station_ids=station_ids
        )
        points = STALENESS.points(rule.definition, catalogue.snapshot, silences, now, skip=busy)
        if not points:
            continue
        await lock_subjects(conn, [lock_key(s) for s in points])
        open_by_subject = {
            (r.rule_id, r.station_id, r.city): alert_of(r)
            for r in await subject_alerts(conn, list(points), since=now)
            if r.state in ("pending", "firing")
        }
        decided: list[tuple[Written, NewAlert]] = []
        for subject, point in points.items():
            tracks = replay(
                open_by_subject.get(subject),
                [point],
                direction="above",
                for_s=rule.definition.for_s,
                now=now,
            )
            decided += written(catalogue, rule, subject, tracks, now)
        events += await store(conn, decided, now)
    return events
