"""The bulletin as CSV tables: one file a table, UTF-8 with a byte order mark (so that
spreadsheets read the Chinese names), together in a zip.

A figure short of data is written `insufficient_data (have/need)`; an absent one is empty.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from alerts.evaluation.air import CATEGORIES
from alerts.evaluation.rules import POLLUTANTS
from schemas.bulletin import AirDaysRow, Bulletin, Figure, Shortfall, WaterGroupRow

BOM = "\ufeff"
Cell = str | int | float | bool | None


@dataclass(frozen=True)
class Table:
    """One CSV file of the bulletin."""

    name: str
    header: tuple[str, ...]
    rows: list[tuple[Cell | Figure, ...]]

    def csv(self) -> bytes:
        """The table as UTF-8 CSV with a byte order mark."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows([_cell(value) for value in row] for row in self.rows)
        return (BOM + out.getvalue()).encode("utf-8")


def bulletin_tables(bulletin: Bulletin) -> list[Table]:
    """Every table of the bulletin, in the order it prints them."""
    return [
        _summary(bulletin),
        _air_days(bulletin),
        _pollutants(bulletin),
        _primary(bulletin),
        _stations(bulletin),
        _episodes(bulletin),
        _calendar(bulletin),
        _months(bulletin),
        _sections(bulletin),
        _groups(bulletin),
        _notes(bulletin),
    ]


def bulletin_zip(bulletin: Bulletin) -> bytes:
    """The tables as one zip: `<table>.csv` each."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for table in bulletin_tables(bulletin):
            info = zipfile.ZipInfo(f"{table.name}.csv", date_time=_stamp(bulletin))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, table.csv())
    return out.getvalue()


def _stamp(bulletin: Bulletin) -> tuple[int, int, int, int, int, int]:
    at = bulletin.generated_at
    return (max(at.year, 1980), at.month, at.day, at.hour, at.minute, at.second)


def _cell(value: Cell | Figure) -> Cell:
    if isinstance(value, Shortfall):
        return f"insufficient_data ({value.have}/{value.need})"
    return value


def _summary(bulletin: Bulletin) -> Table:
    return Table(
        "summary",
        ("unit", "name_zh", "good_day_share", "good_day_share_last_year",
         "good_day_share_change_points", "composite_index", "composite_index_last_year",
         "composite_index_change_percent"),
        [
            (r.unit, r.name_zh, r.good_day_share, r.good_day_share_last_year,
             r.good_day_share_change_points, r.composite_index, r.composite_index_last_year,
             r.composite_index_change_percent)
            for r in bulletin.summary
        ],
    )  # fmt: skip


def _days_row(unit: str, which: str, rule_set: str, days: AirDaysRow) -> tuple[Cell | Figure, ...]:
    return (
        unit, which, rule_set, days.days, days.valid_days,
        *(days.category_days[key] for key in CATEGORIES),
        days.good_days, days.exceedance_days, days.heavy_pollution_days, days.good_day_share,
    )  # fmt: skip


def _air_days(bulletin: Bulletin) -> Table:
    rows = []
    for unit in bulletin.air:
        rows += [
            _days_row(unit.unit, "this_month", unit.rule_set, unit.this_period),
            _days_row(unit.unit, "last_year", unit.rule_set, unit.last_year),
            _days_row(
                unit.unit, "last_year_as_published", unit.last_year_rule_set,
                unit.last_year_as_published,
            ),
        ]  # fmt: skip
    return Table(
        "air_days",
        ("unit", "period", "rule_set", "days", "valid_days", *CATEGORIES, "good_days",
         "exceedance_days", "heavy_pollution_days", "good_day_share"),
        rows,
    )  # fmt: skip


def _pollutants(bulletin: Bulletin) -> Table:
    rows: list[tuple[Cell | Figure, ...]] = []
    for unit in bulletin.air:
        rows += [
            (unit.unit, p.pollutant, p.statistic, p.unit, p.limit, p.value, p.last_year,
             p.change_percent, p.exceedance_multiple)
            for p in unit.pollutants
        ]  # fmt: skip
        rows.append(
            (unit.unit, "composite_index", "sum", "", None, unit.composite_index,
             unit.composite_index_last_year, unit.composite_index_change_percent, None)
        )  # fmt: skip
    return Table(
        "air_pollutants",
        ("unit", "pollutant", "statistic", "measure_unit", "limit", "value", "last_year",
         "change_percent", "exceedance_multiple"),
        rows,
    )  # fmt: skip


def _primary(bulletin: Bulletin) -> Table:
    rows: list[tuple[Cell | Figure, ...]] = []
    for unit in bulletin.air:
        shares = unit.primary_pollutant_shares or {}
        rows += [(unit.unit, p, unit.primary_pollutant_days[p], shares.get(p)) for p in POLLUTANTS]
    return Table("primary_pollutants", ("unit", "pollutant", "days", "share"), rows)


def _stations(bulletin: Bulletin) -> Table:
    return Table(
        "stations",
        ("rank", "code", "name_zh", "name", "city", "composite_index",
         "composite_index_primary", "good_day_share"),
        [
            (s.rank, s.code, s.name_zh, s.name, s.city, s.composite_index,
             " ".join(s.composite_index_primary), s.good_day_share)
            for s in bulletin.stations
        ],
    )  # fmt: skip


def _episodes(bulletin: Bulletin) -> Table:
    return Table(
        "episodes",
        ("id", "start", "end", "cities", "city_days", "peak_aqi", "peak_category",
         "primary_pollutants", "alert_id"),
        [
            (e.id, e.start, e.end, " ".join(e.cities), e.city_days, e.peak_aqi,
             e.peak_category, " ".join(e.primary_pollutants), e.alert_id)
            for e in bulletin.episodes or []
        ],
    )  # fmt: skip


def _calendar(bulletin: Bulletin) -> Table:
    return Table(
        "aqi_calendar",
        ("city", "day", "aqi", "category"),
        [
            (chart.city, day.day.isoformat(), day.aqi, day.category)
            for chart in bulletin.charts
            for day in chart.calendar
        ],
    )


def _months(bulletin: Bulletin) -> Table:
    return Table(
        "air_months",
        ("city", "month", "rule_set", "valid_days", *CATEGORIES, *POLLUTANTS),
        [
            (chart.city, m.label, m.rule_set, m.valid_days,
             *(m.category_days[key] for key in CATEGORIES),
             *(m.pollutants[p] for p in POLLUTANTS))
            for chart in bulletin.charts
            for m in chart.months
        ],
    )  # fmt: skip


def _sections(bulletin: Bulletin) -> Table:
    return Table(
        "water_sections",
        ("river", "reach", "code", "name_zh", "city", "standard", "target_class", "class",
         "last_year_class", "compliant", "exceedances", "cwqi", "cwqi_last_year",
         "cwqi_change_percent", "insufficient_items"),
        [
            (s.river, s.reach, s.code, s.name_zh, s.city, s.standard, s.target_label,
             s.class_label, s.last_year_class_label, s.compliant, s.exceedances_text, s.cwqi,
             s.cwqi_last_year, s.cwqi_change_percent, " ".join(s.insufficient_items))
            for s in bulletin.water.sections
        ],
    )  # fmt: skip


def _group_rows(groups: Iterable[WaterGroupRow | None]) -> list[tuple[Cell | Figure, ...]]:
    return [
        (g.kind, g.code, g.name_zh, g.sections, g.good_share, g.worse_than_v_share,
         g.compliant_share, g.method, g.grade_zh, g.grade, g.cwqi, g.cwqi_last_year,
         g.cwqi_change_percent)
        for g in groups
        if g is not None
    ]  # fmt: skip


def _groups(bulletin: Bulletin) -> Table:
    water = bulletin.water
    return Table(
        "water_groups",
        ("kind", "code", "name_zh", "sections", "good_share", "worse_than_v_share",
         "compliant_share", "method", "grade_zh", "grade", "cwqi", "cwqi_last_year",
         "cwqi_change_percent"),
        _group_rows([*water.rivers, water.dongjiang_north_main, *water.cities]),
    )  # fmt: skip


def _notes(bulletin: Bulletin) -> Table:
    notes = bulletin.notes
    sea = bulletin.water.shiziyang_sea_area
    rows: Sequence[tuple[Cell, ...]] = [
        ("month", bulletin.month),
        ("generated_at", bulletin.generated_at.isoformat()),
        ("data_status", notes.data_status),
        ("rule_sets", "; ".join(notes.rule_sets)),
        ("air_days", notes.air_days),
        *((f"air_valid_days_{unit}", days) for unit, days in notes.air_valid_days.items()),
        ("water_sections_evaluated", notes.water_sections_evaluated),
        ("water_sections_short", " ".join(notes.water_sections_short)),
        ("shiziyang_sea_area_grade", None if sea is None else sea.grade_zh),
        ("episodes_status", notes.episodes_status),
    ]
    return Table("notes", ("key", "value"), list(rows))
