"""The bulletin as one printable HTML page: Chinese, with English a click away.

Every label is written in both languages (`lang="zh"` and `lang="en"` elements); the page's
class chooses which one shows, a button switches it with a two-line inline script, and printing
prints the language on screen. Nothing is loaded from anywhere: no script, style sheet, font or
image but what the page holds, charts as inline SVG (alerts.bulletin.charts).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Literal

from alerts.bulletin import charts
from alerts.bulletin.assemble import RIVER_NAMES
from alerts.evaluation.air import CATEGORIES
from alerts.evaluation.rules import POLLUTANTS
from schemas.bulletin import (
    AirDaysRow,
    AirUnitReport,
    Bulletin,
    Figure,
    SectionRow,
    Shortfall,
    WaterGroupRow,
)

Language = Literal["zh", "en"]

STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif;
       margin: 24px auto; max-width: 1000px; color: #222; font-size: 14px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 2px solid #1F5FAD; }
h3 { font-size: 15px; margin-top: 18px; }
table { border-collapse: collapse; margin: 8px 0 14px; }
th, td { border: 1px solid #999; padding: 3px 7px; text-align: right; }
th { background: #EEF2F8; text-align: center; } td.text { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.chart { font-family: inherit; } .muted { color: #666; font-size: 12px; }
html.zh [lang="en"], html.en [lang="zh"] { display: none; }
@media print { .no-print { display: none; } body { margin: 0; max-width: none; }
               section { break-inside: avoid-page; } }
@page { size: A4; margin: 14mm; }
"""
SCRIPT = (
    "function envlinkLanguage(){var h=document.documentElement;"
    "h.className=h.className==='zh'?'en':'zh';h.lang=h.className==='zh'?'zh-CN':'en';}"
)
# Labels: (Chinese, English).
L = {
    "title": ("广州—东莞环境质量联合月报", "Guangzhou-Dongguan joint environmental bulletin"),
    "toggle": ("English", "中文"),
    "generated": ("生成时间", "Generated"),
    "status_provisional": ("数据状态：初步（迟到或审核后的数据可能改变数值）",
                           "Data status: provisional (late or audited data may change figures)"),
    "status_incomplete": ("数据状态：本月尚未结束", "Data status: the month has not ended"),
    "s1": ("一、概况", "1. Summary"),
    "s2": ("二、环境空气质量", "2. Air quality"),
    "s3": ("三、地表水与近岸海域水质", "3. Surface and coastal water"),
    "s4": ("四、说明", "4. Notes"),
    "unit": ("区域", "Area"),
    "good_day_share": ("优良天数比例(%)", "Good-day share (%)"),
    "last_year": ("去年同期", "Last year"),
    "change_points": ("变化(百分点)", "Change (points)"),
    "composite_index": ("综合指数", "Composite index"),
    "change_percent": ("变化(%)", "Change (%)"),
    "period": ("时段", "Period"),
    "this_month": ("本月", "This month"),
    "valid_days": ("有效天数", "Valid days"),
    "exceedance_days": ("超标天数", "Exceedance days"),
    "pollutant": ("污染物", "Pollutant"),
    "statistic": ("统计量", "Statistic"),
    "limit": ("限值", "Limit"),
    "multiple": ("超标倍数", "Exceedance multiple"),
    "primary": ("首要污染物", "Primary pollutant"),
    "primary_days": ("天数", "Days"),
    "primary_share": ("占比(%)", "Share (%)"),
    "episodes": ("区域污染过程", "Regional episodes"),
    "episodes_none": ("本月无区域污染过程", "No regional episode this month"),
    "episodes_na": ("区域污染过程尚未纳入空气质量报告，本期不列出",
                    "Regional episodes are not yet part of the air report: none listed"),
    "stations": ("站点综合指数排名", "Stations ranked by composite index"),
    "rank": ("排名", "Rank"),
    "station": ("站点", "Station"),
    "city": ("城市", "City"),
    "calendar": ("AQI 日历", "AQI calendar"),
    "months": ("各月空气质量级别天数", "Category days by month"),
    "trends": ("污染物浓度与限值（各月）", "Pollutants against limits, month by month"),
    "river": ("河流", "River"),
    "section": ("断面", "Section"),
    "target": ("水质目标", "Target"),
    "class": ("水质类别", "Class"),
    "last_year_class": ("去年同期类别", "Last year's class"),
    "compliant": ("达标情况", "Meets target"),
    "exceedances": ("主要超标项目(超标倍数)", "Main items beyond target (multiple)"),
    "cwqi": ("CWQI", "CWQI"),
    "groups": ("河流与城市", "Rivers and cities"),
    "sections": ("断面数", "Sections"),
    "good_share": ("优良(I-III类)比例(%)", "I-III share (%)"),
    "worse_share": ("劣V类比例(%)", "Worse than V (%)"),
    "compliant_share": ("达标率(%)", "Meeting target (%)"),
    "grade": ("水质状况", "Grade"),
    "north_main": ("东江北干流水质状况", "Dongjiang north main stream"),
    "estuary": ("狮子洋水质状况", "Shiziyang estuary"),
    "sea_area": ("狮子洋近岸海域(GB 3097)", "Shiziyang coastal points (GB 3097)"),
    "river_classes": ("沿程断面水质类别", "Section classes along the river"),
    "rule_sets": ("评价依据", "Rule sets applied"),
    "validity": ("数据有效性", "Data validity"),
    "water_evaluated": ("参评断面", "Sections evaluated"),
    "water_short": ("数据不足断面", "Sections short of data"),
    "yes": ("达标", "yes"),
    "no": ("未达标", "no"),
    "insufficient": ("数据不足", "insufficient data"),
    "like_for_like": ("去年同期按本期评价依据重新计算", "Last year recomputed under this rule set"),
}  # fmt: skip
CATEGORY_LABELS = charts.CATEGORY_NAMES


def t(key: str) -> str:
    """A label in both languages."""
    zh, en = L[key]
    return both(zh, en)


def both(zh: str, en: str) -> str:
    """HTML text in both languages."""
    return f'<span lang="zh">{escape(zh)}</span><span lang="en">{escape(en)}</span>'


def figure(value: Figure | str, *, signed: bool = False) -> str:
    """A published figure as printed: '—' when absent, 'insufficient data (n/m)' when short."""
    if value is None:
        return "—"
    if isinstance(value, Shortfall):
        return f"{t('insufficient')} ({value.have}/{value.need})"
    if isinstance(value, bool):
        return t("yes") if value else t("no")
    if signed and isinstance(value, int | float) and value > 0:
        return f"+{value}"
    return escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, texts: int = 1) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{cell}</td>' if i < texts else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(bulletin: Bulletin, language: Language = "zh") -> str:
    """The whole page; `language` is the one shown first."""
    month_zh, month_en = charts.month_title(bulletin.period.start)
    title_zh, title_en = L["title"]
    incomplete = bulletin.notes.data_status == "incomplete"
    status = "status_incomplete" if incomplete else "status_provisional"
    parts = [
        "<!DOCTYPE html>",
        f'<html class="{language}" lang="{"zh-CN" if language == "zh" else "en"}">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title_zh)} {month_zh} / {escape(title_en)}, {month_en}</title>",
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        '<p class="no-print"><button type="button" onclick="envlinkLanguage()">'
        f"{t('toggle')}</button></p>",
        f"<h1>{both(f'{title_zh}（{month_zh}）', f'{title_en}, {month_en}')}</h1>",
        f'<p class="muted">{t("generated")}: {escape(bulletin.generated_at.isoformat())}'
        f" · {t(status)}</p>",
        _summary(bulletin),
        _air(bulletin),
        _water(bulletin),
        _notes(bulletin),
        "</body></html>",
    ]
    return "\n".join(parts)


def _unit_name(unit: AirUnitReport) -> str:
    return both(unit.name_zh, unit.name)


def _summary(bulletin: Bulletin) -> str:
    rows = [
        [both(r.name_zh, r.name), figure(r.good_day_share), figure(r.good_day_share_last_year),
         figure(r.good_day_share_change_points, signed=True), figure(r.composite_index),
         figure(r.composite_index_last_year),
         figure(r.composite_index_change_percent, signed=True)]
        for r in bulletin.summary
    ]  # fmt: skip
    header = [t("unit"), t("good_day_share"), t("last_year"), t("change_points"),
              t("composite_index"), t("last_year"), t("change_percent")]  # fmt: skip
    return (
        f"<section><h2>{t('s1')}</h2>{_table(header, rows)}"
        f'<p class="muted">{t("like_for_like")}</p></section>'
    )


def _days_cells(days: AirDaysRow) -> list[str]:
    return [
        figure(days.valid_days),
        *(figure(days.category_days[key]) for key in CATEGORIES),
        figure(days.exceedance_days),
        figure(days.good_day_share),
    ]


def _air(bulletin: Bulletin) -> str:
    category_header = [both(*CATEGORY_LABELS[key]) for key in CATEGORIES]
    days_rows = []
    for unit in bulletin.air:
        days_rows.append([_unit_name(unit), t("this_month"), *_days_cells(unit.this_period)])
        days_rows.append([_unit_name(unit), t("last_year"), *_days_cells(unit.last_year)])
    days_header = [t("unit"), t("period"), t("valid_days"), *category_header,
                   t("exceedance_days"), t("good_day_share")]  # fmt: skip
    out = [f"<section><h2>{t('s2')}</h2>", _table(days_header, days_rows, texts=2)]
    for unit in bulletin.air:
        rows = [
            [escape(charts.POLLUTANT_NAMES[p.pollutant]), escape(p.statistic),
             figure(p.limit), figure(p.value), figure(p.last_year),
             figure(p.change_percent, signed=True), figure(p.exceedance_multiple)]
            for p in unit.pollutants
        ]  # fmt: skip
        rows.append([t("composite_index"), "", "", figure(unit.composite_index),
                     figure(unit.composite_index_last_year),
                     figure(unit.composite_index_change_percent, signed=True), ""])  # fmt: skip
        header = [t("pollutant"), t("statistic"), t("limit"), t("this_month"), t("last_year"),
                  t("change_percent"), t("multiple")]  # fmt: skip
        out.append(f"<h3>{_unit_name(unit)} · {t('pollutant')}</h3>")
        out.append(_table(header, rows, texts=2))
    primary_rows = [
        [_unit_name(unit), escape(charts.POLLUTANT_NAMES[p]),
         figure(unit.primary_pollutant_days[p]),
         figure((unit.primary_pollutant_shares or {}).get(p))]
        for unit in bulletin.air
        for p in POLLUTANTS
        if unit.primary_pollutant_days[p]
    ]  # fmt: skip
    out.append(f"<h3>{t('primary')}</h3>")
    out.append(_table([t("unit"), t("primary"), t("primary_days"), t("primary_share")],
                      primary_rows, texts=2))  # fmt: skip
    out.append(_episodes(bulletin))
    station_rows = [
        [figure(s.rank), both(s.name_zh, s.name), escape(s.city), figure(s.composite_index),
         escape(" ".join(s.composite_index_primary)), figure(s.good_day_share)]
        for s in bulletin.stations
    ]  # fmt: skip
    out.append(f"<h3>{t('stations')}</h3>")
    out.append(_table([t("rank"), t("station"), t("city"), t("composite_index"), t("primary"),
                       t("good_day_share")], station_rows, texts=3))  # fmt: skip
    out.append(f'<h3>{t("calendar")}</h3><div class="charts">')
    for chart in bulletin.charts:
        out.append(f"<figure><figcaption>{both(*charts.CITY_NAMES[chart.city])}</figcaption>"
                   f"{charts.aqi_calendar(chart)}</figure>")  # fmt: skip
    out.append(f'</div>{_legend()}<h3>{t("months")}</h3><div class="charts">')
    for chart in bulletin.charts:
        out.append(f"<figure><figcaption>{both(*charts.CITY_NAMES[chart.city])}</figcaption>"
                   f"{charts.category_months(chart)}</figure>")  # fmt: skip
    out.append(f"</div><h3>{t('trends')}</h3>{charts.pollutant_trends(bulletin.charts)}")
    out.append("</section>")
    return "".join(out)


def _legend() -> str:
    items = "".join(
        f'<span style="display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;'
        f'background:{charts.CATEGORY_COLOURS[key]};border:1px solid #999"></span>'
        f"{both(*CATEGORY_LABELS[key])}"
        for key in CATEGORIES
    )
    return f'<p class="muted">{items}</p>'


def _episodes(bulletin: Bulletin) -> str:
    heading = f"<h3>{t('episodes')}</h3>"
    if bulletin.episodes is None:
        return f"{heading}<p>{t('episodes_na')}</p>"
    if not bulletin.episodes:
        return f"{heading}<p>{t('episodes_none')}</p>"
    rows = [
        [escape(e.start), escape(e.end or "—"), escape(" ".join(e.cities)), figure(e.city_days),
         figure(e.peak_aqi), escape(e.peak_category), escape(" ".join(e.primary_pollutants))]
        for e in bulletin.episodes
    ]  # fmt: skip
    header = [both("开始", "Start"), both("结束", "End"), t("city"), both("天次", "City-days"),
              both("AQI 峰值", "Peak AQI"), both("级别", "Category"), t("primary")]  # fmt: skip
    return heading + _table(header, rows, texts=3)


def _section_cells(s: SectionRow) -> list[str]:
    river = RIVER_NAMES.get(s.river or "", (s.river or "—", s.river or "—"))
    return [
        both(*river), both(s.name_zh, s.name), escape(s.target_label or "—"),
        escape(s.class_label or "—"), escape(s.last_year_class_label or "—"),
        figure(s.compliant), escape(s.exceedances_text or "—"), figure(s.cwqi),
        figure(s.cwqi_change_percent, signed=True),
    ]  # fmt: skip


def _group_cells(g: WaterGroupRow) -> list[str]:
    return [
        both(g.name_zh, g.name), figure(g.sections), figure(g.good_share),
        figure(g.worse_than_v_share), figure(g.compliant_share),
        both(g.grade_zh or "—", g.grade or "—"), figure(g.cwqi),
        figure(g.cwqi_change_percent, signed=True),
    ]  # fmt: skip


def _water(bulletin: Bulletin) -> str:
    water = bulletin.water
    header = [t("river"), t("section"), t("target"), t("class"), t("last_year_class"),
              t("compliant"), t("exceedances"), t("cwqi"), t("change_percent")]  # fmt: skip
    out = [
        f"<section><h2>{t('s3')}</h2>",
        _table(header, [_section_cells(s) for s in water.sections], texts=2),
        f"<h3>{t('groups')}</h3>",
        _table(
            [t("river"), t("sections"), t("good_share"), t("worse_share"),
             t("compliant_share"), t("grade"), t("cwqi"), t("change_percent")],
            [_group_cells(g) for g in [*water.rivers, *water.cities]],
        ),
    ]  # fmt: skip
    for key, group in (("north_main", water.dongjiang_north_main),
                       ("estuary", water.shiziyang_estuary)):  # fmt: skip
        grade = "—" if group is None else both(group.grade_zh or "—", group.grade or "—")
        out.append(f"<p>{t(key)}: {grade}</p>")
    if water.shiziyang_sea_area is not None:
        sea = water.shiziyang_sea_area
        out.append(f"<p>{t('sea_area')}: {both(sea.grade_zh, sea.grade)}</p>")
    out.append(f"<h3>{t('river_classes')}</h3>")
    for river in dict.fromkeys(s.river for s in water.sections if s.river is not None):
        name = RIVER_NAMES.get(river, (river, river))
        along = [s for s in water.sections if s.river == river]
        out.append(f"<figure><figcaption>{both(*name)}</figcaption>"
                   f"{charts.river_classes(river, name, along)}</figure>")  # fmt: skip
    out.append("</section>")
    return "".join(out)


def _notes(bulletin: Bulletin) -> str:
    notes = bulletin.notes
    valid = ", ".join(
        f"{both(unit.name_zh, unit.name)} {figure(notes.air_valid_days[unit.unit])}/"
        f"{notes.air_days}"
        for unit in bulletin.air
    )
    items = [
        f"{t('rule_sets')}: {escape('; '.join(notes.rule_sets))}",
        f"{t('validity')}: {valid}",
        f"{t('water_evaluated')}: {notes.water_sections_evaluated}",
        f"{t('water_short')}: {escape(' '.join(notes.water_sections_short) or '—')}",
        t("status_incomplete" if notes.data_status == "incomplete" else "status_provisional"),
    ]
    body = "".join(f"<li>{item}</li>" for item in items)
    return f"<section><h2>{t('s4')}</h2><ul>{body}</ul></section>"
