"""Notification text (zh/en), markdown limits, CAP 1.2 documents against the OASIS schema, and
the pure helpers of the channels (signatures, classification, Message-IDs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus
from xml.etree import ElementTree as ET

import pytest
import xmlschema

from alerts.notify.channels.base import status_for_http
from alerts.notify.channels.cap import CAP_NAMESPACE, cap_identifier, cap_sender, render_cap
from alerts.notify.channels.dingtalk import dingtalk_sign, signed_url
from alerts.notify.channels.email import build_message, message_id, recipients
from alerts.notify.channels.webhook import sign, verify_signature
from alerts.notify.message import (
    AgencyInfo,
    AlertEvent,
    AlertSnapshot,
    Notification,
    NotificationEvent,
    ParameterInfo,
    RuleInfo,
    StationInfo,
    alert_links,
)
from alerts.notify.render import (
    format_time,
    format_value,
    full_subject,
    headline,
    place,
    quantity,
    render_markdown,
    render_text,
    subject,
    truncate_utf8,
)
from core.errors import InvalidInput
from tests.conftest import ROOT

CAP_SCHEMA = xmlschema.XMLSchema(ROOT / "schemas" / "cap" / "CAP-v1.2.xsd")
NS = {"cap": CAP_NAMESPACE}
SENDER = "envlink@envlink.example.cn"
BASE_URL = "https://envlink.example.cn"
FIRED = datetime(2026, 11, 26, 4, 0, 5, 250_000, tzinfo=UTC)  # 12:00:05.25 CST

HUANGPU = StationInfo(
    code="gz-a-huangpu",
    name="Huangpu",
    name_zh="黄埔",
    city="guangzhou",
    area="dongjiang",
    medium="air",
    lat=23.1047,
    lon=113.4332,
)
SHILONG = StationInfo(
    code="dg-w-shilong",
    name="Shilong",
    name_zh="石龙",
    city="dongguan",
    area="dongjiang",
    medium="water",
    lat=23.11,
    lon=113.85,
)
DADUN = StationInfo(
    code="gz-w-dadun",
    name="Dadun",
    name_zh="大墩",
    city="guangzhou",
    area="dongjiang",
    medium="water",
    lat=23.05,
    lon=113.65,
)
PM25 = ParameterInfo(code="pm25", name="PM2.5", name_zh="细颗粒物", unit="ug/m3")
NH3N = ParameterInfo(code="nh3n", name="Ammonia nitrogen", name_zh="氨氮", unit="mg/L")
GZ = AgencyInfo(code="gz_eeb", name="Guangzhou EEB", name_zh="广州市生态环境局", city="guangzhou")


def pm25_alert(**changes: object) -> AlertSnapshot:
    """A firing critical PM2.5 threshold alert at Huangpu."""
    alert = AlertSnapshot(
        id=42,
        kind="threshold",
        state="firing",
        severity="critical",
        rule=RuleInfo("pm25-1h", 3, "PM2.5 hourly", "PM2.5 小时均值", "GB 3095-2012"),
        station=HUANGPU,
        parameter=PM25,
        value=182.4,
        unit="ug/m3",
        threshold=150.0,
        opened_at=FIRED,
        links=alert_links(BASE_URL + "/", 42),
        fired_at=FIRED,
        trigger_time=datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
    )
    return replace(alert, **changes)  # type: ignore[arg-type]


def propagation_alert() -> AlertSnapshot:
    """A warning pre-alert at Dadun for ammonia arriving from Shilong in 2.5 hours."""
    return AlertSnapshot(
        id=77,
        kind="propagation",
        state="firing",
        severity="warning",
        rule=RuleInfo("nh3n-propagation", 1, "Ammonia upstream", "氨氮上游传播", "GB 3838-2002"),
        station=DADUN,
        parameter=NH3N,
        value=2.4,
        unit="mg/L",
        threshold=1.5,
        opened_at=FIRED,
        links=alert_links(BASE_URL, 77),
        fired_at=FIRED,
        trigger_time=datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
        source_station=SHILONG,
        eta=FIRED + timedelta(hours=2, minutes=30),
    )


def event(alert_id: int, event_id: int, kind: str, at: datetime, **changes: object) -> AlertEvent:
    """An alert_event row."""
    state = {"resolved": "resolved", "retracted": "retracted", "pending": "pending"}.get(
        kind, "firing"
    )
    base = AlertEvent(event_id, alert_id, at, kind, state, "critical", 182.4)  # type: ignore[arg-type]
    return replace(base, **changes)  # type: ignore[arg-type]


def notification(
    items: list[NotificationEvent], *, kind: str = "firing", language: str = "zh"
) -> Notification:
    """A notification to the Guangzhou bureau."""
    return Notification(
        id="ntf-1001",
        kind=kind,  # type: ignore[arg-type]
        language=language,  # type: ignore[arg-type]
        agency=GZ,
        events=tuple(items),
        created_at=FIRED + timedelta(seconds=1),
    )


def firing_notification(language: str = "zh") -> Notification:
    """The first message of the PM2.5 alert."""
    alert = pm25_alert()
    return notification(
        [NotificationEvent(alert, event(42, 1, "firing", FIRED))], language=language
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (182.4, "182.4"),
        (150.0, "150"),
        (0.00005, "0.00005"),
        (7.25, "7.25"),
        (1234567.0, "1234570"),
        (-3.5, "-3.5"),
        (0.0, "0"),
        (None, "—"),
    ],
)
def test_values_are_short_and_never_scientific(value: float | None, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("value", "unit", "lang", "text"),
    [
        (182.4, "ug/m3", "zh", "182.4 μg/m³"),
        (1.2, "mg/m3", "en", "1.2 mg/m³"),
        (7.1, "1", "en", "7.1"),
        (25.5, "degC", "zh", "25.5 °C"),
        (2000.0, "per L", "zh", "2000 个/L"),
        (2000.0, "per L", "en", "2000 per L"),
        (3.0, "NTU", "en", "3 NTU"),
        (None, "ug/m3", "en", "—"),
    ],
)
def test_quantities_read_as_people_write_them(
    value: float | None, unit: str, lang: str, text: str
) -> None:
    assert quantity(value, unit, lang) == text  # type: ignore[arg-type]


def test_a_city_wide_alert_names_the_city_in_both_languages() -> None:
    city = replace(HUANGPU, code="guangzhou", name="guangzhou", name_zh="guangzhou",
                   area="city-wide")  # fmt: skip
    assert place(city, "zh") == "guangzhou (guangzhou)，广州 · 全市"
    assert place(city, "en") == "guangzhou (guangzhou), Guangzhou · City-wide"


def test_a_regional_episode_is_placed_in_the_region() -> None:
    region = replace(HUANGPU, code="region", name="Guangzhou–Dongguan (region)",
                     name_zh="广州—东莞（区域）", city="region", area="region-wide")  # fmt: skip
    assert place(region, "zh") == "广州—东莞（区域） (region)，广州—东莞 · 区域"
    assert place(region, "en") == (
        "Guangzhou–Dongguan (region) (region), Guangzhou–Dongguan · Region-wide"
    )
    episode = replace(pm25_alert(), kind="regional_episode", parameter=None, station=region)
    firing = notification([NotificationEvent(episode)], kind="firing")
    assert headline(firing.events[0], firing, "zh") == (
        "[严重] 告警：广州—东莞（区域） 区域空气污染过程"
    )
    assert headline(firing.events[0], firing, "en") == (
        "[Critical] ALERT: regional air pollution episode at Guangzhou–Dongguan (region)"
    )


def test_a_rule_that_fires_below_its_levels_says_below() -> None:
    rule = RuleInfo("do_low", 1, "Dissolved oxygen low", "溶解氧偏低", "GB 3838-2002", below=True)
    do = ParameterInfo(code="do", name="Dissolved oxygen", name_zh="溶解氧", unit="mg/L")
    alert = pm25_alert(rule=rule, parameter=do, value=1.6, unit="mg/L", threshold=2.0)
    firing = notification([NotificationEvent(alert, event(42, 1, "firing", FIRED))])
    assert headline(firing.events[0], firing, "zh") == "[严重] 告警：黄埔 溶解氧低于阈值"
    assert (
        headline(firing.events[0], firing, "en")
        == "[Critical] ALERT: Dissolved oxygen below threshold at Huangpu"
    )


def test_times_are_shown_in_china_standard_time() -> None:
    assert format_time(datetime(2026, 11, 26, 16, 30, 59, tzinfo=UTC)) == "2026-11-27 00:30 +08:00"


def test_headlines_in_both_languages_for_each_transition() -> None:
    alert = pm25_alert()
    firing = notification([NotificationEvent(alert, event(42, 1, "firing", FIRED))])
    assert headline(firing.events[0], firing, "zh") == "[严重] 告警：黄埔 细颗粒物超过阈值"
    assert (
        headline(firing.events[0], firing, "en")
        == "[Critical] ALERT: PM2.5 above threshold at Huangpu"
    )

    resolved_alert = replace(alert, state="resolved", resolved_at=FIRED + timedelta(hours=2))
    resolved = notification(
        [NotificationEvent(resolved_alert, event(42, 5, "resolved", FIRED + timedelta(hours=2)))],
        kind="resolved",
    )
    assert headline(resolved.events[0], resolved, "zh") == "[严重] 已解除：黄埔 细颗粒物超过阈值"
    assert (
        headline(resolved.events[0], resolved, "en")
        == "[Critical] RESOLVED: PM2.5 above threshold at Huangpu"
    )

    repeat = notification([NotificationEvent(alert)], kind="repeat")
    assert headline(repeat.events[0], repeat, "zh") == "[严重] 重复提醒：黄埔 细颗粒物超过阈值"
    assert (
        headline(repeat.events[0], repeat, "en")
        == "[Critical] REMINDER: PM2.5 above threshold at Huangpu"
    )

    silent = replace(
        alert, kind="staleness", parameter=None, value=None, threshold=None, severity="warning"
    )
    stale = notification([NotificationEvent(silent)], kind="firing")
    assert headline(stale.events[0], stale, "zh") == "[警告] 告警：黄埔 数据中断"
    assert headline(stale.events[0], stale, "en") == "[Warning] ALERT: station silent at Huangpu"


def test_plain_text_in_chinese_names_every_fact() -> None:
    text = render_text(firing_notification(), "zh")
    assert text == (
        "[EnvLink][严重] 告警：黄埔 细颗粒物超过阈值\n"
        "\n"
        "[严重] 告警：黄埔 细颗粒物超过阈值\n"
        "  站点：黄埔 (gz-a-huangpu)，广州 · 东江\n"
        "  参数：细颗粒物 (pm25)\n"
        "  数值：182.4 μg/m³\n"
        "  阈值：150 μg/m³\n"
        "  规则：PM2.5 小时均值 (pm25-1h v3)\n"
        "  依据标准：GB 3095-2012\n"
        "  状态：告警中\n"
        "  数据时间：2026-11-26 11:00 +08:00\n"
        "  事件时间：2026-11-26 12:00 +08:00\n"
        "  告警编号：#42\n"
        "  处置建议：请值班人员核实数据，按两市联防联控预案处置，处置后在系统中确认告警。\n"
        "  告警详情：https://envlink.example.cn/v1/alerts/42\n"
        "  CAP：https://envlink.example.cn/v1/alerts/42.cap\n"
        "\n"
        "发送给：广州市生态环境局。通知编号 ntf-1001（重发时编号不变）。"
        "本消息由 EnvLink 广州—东莞环境联合监测平台自动发送。\n"
    )


def test_plain_text_in_english_for_a_propagation_pre_alert() -> None:
    alert = propagation_alert()
    message = notification(
        [NotificationEvent(alert, event(77, 9, "firing", FIRED, severity="warning", value=2.4))],
        language="en",
    )
    assert render_text(message, "en") == (
        "[EnvLink][Warning] ALERT: upstream Ammonia nitrogen pollution expected at Dadun\n"
        "\n"
        "[Warning] ALERT: upstream Ammonia nitrogen pollution expected at Dadun\n"
        "  Station: Dadun (gz-w-dadun), Guangzhou · Dongjiang\n"
        "  Parameter: Ammonia nitrogen (nh3n)\n"
        "  Value: 2.4 mg/L\n"
        "  Threshold: 1.5 mg/L\n"
        "  Rule: Ammonia upstream (nh3n-propagation v1)\n"
        "  Standard: GB 3838-2002\n"
        "  State: firing\n"
        "  Data time: 2026-11-26 11:00 +08:00\n"
        "  Event time: 2026-11-26 12:00 +08:00\n"
        "  Upstream station: Shilong (dg-w-shilong), Dongguan · Dongjiang\n"
        "  Expected arrival: 2026-11-26 14:30 +08:00 (about 2.5 h)\n"
        "  Alert: #77\n"
        "  What to do: Downstream: prepare now and watch the readings around the expected "
        "arrival time.\n"
        "  Alert details: https://envlink.example.cn/v1/alerts/77\n"
        "  CAP: https://envlink.example.cn/v1/alerts/77.cap\n"
        "\n"
        "Sent to: Guangzhou EEB. Notification ntf-1001 (a re-send keeps this id). Sent "
        "automatically by EnvLink, the Guangzhou–Dongguan joint environmental monitoring.\n"
    )


def test_retraction_and_resolution_say_no_action_is_needed() -> None:
    alert = pm25_alert(state="retracted", retracted_at=FIRED + timedelta(hours=1))
    retracted = notification(
        [NotificationEvent(alert, event(42, 3, "retracted", FIRED + timedelta(hours=1)))],
        kind="retracted",
        language="both",
    )
    zh = render_text(retracted, "zh")
    en = render_text(retracted, "en")
    assert "处置建议：触发该告警的数据已被判定为异常值，告警撤回，无需处置。" in zh
    assert "What to do: The data that fired this alert was re-flagged as an outlier" in en
    assert full_subject(retracted) == (
        "[EnvLink][严重] 已撤回：黄埔 细颗粒物超过阈值 / "
        "[EnvLink][Critical] RETRACTED: PM2.5 above threshold at Huangpu"
    )


def test_a_notification_of_several_events_counts_them_in_its_subject() -> None:
    alert = pm25_alert()
    items = [NotificationEvent(alert, event(42, i, "escalated", FIRED)) for i in range(1, 4)]
    message = notification(items, kind="update")
    assert subject(message, "zh") == "[EnvLink][严重] 升级：黄埔 细颗粒物超过阈值（另 2 条）"
    assert (
        subject(message, "en")
        == "[EnvLink][Critical] ESCALATED: PM2.5 above threshold at Huangpu (+2 more)"
    )
    assert message.severity == "critical"
    assert [a.id for a in message.alerts] == [42]


def test_wecom_markdown_quotes_facts_and_colours_the_severity() -> None:
    text = render_markdown(firing_notification(), "wecom", max_bytes=4096)
    lines = text.split("\n")
    assert lines[0] == "### [EnvLink][严重] 告警：黄埔 细颗粒物超过阈值"
    assert lines[2] == '#### **<font color="warning">严重</font>** 告警：黄埔 细颗粒物超过阈值'
    assert lines[3] == "> 站点：黄埔 (gz-a-huangpu)，广州 · 东江"
    assert (
        "[告警详情](https://envlink.example.cn/v1/alerts/42) · [CAP](https://envlink.example.cn/v1/alerts/42.cap)"
        in lines
    )


def test_dingtalk_markdown_keeps_facts_in_separate_paragraphs() -> None:
    text = render_markdown(firing_notification("en"), "dingtalk", max_bytes=20000)
    assert (
        "- Station: Huangpu (gz-a-huangpu), Guangzhou · Dongjiang\n\n- Parameter: PM2.5 (pm25)"
        in text
    )
    assert "<font" not in text


def test_long_notifications_keep_whole_events_within_the_byte_limit() -> None:
    alert = pm25_alert()
    items = [NotificationEvent(alert, event(42, i, "escalated", FIRED)) for i in range(60)]
    message = notification(items, kind="update", language="both")
    text = render_markdown(message, "wecom", max_bytes=4096)
    assert len(text.encode()) <= 4096
    zh, en = text.split("\n\n---\n\n")
    zh_shown = zh.count("#### ")
    en_shown = en.count("#### ")
    assert zh_shown >= 1 and en_shown >= 1
    assert f"…另有 {60 - zh_shown} 条事件未显示" in zh
    assert f"… {60 - en_shown} more events not shown" in en
    # Each language gets half the budget.
    assert len(zh.encode()) <= 2048 and len(en.encode()) <= 2048


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 100, "short"),
        ("ab汉字", 5, "ab…"),
        ("汉字汉字", 8, "汉…"),
        ("line one\nline two\nline three is long", 24, "line one\nline two…"),
        ("abcdef", 2, ""),
    ],
)
def test_truncation_never_splits_a_character(text: str, limit: int, expected: str) -> None:
    cut = truncate_utf8(text, limit, marker="…")
    assert cut == expected
    assert len(cut.encode()) <= limit


def test_truncating_a_huge_single_event_stays_valid_utf8() -> None:
    long_rule = RuleInfo("r", 1, "x" * 10, "规" * 3000, None)
    alert = pm25_alert(rule=long_rule)
    message = notification([NotificationEvent(alert, event(42, 1, "firing", FIRED))])
    text = render_markdown(message, "wecom", max_bytes=4096)
    encoded = text.encode()
    assert len(encoded) <= 4096
    assert encoded.decode() == text
    assert text.endswith("\n…")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"id": "has space"}, "notification id 'has space'"),
        ({"id": ""}, "notification id ''"),
        ({"events": ()}, "covers no alert"),
        ({"language": "fr"}, "language 'fr'"),
        ({"kind": "nag"}, "kind 'nag'"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at must carry an offset"),
    ],
)
def test_a_malformed_notification_is_refused_with_what_is_wrong(
    changes: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        replace(firing_notification(), **changes)  # type: ignore[arg-type]


def test_an_event_of_another_alert_is_refused() -> None:
    with pytest.raises(InvalidInput, match="event 1 belongs to alert 9, not to alert 42"):
        NotificationEvent(pm25_alert(), event(9, 1, "firing", FIRED))


def cap(document: bytes) -> ET.Element:
    """Validate a CAP document against the OASIS schema and return its root."""
    CAP_SCHEMA.validate(document.decode())
    return ET.fromstring(document)


def texts(root: ET.Element, path: str) -> list[str]:
    return [e.text or "" for e in root.findall(path, NS)]


def test_the_schema_rejects_what_cap_forbids() -> None:
    document = render_cap(pm25_alert(), sender=SENDER).decode()
    CAP_SCHEMA.validate(document)
    for broken in (
        document.replace("<status>Actual</status>", "<status>Real</status>"),
        document.replace("<category>Env</category>", "<category>Air</category>"),
        document.replace("+08:00</sent>", "</sent>"),
        document.replace("<scope>Public</scope>", ""),
    ):
        assert not CAP_SCHEMA.is_valid(broken)


def test_a_firing_alert_is_a_cap_alert_message() -> None:
    root = cap(render_cap(pm25_alert(), sender=SENDER))
    assert texts(root, "cap:identifier") == ["envlink-42-firing-20261126T040005Z"]
    assert texts(root, "cap:sender") == [SENDER]
    assert texts(root, "cap:sent") == ["2026-11-26T12:00:05+08:00"]
    assert texts(root, "cap:status") == ["Actual"]
    assert texts(root, "cap:msgType") == ["Alert"]
    assert texts(root, "cap:scope") == ["Public"]
    assert texts(root, "cap:references") == []
    assert texts(root, "cap:info/cap:language") == ["zh-CN", "en-US"]
    assert texts(root, "cap:info/cap:category") == ["Env", "Env"]
    assert texts(root, "cap:info/cap:urgency") == ["Immediate", "Immediate"]
    assert texts(root, "cap:info/cap:severity") == ["Severe", "Severe"]
    assert texts(root, "cap:info/cap:certainty") == ["Observed", "Observed"]
    assert texts(root, "cap:info/cap:onset") == ["2026-11-26T11:00:00+08:00"] * 2
    assert texts(root, "cap:info/cap:expires") == ["2026-11-27T12:00:05+08:00"] * 2
    assert texts(root, "cap:info/cap:headline") == [
        "告警：黄埔 细颗粒物超过阈值",
        "ALERT: PM2.5 above threshold at Huangpu",
    ]
    assert texts(root, "cap:info/cap:web") == ["https://envlink.example.cn/v1/alerts/42"] * 2
    assert texts(root, "cap:info/cap:area/cap:circle") == ["23.104700,113.433200 5"] * 2
    assert texts(root, "cap:info/cap:area/cap:areaDesc") == [
        "黄埔 (gz-a-huangpu)，广州 · 东江",
        "Huangpu (gz-a-huangpu), Guangzhou · Dongjiang",
    ]
    en = root.findall("cap:info", NS)[1]
    parameters = {
        p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
        for p in en.findall("cap:parameter", NS)
    }
    assert parameters == {
        "EnvLink:alert": "42",
        "EnvLink:kind": "threshold",
        "EnvLink:state": "firing",
        "EnvLink:severity": "critical",
        "EnvLink:rule": "pm25-1h v3",
        "EnvLink:station": "gz-a-huangpu",
        "EnvLink:standard": "GB 3095-2012",
        "EnvLink:parameter": "pm25",
        "EnvLink:value": "182.4",
        "EnvLink:threshold": "150",
        "EnvLink:unit": "ug/m3",
        "EnvLink:dataTime": "2026-11-26T11:00:00+08:00",
    }


@pytest.mark.parametrize(
    ("severity", "cap_severity", "urgency"),
    [
        ("critical", "Severe", "Immediate"),
        ("warning", "Moderate", "Expected"),
        ("advisory", "Minor", "Future"),
    ],
)
def test_severity_maps_to_cap_severity_and_urgency(
    severity: str, cap_severity: str, urgency: str
) -> None:
    root = cap(render_cap(pm25_alert(severity=severity), sender=SENDER, language="en"))
    assert texts(root, "cap:info/cap:severity") == [cap_severity]
    assert texts(root, "cap:info/cap:urgency") == [urgency]
    assert texts(root, "cap:info/cap:certainty") == ["Observed"]


def test_an_escalation_is_an_update_referencing_the_original() -> None:
    timeline = [
        event(42, 1, "pending", FIRED - timedelta(minutes=10)),
        event(42, 2, "firing", FIRED, severity="warning", value=120.0),
        event(42, 3, "acknowledged", FIRED + timedelta(minutes=5)),
        event(42, 4, "escalated", FIRED + timedelta(hours=1), value=182.4),
    ]
    root = cap(render_cap(pm25_alert(), timeline, sender=SENDER, language="zh"))
    assert texts(root, "cap:msgType") == ["Update"]
    assert texts(root, "cap:identifier") == ["envlink-42-escalated-20261126T050005Z"]
    assert texts(root, "cap:sent") == ["2026-11-26T13:00:05+08:00"]
    assert texts(root, "cap:references") == [
        f"{SENDER},envlink-42-firing-20261126T040005Z,2026-11-26T12:00:05+08:00"
    ]
    assert texts(root, "cap:info/cap:severity") == ["Severe"]
    assert texts(root, "cap:info/cap:headline") == ["升级：黄埔 细颗粒物超过阈值"]


def test_a_resolution_cancels_and_references_every_earlier_message() -> None:
    resolved_at = FIRED + timedelta(hours=3)
    alert = pm25_alert(state="resolved", resolved_at=resolved_at)
    timeline = [
        event(42, 2, "firing", FIRED, severity="warning"),
        event(42, 4, "escalated", FIRED + timedelta(hours=1)),
        event(42, 6, "resolved", resolved_at, value=60.0),
    ]
    root = cap(render_cap(alert, timeline, sender=SENDER, language="en"))
    assert texts(root, "cap:msgType") == ["Cancel"]
    assert texts(root, "cap:identifier") == ["envlink-42-resolved-20261126T070005Z"]
    assert texts(root, "cap:references") == [
        f"{SENDER},envlink-42-firing-20261126T040005Z,2026-11-26T12:00:05+08:00 "
        f"{SENDER},envlink-42-escalated-20261126T050005Z,2026-11-26T13:00:05+08:00"
    ]
    assert texts(root, "cap:note") == ["alert 42 resolved"]
    assert texts(root, "cap:info/cap:urgency") == ["Past"]
    assert texts(root, "cap:info/cap:certainty") == ["Observed"]
    assert texts(root, "cap:info/cap:responseType") == ["AllClear"]


def test_a_retraction_without_its_event_follows_the_alert_state() -> None:
    retracted_at = FIRED + timedelta(minutes=20)
    alert = pm25_alert(state="retracted", retracted_at=retracted_at)
    root = cap(render_cap(alert, sender=SENDER, language="en"))
    assert texts(root, "cap:msgType") == ["Cancel"]
    assert texts(root, "cap:identifier") == ["envlink-42-retracted-20261126T042005Z"]
    assert texts(root, "cap:references") == [
        f"{SENDER},envlink-42-firing-20261126T040005Z,2026-11-26T12:00:05+08:00"
    ]
    assert texts(root, "cap:info/cap:certainty") == ["Unlikely"]
    assert texts(root, "cap:info/cap:responseType") == ["None"]


def test_a_propagation_pre_alert_is_a_likely_expected_event_with_its_eta() -> None:
    root = cap(render_cap(propagation_alert(), sender=SENDER, language="en"))
    assert texts(root, "cap:info/cap:urgency") == ["Future"]
    assert texts(root, "cap:info/cap:severity") == ["Moderate"]
    assert texts(root, "cap:info/cap:certainty") == ["Likely"]
    assert texts(root, "cap:info/cap:responseType") == ["Prepare"]
    assert texts(root, "cap:info/cap:onset") == ["2026-11-26T14:30:05+08:00"]
    assert texts(root, "cap:info/cap:area/cap:circle") == ["23.050000,113.650000 2"]
    critical = cap(
        render_cap(replace(propagation_alert(), severity="critical"), sender=SENDER, language="en")
    )
    assert texts(critical, "cap:info/cap:urgency") == ["Expected"]


def test_the_api_and_a_webhook_publish_the_same_message_identity() -> None:
    alert = pm25_alert()
    escalation = event(42, 4, "escalated", FIRED + timedelta(hours=1))
    whole_timeline = [event(42, 2, "firing", FIRED), escalation]
    from_api = cap(render_cap(alert, whole_timeline, sender=SENDER))
    from_webhook = cap(render_cap(alert, [escalation], sender=SENDER))
    for path in ("cap:identifier", "cap:sent", "cap:msgType", "cap:references"):
        assert texts(from_api, path) == texts(from_webhook, path)
    assert render_cap(alert, [escalation], sender=SENDER) == render_cap(
        alert, [escalation], sender=SENDER
    )


def test_an_alert_that_never_fired_has_no_cap_message() -> None:
    pending = pm25_alert(state="pending", fired_at=None)
    with pytest.raises(InvalidInput, match="alert 42 never fired \\(state pending\\)"):
        render_cap(pending, [event(42, 1, "pending", FIRED)], sender=SENDER)


def test_cap_refuses_foreign_events_and_a_bad_sender() -> None:
    with pytest.raises(InvalidInput, match="events \\[5\\] do not belong to alert 42"):
        render_cap(pm25_alert(), [event(7, 5, "firing", FIRED)], sender=SENDER)
    with pytest.raises(InvalidInput, match="CAP sender 'env link'"):
        render_cap(pm25_alert(), sender="env link")


def test_identifiers_and_sender_follow_the_deployment() -> None:
    assert cap_identifier(5, "firing", datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == (
        "envlink-5-firing-20260102T030405Z"
    )
    assert cap_sender("https://envlink.gz-dg.cn:8443/api") == "envlink@envlink.gz-dg.cn"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (200, "sent"),
        (202, "sent"),
        (204, "sent"),
        (301, "failed"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (408, "retry"),
        (413, "failed"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
    ],
)
def test_http_statuses_are_classified(code: int, status: str) -> None:
    assert status_for_http(code) == status


def test_webhook_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"s3cret", b"1764129605." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1764129605, body) == f"sha256={expected}"
    signature = sign("s3cret", 1764129605, body)
    ok = {"timestamp": "1764129605", "body": body, "signature": signature, "now": 1764129700.0}
    assert verify_signature("s3cret", **ok)  # type: ignore[arg-type]
    assert not verify_signature("wrong", **ok)  # type: ignore[arg-type]
    assert not verify_signature("s3cret", **{**ok, "body": b'{"a":2}'})  # type: ignore[arg-type]
    assert not verify_signature("s3cret", **{**ok, "now": 1764129605.0 + 301})  # type: ignore[arg-type]
    assert not verify_signature("s3cret", **{**ok, "timestamp": "17641296O5"})  # type: ignore[arg-type]


def test_dingtalk_signature_follows_its_documented_recipe() -> None:
    secret = "SEC0123456789abcdef"
    digest = hmac.new(secret.encode(), f"1764129605000\n{secret}".encode(), hashlib.sha256).digest()
    assert dingtalk_sign(secret, 1764129605000) == quote_plus(base64.b64encode(digest))
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=t", secret, 1764129605000)
    assert url == (
        "https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=1764129605000"
        f"&sign={quote_plus(base64.b64encode(digest))}"
    )
    assert signed_url("http://x/robot/send", None, 1) == "http://x/robot/send"


@pytest.mark.parametrize(
    ("notification_id", "expected"),
    [
        ("ntf-1001", "<envlink.ntf-1001@example.cn>"),
        ("a.b:c=d", "<envlink.a=2Eb=3Ac=3Dd@example.cn>"),
        ("a=2Eb", "<envlink.a=3D2Eb@example.cn>"),
    ],
)
def test_message_ids_are_derived_from_the_notification_id(
    notification_id: str, expected: str
) -> None:
    assert message_id(notification_id, "example.cn") == expected


def test_recipients_are_parsed_and_bad_ones_named() -> None:
    assert recipients("duty@gz.example.cn, Ops <ops@dg.example.cn>") == [
        "duty@gz.example.cn",
        "ops@dg.example.cn",
    ]
    with pytest.raises(ValueError, match="'nobody' is not an e-mail address"):
        recipients("duty@gz.example.cn, nobody")
    with pytest.raises(ValueError, match="no e-mail address in ' '"):
        recipients(" ")


def test_an_email_in_both_languages_has_a_chinese_and_an_english_part() -> None:
    message = build_message(
        firing_notification("both"),
        from_address="EnvLink <alerts@envlink.example.cn>",
        to=["a@b.cn"],
    )
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p["Content-Language"] for p in parts] == ["zh-CN", "en-US"]
    assert [p.get_content_disposition() for p in parts] == ["inline", "inline"]
    # The SMTP policy writes CRLF line ends, as the protocol wants.
    zh, en = (p.get_content().replace("\r\n", "\n") for p in parts)
    assert zh == render_text(firing_notification("both"), "zh")
    assert en == render_text(firing_notification("both"), "en")
    assert message["Message-ID"] == "<envlink.ntf-1001@envlink.example.cn>"
    raw = bytes(message)
    assert raw.isascii()
