"""The fetch step: read what the jobs' kinds need, in one query per source, for all jobs at once.

Statistics come from the rollups (reading_hourly, reading_daily) and, for rules on each
reading, from raw readings; only QC valid and below-detection data feeds them (the queries
say so), and a station's data inside a maintenance window is left out here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from alerts.assessment import DAY, HOUR
from alerts.engine.kinds import Data, Need
from core.timeutil import CST, cst_day_start
from store.alerts import MaintenanceWindow, SeriesSince, daily_values, hourly_values, raw_points
from store.pool import Conn

# Readings up to a day ahead are accepted (docs/conventions.md §3), so reads run that far.
AHEAD = timedelta(days=1)


async def fetch(
    conn: Conn, needs: Iterable[Need], windows: Sequence[MaintenanceWindow], now: datetime
) -> Data:
    """Each needed series from the earliest time any job needs it, outside maintenance."""
    since: dict[str, dict[tuple[int, int], datetime]] = defaultdict(dict)
    for need in needs:
        wanted = since[need.source]
        key = (need.station_id, need.parameter_id)
        wanted[key] = min(wanted[key], need.since) if key in wanted else need.since
    busy = _Maintenance(windows)
    until = now + AHEAD
    data = Data()
    raw = [SeriesSince(*key, start) for key, start in since["raw"].items()]
    for reading in await raw_points(conn, raw, until=until):
        end = reading.time + timedelta(seconds=reading.period_s)
        if not busy.holds(reading.station_id, reading.time, end):
            data.raw.setdefault((reading.station_id, reading.parameter_id), []).append(reading)
    hourly = [SeriesSince(*key, start) for key, start in since["hourly"].items()]
    for hour in await hourly_values(conn, hourly, until=until):
        if not busy.holds(hour.station_id, hour.hour, HOUR.after(hour.hour)):
            data.hourly.setdefault((hour.station_id, hour.parameter_id), {})[
                hour.hour.astimezone(CST)
            ] = hour.value
    daily = [(*key, start.astimezone(CST).date()) for key, start in since["daily"].items()]
    for day in await daily_values(conn, daily):
        begin = cst_day_start(day.day)
        if not busy.holds(day.station_id, begin, DAY.after(begin)):
            data.daily.setdefault((day.station_id, day.parameter_id), {})[day.day] = day.value
    return data


class _Maintenance:
    """The maintenance windows of the stations read, to leave their data out."""

    def __init__(self, windows: Sequence[MaintenanceWindow]) -> None:
        self._by_station: dict[int, list[MaintenanceWindow]] = defaultdict(list)
        for window in windows:
            self._by_station[window.station_id].append(window)

    def holds(self, station_id: int, begin: datetime, end: datetime) -> bool:
        """A sample is inside a window that holds its instant; a period, one it overlaps."""
        for window in self._by_station.get(station_id, ()):
            if end > begin and window.starts_at < end and begin < window.ends_at:
                return True
            if end <= begin and window.starts_at <= begin < window.ends_at:
                return True
        return False
