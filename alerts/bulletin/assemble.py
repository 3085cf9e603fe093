"""The monthly joint bulletin assembled from the air and water reports (docs/evaluation.md §8).

Nothing is evaluated here a second time: every figure is taken from the report of the same
scope and month (alerts.reports: the cities', the region's and each assessment station's air
report, the cities', rivers' and north main stream's water reports) and laid into the
bulletin's tables. The only figures derived here are the CWQI changes on last year, computed
from the two published CWQIs like the air report's changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from fractions import Fraction
from typing import Any

from alerts.evaluation.periods import Period, month
from alerts.evaluation.publish import CHANGE_PLACES, published
from alerts.reports import (
    CITIES,
    air_months,
    air_period_report,
    station_air_reports,
    water_period_report,
)
from core.errors import InvalidInput
from core.rounding import exact
from core.timeutil import CST, FIRST_YEAR, LAST_YEAR
from schemas.bulletin import (
    AirDaysRow,
    AirMonth,
    AirUnitReport,
    Bulletin,
    BulletinNotes,
    BulletinPeriod,
    CalendarDay,
    CityCharts,
    EpisodeRow,
    Exceedance,
    SeaArea,
    SectionRow,
    StationRank,
    SummaryRow,
    WaterGroupRow,
    WaterReport,
)
from store.pool import Conn
from store.reports import (
    WaterSection,
    air_stations,
    parameter_names,
    station_names,
    water_sections,
)

# The units of the air part, and their names (Chinese, English).
UNIT_NAMES: Mapping[str, tuple[str, str]] = {
    "guangzhou": ("广州", "Guangzhou"),
    "dongguan": ("东莞", "Dongguan"),
    "region": ("广州—东莞区域", "Guangzhou-Dongguan region"),
}
RIVER_NAMES: Mapping[str, tuple[str, str]] = {
    "dongjiang": ("东江", "Dongjiang"),
    "shiziyang": ("狮子洋", "Shiziyang"),
}
# The reach whose grade the bulletin states on its own (东江北干流).
NORTH_MAIN_REACH = ("north_main", "东江北干流", "Dongjiang north main stream")
ESTUARY_RIVER = "shiziyang"
# The pollutant table's order, as the cities' bulletins print it.
POLLUTANT_ORDER = ("pm25", "pm10", "no2", "so2", "o3", "co")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def bulletin_month(text: str) -> Period:
    """The calendar month named YYYY-MM; InvalidInput naming `month` otherwise."""
    found = _MONTH.fullmatch(text.strip())
    if found is None:
        raise InvalidInput(f"month: {text!r} is not YYYY-MM")
    year, number = int(found[1]), int(found[2])
    if not FIRST_YEAR < year < LAST_YEAR:
        raise InvalidInput(f"month: {text!r} is outside the years {FIRST_YEAR + 1}-{LAST_YEAR - 1}")
    if not 1 <= number <= 12:
        raise InvalidInput(f"month: {text!r}: month {number} is not 1..12")
    return month(year, number)


async def assemble_bulletin(conn: Conn, period: Period, *, now: datetime) -> Bulletin:
    """The bulletin of a month from the air and water reports of that month."""
    units: dict[str, dict[str, Any]] = {
        city: _one_part(await air_period_report(conn, "city", city, period)) for city in CITIES
    }
    units["region"] = _one_part(await air_period_report(conn, "region", None, period))
    air = [_air_unit(unit, report) for unit, report in units.items()]
    earlier = period.year_earlier()
    water = await _water(conn, period)
    return Bulletin(
        month=period.label,
        period=_period(period),
        last_year_period=_period(earlier),
        generated_at=now.astimezone(CST),
        summary=[_summary(unit) for unit in air],
        air=air,
        stations=await _stations(conn, period),
        episodes=month_episodes(units["region"]),
        charts=[await _charts(conn, city, period) for city in CITIES],
        water=water,
        notes=_notes(period, units, air, water, now),
    )


def month_episodes(region_report: Mapping[str, Any]) -> list[EpisodeRow] | None:
    """The month's regional episodes as the region's air report lists them (docs/evaluation.md §7).

    None while the air report carries no `episodes` list: the bulletin then says the episodes
    are not available rather than that there were none.
    """
    listed = region_report.get("episodes")
    if listed is None:
        return None
    return [EpisodeRow.model_validate(episode) for episode in listed]


def _one_part(report: dict[str, Any]) -> dict[str, Any]:
    """A month's report: months never span a change of rule set (each starts on a 1st)."""
    if "parts" in report:
        raise ValueError("a bulletin month spans a change of rule set")
    return report


def _period(period: Period) -> BulletinPeriod:
    return BulletinPeriod(start=period.start, end=period.end, label=period.label)


def _days(report: Mapping[str, Any]) -> AirDaysRow:
    return AirDaysRow.model_validate({key: report[key] for key in AirDaysRow.model_fields})


def _air_unit(unit: str, report: dict[str, Any]) -> AirUnitReport:
    last_year = report["last_year"]
    like = last_year["like_for_like"]
    as_published = last_year["as_published"]
    changes = last_year["changes"]
    name_zh, name = UNIT_NAMES[unit]
    pollutants = []
    for code in POLLUTANT_ORDER:
        found = report["pollutants"][code]
        pollutants.append(
            {
                "pollutant": code,
                "statistic": found["statistic"],
                "unit": found["unit"],
                "limit": found["limit"],
                "value": found["value"],
                "last_year": like["pollutants"][code]["value"],
                "change_percent": changes["pollutants_percent"][code],
                "exceedance_multiple": found["exceedance_multiple"],
            }
        )
    return AirUnitReport.model_validate(
        {
            "unit": unit,
            "name_zh": name_zh,
            "name": name,
            "stations": report["scope"]["stations"],
            "rule_set": report["rule_set"]["name"],
            "this_period": _days(report),
            "last_year": _days(like),
            "last_year_as_published": _days(as_published),
            "last_year_rule_set": as_published["rule_set"]["name"],
            "pollutants": pollutants,
            "composite_index": report["composite_index"]["value"],
            "composite_index_last_year": like["composite_index"]["value"],
            "composite_index_change_percent": changes["composite_index_percent"],
            "composite_index_primary": report["composite_index"]["primary"],
            "days_with_primary_pollutant": report["days_with_primary_pollutant"],
            "primary_pollutant_days": report["primary_pollutant_days"],
            "primary_pollutant_shares": report["primary_pollutant_shares"],
            "good_day_share_change_points": changes["good_day_share_points"],
        }
    )


def _summary(unit: AirUnitReport) -> SummaryRow:
    return SummaryRow(
        unit=unit.unit,
        name_zh=unit.name_zh,
        name=unit.name,
        good_day_share=unit.this_period.good_day_share,
        good_day_share_last_year=unit.last_year.good_day_share,
        good_day_share_change_points=unit.good_day_share_change_points,
        composite_index=unit.composite_index,
        composite_index_last_year=unit.composite_index_last_year,
        composite_index_change_percent=unit.composite_index_change_percent,
    )


async def _stations(conn: Conn, period: Period) -> list[StationRank]:
    """Every assessment station's composite index, cleanest first (equal indices share a rank)."""
    names = await station_names(conn)
    stations = await air_stations(conn)
    reports = await station_air_reports(conn, stations, period)
    found = []
    for station in stations:
        (report,) = reports[station.code]
        named = names[station.code]
        found.append(
            StationRank.model_validate(
                {
                    "rank": None,
                    "code": station.code,
                    "name_zh": named.name_zh,
                    "name": named.name,
                    "city": station.city,
                    "composite_index": report["composite_index"]["value"],
                    "composite_index_primary": report["composite_index"]["primary"],
                    "good_day_share": report["good_day_share"],
                }
            )
        )
    indexed = {s.code: s.composite_index for s in found}
    ranked = sorted(
        (s for s in found if isinstance(s.composite_index, int | float)),
        key=lambda s: (_index_value(indexed[s.code]), s.code),
    )
    for position, ranking in enumerate(ranked, start=1):
        before = ranked[position - 2] if position > 1 else None
        same = before is not None and before.composite_index == ranking.composite_index
        ranking.rank = before.rank if same and before is not None else position
    rest = sorted((s for s in found if s.rank is None), key=lambda s: s.code)
    return ranked + rest


def _index_value(figure: object) -> float:
    """A published composite index as a number to rank by."""
    return float(figure) if isinstance(figure, int | float) else float("inf")


async def _charts(conn: Conn, city: str, period: Period) -> CityCharts:
    """The city's months of this year up to the bulletin's, and the bulletin month's days."""
    months = await air_months(conn, city, date(period.start.year, 1, 1), period.end)
    last = months[-1]
    calendar = [
        CalendarDay(day=date.fromordinal(period.start.toordinal() + i), aqi=aqi, category=category)
        for i, (aqi, category) in enumerate(zip(last.daily_aqi, last.daily_category, strict=True))
    ]
    rows = []
    for found in months:
        report = found.report
        rows.append(
            AirMonth.model_validate(
                {
                    "label": report["period"]["label"],
                    "start": report["period"]["start"],
                    "end": report["period"]["end"],
                    "rule_set": report["rule_set"]["name"],
                    "valid_days": report["valid_days"],
                    "category_days": report["category_days"],
                    "pollutants": {p: v["value"] for p, v in report["pollutants"].items()},
                    "limits": {p: v["limit"] for p, v in report["pollutants"].items()},
                }
            )
        )
    return CityCharts.model_validate({"city": city, "calendar": calendar, "months": rows})


async def _water(conn: Conn, period: Period) -> WaterReport:
    """Sections along the rivers, the rivers', cities' and north main stream's figures."""
    names = {code: named.name_zh for code, named in (await parameter_names(conn)).items()}
    sections: list[WaterSection] = []
    cities = []
    found: dict[str, dict[str, Any]] = {}
    before: dict[str, dict[str, Any]] = {}
    for city in CITIES:
        of_city = await water_sections(conn, scope="city", code=city)
        if not of_city:
            continue
        sections += of_city
        report = await water_period_report(conn, "city", city, period)
        for key, into in (("", found), ("last_year", before)):
            part = report[key] if key else report
            into.update({s["code"]: s for s in part["sections"] + part["sea_points"]})
        if (group := _group("city", city, *UNIT_NAMES[city], report)) is not None:
            cities.append(group)
    sections.sort(
        key=lambda s: (s.river is None, s.river or "", s.reach or "", s.river_km or 0, s.code)
    )
    rivers = []
    estuary = None
    sea_area = None
    for river in dict.fromkeys(s.river for s in sections if s.river is not None):
        report = await water_period_report(conn, "river", river, period)
        name_zh, name = RIVER_NAMES.get(river, (river, river))
        group = _group("river", river, name_zh, name, report)
        if group is not None:
            rivers.append(group)
        if river == ESTUARY_RIVER:
            estuary = group
            sea_area = None if report["sea_area"] is None else SeaArea(**report["sea_area"])
    north_main = None
    if any(s.reach == NORTH_MAIN_REACH[0] for s in sections):
        report = await water_period_report(conn, "reach", NORTH_MAIN_REACH[0], period)
        north_main = _group("reach", *NORTH_MAIN_REACH, report)
    return WaterReport(
        sections=[_section(s, found[s.code], before[s.code], names) for s in sections],
        rivers=rivers,
        cities=cities,
        dongjiang_north_main=north_main,
        shiziyang_estuary=estuary,
        shiziyang_sea_area=sea_area,
    )


def _section(
    section: WaterSection,
    now: Mapping[str, Any],
    last_year: Mapping[str, Any],
    names: Mapping[str, str],
) -> SectionRow:
    target = now["target"]
    exceedances = [
        Exceedance(item=e["item"], name_zh=names.get(e["item"], e["item"]), multiple=e["multiple"])
        for e in now["exceedances"]["target"]
    ]
    return SectionRow(
        river=section.river,
        reach=section.reach,
        code=section.code,
        name_zh=section.name_zh,
        name=section.name,
        city=section.city,
        standard=now["standard"],
        target_class=None if target is None else target["class"],
        target_label=None if target is None else target["label"],
        water_class=now["class"],
        class_label=now["class_label"],
        grade_zh=now["grade_zh"],
        last_year_class=last_year["class"],
        last_year_class_label=last_year["class_label"],
        compliant=now["compliant"],
        exceedances=exceedances,
        exceedances_text=exceedances_text(exceedances),
        cwqi=now["cwqi"],
        cwqi_last_year=last_year["cwqi"],
        cwqi_change_percent=change_percent(now["cwqi"], last_year["cwqi"]),
        insufficient_items=sorted(now["insufficient_data"]),
    )


def exceedances_text(exceedances: Sequence[Exceedance]) -> str:
    """'氨氮(0.24)、总磷(0.15)': pH and DO named without a multiple."""
    return "、".join(
        e.name_zh if e.multiple is None else f"{e.name_zh}({e.multiple:.2f})" for e in exceedances
    )


def change_percent(now: float | None, before: float | None) -> float | None:
    """(now - before)/before × 100 of two published figures, 1 decimal; None without both."""
    if now is None or before is None or before == 0:
        return None
    change = (exact(now) - exact(before)) / exact(before) * 100
    return float(published(Fraction(change), CHANGE_PLACES))


def _group(
    kind: str, code: str, name_zh: str, name: str, report: Mapping[str, Any]
) -> WaterGroupRow | None:
    """The group's figures; None when no section of it has a class this month."""
    group = report["group"]
    if group is None or group["sections"] == 0:
        return None
    last = report["last_year"]["group"] or {}
    return WaterGroupRow.model_validate(
        {
            "kind": kind,
            "code": code,
            "name_zh": name_zh,
            "name": name,
            **{key: group[key] for key in (
                "sections", "good_share", "worse_than_v_share", "compliant_share", "method",
                "grade_zh", "grade", "cwqi",
            )},
            "cwqi_last_year": last.get("cwqi"),
            "cwqi_change_percent": change_percent(group["cwqi"], last.get("cwqi")),
        }
    )  # fmt: skip


def _notes(
    period: Period,
    units: Mapping[str, Mapping[str, Any]],
    air: Sequence[AirUnitReport],
    water: WaterReport,
    now: datetime,
) -> BulletinNotes:
    rule_sets = [unit.rule_set for unit in air] + [unit.last_year_rule_set for unit in air]
    return BulletinNotes(
        rule_sets=list(dict.fromkeys(rule_sets)),
        air_valid_days={unit.unit: unit.this_period.valid_days for unit in air},
        air_days=period.days,
        water_sections_evaluated=sum(s.water_class is not None for s in water.sections),
        water_sections_short=[s.code for s in water.sections if s.water_class is None],
        data_status="incomplete" if period.end > now.astimezone(CST).date() else "provisional",
        episodes_status="not_available" if units["region"].get("episodes") is None else "listed",
    )
