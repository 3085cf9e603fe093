"""Chinese and English text of notifications, shared by every channel.

Plain text serves e-mail; markdown serves the WeCom and DingTalk robots, whose dialects differ
(WeCom colours text with `<font color="warning">` and quotes lines with `>`; DingTalk renders a
plain markdown list). Every time is shown in China Standard Time with its offset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from alerts.notify.message import AlertSnapshot, Notification, NotificationEvent, StationInfo
from core.timeutil import CST
from schemas.notifications import Language
from schemas.rules import Severity

Lang = Literal["zh", "en"]
Flavor = Literal["wecom", "dingtalk"]

SEVERITY_LABELS: dict[Severity, dict[Lang, str]] = {
    "advisory": {"zh": "提示", "en": "Advisory"},
    "warning": {"zh": "警告", "en": "Warning"},
    "critical": {"zh": "严重", "en": "Critical"},
}
# What happened, by alert_event kind; a repeat or an escalation without a new event is labelled
# by the notification kind instead.
TRANSITION_LABELS: dict[str, dict[Lang, str]] = {
    "pending": {"zh": "待定", "en": "PENDING"},
    "firing": {"zh": "告警", "en": "ALERT"},
    "escalated": {"zh": "升级", "en": "ESCALATED"},
    "deescalated": {"zh": "降级", "en": "DE-ESCALATED"},
    "resolved": {"zh": "已解除", "en": "RESOLVED"},
    "retracted": {"zh": "已撤回", "en": "RETRACTED"},
    "acknowledged": {"zh": "已确认", "en": "ACKNOWLEDGED"},
    "cancelled": {"zh": "已取消", "en": "CANCELLED"},
    "update": {"zh": "更新", "en": "UPDATE"},
    "repeat": {"zh": "重复提醒", "en": "REMINDER"},
    "escalation": {"zh": "未确认升级通报", "en": "UNACKNOWLEDGED"},
}
STATE_LABELS: dict[str, dict[Lang, str]] = {
    "pending": {"zh": "待定", "en": "pending"},
    "firing": {"zh": "告警中", "en": "firing"},
    "resolved": {"zh": "已解除", "en": "resolved"},
    "retracted": {"zh": "已撤回", "en": "retracted"},
}
CITY_LABELS: dict[str, dict[Lang, str]] = {
    "guangzhou": {"zh": "广州", "en": "Guangzhou"},
    "dongguan": {"zh": "东莞", "en": "Dongguan"},
    "region": {"zh": "广州—东莞", "en": "Guangzhou–Dongguan"},
}
AREA_LABELS: dict[str, dict[Lang, str]] = {
    "dongjiang": {"zh": "东江", "en": "Dongjiang"},
    "shiziyang": {"zh": "狮子洋", "en": "Shiziyang"},
    "city-wide": {"zh": "全市", "en": "City-wide"},  # city AQI alerts have no station
    "region-wide": {"zh": "区域", "en": "Region-wide"},  # regional episodes have no city
}
# Canonical ASCII units (docs/standards.md §7) as a reader writes them.
_UNIT_DISPLAY: dict[str, dict[Lang, str]] = {
    "ug/m3": {"zh": "μg/m³", "en": "μg/m³"},
    "mg/m3": {"zh": "mg/m³", "en": "mg/m³"},
    "ug/L": {"zh": "μg/L", "en": "μg/L"},
    "uS/cm": {"zh": "μS/cm", "en": "μS/cm"},
    "degC": {"zh": "°C", "en": "°C"},
    "deg": {"zh": "°", "en": "°"},
    "1": {"zh": "", "en": ""},
    "per L": {"zh": "个/L", "en": "per L"},
}
_LABELS: dict[str, dict[Lang, str]] = {
    "station": {"zh": "站点", "en": "Station"},
    "parameter": {"zh": "参数", "en": "Parameter"},
    "value": {"zh": "数值", "en": "Value"},
    "threshold": {"zh": "阈值", "en": "Threshold"},
    "rule": {"zh": "规则", "en": "Rule"},
    "standard": {"zh": "依据标准", "en": "Standard"},
    "state": {"zh": "状态", "en": "State"},
    "data_time": {"zh": "数据时间", "en": "Data time"},
    "event_time": {"zh": "事件时间", "en": "Event time"},
    "upstream": {"zh": "上游站点", "en": "Upstream station"},
    "eta": {"zh": "预计到达", "en": "Expected arrival"},
    "instruction": {"zh": "处置建议", "en": "What to do"},
    "details": {"zh": "告警详情", "en": "Alert details"},
    "alert": {"zh": "告警编号", "en": "Alert"},
}
_PUNCT: dict[Lang, tuple[str, str]] = {"zh": ("：", "，"), "en": (": ", ", ")}


def languages(language: Language) -> tuple[Lang, ...]:
    """The languages a message is written in, Chinese first when both."""
    return ("zh", "en") if language == "both" else (language,)


def format_value(value: float | None) -> str:
    """A measured value with up to six significant digits, never in scientific notation."""
    if value is None:
        return "—"
    if not np.isfinite(value):
        return str(value)
    text: str = np.format_float_positional(
        value, precision=6, unique=True, fractional=False, trim="-"
    )
    return text


def display_unit(unit: str | None, lang: Lang) -> str:
    """A canonical unit as a reader writes it (ug/m3 → μg/m³)."""
    if unit is None:
        return ""
    return _UNIT_DISPLAY.get(unit, {}).get(lang, unit)


def quantity(value: float | None, unit: str | None, lang: Lang) -> str:
    """A value and its unit, e.g. "182.4 μg/m³"."""
    shown = display_unit(unit, lang)
    return f"{format_value(value)} {shown}" if shown and value is not None else format_value(value)


def format_time(moment: datetime) -> str:
    """A time in China Standard Time with its offset, to the minute."""
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M +08:00")


def format_delay(delay: timedelta, lang: Lang) -> str:
    """A duration the way a duty officer reads it: minutes under an hour, else hours."""
    minutes = max(0, round(delay.total_seconds() / 60))
    if minutes < 60:
        return f"约 {minutes} 分钟" if lang == "zh" else f"about {minutes} min"
    hours = format_value(round(minutes / 60, 1))
    return f"约 {hours} 小时" if lang == "zh" else f"about {hours} h"


def station_name(station: StationInfo, lang: Lang) -> str:
    """The station's name in one language."""
    return station.name_zh if lang == "zh" else station.name


def place(station: StationInfo, lang: Lang) -> str:
    """Station name, code, city and area, e.g. "黄埔 (gz-a-huangpu)，广州 · 东江"."""
    city = CITY_LABELS.get(station.city, {}).get(lang, station.city)
    area = AREA_LABELS.get(station.area, {}).get(lang, station.area)
    comma = _PUNCT[lang][1]
    return f"{station_name(station, lang)} ({station.code}){comma}{city} · {area}"


def parameter_name(alert: AlertSnapshot, lang: Lang) -> str | None:
    """The parameter's name in one language, or None for alerts on a whole station."""
    if alert.parameter is None:
        return None
    return alert.parameter.name_zh if lang == "zh" else alert.parameter.name


def what(alert: AlertSnapshot, lang: Lang) -> str:
    """What the alert is about, e.g. "PM2.5 above threshold" / "细颗粒物超过阈值" (or "below"
    / "低于" for a rule that fires below its levels, like dissolved oxygen)."""
    name = parameter_name(alert, lang)
    below = alert.rule.below
    if lang == "zh":
        zh = {
            "threshold": f"{name or ''}{'低于' if below else '超过'}阈值",
            "aqi": "空气质量指数超过阈值",
            "water_class": f"水质未达目标类别{f'（{name}）' if name else ''}",
            "staleness": f"数据中断{f'（{name}）' if name else ''}",
            "rate_of_change": f"{name or '监测值'}突变",
            "propagation": f"上游{name or ''}污染预计到达",
            "regional_episode": "区域空气污染过程",
        }
        return zh[alert.kind]
    en = {
        "threshold": f"{name or 'value'} {'below' if below else 'above'} threshold",
        "aqi": "AQI above threshold",
        "water_class": f"water quality below target class{f' ({name})' if name else ''}",
        "staleness": f"station silent{f' ({name})' if name else ''}",
        "rate_of_change": f"rapid change in {name or 'readings'}",
        "propagation": f"upstream {name + ' ' if name else ''}pollution expected",
        "regional_episode": "regional air pollution episode",
    }
    return en[alert.kind]


def happened(item: NotificationEvent, notification: Notification) -> str:
    """What the message reports: the event's kind, or the notification's kind for a repeat."""
    return item.event.kind if item.event is not None else notification.kind


def headline(item: NotificationEvent, notification: Notification, lang: Lang) -> str:
    """One line: severity, what happened, where, e.g. "[严重] 告警：黄埔 细颗粒物超过阈值"."""
    return f"[{SEVERITY_LABELS[item.severity][lang]}] {title(item, notification, lang)}"


def title(item: NotificationEvent, notification: Notification, lang: Lang) -> str:
    """What happened, where: "告警：黄埔 细颗粒物超过阈值" / "ALERT: PM2.5 above threshold at …"."""
    return title_for(item.alert, happened(item, notification), lang)


def title_for(alert: AlertSnapshot, key: str, lang: Lang) -> str:
    """The title of an alert for what happened to it (an event or notification kind)."""
    label = TRANSITION_LABELS[key][lang] + _PUNCT[lang][0]
    where = station_name(alert.station, lang)
    if lang == "zh":
        return f"{label}{where} {what(alert, lang)}"
    return f"{label}{what(alert, lang)} at {where}"


def subject(notification: Notification, lang: Lang) -> str:
    """The e-mail subject / robot title of a notification in one language."""
    first = headline(notification.events[0], notification, lang)
    more = len(notification.events) - 1
    if more:
        first += f"（另 {more} 条）" if lang == "zh" else f" (+{more} more)"
    return f"[EnvLink]{first}"


def full_subject(notification: Notification) -> str:
    """The subject in the notification's language(s), Chinese / English when both."""
    return " / ".join(subject(notification, lang) for lang in languages(notification.language))


def instruction(item: NotificationEvent, notification: Notification, lang: Lang) -> str:
    """What the reader should do, by what happened."""
    return instruction_for(item.alert, happened(item, notification), lang)


def instruction_for(alert: AlertSnapshot, key: str, lang: Lang) -> str:
    """What the reader should do about an alert, by what happened to it."""
    # A repeat, an update or an escalation without an event is about the alert as it stands.
    now = alert.state if key in ("repeat", "update", "escalation") else key
    if now == "retracted":
        return (
            "触发该告警的数据已被判定为异常值，告警撤回，无需处置。"
            if lang == "zh"
            else "The data that fired this alert was re-flagged as an outlier: the alert is "
            "withdrawn and no action is needed."
        )
    if now in ("resolved", "cancelled"):
        return (
            "告警已解除，无需进一步处置。"
            if lang == "zh"
            else "The alert has cleared; no further action is needed."
        )
    if alert.kind == "staleness":
        return (
            "请检查站点通信链路与仪器状态。"
            if lang == "zh"
            else "Check the station's communication link and instruments."
        )
    if alert.kind == "propagation":
        return (
            "请下游辖区提前准备，重点关注预计到达时间前后的监测数据。"
            if lang == "zh"
            else "Downstream: prepare now and watch the readings around the expected arrival time."
        )
    return (
        "请值班人员核实数据，按两市联防联控预案处置，处置后在系统中确认告警。"
        if lang == "zh"
        else "Duty officer: verify the data, act under the two cities' joint response plan, and "
        "acknowledge the alert once handled."
    )


def fields(item: NotificationEvent, lang: Lang) -> list[tuple[str, str]]:
    """The labelled facts of one event, in reading order; absent facts are left out."""
    alert = item.alert
    label = {key: names[lang] for key, names in _LABELS.items()}
    rows = [(label["station"], place(alert.station, lang))]
    name = parameter_name(alert, lang)
    if name is not None and alert.parameter is not None:
        rows.append((label["parameter"], f"{name} ({alert.parameter.code})"))
    if item.value is not None:
        rows.append((label["value"], quantity(item.value, alert.unit, lang)))
    if alert.threshold is not None:
        rows.append((label["threshold"], quantity(alert.threshold, alert.unit, lang)))
    rule_name = alert.rule.name_zh if lang == "zh" else alert.rule.name
    rows.append((label["rule"], f"{rule_name} ({alert.rule.id} v{alert.rule.version})"))
    if alert.rule.standard:
        rows.append((label["standard"], alert.rule.standard))
    rows.append((label["state"], STATE_LABELS[alert.state][lang]))
    if alert.trigger_time is not None:
        rows.append((label["data_time"], format_time(alert.trigger_time)))
    rows.append((label["event_time"], format_time(item.at)))
    if alert.source_station is not None:
        rows.append((label["upstream"], place(alert.source_station, lang)))
    if alert.eta is not None:
        eta = format_time(alert.eta)
        delay = format_delay(alert.eta - item.at, lang)
        rows.append((label["eta"], f"{eta}（{delay}）" if lang == "zh" else f"{eta} ({delay})"))
    rows.append((label["alert"], f"#{alert.id}"))
    return rows


def _footer(notification: Notification, lang: Lang) -> str:
    agency = notification.agency.name_zh if lang == "zh" else notification.agency.name
    if lang == "zh":
        return (
            f"发送给：{agency}。通知编号 {notification.id}（重发时编号不变）。"
            "本消息由 EnvLink 广州—东莞环境联合监测平台自动发送。"
        )
    return (
        f"Sent to: {agency}. Notification {notification.id} (a re-send keeps this id). "
        "Sent automatically by EnvLink, the Guangzhou–Dongguan joint environmental monitoring."
    )


def render_text(notification: Notification, lang: Lang) -> str:
    """The plain-text body of a notification in one language (e-mail)."""
    colon = _PUNCT[lang][0]
    blocks = [subject(notification, lang)]
    for item in notification.events:
        lines = [headline(item, notification, lang)]
        lines += [f"  {name}{colon}{value}" for name, value in fields(item, lang)]
        lines.append(
            f"  {_LABELS['instruction'][lang]}{colon}{instruction(item, notification, lang)}"
        )
        lines.append(f"  {_LABELS['details'][lang]}{colon}{item.alert.links.alert_url}")
        lines.append(f"  CAP{colon}{item.alert.links.cap_url}")
        blocks.append("\n".join(lines))
    blocks.append(_footer(notification, lang))
    return "\n\n".join(blocks) + "\n"


_WECOM_COLOUR: dict[Severity, str] = {
    "advisory": "comment",
    "warning": "warning",
    "critical": "warning",
}


def _markdown_block(
    item: NotificationEvent, notification: Notification, lang: Lang, flavor: Flavor
) -> str:
    colon = _PUNCT[lang][0]
    severity = SEVERITY_LABELS[item.severity][lang]
    if flavor == "wecom":
        severity = f'<font color="{_WECOM_COLOUR[item.severity]}">{severity}</font>'
    lines = [f"#### **{severity}** {title(item, notification, lang)}"]
    facts = fields(item, lang)
    facts.append((_LABELS["instruction"][lang], instruction(item, notification, lang)))
    if flavor == "wecom":
        lines += [f"> {name}{colon}{value}" for name, value in facts]
    else:
        lines += [f"- {name}{colon}{value}" for name, value in facts]
    links = item.alert.links
    lines.append(f"[{_LABELS['details'][lang]}]({links.alert_url}) · [CAP]({links.cap_url})")
    # DingTalk joins single newlines into one paragraph; a blank line keeps each fact apart.
    return ("\n" if flavor == "wecom" else "\n\n").join(lines)


def render_markdown(notification: Notification, flavor: Flavor, *, max_bytes: int) -> str:
    """Markdown for a group robot, within `max_bytes` of UTF-8: whole events first, then a note."""
    sections = []
    budget = max_bytes // len(languages(notification.language))
    for lang in languages(notification.language):
        sections.append(_markdown_section(notification, lang, flavor, budget))
    text = "\n\n---\n\n".join(sections)
    return truncate_utf8(text, max_bytes, marker="\n…")


def _markdown_section(notification: Notification, lang: Lang, flavor: Flavor, budget: int) -> str:
    head = f"### {subject(notification, lang)}"
    footer = _footer(notification, lang)
    blocks = [_markdown_block(item, notification, lang, flavor) for item in notification.events]
    sep = "\n\n"

    def assemble(shown: Sequence[str], hidden: int) -> str:
        parts = [head, *shown]
        if hidden:
            parts.append(
                f"…另有 {hidden} 条事件未显示"
                if lang == "zh"
                else f"… {hidden} more events not shown"
            )
        parts.append(footer)
        return sep.join(parts)

    return _fit(blocks, assemble, budget)


def _fit(blocks: Sequence[str], assemble: Callable[[Sequence[str], int], str], budget: int) -> str:
    """Keep as many whole blocks as fit the budget; cut the text only if not even one fits."""
    for count in range(len(blocks), 0, -1):
        text = assemble(blocks[:count], len(blocks) - count)
        if len(text.encode()) <= budget:
            return text
    return truncate_utf8(assemble(blocks[:1], len(blocks) - 1), budget, marker="\n…")


def truncate_utf8(text: str, max_bytes: int, *, marker: str = "…") -> str:
    """Cut text to at most max_bytes of UTF-8 without splitting a character, at a line if close."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    room = max_bytes - len(marker.encode())
    if room <= 0:
        return marker.encode()[:max_bytes].decode(errors="ignore")
    # errors="ignore" drops the partial character a byte cut may leave at the end.
    cut = encoded[:room].decode(errors="ignore")
    newline = cut.rfind("\n")
    # Cutting at a line keeps markdown tags and links whole; only if that loses little text.
    if newline >= len(cut) * 3 // 4:
        cut = cut[:newline]
    return cut + marker
