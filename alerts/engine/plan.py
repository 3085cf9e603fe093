"""Planning: which rules × subjects a batch of touched series wakes, and from when.

A touched time wakes every rule whose kind watches that station's parameter; the job starts at
the earliest touched point (floored to the rule's period) and runs to the newest data. An alert
whose span the touched data reaches moves the job's start of reading back to its trigger, so the
data behind it is judged again (a revision, a re-flagged outlier, a maintenance window). Points
older than LOOKBACK are history: late data that old is stored but raises nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from alerts.assessment import Period
from alerts.engine.catalogue import ActiveRule, Catalogue
from alerts.engine.jobs import Job, Subject, in_scope, subject_of
from alerts.engine.kinds import SERIES_KINDS
from store.alerts import AlertRow
from store.catalogue import CatalogueSnapshot

LOOKBACK = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Touched:
    """A series that received accepted or revised readings, with the data times touched."""

    station_id: int
    parameter_id: int
    times: list[datetime] = field(default_factory=list)


def plan(catalogue: Catalogue, touched: Sequence[Touched], now: datetime) -> dict[Subject, Job]:
    """The jobs a batch of touched series makes: one per (rule, subject) it wakes."""
    floor = now - LOOKBACK
    watchers: dict[str, list[ActiveRule]] = defaultdict(list)
    for stored in catalogue.rules.values():
        kind = SERIES_KINDS.get(stored.definition.kind)
        for code in kind.codes(stored.definition) if kind is not None else ():
            watchers[code].append(stored)
    jobs: dict[Subject, Job] = {}
    for entry in touched:
        station = catalogue.snapshot.stations_by_id.get(entry.station_id)
        series = catalogue.snapshot.station_parameters.get((entry.station_id, entry.parameter_id))
        times = [t for t in entry.times if t >= floor]
        if station is None or series is None or not times:
            continue
        earliest, latest = min(times), max(times)
        bounds: dict[str, tuple[datetime, datetime, datetime]] = {}
        for stored in watchers.get(series.parameter, ()):
            rule = stored.definition
            kind = SERIES_KINDS[rule.kind]
            if not kind.watches(rule, station, series.parameter):
                continue
            period = kind.period(rule)
            name = "instant" if period is None else period.name
            if name not in bounds:
                bounds[name] = (
                    _floor(period, earliest),
                    _floor(period, latest),
                    _floor(period, floor),
                )
            first, last, oldest = bounds[name]
            subject = subject_of(rule, station)
            job = jobs.get(subject)
            if job is None:
                job = Job(stored, kind, subject, max(first, oldest), first, last)
                job.stations = _stations(catalogue.snapshot, job)
                job.reach = kind.reach(job, catalogue.snapshot)
                jobs[subject] = job
            else:
                job.start = min(job.start, max(first, oldest))
                job.first = min(job.first, first)
                job.last = max(job.last, last)
    return jobs


def _floor(period: Period | None, moment: datetime) -> datetime:
    return moment if period is None else period.floor(moment)


def _stations(catalogue: CatalogueSnapshot, job: Job) -> list[int]:
    """The stations whose data a subject is judged on: the station, its city's in scope, or
    (a region) every station the rule's kind watches."""
    _, station_id, city = job.subject
    if station_id is not None:
        return [station_id]
    if city is None:
        codes = job.kind.codes(job.definition)
        return [
            s.id
            for s in catalogue.stations_by_id.values()
            if any(job.kind.watches(job.definition, s, code) for code in codes)
        ]
    return [
        s.id
        for s in catalogue.stations_by_id.values()
        if s.city == city and in_scope(job.definition, s)
    ]


def span_touched(row: AlertRow, first: datetime, last: datetime) -> bool:
    """Whether an alert's data span [trigger, clear or last point] meets [first, last]."""
    if row.trigger_time is None:
        return False
    end = row.clear_point_at if row.clear_point_at is not None else row.last_point_at
    end = end if end is not None else row.trigger_time
    return row.trigger_time <= last and first <= end


def widen(job: Job, rows: Sequence[AlertRow], floor: datetime) -> None:
    """Read from the trigger of each of the subject's alerts whose span the touched data reaches."""
    for row in rows:
        if span_touched(row, job.first, job.last + job.reach) and row.trigger_time is not None:
            job.fetch_from = min(job.fetch_from, max(row.trigger_time, floor))
