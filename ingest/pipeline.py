"""The one path every source's readings take: resolve, convert, check, store, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time as monotonic
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from psycopg_pool import AsyncConnectionPool

from core.timeutil import cst_day_start, floor_to_period, utcnow
from ingest.qc import (
    HISTORY_RULES,
    PlannedWindow,
    SeriesKey,
    SeriesPlan,
    plan_windows,
    range_problem,
    series_slices,
    suspect_flags,
    time_problem,
    window_slices,
)
from ingest.units import UnitError, conversion_factor
from schemas.readings import IntakeResult, Outcome, ReadingIn, Rejection
from store.catalogue import (
    ParameterRef,
    StationParameterRef,
    StationRef,
    parameter_refs,
    station_parameter_refs,
    station_refs,
)
from store.intake import QuarantineRow, ensure_source, quarantine, record_intake
from store.partitions import create_partitions, month_of
from store.qc import QcFlag, fetch_windows, reflag_suspect
from store.readings import ReadingRow, write_readings
from store.rollups import mark_dirty, notify_readings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestCatalogue:
    """The catalogue as ingest needs it, indexed for lookups by code, MN and HJ 212 code."""

    stations: dict[str, StationRef]
    stations_by_mn: dict[str, StationRef]
    parameters: dict[str, ParameterRef]
    parameters_by_id: dict[int, ParameterRef]
    parameters_by_hj212: dict[str, ParameterRef]
    station_parameters: dict[tuple[int, int], StationParameterRef]

    def parameters_of(self, station: StationRef) -> list[tuple[ParameterRef, StationParameterRef]]:
        """A station's parameters with the unit it sends and its interval."""
        return [
            (self.parameters_by_id[pid], link)
            for (sid, pid), link in self.station_parameters.items()
            if sid == station.id
        ]


@dataclass(frozen=True)
class Source:
    """Who delivered a batch: a stable code (e.g. `hj212`, `push:gz_eeb`) and its kind."""

    code: str
    kind: str


# Re-flags by the history checks are revisions by this source (DESIGN §9).
QC_SOURCE = Source(code="qc", kind="qc")
# A committed batch waiting for history QC: its rows and the positions that were duplicates.
QueuedBatch = tuple[Sequence[ReadingRow], set[int]]


class Pipeline:
    """Turns ReadingIn batches into stored readings and quarantined rejections."""

    # A station or parameter added by `envlink seed` while a worker runs is picked up this soon.
    CATALOGUE_TTL_S = 30.0
    # History QC judges what was committed at most this often, so under a stream of small
    # batches one pass covers many; a re-flag is never urgent, the readings' answer is.
    QC_INTERVAL_S = 1.0
    QC_SLICE_ROWS = 2000
    QC_SLICE_WINDOWS = 250

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        earliest: date,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._earliest = cst_day_start(earliest)
        self._clock = clock
        self._catalogue: IngestCatalogue | None = None
        self._loaded_at = 0.0
        self._source_ids: dict[str, int] = {}
        self._qc_queue: list[QueuedBatch] = []
        self._qc_pass: asyncio.Task[None] | None = None
        self._qc_hurry = asyncio.Event()
        self._qc_last = -self.QC_INTERVAL_S
        self._months: set[tuple[int, int]] = set()

    async def catalogue(self, *, refresh: bool = False) -> IngestCatalogue:
        """The cached catalogue, reloaded when stale or when asked."""
        stale = monotonic.monotonic() - self._loaded_at > self.CATALOGUE_TTL_S
        if self._catalogue is None or refresh or stale:
            async with self._pool.connection() as conn:
                stations = await station_refs(conn)
                parameters = await parameter_refs(conn)
                links = await station_parameter_refs(conn)
            self._catalogue = IngestCatalogue(
                stations={s.code: s for s in stations},
                stations_by_mn={s.hj212_mn: s for s in stations if s.hj212_mn},
                parameters={p.code: p for p in parameters},
                parameters_by_id={p.id: p for p in parameters},
                parameters_by_hj212={p.hj212_code: p for p in parameters if p.hj212_code},
                station_parameters={(lk.station_id, lk.parameter_id): lk for lk in links},
            )
            self._loaded_at = monotonic.monotonic()
        return self._catalogue

    async def ingest(
        self, items: Sequence[ReadingIn | Rejection], *, source: Source
    ) -> IntakeResult:
        """Check and store a batch; a Rejection in `items` is an item its source could not parse.

        Everything is written in one transaction: accepted readings, quarantined rejections and
        the source's counters, so a crash loses nothing that was reported as stored. The history
        QC of the touched series follows the commit in the background (history_qc_done()).
        """
        catalogue = await self.catalogue()
        now = self._clock()
        outcomes: list[Outcome] = ["rejected"] * len(items)
        rejections: list[Rejection] = []
        rows: list[ReadingRow] = []
        positions: list[int] = []
        for index, item in enumerate(items):
            if isinstance(item, Rejection):
                rejections.append(
                    Rejection(index, item.reason, item.station, item.parameter, item.payload)
                )
                continue
            row_or_reason = self._check(item, catalogue, now)
            if isinstance(row_or_reason, str):
                rejections.append(
                    Rejection(index, row_or_reason, item.station, item.parameter, _payload(item))
                )
            else:
                rows.append(row_or_reason)
                positions.append(index)

        source_id = await self._source_id(source)
        async with self._pool.connection() as conn:
            months = {month_of(row.time) for row in rows} - self._months
            if months:
                async with conn.transaction():
                    await create_partitions(conn, months)
                self._months |= months
            async with conn.transaction():
                written = await write_readings(conn, rows, source_id=source_id, received_at=now)
                await quarantine(
                    conn,
                    [
                        QuarantineRow(
                            station_id=catalogue.stations[r.station].id
                            if r.station in catalogue.stations
                            else None,
                            station_code=r.station,
                            parameter_code=r.parameter,
                            reason=r.reason,
                            payload=r.payload or "",
                        )
                        for r in rejections
                    ],
                    source_id=source_id,
                    received_at=now,
                )
                for position, index in enumerate(positions):
                    if position in written.duplicates:
                        outcomes[index] = "duplicate"
                    elif position in written.revisions:
                        outcomes[index] = "revised"
                    else:
                        outcomes[index] = "accepted"
                result = IntakeResult(outcomes=outcomes, rejections=rejections)
                counts = result.summary
                await record_intake(conn, source_id=source_id, at=now, **counts)
                # The alert loop rolls up what changed; the NOTIFY wakes it when this commits.
                dup = written.duplicates
                changed = [r for i, r in enumerate(rows) if i not in dup] if dup else rows
                if changed:
                    await mark_dirty(conn, changed)
                    await notify_readings(conn)
            if len(written.duplicates) < len(rows):
                self._judge_later(rows, written.duplicates)
        if rejections:
            log.info(
                "%s: %d of %d items rejected, first: %s",
                source.code,
                len(rejections),
                len(items),
                rejections[0].reason,
            )
        return result

    def _check(
        self, item: ReadingIn, catalogue: IngestCatalogue, now: datetime
    ) -> ReadingRow | str:
        station = catalogue.stations.get(item.station)
        if station is None:
            return f"unknown station {item.station!r}"
        parameter = catalogue.parameters.get(item.parameter)
        if parameter is None:
            return f"unknown parameter {item.parameter!r}"
        if (station.id, parameter.id) not in catalogue.station_parameters:
            return f"station {station.code} does not measure {parameter.code}"
        if item.time.tzinfo is None:
            return "time has no offset (the source should have applied Asia/Shanghai)"
        moment = floor_to_period(item.time, item.period_s)
        problem = time_problem(moment, now=now, earliest=self._earliest)
        if problem:
            return problem
        value = item.value
        if value is not None:
            try:
                value *= conversion_factor(parameter.code, item.unit, parameter.unit)
            except UnitError as exc:
                return str(exc)
            problem = range_problem(
                value, low=parameter.valid_min, high=parameter.valid_max, unit=parameter.unit
            )
            if problem:
                return f"{parameter.code}: {problem}"
        return ReadingRow(station.id, parameter.id, item.period_s, moment, value, item.qc.code)

    def _judge_later(self, rows: Sequence[ReadingRow], duplicates: set[int]) -> None:
        """Queue a committed batch for history QC; it never delays the intake's answer."""
        self._qc_queue.append((rows, duplicates))
        if self._qc_pass is None or self._qc_pass.done():
            self._qc_pass = asyncio.create_task(self._judge_queued(), name="history QC")

    async def history_qc_done(self) -> None:
        """Judge every batch ingested so far now, and wait until that is done."""
        while self._qc_pass is not None and not self._qc_pass.done():
            self._qc_hurry.set()
            await asyncio.wait([self._qc_pass])

    async def _judge_queued(self) -> None:
        # Batches committed while a pass runs or waits join the next one, so under load one
        # pass judges many batches and QC's cost per reading falls instead of queueing up. A
        # failed pass loses nothing stored: the next batch touching a series is judged again.
        while self._qc_queue:
            wait = self._qc_last + self.QC_INTERVAL_S - monotonic.monotonic()
            if wait > 0 and not self._qc_hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._qc_hurry.wait(), wait)
            self._qc_hurry.clear()
            batches, self._qc_queue = self._qc_queue, []
            try:
                await self._history_qc(batches)
            except Exception:
                log.exception(
                    "history QC of %d batches failed; the readings are stored", len(batches)
                )
            self._qc_last = monotonic.monotonic()

    async def _history_qc(self, batches: list[QueuedBatch]) -> None:
        """Flat lines and isolated spikes over the touched series: one fetch for the batches."""
        catalogue = await self.catalogue()
        # The pure work goes a slice at a time, yielding in between, so a pass over thousands
        # of series never holds up the replies to stations for more than a few milliseconds.
        planned: list[PlannedWindow] = []
        for rows, touched in series_slices(batches, self.QC_SLICE_ROWS):
            planned += plan_windows(rows, touched, _series_plans(rows, catalogue))
            await asyncio.sleep(0)
        if not planned:
            return
        async with self._pool.connection() as conn, conn.transaction():
            fetched = await fetch_windows(conn, [p.spec for p in planned])
            found: dict[tuple[int, int, int, datetime], QcFlag] = {}
            for part, readings in window_slices(planned, fetched, self.QC_SLICE_WINDOWS):
                # Windows of one series may overlap: a reading is flagged once.
                for flag in suspect_flags(part, readings):
                    key = (flag.station_id, flag.parameter_id, flag.period_s, flag.time)
                    found.setdefault(key, flag)
                await asyncio.sleep(0)
            flags = list(found.values())
            if not flags:
                return
            if QC_SOURCE.code not in self._source_ids:
                self._source_ids[QC_SOURCE.code] = await ensure_source(
                    conn, code=QC_SOURCE.code, kind=QC_SOURCE.kind
                )
            flagged = await reflag_suspect(
                conn, flags, source_id=self._source_ids[QC_SOURCE.code], at=self._clock()
            )
            if flagged:
                await mark_dirty(conn, flags)
                await notify_readings(conn)
        log.info("QC re-flagged %d readings as suspect", flagged)

    async def _source_id(self, source: Source) -> int:
        if source.code not in self._source_ids:
            async with self._pool.connection() as conn:
                self._source_ids[source.code] = await ensure_source(
                    conn, code=source.code, kind=source.kind
                )
        return self._source_ids[source.code]


def _series_plans(
    rows: Sequence[ReadingRow], catalogue: IngestCatalogue
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


def _payload(item: ReadingIn) -> str:
    return json.dumps(item.model_dump(mode="json"), ensure_ascii=False)
