"""The bulletin's charts as inline SVG (no script, no font or image from elsewhere).

Each chart draws figures the bulletin already holds: the AQI calendar of the month, the category
days of each month of the year so far, the pollutants' monthly statistics against their limits,
and the sections' classes along each river. Text in two languages is drawn twice, in `lang="zh"`
and `lang="en"` groups; the page's style shows one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape

from alerts.evaluation.air import CATEGORIES
from alerts.evaluation.rules import POLLUTANTS
from alerts.standards.tables import AQI_LEVELS
from schemas.bulletin import CityCharts, SectionRow

# HJ 633's colour of each category, and its Chinese and English names.
CATEGORY_COLOURS = dict(zip(CATEGORIES, (row[5] for row in AQI_LEVELS), strict=True))
CATEGORY_NAMES = dict(zip(CATEGORIES, ((row[4], row[3]) for row in AQI_LEVELS), strict=True))
# Water class colours as the cities' bulletins print them: I..V, then 劣V (or 劣四类 at sea).
CLASS_COLOURS = {1: "#CCFFFF", 2: "#00CCFF", 3: "#00FF00", 4: "#FFFF00", 5: "#FF9B00", 6: "#FF0000"}
SEA_WORSE_THAN_4 = 5
NO_DATA = "#E0E0E0"
CITY_COLOURS = {"guangzhou": "#1F5FAD", "dongguan": "#C8501E"}
CITY_NAMES = {"guangzhou": ("广州", "Guangzhou"), "dongguan": ("东莞", "Dongguan")}
POLLUTANT_NAMES = {
    "so2": "SO₂", "no2": "NO₂", "co": "CO (P95)", "o3": "O₃ (MDA8 P90)", "pm10": "PM₁₀",
    "pm25": "PM₂.₅",
}  # fmt: skip
WEEKDAYS = (("一", "Mon"), ("二", "Tue"), ("三", "Wed"), ("四", "Thu"), ("五", "Fri"),
            ("六", "Sat"), ("日", "Sun"))  # fmt: skip
DARK_FROM_LEVEL = 3


def both(zh: str, en: str) -> str:
    """SVG text content in both languages."""
    return f'<tspan lang="zh">{escape(zh)}</tspan><tspan lang="en">{escape(en)}</tspan>'


def _text(x: float, y: float, content: str, *, size: int = 11, anchor: str = "middle",
          fill: str = "#222") -> str:  # fmt: skip
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"'
        f' fill="{fill}">{content}</text>'
    )


def _svg(chart_id: str, width: float, height: float, body: Sequence[str], title: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" role="img" width="{width:.0f}" height="{height:.0f}"'
        f' viewBox="0 0 {width:.0f} {height:.0f}"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def aqi_calendar(chart: CityCharts) -> str:
    """The month's days on a week grid, each coloured by its AQI category, with its AQI."""
    cell_w, cell_h, top = 48, 36, 22
    days = chart.calendar
    first = days[0].day.weekday() if days else 0
    weeks = (first + len(days) + 6) // 7
    body = [_text(i * cell_w + cell_w / 2, 15, both(*w)) for i, w in enumerate(WEEKDAYS)]
    for i, day in enumerate(days):
        slot = first + i
        x, y = (slot % 7) * cell_w, top + (slot // 7) * cell_h
        level = CATEGORIES.index(day.category) if day.category is not None else -1
        fill = CATEGORY_COLOURS[day.category] if day.category is not None else NO_DATA
        ink = "#FFF" if level >= DARK_FROM_LEVEL else "#222"
        shown = "—" if day.aqi is None else str(day.aqi)
        body.append(
            f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}"'
            f' fill="{fill}"><title>{day.day.isoformat()} AQI {shown}</title></rect>'
        )
        body.append(_text(x + 4, y + 12, str(day.day.day), size=9, anchor="start", fill=ink))
        body.append(_text(x + cell_w / 2, y + 28, shown, size=13, fill=ink))
    name_zh, name = CITY_NAMES[chart.city]
    return _svg(
        f"aqi-calendar-{chart.city}", 7 * cell_w, top + weeks * cell_h, body,
        f"{name_zh} AQI 日历 / {name} AQI calendar",
    )  # fmt: skip


def category_months(chart: CityCharts) -> str:
    """Stacked category days of each month of the year so far."""
    left, top, bar, gap, scale = 30, 10, 22, 12, 5
    height = 31 * scale
    body = []
    for tick in (0, 10, 20, 30):
        level = top + height - tick * scale
        body.append(f'<line x1="{left}" y1="{level}" x2="{left + 12 * (bar + gap)}" y2="{level}"'
                    ' stroke="#CCC" stroke-width="0.5"/>')  # fmt: skip
        body.append(_text(left - 4, level + 4, str(tick), size=9, anchor="end"))
    for i, month in enumerate(chart.months):
        x = left + gap / 2 + i * (bar + gap)
        y = float(top + height)
        for key in CATEGORIES:
            days = float(month.category_days[key])
            if days <= 0:
                continue
            y -= days * scale
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar}" height="{days * scale:.1f}"'
                f' fill="{CATEGORY_COLOURS[key]}" stroke="#FFF" stroke-width="0.5">'
                f"<title>{month.label} {key}: {month.category_days[key]}</title></rect>"
            )
        body.append(_text(x + bar / 2, top + height + 14, month.label[5:], size=9))
    name_zh, name = CITY_NAMES[chart.city]
    return _svg(
        f"category-months-{chart.city}", left + 12 * (bar + gap) + 4, top + height + 22, body,
        f"{name_zh} 各月空气质量级别天数 / {name} category days by month",
    )  # fmt: skip


def pollutant_trends(charts: Sequence[CityCharts]) -> str:
    """Each pollutant's monthly statistic per city against its limit (dashed)."""
    panel_w, panel_h, left, top, columns = 230, 130, 34, 20, 3
    body = []
    for index, pollutant in enumerate(POLLUTANTS):
        ox = (index % columns) * (panel_w + 16)
        oy = (index // columns) * (panel_h + 44)
        body.append(_panel(ox, oy, panel_w, panel_h, left, top, pollutant, charts))
    legend_y = 2 * (panel_h + 44) + 4
    for i, city in enumerate(CITY_COLOURS):
        x = 10 + i * 130
        body.append(f'<line x1="{x}" y1="{legend_y}" x2="{x + 24}" y2="{legend_y}"'
                    f' stroke="{CITY_COLOURS[city]}" stroke-width="2"/>')  # fmt: skip
        body.append(_text(x + 30, legend_y + 4, both(*CITY_NAMES[city]), anchor="start"))
    x = 10 + 2 * 130
    body.append(f'<line x1="{x}" y1="{legend_y}" x2="{x + 24}" y2="{legend_y}" stroke="#555"'
                ' stroke-dasharray="4 3"/>')  # fmt: skip
    body.append(_text(x + 30, legend_y + 4, both("限值", "limit"), anchor="start"))
    return _svg(
        "pollutant-trends", columns * (panel_w + 16), legend_y + 14, body,
        "污染物浓度与限值 / pollutants against limits",
    )  # fmt: skip


def _panel(
    ox: float, oy: float, width: float, height: float, left: float, top: float,
    pollutant: str, charts: Sequence[CityCharts],
) -> str:  # fmt: skip
    months = max((len(chart.months) for chart in charts), default=0)
    values = [
        float(v)
        for chart in charts
        for m in chart.months
        for v in (m.pollutants[pollutant], m.limits[pollutant])
        if isinstance(v, int | float)
    ]
    peak = max(values, default=1.0) * 1.15 or 1.0
    plot_w, plot_h = width - left - 6, height - top - 18
    step = plot_w / max(months, 1)

    def at(i: int, value: float) -> tuple[float, float]:
        return ox + left + step * (i + 0.5), oy + top + plot_h - value / peak * plot_h

    parts = [
        _text(ox + left, oy + 12, escape(POLLUTANT_NAMES[pollutant]), anchor="start", size=12),
        f'<rect x="{ox + left}" y="{oy + top}" width="{plot_w:.1f}" height="{plot_h:.1f}"'
        ' fill="none" stroke="#BBB" stroke-width="0.5"/>',
        _text(ox + left - 3, oy + top + 8, f"{peak:.3g}", size=8, anchor="end"),
        _text(ox + left - 3, oy + top + plot_h, "0", size=8, anchor="end"),
    ]
    for chart in charts[:1]:
        for i, m in enumerate(chart.months):
            parts.append(_text(at(i, 0)[0], oy + top + plot_h + 11, m.label[5:], size=8))
            limit = m.limits[pollutant]
            if limit is not None:
                x, y = at(i, float(limit))
                parts.append(f'<line x1="{x - step / 2:.1f}" y1="{y:.1f}" x2="{x + step / 2:.1f}"'
                             f' y2="{y:.1f}" stroke="#555" stroke-dasharray="4 3"/>')  # fmt: skip
    for chart in charts:
        colour = CITY_COLOURS[chart.city]
        run: list[str] = []
        for i, m in enumerate(chart.months):
            value = m.pollutants[pollutant]
            if not isinstance(value, int | float):
                parts.append(_polyline(run, colour))
                run = []
                continue
            x, y = at(i, float(value))
            run.append(f"{x:.1f},{y:.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                         f"<title>{m.label} {value}</title></circle>")  # fmt: skip
        parts.append(_polyline(run, colour))
    return "".join(parts)


def _polyline(points: Sequence[str], colour: str) -> str:
    if len(points) < 2:
        return ""
    return (
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
    )


def river_classes(river: str, name: tuple[str, str], sections: Sequence[SectionRow]) -> str:
    """The river's sections from upstream down: this month's and last year's classes."""
    cell_w, cell_h, left, top = 84, 30, 70, 40
    body = [
        _text(left - 6, top + cell_h / 2 + 4, both("本月", "This month"), anchor="end"),
        _text(left - 6, top + cell_h * 1.5 + 8, both("去年同期", "Last year"), anchor="end"),
    ]
    for i, section in enumerate(sections):
        x = left + i * cell_w
        body.append(_text(x + cell_w / 2, 14, both(section.name_zh, section.name), size=10))
        target = section.target_label or "—"
        body.append(_text(x + cell_w / 2, 30, both(f"目标 {target}", f"target {target}"), size=9))
        for row, (water_class, label) in enumerate(
            [(section.water_class, section.class_label),
             (section.last_year_class, section.last_year_class_label)]
        ):  # fmt: skip
            y = top + row * (cell_h + 4)
            fill = _class_colour(section.standard, water_class)
            body.append(
                f'<rect x="{x + 2}" y="{y}" width="{cell_w - 4}" height="{cell_h}" fill="{fill}">'
                f"<title>{escape(section.code)} {escape(label or '—')}</title></rect>"
            )
            body.append(_text(x + cell_w / 2, y + cell_h / 2 + 4, escape(label or "—"), size=12))
    if len(sections) > 1:
        y = top + 2 * cell_h + 18
        body.append(f'<line x1="{left}" y1="{y}" x2="{left + len(sections) * cell_w - 10}"'
                    f' y2="{y}" stroke="#4A7FB5" stroke-width="2"/>')  # fmt: skip
        body.append(_text(left + len(sections) * cell_w - 6, y + 4, "→", anchor="start"))
    return _svg(
        f"river-classes-{river}", left + max(len(sections), 1) * cell_w + 16,
        top + 2 * cell_h + 26, body, f"{name[0]} 断面水质类别 / {name[1]} section classes",
    )  # fmt: skip


def _class_colour(standard: str, water_class: int | None) -> str:
    if water_class is None:
        return NO_DATA
    if standard.startswith("GB 3097") and water_class == SEA_WORSE_THAN_4:
        return CLASS_COLOURS[6]
    return CLASS_COLOURS.get(water_class, NO_DATA)


MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December")  # fmt: skip


def month_title(day: date) -> tuple[str, str]:
    """'2026年11月' and 'November 2026'."""
    return f"{day.year}年{day.month}月", f"{MONTH_NAMES[day.month - 1]} {day.year}"
