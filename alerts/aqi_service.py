"""AQI and water quality of stations and cities as the API reports them, from the rollups.

This module reads: the rollups a period's assessment needs and the catalogue facts around them.
What the numbers mean — the AQI inputs and their validity, city means, which value of a water
item a sample takes, the class — is alerts/assessment's, which the alert engine uses too, so
/v1/aqi and /v1/water-quality say what the alerts say about the same hour or day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from alerts.assessment import (
    AQI_POLLUTANTS,
    DAY,
    DAY_MEANS,
    HOUR,
    Observed,
    Period,
    WaterSite,
    aqi,
    aqi_inputs,
    city_means,
    daily_inputs,
    hourly_inputs,
    sample_hours,
    stacked,
    standing,
    status_of,
    values_at,
    water_class,
)
from alerts.standards import AqiResult
from alerts.windows import HOUR_S, HOURS_PER_DAY
from core.errors import InvalidInput, StationNotFound
from core.timeutil import CST
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
from store.catalogue import CatalogueSnapshot, ParameterRef, StationRef
from store.pool import Conn
from store.rollups import (
    HourlyRollupRow,
    daily_rollups,
    hourly_rollups,
    hourly_slots,
    newest_hourly_rollups_within,
)

# The period each kind of report names.
PERIODS: dict[AqiKind | WaterKind, Period] = {"hourly": HOUR, "sample": HOUR, "daily": DAY}


@dataclass(frozen=True, slots=True)
class _AirRead:
    """The stations' AQI inputs over the periods read (the one asked for last), one grid per
    input with a row per station in the order asked, and the origin ('reported' or 'computed')
    of each station's valid own statistics in that period."""

    inputs: dict[str, Observed]
    origins: list[dict[str, str]]

    def station(self, row: int) -> dict[str, Observed]:
        """One station's inputs, by its row."""
        return {
            key: Observed(grid.values[row], grid.received[row]) for key, grid in self.inputs.items()
        }


def _grid(
    series: Sequence[Sequence[HourlyRollupRow]], start: datetime, hours: int
) -> tuple[Observed, dict[tuple[int, int], HourlyRollupRow]]:
    """Each series' hourly values from `start` (a row each; NaN = none), which hours hold a
    rollup, and the rows by (series, hour)."""
    values = np.full((len(series), hours), np.nan)
    held = np.zeros((len(series), hours), dtype=bool)
    by_slot: dict[tuple[int, int], HourlyRollupRow] = {}
    for index, rows in enumerate(series):
        for row in rows:
            slot = int((row.hour - start).total_seconds() // HOUR_S)
            if 0 <= slot < hours:
                held[index, slot] = True
                by_slot[index, slot] = row
                if row.value is not None:
                    values[index, slot] = row.value
    return Observed(values, held), by_slot


def _split(
    rows: Sequence[HourlyRollupRow], parameters: Mapping[str, ParameterRef]
) -> dict[tuple[int, str], list[HourlyRollupRow]]:
    codes = {p.id: p.code for p in parameters.values()}
    series: dict[tuple[int, str], list[HourlyRollupRow]] = {}
    for row in rows:
        series.setdefault((row.station_id, codes[row.parameter_id]), []).append(row)
    return series


async def _hourly_read(
    conn: Conn, station_ids: Sequence[int], hour: datetime, parameters: dict[str, ParameterRef]
) -> _AirRead:
    """The 24 hours ending with `hour`: enough for the SO2 24-hour moving mean of that hour.

    Every station's grid is one row of an array per pollutant, placed from the rollups' columns
    at once, so the moving means of a city's stations are computed at once too (one station at a
    time cost a city of 200 a quarter second).
    """
    start = hour - timedelta(hours=HOURS_PER_DAY - 1)
    slots = await hourly_slots(
        conn,
        station_ids=station_ids,
        parameter_ids=[p.id for p in parameters.values()],
        start=start,
        end=HOUR.after(hour),
    )
    # Row of each station, pollutant of each parameter, by id (the statement reads no other).
    row_of = np.zeros(max(station_ids) + 1, dtype=np.int64)
    row_of[list(station_ids)] = np.arange(len(station_ids))
    pollutant_of = np.zeros(max((p.id for p in parameters.values()), default=0) + 1, dtype=np.int64)
    for index, code in enumerate(AQI_POLLUTANTS):
        if code in parameters:
            pollutant_of[parameters[code].id] = index
    rows, pollutants = row_of[slots.station_id], pollutant_of[slots.parameter_id]
    shape = (len(AQI_POLLUTANTS), len(station_ids), HOURS_PER_DAY)
    values, held = np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    values[pollutants, rows, slots.slot] = slots.value
    held[pollutants, rows, slots.slot] = True
    grids = {code: Observed(values[i], held[i]) for i, code in enumerate(AQI_POLLUTANTS)}
    # The origin of each series' valid value in the last hour (the hour asked for).
    origins: list[dict[str, str]] = [{} for _ in station_ids]
    last = (slots.slot == HOURS_PER_DAY - 1) & ~np.isnan(slots.value)
    for row, pollutant, reported in zip(
        rows[last].tolist(), pollutants[last].tolist(), slots.reported[last].tolist(), strict=True
    ):
        origins[row][AQI_POLLUTANTS[pollutant]] = "reported" if reported else "computed"
    return _AirRead(hourly_inputs(grids), origins)


async def _daily_read(
    conn: Conn, station_ids: Sequence[int], day: date, parameters: dict[str, ParameterRef]
) -> _AirRead:
    """The natural day's means and its 24 hourly O3 means."""
    daily = await daily_rollups(
        conn,
        station_ids=station_ids,
        parameter_ids=[parameters[code].id for code in DAY_MEANS],
        first=day,
        last=day,
    )
    codes = {p.id: p.code for p in parameters.values()}
    means = {(row.station_id, codes[row.parameter_id]): row for row in daily}
    start, end = DAY.bounds(day)
    o3_rows = await hourly_rollups(
        conn, station_ids=station_ids, parameter_ids=[parameters["o3"].id], start=start, end=end
    )
    o3 = _split(o3_rows, parameters)
    inputs: list[dict[str, Observed]] = []
    origins: list[dict[str, str]] = []
    for station_id in station_ids:
        day_means: dict[str, Observed] = {}
        station_origins: dict[str, str] = {}
        for code in DAY_MEANS:
            row = means.get((station_id, code))
            value = None if row is None else row.value
            day_means[code] = Observed.single(value, received=row is not None)
            if row is not None and row.value is not None:
                station_origins[code] = row.origin
        o3_grid, _ = _grid([o3.get((station_id, "o3"), [])], start, HOURS_PER_DAY)
        o3_hours = Observed(o3_grid.values[0], o3_grid.received[0])
        inputs.append(daily_inputs(day_means, o3_hours))
        origins.append(station_origins)
    return _AirRead(stacked(inputs), origins)


def _station(catalogue: CatalogueSnapshot, code: str) -> StationRef:
    """One station by code, or StationNotFound."""
    station = catalogue.stations.get(code)
    if station is None:
        raise StationNotFound(f"no station with code {code!r}")
    return station


async def _air_read(
    conn: Conn,
    catalogue: CatalogueSnapshot,
    station_ids: Sequence[int],
    period: Period,
    start: datetime,
) -> tuple[_AirRead, dict[str, ParameterRef]]:
    parameters = {c: catalogue.parameters[c] for c in AQI_POLLUTANTS if c in catalogue.parameters}
    if period is HOUR:
        return await _hourly_read(conn, station_ids, start, parameters), parameters
    return await _daily_read(conn, station_ids, start.date(), parameters), parameters


@dataclass(frozen=True, slots=True)
class _Where:
    """Whose AQI and for which period."""

    kind: AqiKind
    start: datetime
    end: datetime
    station: str | None = None
    city: City | None = None
    stations: tuple[str, ...] = ()


def _report(
    result: AqiResult,
    inputs: Mapping[str, Observed],
    origins: Mapping[str, str],
    parameters: Mapping[str, ParameterRef],
    counts: Mapping[str, npt.NDArray[np.int64]] | None,
    where: _Where,
) -> AqiOut:
    catalogue = aqi_inputs(PERIODS[where.kind])
    listed = [key for key in catalogue if key in result.sub_indices]
    return AqiOut(
        station=where.station,
        city=where.city,
        stations=list(where.stations),
        kind=where.kind,
        period_start=where.start.astimezone(CST),
        period_end=where.end.astimezone(CST),
        day=where.start.astimezone(CST).date() if where.kind == "daily" else None,
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
                concentration=inputs[key].value(-1),
                unit=parameters[catalogue[key][0]].unit,
                status=inputs[key].status(-1),
                sub_index=result.sub_indices[key],
                origin=origins.get(key),
                stations=None if counts is None else int(counts[key][-1]),
            )
            for key in listed
        ],
    )


async def station_aqi(
    conn: Conn, catalogue: CatalogueSnapshot, *, station: str, kind: AqiKind, at: datetime | date
) -> AqiOut:
    """The hourly AQI of the hour starting at `at`, or the daily AQI of `at`'s natural day."""
    ref = _station(catalogue, station)
    if ref.medium != "air":
        raise InvalidInput(
            f"station {ref.code} is a {ref.medium} station; the AQI needs an air station"
            " (ask /v1/water-quality for water stations)"
        )
    return (await stations_aqi(conn, catalogue, [ref], kind=kind, at=at))[ref.id]


async def stations_aqi(
    conn: Conn,
    catalogue: CatalogueSnapshot,
    stations: Sequence[StationRef],
    *,
    kind: AqiKind,
    at: datetime | date,
) -> dict[int, AqiOut]:
    """Each of these air stations' AQI for one period (as station_aqi), from one read, by id."""
    if not stations:
        return {}
    period = PERIODS[kind]
    start, end = period.bounds(at)
    ids = [ref.id for ref in stations]
    read, parameters = await _air_read(conn, catalogue, ids, period, start)
    reports = {}
    for row, ref in enumerate(stations):
        inputs = read.station(row)
        result = aqi(period, values_at(inputs, -1), start)
        where = _Where(kind, start, end, ref.code)
        reports[ref.id] = _report(result, inputs, read.origins[row], parameters, None, where)
    return reports


async def city_aqi(
    conn: Conn, catalogue: CatalogueSnapshot, *, city: City, kind: AqiKind, at: datetime | date
) -> AqiOut:
    """A city's AQI: its non-background air stations' concentrations averaged, then the AQI."""
    stations = sorted(
        (
            s
            for s in catalogue.stations.values()
            if s.city == city and s.medium == "air" and s.background is not True
        ),
        key=lambda s: s.code,
    )
    if not stations:
        raise InvalidInput(f"city {city!r} has no non-background air station")
    period = PERIODS[kind]
    start, end = period.bounds(at)
    ids = [s.id for s in stations]
    read, parameters = await _air_read(conn, catalogue, ids, period, start)
    inputs, counts = city_means(read.inputs)
    result = aqi(period, values_at(inputs, -1), start)
    where = _Where(kind, start, end, city=city, stations=tuple(s.code for s in stations))
    return _report(result, inputs, {}, parameters, counts, where)


def water_site(ref: StationRef) -> WaterSite | None:
    """The station's water body and target, when it is a water station with both configured."""
    if ref.medium != "water" or ref.water_standard is None or ref.target_class is None:
        return None
    return WaterSite(ref.water_standard, ref.water_body or "river", ref.target_class)


def _water_site(ref: StationRef) -> WaterSite:
    if ref.medium != "water":
        raise InvalidInput(
            f"station {ref.code} is an {ref.medium} station; water quality needs a water station"
            " (ask /v1/aqi for air stations)"
        )
    if ref.water_standard is None or ref.target_class is None:
        raise InvalidInput(f"station {ref.code} has no water standard and target class configured")
    site = water_site(ref)
    assert site is not None
    return site


@dataclass(frozen=True, slots=True)
class _Item:
    """One measured parameter in a water assessment: its value, status, origin and time."""

    value: float | None
    status: DataStatus
    origin: str | None
    time: datetime | None


# Per station id, what it measures: (parameter id, code, reporting interval in seconds).
_Measured = Mapping[int, Sequence[tuple[int, str, int]]]


async def _sample_items(
    conn: Conn, hour: datetime, measured: _Measured
) -> dict[int, dict[str, _Item]]:
    """Per station, each parameter's value in the hour's sample: what stands of its rollups
    (which the newest and the newest valid rollup within its interval decide)."""
    spans = {
        (sid, pid): sample_hours(interval_s)
        for sid, entries in measured.items()
        for pid, _, interval_s in entries
    }
    codes = {(sid, pid): code for sid, entries in measured.items() for pid, code, _ in entries}
    rows = await newest_hourly_rollups_within(
        conn,
        hour=hour,
        windows=[(sid, pid, hours * HOUR_S) for (sid, pid), hours in spans.items()],
    )
    by_series: dict[tuple[int, int], list[HourlyRollupRow]] = {}
    for found in rows:
        by_series.setdefault((found.station_id, found.parameter_id), []).append(found)
    # One grid for every item, a row each, its last hour the sample's: an item's interval is its
    # last `span` hours (standing reads nothing older in its row).
    keys = list(spans)
    width = max(spans.values(), default=1)
    grid, by_slot = _grid(
        [by_series.get(key, []) for key in keys], hour - timedelta(hours=width - 1), width
    )
    stands = standing(grid.values, grid.received, hours=[spans[key] for key in keys])
    last = width - 1
    items: dict[int, dict[str, _Item]] = {sid: {} for sid in measured}
    for row, ((sid, pid), value, slot) in enumerate(
        zip(keys, stands.values[:, last].tolist(), stands.source[:, last].tolist(), strict=True)
    ):
        source = by_slot.get((row, slot))
        stood = value if math.isfinite(value) else None
        items[sid][codes[sid, pid]] = _Item(
            stood,
            stands.status((row, last)),
            source.origin if source is not None and stood is not None else None,
            source.hour.astimezone(CST) if source is not None else None,
        )
    return items


async def _day_items(conn: Conn, day: date, measured: _Measured) -> dict[int, dict[str, _Item]]:
    """Per station, each parameter's natural-day mean."""
    rows = await daily_rollups(
        conn,
        station_ids=list(measured),
        parameter_ids=sorted({pid for entries in measured.values() for pid, _, _ in entries}),
        first=day,
        last=day,
    )
    by_series = {(row.station_id, row.parameter_id): row for row in rows}
    items: dict[int, dict[str, _Item]] = {}
    for sid, entries in measured.items():
        items[sid] = {}
        for pid, code, _ in entries:
            daily = by_series.get((sid, pid))
            value = None if daily is None else daily.value
            origin = daily.origin if daily is not None and value is not None else None
            items[sid][code] = _Item(value, status_of(value, daily is not None), origin, None)
    return items


async def water_quality(
    conn: Conn, catalogue: CatalogueSnapshot, *, station: str, kind: WaterKind, at: datetime | date
) -> WaterQualityOut:
    """Single-factor class of a station's sample (an hour) or natural day, against its target.

    A sample takes what stands of each item's hourly rollups in the hour of `at` (the 08:00
    nutrients still stand at 11:00, alerts/assessment/water.py); a day takes the daily means.
    """
    ref = _station(catalogue, station)
    _water_site(ref)
    return (await stations_water_quality(conn, catalogue, [ref], kind=kind, at=at))[ref.id]


async def stations_water_quality(
    conn: Conn,
    catalogue: CatalogueSnapshot,
    stations: Sequence[StationRef],
    *,
    kind: WaterKind,
    at: datetime | date,
) -> dict[int, WaterQualityOut]:
    """Each station's class for one sample or day (as water_quality), from one read, by id.

    Stations that cannot be judged (not water, no standard or target class) are left out.
    """
    sites = {ref.id: (ref, site) for ref in stations if (site := water_site(ref)) is not None}
    if not sites:
        return {}
    period = PERIODS[kind]
    start, end = period.bounds(at)
    series = {sid: catalogue.parameters_of(ref) for sid, (ref, _) in sites.items()}
    parameters = {sid: [p for p, _ in measures] for sid, measures in series.items()}
    measured = {
        sid: [(p.id, p.code, link.interval_s) for p, link in measures]
        for sid, measures in series.items()
    }
    if period is HOUR:
        items = await _sample_items(conn, start, measured)
    else:
        items = await _day_items(conn, start.date(), measured)
    return {
        sid: _water_report(ref, site, kind, start, end, parameters.get(sid, []), items[sid])
        for sid, (ref, site) in sites.items()
    }


def _water_report(
    ref: StationRef,
    site: WaterSite,
    kind: WaterKind,
    start: datetime,
    end: datetime,
    parameters: Sequence[ParameterRef],
    items: Mapping[str, _Item],
) -> WaterQualityOut:
    values = {code: item.value for code, item in items.items() if item.value is not None}
    assessment = water_class(site, values)
    insufficient = [code for code, item in items.items() if item.status == "insufficient_data"]
    return WaterQualityOut(
        station=ref.code,
        kind=kind,
        period_start=start.astimezone(CST),
        period_end=end.astimezone(CST),
        day=start.date() if kind == "daily" else None,
        standard=assessment.standard,
        water_body=assessment.water_body,
        target_class=site.target_class,
        target_label=site.label(site.target_class),
        overall_class=assessment.overall_class,
        label=assessment.label,
        description=assessment.description,
        description_zh=assessment.description_zh,
        meets_target=assessment.meets_target,
        items=[
            WaterItem(
                parameter=p.code,
                value=items[p.code].value,
                unit=p.unit,
                time=items[p.code].time,
                status=items[p.code].status,
                origin=items[p.code].origin,
                item_class=assessment.item_classes.get(p.code),
                class_label=site.label(assessment.item_classes[p.code])
                if p.code in assessment.item_classes
                else None,
            )
            for p in parameters
        ],
        limiting=[
            WaterLimiting(
                parameter=item.item,
                item_class=item.item_class,
                class_label=site.label(item.item_class),
                value=item.value,
                limit=item.limit,
                exceedance=item.exceedance,
            )
            for item in assessment.limiting
        ],
        not_measured=[code for code in assessment.not_measured if code not in insufficient],
        insufficient_data=insufficient,
    )
