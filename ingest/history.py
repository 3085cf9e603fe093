"""History QC: flat lines and isolated spikes over the series that changed (docs/conventions.md §4).

It judges readings already stored, so no station waits for it: the alert loop runs it on the
keys it claims, before their rollups, in its own transaction (envlink.runtime wires it in).
The rollups then see the re-flags, and an alert never fires on a spike QC has retracted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from core.timeutil import utcnow
from ingest.pipeline import Pipeline, SourceRef
from ingest.qc import (
    HISTORY_RULES,
    PlannedWindow,
    SeriesKey,
    SeriesPlan,
    plan_windows,
    series_slices,
    suspect_flags,
    window_slices,
)
from store.catalogue import CatalogueSnapshot
from store.pool import Conn
from store.qc import QcFlag, fetch_windows, reflag_suspect, stored_readings
from store.readings import ReadingRow
from store.rollups import DirtyKey, ReadingKey

log = logging.getLogger(__name__)

# Re-flags by the history checks are revisions by this source (docs/conventions.md §2).
QC_SOURCE = SourceRef(code="qc", kind="qc")


class HistoryQc:
    """Judges the recent history of changed series and re-flags what it finds suspect."""

    # The pure work goes a slice at a time, yielding in between, so a pass over thousands of
    # series never holds up the other tasks of the process (HJ 212 replies) for long.
    SLICE_ROWS = 2000
    SLICE_WINDOWS = 250

    def __init__(self, pipeline: Pipeline, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pipeline = pipeline
        self._clock = clock

    async def judge(
        self,
        conn: Conn,
        keys: Sequence[ReadingKey],
        *,
        stored: Sequence[ReadingRow] | None = None,
    ) -> list[DirtyKey]:
        """Judge the series of these stored readings; the keys of the readings re-flagged.

        `stored`: the readings stored under the keys now, each once, when the caller has them
        (the alert loop's claim reads them); otherwise they are read here. The caller owns the
        transaction: the re-flags commit with whatever it does next.
        """
        catalogue = await self._pipeline.catalogue()
        rows = await stored_readings(conn, keys) if stored is None else stored
        plans = _series_plans(rows, catalogue)
        planned: list[PlannedWindow] = []
        for part in series_slices(rows, self.SLICE_ROWS):
            planned += plan_windows(part, [True] * len(part), plans)
            await asyncio.sleep(0)
        if not planned:
            return []
        fetched = await fetch_windows(conn, [p.spec for p in planned])
        found: dict[DirtyKey, QcFlag] = {}
        for windows, readings in window_slices(planned, fetched, self.SLICE_WINDOWS):
            # Windows of one series may overlap: a reading is flagged once.
            for flag in suspect_flags(windows, readings):
                key = DirtyKey(flag.station_id, flag.parameter_id, flag.period_s, flag.time)
                found.setdefault(key, flag)
            await asyncio.sleep(0)
        if not found:
            return []
        # The id comes through the pipeline's own connection, outside the caller's transaction:
        # a round rolled back must not leave an id behind whose row was never committed.
        source_id = await self._pipeline.source_id(QC_SOURCE)
        flagged = await reflag_suspect(
            conn, list(found.values()), source_id=source_id, at=self._clock()
        )
        if flagged:
            log.info("QC re-flagged %d readings as suspect", flagged)
        return list(found)


def _series_plans(
    rows: Sequence[ReadingRow], catalogue: CatalogueSnapshot
) -> dict[SeriesKey, SeriesPlan]:
    """How to judge each series of `rows` that has history rules."""
    plans: dict[SeriesKey, SeriesPlan] = {}
    for key in {(row.station_id, row.parameter_id, row.period_s) for row in rows}:
        station_id, parameter_id, period_s = key
        parameter = catalogue.parameters_by_id[parameter_id]
        rules = HISTORY_RULES.get(parameter.code)
        if rules is not None:
            link = catalogue.station_parameters[(station_id, parameter_id)]
            plans[key] = SeriesPlan(rules, period_s or link.interval_s, parameter.unit, period_s)
    return plans
