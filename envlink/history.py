"""The demo's history: days of simulated hourly means loaded in bulk before the demo serves.

`envlink demo --history 400d` fills the 400 Asia/Shanghai days before today, and today up to
its last full hour, with every catalogue series' hourly means as the simulator makes them
(ingest.sources.simulator: daily and seasonal cycles, episodes, sensor faults), so the reports
have a year and more to work on. A batch of days is one transaction: the readings by binary
COPY, their hourly and daily rollups by bulk SQL (store.bulk_history), reading_latest and the
source's counters; an interrupted load keeps the batches it committed.

Only days holding no data at all are loaded: a rerun, or a demo that has been running, keeps
what it has and fills the days missing around it. The loaded past never reaches the alert
engine: the engine evaluates what the dirty-key queue (series_dirty) hands the alert loop, and
a load queues nothing and notifies nobody. The simulator's first round, re-sending the last
24 hours, then sends exact duplicates, which are not queued either.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

from alerts.rollups import STATISTICS_QC, hour_start, is_water
from alerts.windows import MIN_VALID_HOURS_DAY
from core.timeutil import CST, cst_day_start, utcnow
from ingest.sources.simulator import StoredSeries, stored_hourly_means
from ingest.sources.story import Story
from store.bulk_history import held_days, roll_up_loaded_days, roll_up_loaded_hours
from store.catalogue import CatalogueSnapshot, read_catalogue
from store.partitions import create_partitions, month_of
from store.pool import Conn, connect
from store.readings import ReadingRow, copy_new_readings, keep_latest
from store.sources import ensure_source, record_intake

HISTORY_SOURCE = ("simulator-history", "simulator")  # the loaded readings' source: code, kind
BATCH_DAYS = 16
# Two connections load batches side by side: while the server writes one batch, this process
# makes the next, and the server's work runs on two cores.
CONNECTIONS = 2
MAX_DAYS = 3660
HOUR = timedelta(hours=1)
Progress = Callable[[int, int], None]


def history_days(text: str) -> int:
    """The days of a `--history` argument: a whole number followed by d, such as 400d."""
    number = text[:-1] if text.endswith("d") else ""
    if not (number.isascii() and number.isdigit()) or not 1 <= int(number) <= MAX_DAYS:
        raise ValueError(
            f"expected a number of days from 1 to {MAX_DAYS} followed by d, such as 400d,"
            f" not {text!r}"
        )
    return int(number)


@dataclass
class HistoryReport:
    """What a load did: days loaded and kept, rows written, and how long it took."""

    first: date
    last: date
    loaded: list[date] = field(default_factory=list)
    kept: list[date] = field(default_factory=list)
    readings: int = 0
    hourly: int = 0
    daily: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"history {self.first} to {self.last}: {len(self.loaded)} days loaded"
            f" ({self.readings:,} hourly means, {self.hourly:,} hourly and {self.daily:,} daily"
            f" rollups) in {self.seconds:.1f} s; {len(self.kept)} days holding data kept as"
            " they were"
        ]


def batches(days: list[date], size: int = BATCH_DAYS) -> list[list[date]]:
    """The days in runs of consecutive days, each cut into pieces of at most `size`."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and (runs[-1][-1] + timedelta(days=1)) == day and len(runs[-1]) < size:
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


async def load_history(
    url: str,
    *,
    days: int,
    water_min_samples: int,
    earliest: date = date.min,
    now: datetime | None = None,
    progress: Progress | None = None,
    story: Story | None = None,
) -> HistoryReport:
    """Load the `days` days before `now`'s day, and that day up to its last full hour, where
    they hold no data, none before `earliest` (as the pipeline accepts none); each batch of
    days in one transaction. With the demo's `story`, the values are those its simulator sends."""
    started = time.monotonic()
    now = now or utcnow()
    end = hour_start(now)  # the hour in progress is the live simulator's
    today = now.astimezone(CST).date()
    first = max(today - timedelta(days=days), earliest)
    report = HistoryReport(first, today)
    conn = await connect(url)
    try:
        catalogue = await read_catalogue(conn)
        held = await held_days(
            conn, first, today + timedelta(days=1), start=cst_day_start(first), stop=end
        )
        wanted = [first + timedelta(days=n) for n in range((today - first).days + 1)]
        report.kept = [day for day in wanted if day in held]
        missing = [day for day in wanted if day not in held and cst_day_start(day) < end]
        await _prepare(conn, missing, end)
        source_id = await ensure_source(conn, code=HISTORY_SOURCE[0], kind=HISTORY_SOURCE[1])
    finally:
        await conn.close()
    if progress is not None:
        progress(0, len(missing))
    queue = batches(missing)

    async def work() -> None:
        conn = await connect(url)
        try:
            while queue:
                batch = queue.pop(0)
                start = cst_day_start(batch[0])
                stop = min(cst_day_start(batch[-1] + timedelta(days=1)), end)
                async with conn.transaction():
                    readings, hourly, daily = await _load_batch(
                        conn, catalogue, start, stop, source_id, water_min_samples, now, story
                    )
                    await record_intake(
                        conn, source_id=source_id, at=now, accepted=readings, duplicate=0,
                        revised=0, rejected=0,
                    )  # fmt: skip
                report.readings += readings
                report.hourly += hourly
                report.daily += daily
                report.loaded += batch
                if progress is not None:
                    progress(len(report.loaded), len(missing))
        finally:
            await conn.close()

    await asyncio.gather(*(work() for _ in range(min(CONNECTIONS, len(queue)))))
    report.loaded.sort()
    report.seconds = time.monotonic() - started
    return report


async def _prepare(conn: Conn, missing: list[date], end: datetime) -> None:
    """Create the partitions of the months the missing days reach."""
    months = {month_of(cst_day_start(day)) for day in missing}
    months |= {month_of(min(cst_day_start(day + timedelta(days=1)), end) - HOUR) for day in missing}
    async with conn.transaction():
        await create_partitions(conn, months)


async def _load_batch(
    conn: Conn,
    catalogue: CatalogueSnapshot,
    start: datetime,
    stop: datetime,
    source_id: int,
    water_min_samples: int,
    now: datetime,
    story: Story | None = None,
) -> tuple[int, int, int]:
    """Hours [start, stop) of every series: readings, rollups and reading_latest; the
    readings, hourly and daily rollups written."""
    hours_s = np.arange(int(start.timestamp()), int(stop.timestamp()), 3600, dtype=np.int64)
    parts = [part for part in stored_hourly_means(catalogue, hours_s, story) if len(part.hours_s)]
    if not parts:
        return 0, 0, 0
    sizes = [len(part.hours_s) for part in parts]
    written = await copy_new_readings(
        conn,
        station_id=np.repeat([p.station_id for p in parts], sizes).astype(np.int32),
        parameter_id=np.repeat([p.parameter_id for p in parts], sizes).astype(np.int16),
        period_s=3600,
        time_s=np.concatenate([p.hours_s for p in parts]),
        value=np.concatenate([p.values for p in parts]),
        qc=np.concatenate([p.qc for p in parts]),
        source_id=source_id,
        received_at=now,
    )
    series = [(p.station_id, p.parameter_id) for p in parts]
    hourly = await roll_up_loaded_hours(
        conn, series, start=start, stop=stop, usable_qc=STATISTICS_QC, now=now
    )
    daily = await roll_up_loaded_days(
        conn,
        [(*key, *_daily_rule(catalogue, *key, water_min_samples)) for key in series],
        start=start,
        stop=stop,
        now=now,
    )
    await keep_latest(conn, [_newest(part) for part in parts])
    return written, hourly, daily


def _daily_rule(
    catalogue: CatalogueSnapshot, station_id: int, parameter_id: int, water_min_samples: int
) -> tuple[bool, int]:
    """Whether a series follows the water rule, and the valid hours or samples its day needs."""
    water = is_water(catalogue.station_parameters[(station_id, parameter_id)].grp)
    return water, water_min_samples if water else MIN_VALID_HOURS_DAY


def _newest(part: StoredSeries) -> ReadingRow:
    at = datetime.fromtimestamp(int(part.hours_s[-1]), CST)
    value = float(part.values[-1])
    return ReadingRow(
        part.station_id, part.parameter_id, 3600, at, None if math.isnan(value) else value,
        int(part.qc[-1]),
    )  # fmt: skip
