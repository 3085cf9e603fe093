"""The engine's two entry points, as the alert loop calls them, and the order of their steps.

`evaluate` runs after each batch of dirty series: plan the jobs the touched series wake, lock
their subjects, read their alerts, fetch what their kinds need, make points, decide, store
(with the episodes of regional-episode alerts), propagate; then judge again the silence of
touched stations whose silence alert is open.
`sweep` runs periodically: maintenance windows new or ended, pending timers due, staleness.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from alerts.engine.catalogue import Catalogue, load
from alerts.engine.decide import decide
from alerts.engine.episodes import record_episodes
from alerts.engine.fetch import fetch
from alerts.engine.jobs import Subject, Written, lock_key
from alerts.engine.kinds import STALENESS
from alerts.engine.persist import store, written
from alerts.engine.plan import LOOKBACK, Touched, plan, widen
from alerts.engine.propagation import propagate
from alerts.engine.timers import promote_pending, staleness
from alerts.rules import Point
from store.alerts import (
    AlertRow,
    NewAlert,
    lock_subjects,
    maintenance_windows,
    mark_windows_applied,
    notify_alert_events,
    open_alerts,
    subject_alerts,
    windows_to_apply,
)
from store.catalogue import CatalogueSnapshot
from store.pool import Conn


async def evaluate(
    conn: Conn, *, catalogue: CatalogueSnapshot, touched: list[Touched], now: datetime
) -> None:
    """Re-evaluate every rule that watches the touched series, inside the caller's transaction."""
    if not touched:
        return
    in_force = await load(conn, catalogue)
    events = await _evaluate(conn, in_force, touched, now)
    stations = sorted({t.station_id for t in touched})
    stale = [
        row for row in await open_alerts(conn, kinds=[STALENESS.kind]) if row.station_id in stations
    ]
    if stale:
        events += await staleness(
            conn, in_force, now, station_ids=[r.station_id for r in stale if r.station_id]
        )
    if events:
        await notify_alert_events(conn)


async def sweep(conn: Conn, *, catalogue: CatalogueSnapshot, now: datetime) -> None:
    """Run the periodic checks: staleness, pending timers coming due, maintenance windows."""
    in_force = await load(conn, catalogue)
    events = 0
    windows = await windows_to_apply(conn, now=now)
    if windows:
        # A new window retracts what its station's data inside it raised; an ended one lets the
        # station's data after it be judged again.
        touched = [
            Touched(w.station_id, s.parameter_id, [w.starts_at, min(w.ends_at, now)])
            for w in windows
            for s in catalogue.series_by_station.get(w.station_id, ())
        ]
        events += await _evaluate(conn, in_force, touched, now)
        await mark_windows_applied(conn, windows, at=now)
    events += await promote_pending(conn, in_force, now)
    events += await staleness(conn, in_force, now, station_ids=None)
    if events:
        await notify_alert_events(conn)


async def _evaluate(
    conn: Conn, catalogue: Catalogue, touched: Sequence[Touched], now: datetime
) -> int:
    """Evaluate the jobs of the touched series; returns the events written."""
    jobs = plan(catalogue, touched, now)
    if not jobs:
        return 0
    await lock_subjects(conn, [lock_key(s) for s in jobs])
    floor = now - LOOKBACK
    rows = await subject_alerts(conn, list(jobs), since=min(job.start for job in jobs.values()))
    by_subject: dict[Subject, list[AlertRow]] = defaultdict(list)
    for row in rows:
        by_subject[(row.rule_id, row.station_id, row.city)].append(row)
    for subject, job in jobs.items():
        widen(job, by_subject.get(subject, ()), floor)
    windows = await maintenance_windows(
        conn,
        station_ids=sorted({sid for job in jobs.values() for sid in job.stations}),
        ending_after=min(job.fetch_from for job in jobs.values()) - timedelta(days=1),
    )
    needs = [need for job in jobs.values() for need in job.kind.needs(job, catalogue.snapshot)]
    data = await fetch(conn, needs, windows, now)
    decided: list[tuple[Written, NewAlert]] = []
    points: dict[Subject, list[Point]] = {}
    for subject, job in jobs.items():
        points[subject] = job.kind.points(job, catalogue.snapshot, data)
        tracks = decide(job, by_subject.get(subject, []), points[subject], now)
        decided += written(catalogue, job.rule, subject, tracks, now)
    events = await store(conn, decided, now)
    await record_episodes(conn, [(w, points[w.subject]) for w, _ in decided])
    return events + await propagate(conn, catalogue, [w for w, _ in decided], now)
