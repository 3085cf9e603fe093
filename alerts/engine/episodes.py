"""Regional episodes kept with their alerts: what a round's episode points say of each alert.

A regional-episode alert (kinds/episode.py) announces one episode. In the round that decides the
alert, its episode row is written from the in-force points inside the alert's span, merged with
what earlier rounds recorded (a round reads only a few days back, so the start, the peak and the
primary pollutants seen before are kept): [start, end) ends at the alert's clearing point, and
the city-days count the natural days from the start to the end (or the newest step) per city.
A retracted alert takes its episode with it, and so does one that revised data closes at its own
trigger (no step of the episode is left in force).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from alerts.engine.jobs import Written
from alerts.evaluation.air import CATEGORIES
from alerts.rules import Alert, Point
from alerts.standards.aqi import aqi_level_index
from core.timeutil import CST
from schemas.rules import RegionalEpisode
from store.episodes import Episode, delete_episodes, episodes_of_alerts, save_episodes
from store.pool import Conn


async def record_episodes(conn: Conn, decided: Sequence[tuple[Written, Sequence[Point]]]) -> None:
    """Write the episodes of the regional-episode alerts decided this round."""
    mine = [(w, points) for w, points in decided if w.rule.definition.episode is not None]
    if not mine:
        return
    gone = [_id(w.track.alert) for w, _ in mine if not covers_an_episode(w.track.alert)]
    await delete_episodes(conn, gone)
    live = [(w, points) for w, points in mine if covers_an_episode(w.track.alert)]
    before = await episodes_of_alerts(conn, [_id(w.track.alert) for w, _ in live])
    found = []
    for written, points in live:
        definition = written.rule.definition
        assert definition.episode is not None
        episode = episode_of(
            written.rule.id,
            definition.episode,
            written.track.alert,
            points,
            before.get(_id(written.track.alert)),
        )
        if episode is not None:
            found.append(episode)
    await save_episodes(conn, found)


def covers_an_episode(alert: Alert) -> bool:
    """Whether an alert still stands for an episode: not retracted, nor closed at its own
    trigger (revised data that leaves no day of the episode in force)."""
    if alert.state == "retracted":
        return False
    return alert.clear_point_at is None or alert.clear_point_at > alert.trigger_time


def episode_of(
    rule_id: str,
    rule: RegionalEpisode,
    alert: Alert,
    points: Sequence[Point],
    before: Episode | None,
) -> Episode | None:
    """The alert's episode from this round's points and what was recorded before (None: none)."""
    inside = [
        p
        for p in points
        if "episode" in p.details
        and alert.trigger_time <= p.time
        and (alert.clear_point_at is None or p.time < alert.clear_point_at)
    ]
    if not inside and before is None:
        return None
    end = alert.clear_point_at if alert.state == "resolved" else None
    step = timedelta(days=1) if rule.series == "daily" else timedelta(hours=1)
    latest: Mapping[str, Any] = inside[-1].details["episode"] if inside else {}
    starts = [before.start] if before is not None else []
    if latest:
        starts.append(datetime.fromisoformat(latest["start"]))
    start = min(starts)
    peaks = [float(before.peak_aqi)] if before is not None else []
    peaks += [float(latest["peak_aqi"])] if latest else []
    if isinstance(alert.details.get("peak"), int | float):
        peaks.append(float(alert.details["peak"]))
    peak = int(max(peaks))
    primary = list(before.primary_pollutants) if before is not None else []
    primary += [p for p in latest.get("primary_pollutants", ()) if p not in primary]
    until = end if end is not None else (inside[-1].time + step if inside else None)
    if until is not None:
        city_days = _natural_days(start, until) * len(rule.cities)
    else:
        assert before is not None
        city_days = before.city_days
    return Episode(
        rule_id=rule_id,
        alert_id=_id(alert),
        series=rule.series,
        start=start,
        end=end,
        cities=list(rule.cities),
        city_days=city_days,
        peak_aqi=peak,
        peak_category=CATEGORIES[int(aqi_level_index(peak))],
        primary_pollutants=primary,
    )


def _natural_days(start: datetime, until: datetime) -> int:
    """The Asia/Shanghai calendar days that [start, until) touches."""
    last = (until - timedelta(microseconds=1)).astimezone(CST).date()
    return (last - start.astimezone(CST).date()).days + 1


def _id(alert: Alert) -> int:
    assert alert.id is not None
    return alert.id
