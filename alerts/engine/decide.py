"""What a job's points do to its subject's alerts (pure: alerts/rules.py does the judging).

Alerts whose span the touched data reaches have their trigger judged again (a revision may
move or retract it); then the points from the job's start are replayed over the open alert,
late data inside a recently resolved episode belonging to that episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from alerts.engine.jobs import Job
from alerts.engine.persist import alert_of
from alerts.engine.plan import span_touched
from alerts.rules import Alert, Point, Track, reassess_trigger, replay
from store.alerts import AlertRow


def decide(job: Job, rows: Sequence[AlertRow], points: list[Point], now: datetime) -> list[Track]:
    """The tracks a job's points make of its subject's open and recently resolved alerts."""
    rule = job.definition
    merged: dict[int, Track] = {}
    order: list[Track] = []

    def keep(track: Track) -> None:
        key = id(track.alert)
        if key in merged:
            merged[key].events += track.events
            merged[key].changed = merged[key].changed or track.changed
        else:
            merged[key] = track
            order.append(track)

    open_alert: Alert | None = None
    closed: list[Alert] = []
    for row in rows:
        alert = alert_of(row)
        if (
            span_touched(row, job.first, job.last + job.reach)
            and alert.trigger_time >= job.fetch_from
        ):
            reassessed = reassess_trigger(alert, points, direction=rule.direction, now=now)
            if reassessed is not None:
                keep(reassessed)
                alert = reassessed.alert
        if alert.is_open:
            open_alert = alert
        elif alert.state == "resolved":
            closed.append(alert)
    covered = [(a.trigger_time, a.clear_point_at) for a in closed if a.clear_point_at is not None]
    for track in replay(
        open_alert,
        [p for p in points if p.time >= job.start],
        direction=rule.direction,
        for_s=rule.for_s,
        now=now,
        covered=covered,
    ):
        keep(track)
    return order
