"""CAP 1.2 (OASIS Common Alerting Protocol) documents of alerts, for emergency systems.

One alert is one CAP incident. Its messages are derived from the alert and its events alone, so
`GET /v1/alerts/{id}.cap` and a webhook in CAP format publish the same identifiers:

- the alert firing is the `Alert` message, sent at `fired_at`;
- escalated / de-escalated events are `Update` messages, resolved / retracted / cancelled ones
  `Cancel` messages; both reference the original `Alert` and the updates before them;
- identifier = `envlink-<alert id>-<message kind>-<sent, UTC, to the second>`.

Mapping of EnvLink's severity ladder (a measured exceedance is an observed fact; a propagation
pre-alert is a forecast):

| EnvLink   | CAP severity | urgency (observed / propagation) | certainty (observed / propagation) |
|-----------|--------------|----------------------------------|------------------------------------|
| critical  | Severe       | Immediate / Expected             | Observed / Likely                  |
| warning   | Moderate     | Expected / Future                | Observed / Likely                  |
| advisory  | Minor        | Future / Future                  | Observed / Likely                  |

`Extreme` is never used: one station's reading cannot establish an extraordinary threat to life.
A `Cancel` has urgency `Past`; certainty `Observed` when the alert cleared, `Unlikely` when it was
retracted (the data that fired it was re-flagged as an outlier). Category is always `Env`.
The area is a circle around the station: 5 km for air stations, 2 km for water stations.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from alerts.notify.message import AlertEvent, AlertSnapshot, NotificationEvent
from alerts.notify.render import (
    Lang,
    fields,
    format_value,
    instruction_for,
    languages,
    place,
    title_for,
    what,
)
from core.errors import InvalidInput
from core.timeutil import CST
from schemas.notifications import Language
from schemas.rules import Severity

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_CONTENT_TYPE = "application/cap+xml"
CapStatus = Literal["Actual", "Exercise", "System", "Test", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel"]

SEVERITY: dict[Severity, str] = {"critical": "Severe", "warning": "Moderate", "advisory": "Minor"}
URGENCY_OBSERVED: dict[Severity, str] = {
    "critical": "Immediate",
    "warning": "Expected",
    "advisory": "Future",
}
URGENCY_FORECAST: dict[Severity, str] = {
    "critical": "Expected",
    "warning": "Future",
    "advisory": "Future",
}
RADIUS_KM: dict[str, float] = {"air": 5.0, "water": 2.0}
CAP_LANGUAGE: dict[Lang, str] = {"zh": "zh-CN", "en": "en-US"}
SENDER_NAME: dict[Lang, str] = {
    "zh": "广州—东莞环境联合监测平台（EnvLink）",
    "en": "Guangzhou–Dongguan joint environmental monitoring (EnvLink)",
}
# CAP 1.2 §3.2.1: identifiers and senders hold no spaces, commas, '<' or '&'.
_RESERVED = re.compile(r"[\s,<&]")
_MSG_TYPE: dict[str, MsgType] = {
    "firing": "Alert",
    "escalated": "Update",
    "deescalated": "Update",
    "resolved": "Cancel",
    "retracted": "Cancel",
    "cancelled": "Cancel",
}


@dataclass(frozen=True, slots=True)
class _Message:
    kind: str
    sent: datetime
    severity: Severity
    value: float | None
    event: AlertEvent | None

    @property
    def msg_type(self) -> MsgType:
        return _MSG_TYPE[self.kind]


def cap_sender(public_base_url: str) -> str:
    """The CAP sender of this deployment: envlink@<host of the public base URL>."""
    host = urlsplit(public_base_url).hostname or "localhost"
    return f"envlink@{host}"


def cap_time(moment: datetime) -> str:
    """A CAP time: China Standard Time with its offset, to the second (the schema's pattern)."""
    return moment.astimezone(CST).replace(microsecond=0).isoformat()


def cap_identifier(alert_id: int, kind: str, sent: datetime) -> str:
    """The identifier of the CAP message for one transition of an alert."""
    stamp = sent.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"envlink-{alert_id}-{kind}-{stamp}"


def render_cap(
    alert: AlertSnapshot,
    events: Sequence[AlertEvent] = (),
    *,
    sender: str,
    language: Language = "both",
    status: CapStatus = "Actual",
    expires_after: timedelta = timedelta(hours=24),
) -> bytes:
    """The CAP 1.2 document (UTF-8 XML) of an alert's latest message among `events`.

    `events` are the alert's `alert_event` rows (its whole timeline, or the ones a notification
    reports); without any, the message follows the alert's state. An alert that never fired has
    no CAP message: that is an InvalidInput.
    """
    if not sender or _RESERVED.search(sender):
        raise InvalidInput(
            f"CAP sender {sender!r} must be non-empty without spaces, ',', '<' or '&'"
        )
    messages = _messages(alert, events)
    current = messages[-1]
    original = messages[0]
    root = ET.Element(_q("alert"))
    _text(root, "identifier", cap_identifier(alert.id, current.kind, current.sent))
    _text(root, "sender", sender)
    _text(root, "sent", cap_time(current.sent))
    _text(root, "status", status)
    _text(root, "msgType", current.msg_type)
    _text(root, "source", "EnvLink")
    _text(root, "scope", "Public")
    if current.msg_type == "Cancel":
        _text(root, "note", f"alert {alert.id} {current.kind}")
    if current is not original:
        earlier = messages[:-1]
        _text(root, "references", " ".join(_reference(alert.id, m, sender) for m in earlier))
    _text(root, "incidents", f"envlink-{alert.id}")
    for lang in languages(language):
        _info(root, alert, current, lang, expires_after)
    ET.indent(root)
    body: bytes = ET.tostring(
        root, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NAMESPACE
    )
    return body


def render_cap_for(item: NotificationEvent, *, sender: str, language: Language) -> bytes:
    """The CAP document of one notification item (its alert and the event it reports)."""
    events = () if item.event is None else (item.event,)
    return render_cap(item.alert, events, sender=sender, language=language)


def _messages(alert: AlertSnapshot, events: Sequence[AlertEvent]) -> list[_Message]:
    """The alert's CAP messages in order: the original Alert first, the described one last."""
    foreign = [event.id for event in events if event.alert_id != alert.id]
    if foreign:
        raise InvalidInput(f"events {foreign} do not belong to alert {alert.id}")
    worthy = sorted((e for e in events if e.kind in _MSG_TYPE), key=lambda e: (e.at, e.id))
    fired_at = alert.fired_at or next((e.at for e in worthy if e.kind == "firing"), None)
    if fired_at is None:
        raise InvalidInput(
            f"alert {alert.id} never fired (state {alert.state}): there is no CAP message for it"
        )
    firing = next((e for e in worthy if e.kind == "firing"), None)
    original = _Message(
        "firing",
        _second(fired_at),
        firing.severity if firing else alert.severity,
        firing.value if firing and firing.value is not None else alert.value,
        firing,
    )
    messages = [original]
    for event in worthy:
        if event.kind == "firing":
            continue
        value = event.value if event.value is not None else alert.value
        messages.append(_Message(event.kind, _second(event.at), event.severity, value, event))
    if not worthy:
        ended_at = alert.retracted_at if alert.state == "retracted" else alert.resolved_at
        if alert.state in ("resolved", "retracted") and ended_at is not None:
            messages.append(
                _Message(alert.state, _second(ended_at), alert.severity, alert.value, None)
            )
    return messages


def _info(
    root: ET.Element, alert: AlertSnapshot, message: _Message, lang: Lang, expires_after: timedelta
) -> None:
    forecast = alert.kind == "propagation"
    cancel = message.msg_type == "Cancel"
    info = ET.SubElement(root, _q("info"))
    _text(info, "language", CAP_LANGUAGE[lang])
    _text(info, "category", "Env")
    _text(info, "event", what(alert, lang))
    if cancel:
        _text(info, "responseType", "AllClear" if message.kind != "retracted" else "None")
    else:
        _text(info, "responseType", "Prepare" if forecast else "Monitor")
    if cancel:
        urgency = "Past"
    else:
        urgency = (URGENCY_FORECAST if forecast else URGENCY_OBSERVED)[message.severity]
    _text(info, "urgency", urgency)
    _text(info, "severity", SEVERITY[message.severity])
    if message.kind == "retracted":
        certainty = "Unlikely"
    else:
        certainty = "Likely" if forecast and not cancel else "Observed"
    _text(info, "certainty", certainty)
    _text(info, "effective", cap_time(message.sent))
    onset = alert.eta if forecast and alert.eta else alert.trigger_time or alert.fired_at
    if onset is not None:
        _text(info, "onset", cap_time(onset))
    _text(info, "expires", cap_time(message.sent + expires_after))
    _text(info, "senderName", SENDER_NAME[lang])
    _text(info, "headline", title_for(alert, message.kind, lang))
    item = NotificationEvent(alert, message.event)
    colon = "：" if lang == "zh" else ": "
    described = [f"{name}{colon}{value}" for name, value in fields(item, lang)]
    _text(info, "description", "\n".join(described))
    _text(info, "instruction", instruction_for(alert, message.kind, lang))
    _text(info, "web", alert.links.alert_url)
    for name, value in _parameters(alert, message):
        parameter = ET.SubElement(info, _q("parameter"))
        _text(parameter, "valueName", name)
        _text(parameter, "value", value)
    area = ET.SubElement(info, _q("area"))
    _text(area, "areaDesc", place(alert.station, lang))
    radius = RADIUS_KM.get(alert.station.medium, 2.0)
    _text(area, "circle", f"{alert.station.lat:.6f},{alert.station.lon:.6f} {radius:g}")


def _parameters(alert: AlertSnapshot, message: _Message) -> list[tuple[str, str]]:
    pairs = [
        ("EnvLink:alert", str(alert.id)),
        ("EnvLink:kind", alert.kind),
        ("EnvLink:state", alert.state),
        ("EnvLink:severity", message.severity),
        ("EnvLink:rule", f"{alert.rule.id} v{alert.rule.version}"),
        ("EnvLink:station", alert.station.code),
    ]
    if alert.rule.standard:
        pairs.append(("EnvLink:standard", alert.rule.standard))
    if alert.parameter is not None:
        pairs.append(("EnvLink:parameter", alert.parameter.code))
    if message.value is not None:
        pairs.append(("EnvLink:value", format_value(message.value)))
    if alert.threshold is not None:
        pairs.append(("EnvLink:threshold", format_value(alert.threshold)))
    if alert.unit is not None:
        pairs.append(("EnvLink:unit", alert.unit))
    if alert.trigger_time is not None:
        pairs.append(("EnvLink:dataTime", cap_time(alert.trigger_time)))
    if alert.source_station is not None:
        pairs.append(("EnvLink:upstreamStation", alert.source_station.code))
    if alert.eta is not None:
        pairs.append(("EnvLink:eta", cap_time(alert.eta)))
    return pairs


def _reference(alert_id: int, message: _Message, sender: str) -> str:
    return (
        f"{sender},{cap_identifier(alert_id, message.kind, message.sent)},{cap_time(message.sent)}"
    )


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _q(tag: str) -> str:
    return f"{{{CAP_NAMESPACE}}}{tag}"


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, _q(tag))
    element.text = text
    return element
