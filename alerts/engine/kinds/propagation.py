"""Propagation rules: a water breach pre-alerts the stations downstream, until it ends.

Not woken by data: a propagation rule follows the tracks other rules (`from_rules`) just
wrote. A source alert firing at or above `min_severity` raises (or moves) a pre-alert at each
station the river graph (alerts/propagation.py) carries it to within `max_eta_s`, addressed to
that station's agency. One pre-alert per downstream station follows the loudest source; when
the source it names ends, another source still firing that reaches the station takes it over
(no notification unless its level changes), and it ends only when none does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from alerts.engine.jobs import Subject, Written
from alerts.propagation import Arrival, RiverStation, arrivals
from alerts.rules import Alert, Event, Track, level_change
from core.timeutil import CST
from schemas.alerts import AlertEventKind, AlertState
from schemas.rules import Propagation as Spec
from schemas.rules import RuleDefinition, Severity, severity_rank
from store.catalogue import CatalogueSnapshot


@dataclass
class PreAlert:
    """A downstream station's pre-alert: its track, who it is addressed to, and its source."""

    track: Track
    addressed_to: list[int]
    parameter_id: int | None
    source_alert_id: int


def _spec(rule: RuleDefinition) -> Spec:
    assert rule.propagation is not None
    return rule.propagation


class Propagation:
    """A propagation rule follows the written tracks of the rules it names."""

    kind: ClassVar[str] = "propagation"

    def follows(
        self, rule: RuleDefinition, written: Sequence[Written]
    ) -> tuple[list[tuple[Written, Severity]], dict[int, AlertState]]:
        """The source tracks that raise or move pre-alerts (with the pre-alert's severity), and
        the source alerts whose pre-alerts end (with how: resolved or retracted)."""
        spec = _spec(rule)
        wanted: list[tuple[Written, Severity]] = []
        ended: dict[int, AlertState] = {}
        for item in written:
            if item.rule.id not in spec.from_rules or item.subject[1] is None:
                continue
            alert = item.track.alert
            assert alert.id is not None
            kinds = {e.kind for e in item.track.events}
            mapped = _pre_alert_severity(spec, alert.severity)
            if alert.state == "firing" and mapped is not None:
                if kinds & {"firing", "escalated", "deescalated"}:
                    wanted.append((item, mapped))
            elif alert.state in ("resolved", "retracted") or kinds & {"deescalated"}:
                ended[alert.id] = "retracted" if alert.state == "retracted" else "resolved"
        return wanted, ended

    def arrivals(
        self,
        rule: RuleDefinition,
        catalogue: CatalogueSnapshot,
        wanted: Sequence[tuple[Written, Severity]],
    ) -> list[tuple[Written, Severity, Arrival]]:
        """Where each source's breach arrives within the rule's horizon: the loudest first and,
        among equally loud sources, the earliest arrival first, which a new pre-alert follows
        (a water class breach judged by the hour must not push back the arrival time that an
        instant reading of the same breach gives)."""
        plans = [
            (item, severity, arrival)
            for item, severity in wanted
            for arrival in self.downstream(rule, catalogue, item.subject[1] or 0)
        ]
        return sorted(
            plans,
            key=lambda plan: (
                -severity_rank(plan[1]),
                plan[2].expected_at(plan[0].track.alert.trigger_time),
            ),
        )

    def downstream(
        self, rule: RuleDefinition, catalogue: CatalogueSnapshot, station_id: int
    ) -> list[Arrival]:
        """Where a breach at a station arrives within the rule's horizon, earliest first
        (none for a station off the river)."""
        river = [
            RiverStation(s.id, s.code, s.agency_id, s.reach_code, s.river_km)
            for s in catalogue.stations_by_id.values()
            if s.medium == "water" and s.reach_code is not None and s.river_km is not None
        ]
        source = next((s for s in river if s.id == station_id), None)
        if source is None:
            return []
        return arrivals(source, catalogue.reaches, river, max_eta_s=_spec(rule).max_eta_s)

    def raise_pre_alerts(
        self,
        rule: RuleDefinition,
        catalogue: CatalogueSnapshot,
        plans: Sequence[tuple[Written, Severity, Arrival]],
        known: Mapping[Subject, PreAlert],
        now: datetime,
    ) -> dict[Subject, PreAlert]:
        """The open pre-alerts (`known`) after the plans: new ones, escalated, deescalated."""
        pre_alerts = dict(known)
        for item, severity, arrival in plans:
            source_alert = item.track.alert
            assert source_alert.id is not None
            subject: Subject = (rule.id, arrival.station.id, None)
            details = _details(rule, catalogue, item, arrival)
            found = pre_alerts.get(subject)
            if found is None:
                alert = Alert(
                    id=None,
                    state="firing",
                    severity=severity,
                    value=source_alert.value,
                    opened_at=now,
                    pending_since=None,
                    trigger_time=source_alert.trigger_time,
                    trigger_period_s=source_alert.trigger_period_s,
                    last_point_at=source_alert.trigger_time,
                    fired_at=now,
                    details=details,
                )
                event = Event("firing", "firing", severity, alert.value, details)
                pre_alerts[subject] = PreAlert(
                    Track(alert, [event], is_new=True),
                    [arrival.station.agency_id],
                    item.parameter_id,
                    source_alert.id,
                )
                continue
            pure = found.track.alert
            kind = level_change(pure.severity, severity)
            if kind is None:
                continue
            if kind == "deescalated" and found.source_alert_id != source_alert.id:
                continue  # another source keeps it at a higher level
            pure.severity = severity
            pure.details.update(details)
            found.track.events.append(Event(kind, pure.state, severity, pure.value, details))
            found.track.changed = True
            found.source_alert_id = source_alert.id
        return pre_alerts

    def successors(
        self, rule: RuleDefinition, catalogue: CatalogueSnapshot, sources: Sequence[Written]
    ) -> list[tuple[Written, Severity, Arrival]]:
        """Where the breaches of `sources` (alerts still firing) loud enough to pre-alert arrive,
        in `arrivals`' order: what pre-alerts whose own source ended are handed to."""
        spec = _spec(rule)
        loud = [
            (item, mapped)
            for item in sources
            if (mapped := _pre_alert_severity(spec, item.track.alert.severity)) is not None
        ]
        return self.arrivals(rule, catalogue, loud)

    def hand_over(
        self,
        rule: RuleDefinition,
        catalogue: CatalogueSnapshot,
        pre_alert: Alert,
        station_id: int,
        successors: Sequence[tuple[Written, Severity, Arrival]],
    ) -> tuple[Track, int] | None:
        """A pre-alert whose source ended, handed to the source that would raise it now: the
        first of `successors` whose breach reaches `station_id` (the loudest, the earliest
        arrival among equally loud ones). Its track (an event only where its level changes) and
        that source's id; None if no source reaches the station, and the pre-alert ends."""
        plans = [p for p in successors if p[2].station.id == station_id]
        if not plans:
            return None
        item, severity, arrival = plans[0]
        details = _details(rule, catalogue, item, arrival)
        # The breach already on its way arrives when first expected, not later: the new source
        # may be judged by the hour (a water class) and so begin later than the instant one.
        before = pre_alert.details.get("expected_at")
        if isinstance(before, str) and datetime.fromisoformat(before) < datetime.fromisoformat(
            details["expected_at"]
        ):
            details["expected_at"] = before
        pre_alert.details.update(details)
        events = []
        if (kind := level_change(pre_alert.severity, severity)) is not None:
            pre_alert.severity = severity
            events.append(Event(kind, pre_alert.state, severity, pre_alert.value, details))
        source_alert_id = item.track.alert.id
        assert source_alert_id is not None
        return Track(pre_alert, events, is_new=False), source_alert_id

    def end_pre_alert(
        self, alert: Alert, final: AlertState, source_alert_id: int, now: datetime
    ) -> Track:
        """A pre-alert ending with its source: resolved or retracted as the source was."""
        alert.state = final
        if final == "retracted":
            alert.retracted_at = now
        else:
            alert.resolved_at = now
        details = {"source_alert_id": source_alert_id, "reason": f"the source alert was {final}"}
        kind: AlertEventKind = "retracted" if final == "retracted" else "resolved"
        return Track(
            alert, [Event(kind, final, alert.severity, alert.value, details)], is_new=False
        )


def _pre_alert_severity(spec: Spec, severity: Severity) -> Severity | None:
    """The severity of the pre-alerts a source alert of `severity` raises; None if it raises
    none (below the rule's minimum, or not mapped)."""
    if severity_rank(severity) < severity_rank(spec.min_severity):
        return None
    return spec.pre_alert_severity.get(severity)


def _details(
    rule: RuleDefinition, catalogue: CatalogueSnapshot, item: Written, arrival: Arrival
) -> dict[str, Any]:
    source_alert = item.track.alert
    source_station = catalogue.stations_by_id[item.subject[1] or 0]
    return {
        "source_alert_id": source_alert.id,
        "source_rule": item.rule.id,
        "source_station": source_station.code,
        "source_severity": source_alert.severity,
        "distance_km": round(arrival.distance_km, 3),
        "eta_s": round(arrival.eta_s),
        "expected_at": arrival.expected_at(source_alert.trigger_time).astimezone(CST).isoformat(),
        "direction": arrival.direction,
        "path": list(arrival.path),
        "basis": _spec(rule).basis,
    }
