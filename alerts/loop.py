"""The alert loop: history QC and rollups of the dirty windows, then the engine, woken by NOTIFY.

Each round is one transaction: claim dirty keys, judge their series' history (when a judge is
given; its re-flags then count as changes too), bring the rollups of their hours and days up to
date (an hour only new readings touch is extended from them; one with a change is recomputed),
let the engine evaluate the touched series and, when due, sweep. A crash anywhere in a round
rolls back the claim with everything else, so the keys are processed again by the next round.
Several loops (one per worker) share the queue: claims skip keys another loop holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time as monotonic
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol

import numpy as np
from psycopg_pool import AsyncConnectionPool

from alerts import engine
from alerts.engine import Touched
from alerts.rollups import (
    DAY_S,
    MINUTE_S,
    NO_PART,
    STATISTICS_QC,
    HourlyRollup,
    HourPart,
    daily_rollup,
    extend_part,
    hour_part,
    hour_start,
    is_water,
    parts_rollup,
    usable,
)
from alerts.windows import HOUR_S, HOURS_PER_DAY
from core.retry import RESTART, keep_running, log_failure
from core.timeutil import CST, cst_day_start, utcnow
from store.catalogue import CatalogueCache, CatalogueSnapshot, read_catalogue
from store.coordination import READINGS_CHANNEL
from store.listen import Listener, Wakeup
from store.pool import Conn
from store.readings import ReadingRow
from store.rollups import (
    DailyRow,
    DayWindow,
    DirtyKey,
    DirtyRow,
    HourlyRow,
    HourWindow,
    claim_dirty,
    clear_rollups,
    day_hourly,
    day_readings,
    delete_daily,
    delete_hourly,
    hour_readings,
    hourly_rows,
    lock_series,
    reading_hours,
    try_sweep_lock,
    upsert_daily,
    upsert_hourly,
)

log = logging.getLogger(__name__)

# Called with the round's connection and keyword arguments catalogue, now (and touched).
Evaluate = Callable[..., Awaitable[None]]


class Judge(Protocol):
    """Judges the claimed readings' history before their rollups (ingest.history.HistoryQc.judge),
    given the readings stored under the keys (read with the claim); returns the keys of readings
    it re-flagged, whose hours and days are then rolled up too."""

    def __call__(
        self, conn: Conn, keys: Sequence[DirtyKey], *, stored: Sequence[ReadingRow]
    ) -> Awaitable[Sequence[DirtyKey]]: ...


DEFAULT_INTERVAL_S = HOUR_S
DAY_PERIOD_S = DAY_S
# Hour windows whose raw readings a round reads in one statement.
HOURS_PER_READ = 100
# An hour window as a plain tuple (equal to its HourWindow): a round builds one per key.
_Hour = tuple[int, int, datetime]


def windows_of(keys: Sequence[DirtyKey]) -> tuple[list[HourWindow], list[DayWindow]]:
    """The hours and Asia/Shanghai days whose rollups the dirty keys affect."""
    hours: set[_Hour] = set()
    days: set[tuple[int, int, date]] = set()
    # A round's keys share few distinct times: each one's hour and day is worked out once.
    placed: dict[datetime, tuple[datetime, date]] = {}
    for station_id, parameter_id, period_s, moment in keys:
        found = placed.get(moment)
        if found is None:
            found = placed[moment] = (hour_start(moment), moment.astimezone(CST).date())
        if period_s != DAY_PERIOD_S:
            hours.add((station_id, parameter_id, found[0]))
        days.add((station_id, parameter_id, found[1]))
    return (
        sorted(HourWindow(*hour) for hour in hours),
        sorted(DayWindow(s, p, day, cst_day_start(day)) for s, p, day in days),
    )


def touched_of(keys: Sequence[DirtyKey]) -> list[Touched]:
    """The engine's view of the dirty keys: each series with its data times, ascending."""
    times: defaultdict[tuple[int, int], set[datetime]] = defaultdict(set)
    for key in keys:
        times[(key.station_id, key.parameter_id)].add(key.time)
    return [Touched(sid, pid, sorted(moments)) for (sid, pid), moments in sorted(times.items())]


def series_spec(
    catalogue: CatalogueSnapshot, station_id: int, parameter_id: int
) -> tuple[int, bool]:
    """How a series is rolled up: its sampling interval and whether it is a water series.

    A series its station no longer lists is taken as hourly; one of an unknown parameter, as
    hourly and not water.
    """
    series = catalogue.station_parameters.get((station_id, parameter_id))
    if series is not None:
        return series.interval_s, is_water(series.grp)
    parameter = catalogue.parameters_by_id.get(parameter_id)
    return DEFAULT_INTERVAL_S, parameter is not None and is_water(parameter.grp)


def _moment(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _hourly_row(
    window: HourWindow, rollup: HourlyRollup, minute: HourPart, real_time: HourPart
) -> HourlyRow:
    return HourlyRow(
        window.station_id,
        window.parameter_id,
        window.hour,
        rollup.value,
        rollup.samples,
        rollup.coverage_s,
        rollup.min,
        rollup.max,
        rollup.origin,
        rt_samples=real_time.samples,
        rt_sum=real_time.total,
        rt_min=real_time.min,
        rt_max=real_time.max,
        rt_last=_moment(real_time.last_s),
        minute_samples=minute.samples,
        minute_sum=minute.total,
        minute_min=minute.min,
        minute_max=minute.max,
        minute_last=_moment(minute.last_s),
    )


def recomputed_hour(
    window: HourWindow,
    periods: np.ndarray,
    times_s: np.ndarray,
    values: np.ndarray,
    qcs: np.ndarray,
    *,
    interval_s: int,
    water: bool,
    upto: dict[int, float | None] | None = None,
) -> HourlyRow | None:
    """An hour's rollup and running totals from its stored readings; None if it has none.

    The rules of alerts.rollups.hourly_rollup (a valid reported hourly mean wins), with each
    mean taken from the exact sum, as when the hour is extended. With `upto`, the real-time
    (0) and minute (60) readings count only up to upto[period] (none where it is None), and
    that is the part's latest time: later ones are still queued, and extend the hour when
    their round comes.
    """
    if periods.size == 0:
        return None
    parts: dict[int, HourPart] = {}
    for period in (0, MINUTE_S):
        chosen = periods == period
        limit = None if upto is None else upto.get(period)
        if upto is not None:
            chosen &= times_s <= (-math.inf if limit is None else limit)
        part = hour_part(times_s[chosen], values[chosen], qcs[chosen]) if chosen.any() else NO_PART
        if limit is not None:
            part = HourPart(part.samples, part.total, part.min, part.max, limit)
        parts[period] = part
    hour_s = window.hour.timestamp()
    reported = usable(values, qcs) & (periods == HOUR_S) & (times_s == hour_s)
    if reported.any():
        value = float(values[reported][0])
        rollup = HourlyRollup(value, 1, HOUR_S, value, value, "reported")
    else:
        rollup = parts_rollup(parts[MINUTE_S], parts[0], interval_s=interval_s, water=water)
    return _hourly_row(window, rollup, parts[MINUTE_S], parts[0])


def extended_hour(
    stored: HourlyRow | None,
    new: Sequence[tuple[int, float, float | None, int]],
    *,
    interval_s: int,
    water: bool,
) -> HourlyRow | None:
    """A stored hour with new real-time and minute readings added; None where only a
    recomputation is exact (no running totals stored, or a reading not after the latest of its
    period in the hour). `new`: (period, time in epoch seconds, value, QC) of each reading."""
    if stored is None or stored.rt_samples is None or stored.minute_samples is None:
        return None
    assert stored.rt_sum is not None and stored.minute_sum is not None
    parts = {
        0: HourPart(
            stored.rt_samples,
            stored.rt_sum,
            stored.rt_min,
            stored.rt_max,
            _seconds(stored.rt_last),
        ),
        MINUTE_S: HourPart(
            stored.minute_samples,
            stored.minute_sum,
            stored.minute_min,
            stored.minute_max,
            _seconds(stored.minute_last),
        ),
    }
    for period in (0, MINUTE_S):
        rows = [row for row in new if row[0] == period]
        if not rows:
            continue
        part = extend_part(
            parts[period],
            [moment for _, moment, _, _ in rows],
            [math.nan if value is None else value for _, _, value, _ in rows],
            [qc for _, _, _, qc in rows],
        )
        if part is None:
            return None
        parts[period] = part
    if stored.origin == "reported":  # a valid reported hourly mean still wins
        rollup = HourlyRollup(
            stored.value, stored.samples, stored.coverage_s, stored.min, stored.max, "reported"
        )
    else:
        rollup = parts_rollup(parts[MINUTE_S], parts[0], interval_s=interval_s, water=water)
    window = HourWindow(stored.station_id, stored.parameter_id, stored.hour)
    return _hourly_row(window, rollup, parts[MINUTE_S], parts[0])


def _upto(
    stored: HourlyRow | None, window: HourWindow, taken: dict[tuple[_Hour, int], float]
) -> dict[int, float | None] | None:
    """How far a recomputed hour counts its real-time and minute readings.

    Its readings up to the latest its stored totals cover or this round takes in, whichever is
    later: a later one was stored after its hour was last rolled up, so its key is still queued
    and extends the hour in its own round (counting it now would count it twice). An hour
    without stored totals counts all of its readings (None); a queued key of one then recomputes
    the hour once more, up to it.
    """
    if stored is None or stored.rt_samples is None or stored.minute_samples is None:
        return None
    upto: dict[int, float | None] = {}
    for period, last in ((0, stored.rt_last), (MINUTE_S, stored.minute_last)):
        limits = [t for t in (_seconds(last), taken.get((window, period))) if t is not None]
        upto[period] = max(limits) if limits else None
    return upto


async def refresh_rollups(
    conn: Conn,
    keys: Sequence[DirtyKey],
    *,
    catalogue: CatalogueSnapshot,
    water_min_samples: int,
    now: datetime,
    new: Sequence[DirtyRow] = (),
) -> None:
    """Bring the hourly, then the daily rollups of every window of `keys` and `new` up to date.

    `keys` are readings that changed (revisions, QC re-flags, or anything else): their hours
    are recomputed from the stored readings. `new` are readings just inserted, with their value
    and QC: an hour only they touch is extended from them (its stored running totals, plus
    theirs) without rereading it, when they are real-time or minute data that come after every
    reading of their period it has seen; otherwise it is recomputed too.
    """
    # Per distinct time of the keys (a round's share few): its hour's start, its epoch seconds
    # and its Asia/Shanghai day.
    placed: dict[datetime, tuple[datetime, float, date]] = {}

    def place(moment: datetime) -> tuple[datetime, float, date]:
        seconds = moment.timestamp()
        hour = datetime.fromtimestamp(seconds // HOUR_S * HOUR_S, UTC)
        found = placed[moment] = (hour, seconds, moment.astimezone(CST).date())
        return found

    exact: set[_Hour] = set()
    fresh: defaultdict[_Hour, list[tuple[int, float, float | None, int]]] = defaultdict(list)
    # Per hour and finer period, the latest time of a reading this round takes in.
    taken: dict[tuple[_Hour, int], float] = {}
    series_days: set[tuple[int, int, date]] = set()
    for station_id, parameter_id, period_s, moment in keys:
        hour, seconds, natural_day = placed.get(moment) or place(moment)
        series_days.add((station_id, parameter_id, natural_day))
        if period_s == DAY_PERIOD_S:
            continue
        window = (station_id, parameter_id, hour)
        exact.add(window)
        if seconds > taken.get((window, period_s), -math.inf):
            taken[(window, period_s)] = seconds
    for (station_id, parameter_id, period_s, moment), value, qc in new:
        hour, seconds, natural_day = placed.get(moment) or place(moment)
        series_days.add((station_id, parameter_id, natural_day))
        if period_s == DAY_PERIOD_S:
            continue
        window = (station_id, parameter_id, hour)
        if seconds > taken.get((window, period_s), -math.inf):
            taken[(window, period_s)] = seconds
        if qc is None or period_s not in (0, MINUTE_S):
            exact.add(window)
        else:
            fresh[window].append((period_s, seconds, value, qc))
    days = sorted(DayWindow(s, p, d, cst_day_start(d)) for s, p, d in series_days)
    # Every key has a day: the days' series are the keys'.
    await lock_series(conn, {(s, p) for s, p, _ in series_days})
    touched = sorted(HourWindow(*window) for window in set(fresh) | exact)
    stored: dict[_Hour, HourlyRow | None] = dict(
        zip(touched, await hourly_rows(conn, touched), strict=True)
    )
    hourly: list[HourlyRow] = []
    for window in sorted(HourWindow(*window) for window in set(fresh) - exact):
        interval_s, water = series_spec(catalogue, window.station_id, window.parameter_id)
        extended = extended_hour(stored[window], fresh[window], interval_s=interval_s, water=water)
        if extended is None:
            exact.add(window)
        else:
            hourly.append(extended)

    recompute = sorted(HourWindow(*window) for window in exact)
    empty_hours: list[HourWindow] = []
    # A few windows' readings at a time: an hour of a series reporting every second is 3,600
    # readings, and reading every hour to recompute at once made the round's memory (and the
    # process's resident size, which keeps its peak) grow with how full the hours are.
    for offset in range(0, len(recompute), HOURS_PER_READ):
        part_of = recompute[offset : offset + HOURS_PER_READ]
        readings = await hour_readings(conn, part_of)
        for window, part in zip(part_of, readings.of(len(part_of)), strict=True):
            interval_s, water = series_spec(catalogue, window.station_id, window.parameter_id)
            recomputed = recomputed_hour(
                window,
                readings.period_s[part],
                readings.time_s[part],
                readings.value[part],
                readings.qc[part],
                interval_s=interval_s,
                water=water,
                upto=_upto(stored[window], window, taken),
            )
            if recomputed is None:
                empty_hours.append(window)
            else:
                hourly.append(recomputed)
        del readings
    await upsert_hourly(conn, hourly, now=now)
    await delete_hourly(conn, empty_hours)

    # The day reads the hourly rollups just written: the same transaction sees them.
    # Per day: hourly values, sample counts, minima and maxima; NaN (count 0) = no value.
    grids = np.full((len(days), 4, HOURS_PER_DAY), np.nan)
    grids[:, 1, :] = 0
    held: set[int] = set()
    for row in await day_hourly(conn, days):
        slot = int((row.hour - days[row.window].start).total_seconds() // HOUR_S)
        held.add(row.window)
        if row.value is not None:
            grid = grids[row.window]
            grid[0, slot] = row.value
            grid[1, slot] = row.samples
            grid[2, slot] = math.nan if row.min is None else row.min
            grid[3, slot] = math.nan if row.max is None else row.max
    reported: dict[int, float] = {}
    for reading in await day_readings(conn, days):
        held.add(reading.window)
        if reading.value is not None and reading.qc in STATISTICS_QC:
            reported[reading.window] = reading.value
    daily: list[DailyRow] = []
    empty_days: list[DayWindow] = []
    for index, day in enumerate(days):
        if index not in held:
            empty_days.append(day)
            continue
        _, water = series_spec(catalogue, day.station_id, day.parameter_id)
        grid = grids[index]
        day_rollup = daily_rollup(
            grid[0],
            grid[1].astype(np.int64),
            grid[2],
            grid[3],
            reported=reported.get(index),
            water=water,
            water_min_samples=water_min_samples,
        )
        daily.append(
            DailyRow(
                day.station_id,
                day.parameter_id,
                day.day,
                day_rollup.value,
                day_rollup.hours,
                day_rollup.min,
                day_rollup.max,
                day_rollup.origin,
            )
        )
    await upsert_daily(conn, daily, now=now)
    await delete_daily(conn, empty_days)


async def rebuild_rollups(
    conn: Conn, *, water_min_samples: int, now: datetime, chunk: int = 20_000
) -> int:
    """Recompute every rollup from the raw readings (a full rebuild); returns the hours seen."""
    await clear_rollups(conn)
    catalogue = await read_catalogue(conn)
    # In series and time order, a day cut by a chunk boundary is recomputed by the later chunk,
    # which sees all of its hours.
    keys = sorted(await reading_hours(conn))
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        await refresh_rollups(
            conn, part, catalogue=catalogue, water_min_samples=water_min_samples, now=now
        )
    return len(windows_of(keys)[0])


@dataclass
class RoundReport:
    """What one round did: the keys it claimed and whether it ran the sweep."""

    claimed: list[DirtyKey] = field(default_factory=list)
    swept: bool = False
    busy_s: float = 0.0  # from taking its connection to the commit


class AlertLoop:
    """Keeps the rollups current and runs the alert engine; one per worker process.

    A round extends the hours its new readings touch and rereads only those with a change (a
    revision, a re-flag, late data), so its cost follows the keys; what it does per round
    (claim, history QC, the engine) still favours large rounds. So a loop claims up to `batch`
    keys at once, and rests `rest` times as long as its last round took before the next. In
    bench/hj212.py at 7,500 readings/s (when rounds reread whole hours), batches of 5,000 fell
    behind; 50,000 kept up at 68 % of a core, and resting as long as the round took brought
    that to 37 % with the same lag.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        catalogue: CatalogueCache | None = None,
        sweep_s: float = 30.0,
        water_min_samples: int = 1,
        batch: int = 50_000,
        clock: Callable[[], datetime] = utcnow,
        evaluate: Evaluate | None = None,
        sweep: Evaluate | None = None,
        judge: Judge | None = None,
        rest: float = 1.0,
    ) -> None:
        self._pool = pool
        # The process's catalogue; a loop given none keeps its own.
        self._catalogue = catalogue or CatalogueCache(pool)
        self._sweep_s = sweep_s
        self._water_min_samples = water_min_samples
        self._batch = batch
        self._clock = clock
        self._evaluate = evaluate or engine.evaluate
        self._sweep = sweep or engine.sweep
        self._judge = judge
        self._rest = rest
        self._last_sweep = -math.inf
        self._busy_s = 0.0  # the rounds' work since the loop last rested
        self.listening = asyncio.Event()
        self.rounds = 0  # completed drains while listening

    async def process(self, *, sweep: bool = False) -> RoundReport:
        """One round in one transaction: claim, roll up, evaluate, and sweep if asked."""
        report = RoundReport()
        now = self._clock()
        catalogue = await self._catalogue.get()
        async with self._pool.connection() as conn, conn.transaction():
            began = monotonic.monotonic()
            claim = await claim_dirty(conn, limit=self._batch, stored=self._judge is not None)
            claimed = claim.rows
            report.claimed = [row.key for row in claimed]
            if claimed:
                judged = await self._judged(conn, report.claimed, claim.stored)
                keys = [*report.claimed, *judged]
                # New readings extend their hours; changes (and QC re-flags) recompute theirs.
                await refresh_rollups(
                    conn,
                    [*(row.key for row in claimed if row.qc is None), *judged],
                    catalogue=catalogue,
                    water_min_samples=self._water_min_samples,
                    now=now,
                    new=[row for row in claimed if row.qc is not None],
                )
                await self._evaluate(conn, catalogue=catalogue, touched=touched_of(keys), now=now)
            if sweep and await try_sweep_lock(conn):
                await self._sweep(conn, catalogue=catalogue, now=now)
                report.swept = True
        report.busy_s = monotonic.monotonic() - began
        self._busy_s += report.busy_s
        return report

    async def _judged(
        self, conn: Conn, keys: Sequence[DirtyKey], stored: Sequence[ReadingRow]
    ) -> Sequence[DirtyKey]:
        """History QC of the claimed keys; a failure costs its re-flags, never the round."""
        if self._judge is None:
            return []
        try:
            async with conn.transaction():  # a savepoint
                return await self._judge(conn, keys, stored=stored)
        except Exception:
            log.exception("history QC of %d readings failed; the rollups go on", len(keys))
            return []

    async def drain(self, *, sweep: bool = False) -> list[DirtyKey]:
        """Run rounds until the queue holds nothing this loop can claim; the keys it processed."""
        processed: list[DirtyKey] = []
        while True:
            report = await self.process(sweep=sweep)
            sweep = False
            processed += report.claimed
            if len(report.claimed) < self._batch:
                return processed

    async def run(self, listener: Listener) -> None:
        """Process whenever readings are committed (and at every sweep) until cancelled.

        Woken by NOTIFY on READINGS_CHANNEL through the process's listener; after it reconnects,
        by the reconnect itself, since readings committed meanwhile woke nobody. A failed round
        is retried with a backoff that a reconnect cuts short.
        """
        wakeup = Wakeup()
        with listener.subscribed(READINGS_CHANNEL, wakeup):
            await listener.listening(READINGS_CHANNEL)
            self.listening.set()
            try:
                # After a round that worked the backoff starts over; a loop that keeps failing
                # (a round that cannot commit) waits longer each time.
                await keep_running(
                    lambda: self._process_when_woken(wakeup),
                    backoff=RESTART,
                    failed=log_failure(log, "alert loop"),
                    progress=lambda: self.rounds,
                    sleep=wakeup.reconnect,
                )
            finally:
                self.listening.clear()

    async def _process_when_woken(self, wakeup: Wakeup) -> None:
        while True:
            due = monotonic.monotonic() - self._last_sweep >= self._sweep_s
            if due:
                # Counted from the start of the round, so a slow round does not drift it.
                self._last_sweep = monotonic.monotonic()
            self._busy_s = 0.0
            await self.drain(sweep=due)
            self.rounds += 1
            # Part of a round's cost does not grow with the readings that wait: resting
            # `rest` times as long as the round took lets the next one take them all at once
            # and caps the loop's share of a core (1 / (1 + rest)). Only its
            # work counts: time spent waiting for a connection (the database restarting, the
            # pool busy) is not rested again, which would hold alerts back as long once more.
            await asyncio.sleep(self._busy_s * self._rest)
            # Woken by the first notification; any that came meanwhile cost at most one round
            # that finds nothing to claim.
            await wakeup.wait(self._last_sweep + self._sweep_s - monotonic.monotonic())
