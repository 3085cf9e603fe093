"""Period air and water reports, read from the rollups (docs/evaluation.md).

The evaluation itself is alerts/evaluation's: this module reads a scope's daily means
(reading_daily) and hourly O3 (reading_hourly, for the MDA8 windows) for the period and the same
period a year earlier, lays them into the core's day arrays, and evaluates each part of the period
under its own rule set, with last year's figures as published and recomputed like for like.
Water sections average their daily means (reading_daily) over the period (GB 3838, GB 3097);
their laboratory items average the period's samples, a sample below detection entering the mean
as the setting's fraction of its detection limit (docs/evaluation.md §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

import numpy as np

from alerts.evaluation.air import (
    CATEGORIES,
    AirEvaluation,
    air_report,
    compare_air,
    evaluate_air,
    region_evaluation,
)
from alerts.evaluation.air_days import (
    DAILY_MEANS,
    AirDays,
    FloatArray,
    city_days,
    daily_max_1h,
    daily_max_8h,
    from_daily,
)
from alerts.evaluation.periods import Period, PeriodPart, month_spans
from alerts.evaluation.rules import rule_set_for
from alerts.evaluation.sea import sea_area_grade
from alerts.evaluation.water import (
    ItemSeries,
    Target,
    evaluate_group,
    evaluate_sea_point,
    evaluate_section,
    group_report,
    section_report,
)
from alerts.standards import surface_evaluated_items
from alerts.standards.aqi import aqi_level_index
from alerts.windows import HOURS_PER_DAY
from core.errors import InvalidInput, StationNotFound
from core.timeutil import CST, cst_day_start
from schemas.episodes import EpisodeOut
from store.episodes import list_episodes
from store.pool import Conn
from store.reports import (
    AirStation,
    GridValues,
    Samples,
    WaterSection,
    air_stations,
    daily_grid,
    hourly_grid,
    lab_parameters,
    lab_samples,
    water_sections,
)

AirScope = Literal["station", "city", "region"]
CITIES = ("guangzhou", "dongguan")


@dataclass(frozen=True)
class StationSeries:
    """A station's daily values and hourly O3 (days, 24) over the loaded days."""

    station: AirStation
    days: AirDays
    o3_hourly: FloatArray


@dataclass(frozen=True)
class Loaded:
    """The scope's stations' series over [start, end), grouped by the unit they report as."""

    start: date
    end: date
    units: dict[str, list[StationSeries]]

    def contains(self, part: PeriodPart) -> bool:
        """Whether the part's days were loaded."""
        return self.start <= part.start and part.end <= self.end


async def scope_stations(conn: Conn, scope: AirScope, code: str | None) -> list[AirStation]:
    """The stations a scope evaluates; InvalidInput/StationNotFound naming `code`."""
    if scope == "region":
        if code is not None:
            raise InvalidInput("code: the region is both cities and takes no code")
        return await air_stations(conn)
    if code is None:
        raise InvalidInput(f"code: scope {scope} needs a code")
    if scope == "city":
        if code not in CITIES:
            raise InvalidInput(f"code: {code!r} is not a city ({', '.join(CITIES)})")
        return await air_stations(conn, city=code)
    stations = await air_stations(conn, code=code)
    if not stations:
        raise StationNotFound(f"code: no air station with code {code!r}")
    return stations


async def air_period_report(
    conn: Conn, scope: AirScope, code: str | None, period: Period
) -> dict[str, Any]:
    """The published air report of `period`; `{"parts": [...]}` across a change of rule set."""
    stations = await scope_stations(conn, scope, code)
    if not stations:
        raise InvalidInput(f"code: {code or scope} has no assessment station")
    earlier = period.year_earlier()
    loads = [
        await _load(conn, stations, scope, period.start, period.end),
        await _load(conn, stations, scope, earlier.start, earlier.end),
    ]
    about = {"kind": scope, "code": code, "stations": [s.code for s in stations]}
    parts = period.parts()
    reports = [_part_report(part, period, len(parts) > 1, loads, about) for part in parts]
    city = None if scope == "region" else stations[0].city
    for part, report in zip(parts, reports, strict=True):
        report["episodes"] = await period_episodes(conn, part.start, part.end, city=city)
    return reports[0] if len(reports) == 1 else {"parts": reports}


async def station_air_reports(
    conn: Conn, stations: Sequence[AirStation], period: Period
) -> dict[str, list[dict[str, Any]]]:
    """Each station's published figures of the period's parts, without last year: one load.

    The bulletin's station ranking; each part evaluated as the station's air report does.
    """
    loaded = await _load(conn, stations, "station", period.start, period.end)
    return {
        code: [
            air_report(_evaluate([Loaded(loaded.start, loaded.end, {code: series})], part))
            for part in period.parts()
        ]
        for code, series in loaded.units.items()
    }


@dataclass(frozen=True)
class MonthAir:
    """A city's month as its air report publishes it, and the AQI of each of its days."""

    report: dict[str, Any]
    daily_aqi: tuple[int | None, ...]
    daily_category: tuple[str | None, ...]


async def air_months(conn: Conn, city: str, start: date, end: date) -> list[MonthAir]:
    """Each calendar month (part) of a city's days [start, end) evaluated like its air report.

    One load for all the months: the bulletin's calendar and month-by-month charts.
    """
    stations = await scope_stations(conn, "city", city)
    if not stations:
        raise InvalidInput(f"code: {city} has no assessment station")
    loaded = await _load(conn, stations, "city", start, end)
    found = []
    for first, covered, _ in month_spans(start, end):
        days = Period(max(first, start), max(first, start) + timedelta(days=covered), "month",
                      f"{first.year:04d}-{first.month:02d}")  # fmt: skip
        for part in days.parts():
            evaluation = _evaluate([loaded], part)
            aqi = evaluation.aqi.aqi if evaluation.aqi is not None else np.full(part.days, np.nan)
            levels = aqi_level_index(aqi)
            found.append(
                MonthAir(
                    report=air_report(evaluation),
                    daily_aqi=tuple(None if np.isnan(v) else int(v) for v in aqi),
                    daily_category=tuple(None if k < 0 else CATEGORIES[k] for k in levels),
                )
            )
    return found


async def period_episodes(
    conn: Conn, start: date, end: date, *, city: str | None
) -> list[dict[str, Any]]:
    """The regional episodes overlapping the days [start, end) (that take in `city`), in time
    order, as GET /v1/episodes lists them."""
    rows = await list_episodes(
        conn, start=cst_day_start(start), end=cst_day_start(end), city=city, limit=10_000
    )
    found = []
    for row in reversed(rows):
        episode = EpisodeOut.model_validate(row, from_attributes=True)
        episode.start = episode.start.astimezone(CST)
        episode.end = None if episode.end is None else episode.end.astimezone(CST)
        found.append(episode.model_dump(mode="json"))
    return found


def _part_report(
    part: PeriodPart, period: Period, split: bool, loads: Sequence[Loaded], about: dict[str, Any]
) -> dict[str, Any]:
    """One part's report with last year: as it was published and recomputed like for like."""
    current = _evaluate(loads, part)
    previous = _year_earlier(part, period, split)
    like_for_like = _evaluate(loads, PeriodPart(
        previous.start, previous.end, part.kind, previous.label, part.rule_set
    ))  # fmt: skip
    as_published = [air_report(_evaluate(loads, p)) for p in previous.parts()]
    return {
        "scope": about,
        **air_report(current),
        "last_year": {
            "as_published": as_published[0] if len(as_published) == 1 else {"parts": as_published},
            "like_for_like": air_report(like_for_like),
            "changes": compare_air(current, like_for_like),
        },
    }


def _year_earlier(part: PeriodPart, period: Period, split: bool) -> Period:
    """The part's days a year earlier, labelled after the period's year-earlier label."""
    days = Period(part.start, part.end, "range", "part").year_earlier()
    label = period.year_earlier().label
    if split:
        label = f"{label} [{days.start}, {days.end})"
    return Period(days.start, days.end, part.kind, label)


def _evaluate(loads: Sequence[Loaded], part: PeriodPart) -> AirEvaluation:
    """The part evaluated for each unit (a station or a city); the region is the cities' mean."""
    loaded = next(load for load in loads if load.contains(part))
    settings = part.rule_set.settings
    evaluations = []
    for series in loaded.units.values():
        days = city_days(
            [s.days for s in series], settings, o3_hourly=[s.o3_hourly for s in series]
        )
        evaluations.append(evaluate_air(days.between(part.start, part.end), part))
    return evaluations[0] if len(evaluations) == 1 else region_evaluation(evaluations)


async def _load(
    conn: Conn, stations: Sequence[AirStation], scope: AirScope, start: date, end: date
) -> Loaded:
    """Each station's daily means and hourly O3 on days [start, end)."""
    ids = [s.id for s in stations]
    daily = await daily_grid(conn, ids, DAILY_MEANS, start=start, end=end)
    hourly = await hourly_grid(
        conn,
        ids,
        ["o3"],
        start=datetime.combine(start, time(), CST),
        end=datetime.combine(end, time(), CST),
    )
    count = (end - start).days
    units: dict[str, list[StationSeries]] = {}
    for station in stations:
        o3 = _series(hourly, station.id, "o3", count * HOURS_PER_DAY).reshape(count, HOURS_PER_DAY)
        values = {code: _series(daily, station.id, code, count) for code in DAILY_MEANS}
        values["o3_8h_max"] = daily_max_8h(o3, start)
        values["o3_1h_max"] = daily_max_1h(o3)
        unit = station.code if scope == "station" else station.city
        units.setdefault(unit, []).append(StationSeries(station, from_daily(start, values), o3))
    return Loaded(start, end, units)


def _series(grid: GridValues, station_id: int, code: str, length: int) -> FloatArray:
    """One station's parameter as a NaN-filled array of `length` slots."""
    found = np.full(length, np.nan)
    rows = (grid.station_ids == station_id) & (grid.parameters == code)
    found[grid.offsets[rows]] = grid.values[rows]
    return found


def _lab_series(samples: Samples, station_id: int) -> dict[str, ItemSeries]:
    """A station's laboratory items: their samples as they are, flagged below detection."""
    rows = samples.station_ids == station_id
    codes = samples.parameters[rows]
    return {
        str(code): ItemSeries(
            samples.values[rows][codes == code],
            samples.below_detection[rows][codes == code],
            automatic=False,
        )
        for code in np.unique(codes)
    }


WaterScope = Literal["station", "reach", "river", "area", "city"]
# A section without a target in the catalogue is judged against class III (GB 3838), a sea
# point against class 2 (GB 3097): the classes the cities' functional zoning uses most.
DEFAULT_SURFACE_TARGET = 3
DEFAULT_SEA_TARGET = 2


async def water_period_report(
    conn: Conn, scope: WaterScope, code: str, period: Period
) -> dict[str, Any]:
    """The published water report of `period` and the same period a year earlier (§5, §6)."""
    sections = await water_sections(conn, scope=scope, code=code)
    if not sections:
        if scope == "station":
            raise StationNotFound(f"code: no water station with code {code!r}")
        raise InvalidInput(f"code: no water station in {scope} {code!r}")
    earlier = period.year_earlier()
    return {
        "scope": {"kind": scope, "code": code, "stations": [s.code for s in sections]},
        **await _water_evaluation(conn, sections, period, several=scope != "station"),
        "last_year": await _water_evaluation(conn, sections, earlier, several=scope != "station"),
    }


async def _water_evaluation(
    conn: Conn, sections: Sequence[WaterSection], period: Period, *, several: bool
) -> dict[str, Any]:
    """Each section's period class, and for several sections the group's shares and grade."""
    grid = await daily_grid(
        conn, [s.id for s in sections], None, start=period.start, end=period.end
    )
    lab = await lab_parameters(conn)
    samples = await lab_samples(
        conn,
        [s.id for s in sections],
        start=cst_day_start(period.start),
        end=cst_day_start(period.end),
    )
    settings = rule_set_for(period.start).settings
    surface, sea = [], []
    for section in sections:
        automatic = set(grid.parameters[grid.station_ids == section.id]) - lab
        items = {
            item: ItemSeries(_series(grid, section.id, item, period.days)) for item in automatic
        }
        items.update(_lab_series(samples, section.id))
        items = dict(sorted(items.items()))
        if section.water_standard == "gb3097":
            sea.append(
                evaluate_sea_point(
                    section.code, items, start=period.start, end=period.end,
                    target_class=section.target_class or DEFAULT_SEA_TARGET, settings=settings,
                )
            )  # fmt: skip
            continue
        body = section.water_body or "river"
        evaluated = set(surface_evaluated_items(body))
        surface.append(
            evaluate_section(
                section.code,
                {item: series for item, series in items.items() if item in evaluated},
                start=period.start, end=period.end,
                target=Target(section.target_class or DEFAULT_SURFACE_TARGET),
                settings=settings, water_body=body,
            )
        )  # fmt: skip
    sea_grade = sea_area_grade(
        [p.water_class for p in sea if p.water_class is not None], settings.sea_grades
    )
    return {
        "period": {
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "kind": period.kind,
            "label": period.label,
        },
        "sections": [section_report(s) for s in surface],
        "sea_points": [section_report(p) for p in sea],
        "group": group_report(evaluate_group(surface)) if several and surface else None,
        "sea_area": None if sea_grade is None or not several else sea_grade.describe(),
    }
