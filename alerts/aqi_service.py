"""AQI and water quality of stations and cities, from the rollups and the pure standards.

Hourly AQI takes the hour's 1-hour means (plus, under HJ 633-2012, the O3 8-hour and SO2 24-hour
moving means ending with that hour); daily AQI takes the natural-day means and the O3 daily
maximum 8-hour (and, 2012, 1-hour) mean of the day's hourly rollups. A city's AQI averages the
concentrations of its non-background stations first, then computes the AQI (HJ 663). A statistic
whose validity rule is not met is reported as insufficient data and left out, never replaced by
a mean of what is there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from alerts.rollups import hour_start
from alerts.standards import (
    AqiResult,
    assess_sea_water,
    assess_surface_water,
    daily_aqi,
    hourly_aqi,
    sea_class_label,
    surface_class_label,
)
from alerts.windows import HOURS_PER_DAY, moving_8h_mean, moving_24h_mean, o3_daily_max_8h
from core.errors import InvalidInput
from core.timeutil import CST, cst_day_start
from schemas.common import City
from schemas.quality import (
    AqiInput,
    AqiKind,
    AqiOut,
    DataStatus,
    WaterItem,
    WaterKind,
    WaterLimiting,
    WaterQualityOut,
)
from store.pool import Conn
from store.rollups import (
    HourlyRollupRow,
    ParameterUnit,
    QualityStation,
    city_air_stations,
    daily_rollups,
    hourly_rollups,
    latest_hourly_within,
    parameters_by_code,
    quality_station,
    station_parameters,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
AQI_POLLUTANTS = ("so2", "no2", "co", "o3", "pm10", "pm25")
DAILY_MEANS = ("so2", "no2", "co", "pm10", "pm25")
# Input key -> (parameter, statistic), in the order the API lists them.
HOURLY_INPUTS = {
    "so2": ("so2", "1h"),
    "no2": ("no2", "1h"),
    "co": ("co", "1h"),
    "o3": ("o3", "1h"),
    "o3_8h": ("o3", "8h_moving"),
    "so2_24h": ("so2", "24h_moving"),
    "pm10": ("pm10", "1h"),
    "pm25": ("pm25", "1h"),
}
DAILY_INPUTS = {
    "so2": ("so2", "day_mean"),
    "no2": ("no2", "day_mean"),
    "co": ("co", "day_mean"),
    "o3_8h_max": ("o3", "day_max_8h"),
    "o3_1h_max": ("o3", "day_max_1h"),
    "pm10": ("pm10", "day_mean"),
    "pm25": ("pm25", "day_mean"),
}


@dataclass(frozen=True, slots=True)
class Statistic:
    """One input statistic of one station: its value, or why there is none."""

    value: float | None
    status: DataStatus
    origin: str | None = None


def _status(value: float | None, received: bool) -> DataStatus:
    if value is not None:
        return "valid"
    return "insufficient_data" if received else "no_data"


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _grid(
    rows: Sequence[HourlyRollupRow], start: datetime, hours: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Hourly values from `start` (NaN = none) and which hours hold a rollup at all."""
    values = np.full(hours, np.nan)
    held = np.zeros(hours, dtype=bool)
    for row in rows:
        slot = int((row.hour - start) / HOUR)
        if 0 <= slot < hours:
            held[slot] = True
            if row.value is not None:
                values[slot] = row.value
    return values, held


def _split(
    rows: Sequence[HourlyRollupRow], parameters: Mapping[str, ParameterUnit]
) -> dict[tuple[int, str], list[HourlyRollupRow]]:
    codes = {p.id: p.code for p in parameters.values()}
    series: dict[tuple[int, str], list[HourlyRollupRow]] = {}
    for row in rows:
        series.setdefault((row.station_id, codes[row.parameter_id]), []).append(row)
    return series


async def _hourly_statistics(
    conn: Conn, station_ids: Sequence[int], hour: datetime, parameters: dict[str, ParameterUnit]
) -> dict[int, dict[str, Statistic]]:
    """Per station, the hourly AQI inputs of the hour starting at `hour`."""
    start = hour - 23 * HOUR
    rows = await hourly_rollups(
        conn,
        station_ids=station_ids,
        parameter_ids=[p.id for p in parameters.values()],
        start=start,
        end=hour + HOUR,
    )
    series = _split(rows, parameters)
    found: dict[int, dict[str, Statistic]] = {}
    for station_id in station_ids:
        inputs: dict[str, Statistic] = {}
        for code in AQI_POLLUTANTS:
            own = series.get((station_id, code), [])
            values, held = _grid(own, start, 24)
            last = own[-1] if own and own[-1].hour == hour else None
            inputs[code] = Statistic(
                _finite(values[-1]),
                _status(_finite(values[-1]), bool(held[-1])),
                last.origin if last is not None and last.value is not None else None,
            )
            if code == "o3":
                o3_8h = _finite(moving_8h_mean(values)[-1])
                inputs["o3_8h"] = Statistic(o3_8h, _status(o3_8h, bool(held[-8:].any())))
            if code == "so2":
                so2_24h = _finite(moving_24h_mean(values)[-1])
                inputs["so2_24h"] = Statistic(so2_24h, _status(so2_24h, bool(held.any())))
        found[station_id] = inputs
    return found


async def _daily_statistics(
    conn: Conn, station_ids: Sequence[int], day: date, parameters: dict[str, ParameterUnit]
) -> dict[int, dict[str, Statistic]]:
    """Per station, the daily AQI inputs of an Asia/Shanghai natural day."""
    daily = await daily_rollups(
        conn,
        station_ids=station_ids,
        parameter_ids=[parameters[code].id for code in DAILY_MEANS],
        first=day,
        last=day,
    )
    codes = {p.id: p.code for p in parameters.values()}
    means = {(row.station_id, codes[row.parameter_id]): row for row in daily}
    start = cst_day_start(day)
    o3_rows = await hourly_rollups(
        conn,
        station_ids=station_ids,
        parameter_ids=[parameters["o3"].id],
        start=start,
        end=start + DAY,
    )
    o3 = _split(o3_rows, parameters)
    found: dict[int, dict[str, Statistic]] = {}
    for station_id in station_ids:
        inputs: dict[str, Statistic] = {}
        for code in DAILY_MEANS:
            row = means.get((station_id, code))
            value = None if row is None else row.value
            origin = row.origin if row is not None and value is not None else None
            inputs[code] = Statistic(value, _status(value, row is not None), origin)
        values, held = _grid(o3.get((station_id, "o3"), []), start, HOURS_PER_DAY)
        max_8h = o3_daily_max_8h(values)
        inputs["o3_8h_max"] = Statistic(max_8h, _status(max_8h, bool(held.any())))
        max_1h = _finite(np.nanmax(values)) if np.isfinite(values).any() else None
        inputs["o3_1h_max"] = Statistic(max_1h, _status(max_1h, bool(held.any())))
        found[station_id] = inputs
    return found


def _city_mean(per_station: Sequence[Mapping[str, Statistic]], key: str) -> tuple[Statistic, int]:
    """The mean of the stations' valid values of one input, and how many stations gave one."""
    stats = [inputs[key] for inputs in per_station]
    values = [s.value for s in stats if s.value is not None]
    if values:
        return Statistic(float(np.mean(values)), "valid"), len(values)
    received = any(s.status == "insufficient_data" for s in stats)
    return Statistic(None, "insufficient_data" if received else "no_data"), 0


@dataclass(frozen=True, slots=True)
class _Where:
    """Whose AQI and for which period."""

    kind: AqiKind
    start: datetime
    end: datetime
    day: date
    station: str | None = None
    city: City | None = None
    stations: tuple[str, ...] = ()


def _report(
    result: AqiResult,
    inputs: Mapping[str, Statistic],
    parameters: Mapping[str, ParameterUnit],
    counts: Mapping[str, int] | None,
    where: _Where,
) -> AqiOut:
    catalogue = HOURLY_INPUTS if where.kind == "hourly" else DAILY_INPUTS
    listed = [key for key in catalogue if key in result.sub_indices]
    return AqiOut(
        station=where.station,
        city=where.city,
        stations=list(where.stations),
        kind=where.kind,
        period_start=where.start.astimezone(CST),
        period_end=where.end.astimezone(CST),
        day=where.day if where.kind == "daily" else None,
        edition=result.edition,
        published=result.published,
        aqi=result.aqi,
        level=result.level,
        level_zh=result.level_zh,
        category=result.category,
        category_zh=result.category_zh,
        color=result.color,
        primary_pollutants=list(result.primary_pollutants),
        sub_indices=result.sub_indices,
        missing=list(result.missing),
        inputs=[
            AqiInput(
                key=key,
                parameter=catalogue[key][0],
                statistic=catalogue[key][1],
                concentration=inputs[key].value,
                unit=parameters[catalogue[key][0]].unit,
                status=inputs[key].status,
                sub_index=result.sub_indices[key],
                origin=inputs[key].origin,
                stations=None if counts is None else counts[key],
            )
            for key in listed
        ],
    )


def _aqi_of(
    kind: AqiKind, inputs: Mapping[str, Statistic], start: datetime, day: date
) -> AqiResult:
    if kind == "hourly":
        return hourly_aqi(
            {code: inputs[code].value for code in AQI_POLLUTANTS},
            start,
            so2_24h_moving=inputs["so2_24h"].value,
            o3_8h_moving=inputs["o3_8h"].value,
        )
    return daily_aqi({key: inputs[key].value for key in DAILY_INPUTS}, day)


def _period(kind: AqiKind | WaterKind, at: datetime | date) -> tuple[datetime, datetime, date]:
    """The hour (hourly AQI, water sample) or natural day an `at` names: start, end, CST date."""
    if kind in ("hourly", "sample"):
        start = hour_start(at) if isinstance(at, datetime) else cst_day_start(at)
        return start, start + HOUR, start.astimezone(CST).date()
    day = at.astimezone(CST).date() if isinstance(at, datetime) else at
    return cst_day_start(day), cst_day_start(day) + DAY, day


async def station_aqi(conn: Conn, *, station: str, kind: AqiKind, at: datetime | date) -> AqiOut:
    """The hourly AQI of the hour starting at `at`, or the daily AQI of `at`'s natural day."""
    ref = await quality_station(conn, station)
    if ref.medium != "air":
        raise InvalidInput(
            f"station {ref.code} is a {ref.medium} station; the AQI needs an air station"
            " (ask /v1/water-quality for water stations)"
        )
    start, end, day = _period(kind, at)
    parameters = await parameters_by_code(conn, AQI_POLLUTANTS)
    if kind == "hourly":
        found = await _hourly_statistics(conn, [ref.id], start, parameters)
    else:
        found = await _daily_statistics(conn, [ref.id], day, parameters)
    inputs = found[ref.id]
    result = _aqi_of(kind, inputs, start, day)
    return _report(result, inputs, parameters, None, _Where(kind, start, end, day, ref.code))


async def city_aqi(conn: Conn, *, city: City, kind: AqiKind, at: datetime | date) -> AqiOut:
    """A city's AQI: its non-background air stations' concentrations averaged, then the AQI."""
    stations = await city_air_stations(conn, city)
    if not stations:
        raise InvalidInput(f"city {city!r} has no non-background air station")
    start, end, day = _period(kind, at)
    parameters = await parameters_by_code(conn, AQI_POLLUTANTS)
    ids = [s.id for s in stations]
    if kind == "hourly":
        found = await _hourly_statistics(conn, ids, start, parameters)
    else:
        found = await _daily_statistics(conn, ids, day, parameters)
    catalogue = HOURLY_INPUTS if kind == "hourly" else DAILY_INPUTS
    inputs: dict[str, Statistic] = {}
    counts: dict[str, int] = {}
    for key in catalogue:
        inputs[key], counts[key] = _city_mean([found[i] for i in ids], key)
    result = _aqi_of(kind, inputs, start, day)
    where = _Where(kind, start, end, day, city=city, stations=tuple(s.code for s in stations))
    return _report(result, inputs, parameters, counts, where)


def _water_station(ref: QualityStation) -> tuple[str, str, int]:
    if ref.medium != "water":
        raise InvalidInput(
            f"station {ref.code} is an {ref.medium} station; water quality needs a water station"
            " (ask /v1/aqi for air stations)"
        )
    if ref.water_standard is None or ref.target_class is None:
        raise InvalidInput(f"station {ref.code} has no water standard and target class configured")
    return ref.water_standard, ref.water_body or "river", ref.target_class


async def water_quality(
    conn: Conn, *, station: str, kind: WaterKind, at: datetime | date
) -> WaterQualityOut:
    """Single-factor class of a station's sample or natural day, against its standard and target.

    A sample takes each item's newest hourly value within its sampling cadence up to the hour of
    `at` (the 08:00 nutrients still stand at 11:00); a day takes the items' daily means.
    """
    ref = await quality_station(conn, station)
    standard, water_body, target = _water_station(ref)
    start, end, day = _period(kind, at)
    measured = await station_parameters(conn, ref.id)
    items: dict[str, tuple[float | None, DataStatus, str | None, datetime | None]] = {}
    if kind == "sample":
        latest = {
            row.parameter_id: row
            for row in await latest_hourly_within(
                conn,
                station_id=ref.id,
                hour=start,
                cadences=[(p.id, p.interval_s) for p in measured],
            )
        }
        for p in measured:
            row = latest.get(p.id)
            value = None if row is None else row.value
            origin = row.origin if row is not None and value is not None else None
            time = row.hour.astimezone(CST) if row is not None else None
            items[p.code] = (value, _status(value, row is not None), origin, time)
    else:
        rows = await daily_rollups(
            conn, station_ids=[ref.id], parameter_ids=[p.id for p in measured], first=day, last=day
        )
        by_id = {row.parameter_id: row for row in rows}
        for p in measured:
            daily = by_id.get(p.id)
            value = None if daily is None else daily.value
            origin = daily.origin if daily is not None and value is not None else None
            items[p.code] = (value, _status(value, daily is not None), origin, None)
    values = {code: item[0] for code, item in items.items() if item[0] is not None}
    if standard == "gb3097":
        assessment = assess_sea_water(values, target_class=target)
        label_of = sea_class_label
    else:
        assessment = assess_surface_water(values, water_body=water_body, target_class=target)
        label_of = surface_class_label
    insufficient = [code for code, item in items.items() if item[1] == "insufficient_data"]
    return WaterQualityOut(
        station=ref.code,
        kind=kind,
        period_start=start.astimezone(CST),
        period_end=end.astimezone(CST),
        day=day if kind == "daily" else None,
        standard=assessment.standard,
        water_body=assessment.water_body,
        target_class=target,
        target_label=label_of(target),
        overall_class=assessment.overall_class,
        label=assessment.label,
        description=assessment.description,
        description_zh=assessment.description_zh,
        meets_target=assessment.meets_target,
        items=[
            WaterItem(
                parameter=p.code,
                value=items[p.code][0],
                unit=p.unit,
                time=items[p.code][3],
                status=items[p.code][1],
                origin=items[p.code][2],
                item_class=assessment.item_classes.get(p.code),
                class_label=label_of(assessment.item_classes[p.code])
                if p.code in assessment.item_classes
                else None,
            )
            for p in measured
        ],
        limiting=[
            WaterLimiting(
                parameter=item.item,
                item_class=item.item_class,
                class_label=label_of(item.item_class),
                value=item.value,
                limit=item.limit,
                exceedance=item.exceedance,
            )
            for item in assessment.limiting
        ],
        not_measured=[code for code in assessment.not_measured if code not in insufficient],
        insufficient_data=insufficient,
    )
