"""Staleness rules: a station is as silent as its most silent series, in reporting intervals.

Not woken by data: the sweep judges every station (and a round the stations whose silence
alert is open, since fresh data of any QC clears it). The engine reads each series' newest
period end (`store.alerts.series_silence`) for the series that report at least every
`max_interval_s`; one point per station, at the time of judging.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, ClassVar

from alerts.engine.jobs import Subject, in_scope
from alerts.engine.kinds.base import levels_on
from alerts.rules import Point
from schemas.rules import RuleDefinition, StalenessSpec
from store.alerts import SeriesSilence
from store.catalogue import CatalogueSnapshot, StationRef


class Staleness:
    """A staleness rule watches every series (or the listed parameters) of stations in scope."""

    kind: ClassVar[str] = "staleness"

    def watches(self, rule: RuleDefinition, station: StationRef, parameter: str) -> bool:
        """Whether a station's series counts toward its silence."""
        watched = _spec(rule).parameters
        return in_scope(rule, station) and (not watched or parameter in watched)

    def max_interval_s(self, rule: RuleDefinition) -> int:
        """Series reporting less often than this (monthly lab samples) are not watched."""
        return _spec(rule).max_interval_s

    def points(
        self,
        rule: RuleDefinition,
        catalogue: CatalogueSnapshot,
        silences: Iterable[SeriesSilence],
        now: datetime,
        *,
        skip: Collection[int] = (),
    ) -> dict[Subject, Point]:
        """Per station (but those in `skip`), its largest silence and the series that are late."""
        worst: dict[int, tuple[float, list[tuple[float, dict[str, Any]]]]] = {}
        for series in silences:
            station = catalogue.stations_by_id.get(series.station_id)
            entry = catalogue.station_parameters.get((series.station_id, series.parameter_id))
            if station is None or entry is None:
                continue
            if not self.watches(rule, station, entry.parameter):
                continue
            ratio = max((now - series.last_end).total_seconds(), 0.0) / series.interval_s
            best, silent = worst.get(station.id, (0.0, []))
            silent.append(
                (
                    ratio,
                    {
                        "parameter": entry.parameter,
                        "intervals": round(ratio, 3),
                        "last_end": series.last_end.isoformat(),
                        "interval_s": series.interval_s,
                    },
                )
            )
            worst[station.id] = (max(best, ratio), silent)
        points: dict[Subject, Point] = {}
        levels, standard = levels_on(rule, now)
        trigger = min((level.trigger for level in levels), default=math.inf)
        for station_id, (ratio, silent) in worst.items():
            if station_id in skip:
                continue
            late = sorted((s for s in silent if s[0] > trigger), key=lambda s: -s[0])
            details = {"standard": standard, "silent": [entry for _, entry in late]}
            points[(rule.id, station_id, None)] = Point(now, ratio, levels, details=details)
        return points


def _spec(rule: RuleDefinition) -> StalenessSpec:
    assert rule.staleness is not None
    return rule.staleness
