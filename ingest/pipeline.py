"""The one path every source's readings take: resolve, convert, check, store, report."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.timeutil import cst_day_start, floor_to_period, utcnow
from ingest.qc import (
    MAX_AHEAD,
    range_problem,
    time_problem,
)
from ingest.units import UnitError, conversion_factor
from schemas.readings import IntakeResult, Outcome, ReadingIn, Rejection, SourceReading
from store.catalogue import CatalogueCache, CatalogueSnapshot, ParameterRef
from store.intake import QuarantineRow, quarantine
from store.partitions import create_partitions, month_of
from store.pool import Conn
from store.readings import (
    STORE_NEW_MAX,
    ReadingRow,
    WriteResult,
    store_new_readings,
    write_readings,
)
from store.rollups import mark_dirty
from store.sources import ensure_source, record_intake, record_source_error

log = logging.getLogger(__name__)

# The database may be what failed: noting a source's error must not hold the source up for the
# pool's 30 s timeout.
ERROR_RECORD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SourceRef:
    """Who delivered a batch: a stable code (e.g. `hj212`, `push:gz_eeb`) and its kind."""

    code: str
    kind: str


class Pipeline:
    """Turns ReadingIn batches into stored readings and quarantined rejections."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        earliest: date,
        catalogue: CatalogueCache | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`catalogue` is the process's cache; without one the pipeline keeps its own."""
        self._pool = pool
        self._earliest = cst_day_start(earliest)
        self._clock = clock
        self.catalogue_cache = catalogue or CatalogueCache(pool)
        self._source_ids: dict[str, int] = {}
        self._months: set[tuple[int, int]] = set()

    async def catalogue(self) -> CatalogueSnapshot:
        """The catalogue readings are checked against (the process's cached snapshot)."""
        return await self.catalogue_cache.get()

    async def ingest(
        self,
        items: Sequence[ReadingIn | SourceReading | Rejection],
        *,
        source: SourceRef,
        raw: Sequence[str | None] | None = None,
        then: Callable[[Conn, IntakeResult], Awaitable[None]] | None = None,
    ) -> IntakeResult:
        """Check and store a batch; a Rejection in `items` is an item its source could not parse.

        Everything is written in one transaction: accepted readings, quarantined rejections and
        the source's counters, so a crash loses nothing that was reported as stored. `raw[i]` is
        item i as the source received it, which is what a rejected item is quarantined with
        (looked up only for rejected items; None, or no `raw`, keeps the reading as JSON).
        `then` runs in the same transaction after the writes, with the batch's result, for what
        must commit with the readings or not at all (a pull's watermark, a push's audit entry).
        The alert loop then judges the touched series' history (ingest.history) off this path.
        """
        if raw is not None and len(raw) != len(items):
            raise ValueError(f"raw has {len(raw)} texts for {len(items)} items; pass one per item")
        catalogue = await self.catalogue()
        now = self._clock()
        outcomes: list[Outcome] = ["rejected"] * len(items)
        rejections: list[Rejection] = []
        rows: list[ReadingRow] = []
        positions: list[int] = []
        checks = _Checks(catalogue, now, self._earliest)
        for index, item in enumerate(items):
            if isinstance(item, Rejection):
                rejections.append(
                    Rejection(index, item.reason, item.station, item.parameter, item.payload)
                )
                continue
            row_or_reason = checks.check(item)
            if isinstance(row_or_reason, str):
                payload = _payload(item, None if raw is None else raw[index])
                rejections.append(
                    Rejection(index, row_or_reason, item.station, item.parameter, payload)
                )
            else:
                rows.append(row_or_reason)
                positions.append(index)

        source_id = await self.source_id(source)
        quarantined = [
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
        ]
        batch = _Batch(rows, positions, rejections, outcomes, source_id, now, then)
        async with self._pool.connection() as conn:
            months = {month_of(time) for time in {row.time for row in rows}} - self._months
            if months:
                async with conn.transaction():
                    await create_partitions(conn, months)
                self._months |= months
            result: IntakeResult | None = None
            if 0 < len(rows) <= STORE_NEW_MAX and not quarantined and then is None:
                # The usual batch, new readings only: one statement, one round trip.
                try:
                    written = await store_new_readings(
                        conn, rows, source_id=source_id, received_at=now
                    )
                    result = batch.outcome(written)
                except psycopg.errors.UniqueViolation:
                    pass  # some were stored already: the merge below sorts them out
            if result is None:
                async with conn.transaction():
                    written = await write_readings(conn, rows, source_id=source_id, received_at=now)
                    await quarantine(conn, quarantined, source_id=source_id, received_at=now)
                    result = await batch.record(conn, written)
        if rejections:
            log.info(
                "%s: %d of %d items rejected, first: %s",
                source.code,
                len(rejections),
                len(items),
                rejections[0].reason,
            )
        return result

    async def source_id(self, source: SourceRef) -> int:
        """The id of a source's row, registered on first use and then remembered."""
        if source.code not in self._source_ids:
            async with self._pool.connection() as conn:
                self._source_ids[source.code] = await ensure_source(
                    conn, code=source.code, kind=source.kind
                )
        return self._source_ids[source.code]

    async def record_error(
        self, source: SourceRef, problem: str, *, at: datetime | None = None
    ) -> None:
        """Show a source's latest problem on its row for /v1/sources; best effort, never for long.

        A failure to record it (the database may be what failed) is logged, not raised.
        """
        at = self._clock() if at is None else at
        try:
            async with asyncio.timeout(ERROR_RECORD_TIMEOUT_S):
                source_id = await self.source_id(source)
                async with self._pool.connection() as conn:
                    await record_source_error(conn, source_id=source_id, at=at, error=problem)
        except Exception as exc:
            log.warning("%s: could not record the error for /v1/sources: %r", source.code, exc)


@dataclass(frozen=True)
class _Batch:
    """A checked batch: its rows (at `positions` among the items) and rejections."""

    rows: list[ReadingRow]
    positions: list[int]
    rejections: list[Rejection]
    outcomes: list[Outcome]
    source_id: int
    now: datetime
    then: Callable[[Conn, IntakeResult], Awaitable[None]] | None

    def outcome(self, written: WriteResult) -> IntakeResult:
        """Each item's outcome once the readings are written."""
        outcomes = self.outcomes
        for position, index in enumerate(self.positions):
            if position in written.duplicates:
                outcomes[index] = "duplicate"
            elif position in written.revisions:
                outcomes[index] = "revised"
            else:
                outcomes[index] = "accepted"
        return IntakeResult(outcomes=outcomes, rejections=self.rejections)

    async def record(self, conn: Conn, written: WriteResult) -> IntakeResult:
        """After write_readings, in its transaction: the outcomes, the source's counters, the
        rollups' queue and `then`."""
        result = self.outcome(written)
        await record_intake(conn, source_id=self.source_id, at=self.now, **result.summary)
        # The alert loop rolls up what changed; the NOTIFY wakes it when this commits.
        # New readings go with their values, so that it can extend their hours.
        rows, dup, rev = self.rows, written.duplicates, written.revisions
        if dup or rev:
            new = [r for i, r in enumerate(rows) if i not in dup and i not in rev]
            revised = [rows[i] for i in sorted(rev)]
        else:
            new, revised = rows, []
        await mark_dirty(conn, revised, new=new, notify=True)
        if self.then is not None:
            await self.then(conn, result)
        return result


class _Checks:
    """One batch's checks of its readings, against one catalogue snapshot at one `now`.

    What depends only on a reading's station, parameter and unit (the catalogue's answers, the
    unit's factor or why there is none) is worked out once per batch, not once per reading.
    """

    def __init__(self, catalogue: CatalogueSnapshot, now: datetime, earliest: datetime) -> None:
        self._catalogue = catalogue
        self._now = now
        self._earliest = earliest
        self._latest = now + MAX_AHEAD
        self._series: dict[tuple[str, str], tuple[int, ParameterRef] | str] = {}
        self._factors: dict[tuple[str, str], float | str] = {}

    def check(self, item: ReadingIn | SourceReading) -> ReadingRow | str:
        """The reading as a row to store, or why it cannot be stored."""
        series = self._series.get((item.station, item.parameter))
        if series is None:
            series = self._series[item.station, item.parameter] = self._resolve(item)
        if isinstance(series, str):
            return series
        station_id, parameter = series
        if item.time.tzinfo is None:
            return "time has no offset (the source should have applied Asia/Shanghai)"
        try:
            moment = floor_to_period(item.time, item.period_s)
        except OverflowError:  # its period starts before year 1 or after 9999 in China time
            return f"time {item.time.isoformat()} is out of range"
        if not self._earliest <= moment <= self._latest:
            problem = time_problem(moment, now=self._now, earliest=self._earliest)
            if problem:
                return problem
        value = item.value
        if value is not None:
            factor = self._factors.get((parameter.code, item.unit))
            if factor is None:
                factor = self._factors[parameter.code, item.unit] = _factor(parameter, item.unit)
            if isinstance(factor, str):
                return factor
            # + 0.0 stores -0 as 0: a sign on nothing would only show up in output.
            value = value * factor + 0.0
            if not (math.isfinite(value) and parameter.valid_min <= value <= parameter.valid_max):
                problem = range_problem(
                    value, low=parameter.valid_min, high=parameter.valid_max, unit=parameter.unit
                )
                if problem:
                    return f"{parameter.code}: {problem}"
        return ReadingRow(station_id, parameter.id, item.period_s, moment, value, item.qc.code)

    def _resolve(self, item: ReadingIn | SourceReading) -> tuple[int, ParameterRef] | str:
        """The station's id and the parameter, or why the pair cannot be stored."""
        catalogue = self._catalogue
        station = catalogue.stations.get(item.station)
        if station is None:
            return f"unknown station {item.station!r}"
        parameter = catalogue.parameters.get(item.parameter)
        if parameter is None:
            return f"unknown parameter {item.parameter!r}"
        if (station.id, parameter.id) not in catalogue.station_parameters:
            return f"station {station.code} does not measure {parameter.code}"
        return station.id, parameter


def _factor(parameter: ParameterRef, unit: str) -> float | str:
    """What turns a value in `unit` into the parameter's unit, or why nothing does."""
    try:
        return conversion_factor(parameter.code, unit, parameter.unit)
    except UnitError as exc:
        return str(exc)


def _payload(item: ReadingIn | SourceReading, received: str | None) -> str:
    """What the source received, or (where it gave none) the reading as JSON."""
    if received is not None:
        return received
    if isinstance(item, SourceReading):
        # Its fields are typed already: the model only writes them out.
        item = ReadingIn.model_construct(**item._asdict())
    return json.dumps(item.model_dump(mode="json"), ensure_ascii=False)
