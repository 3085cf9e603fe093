"""What a channel renders: one notification covering one or more alert events of one group.

The notification stage builds a `Notification` from database rows: each `NotificationEvent`
pairs the alert (an `alert` row joined with its rule version, station and parameter) with the
`alert_event` row that caused the message; a repeat carries the alert without an event. The
channels only read these objects; they never touch the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from core.errors import InvalidInput
from schemas.alerts import AlertEventKind, AlertState
from schemas.notifications import LANGUAGES, NOTIFICATION_KINDS, Language, NotificationKind
from schemas.rules import RuleKind, Severity, severity_rank

# The id travels in HTTP headers and in a Message-ID, so it must be printable ASCII without
# spaces; 128 characters is plenty for a bigint or a UUID with a prefix.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


@dataclass(frozen=True, slots=True)
class AgencyInfo:
    """An agency: the subscriber a notification is addressed to."""

    code: str
    name: str
    name_zh: str
    city: str | None = None


@dataclass(frozen=True, slots=True)
class StationInfo:
    """The station an alert is about, as the catalogue describes it."""

    code: str
    name: str
    name_zh: str
    city: str
    area: str
    medium: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class ParameterInfo:
    """A monitored parameter with its canonical unit."""

    code: str
    name: str
    name_zh: str
    unit: str


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """The rule version that raised the alert and the standard it applies."""

    id: str
    version: int
    name: str
    name_zh: str
    standard: str | None = None
    below: bool = False  # a threshold rule that fires below its levels (dissolved oxygen)


@dataclass(frozen=True, slots=True)
class Links:
    """Where a reader finds the alert: its API resource and its CAP document."""

    alert_url: str
    cap_url: str


@dataclass(frozen=True, slots=True)
class AlertSnapshot:
    """An alert as it stands when the notification is built (an `alert` row, with names)."""

    id: int
    kind: RuleKind
    state: AlertState
    severity: Severity
    rule: RuleInfo
    station: StationInfo
    parameter: ParameterInfo | None
    value: float | None
    unit: str | None
    threshold: float | None
    opened_at: datetime
    links: Links
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    retracted_at: datetime | None = None
    trigger_time: datetime | None = None
    # Propagation pre-alerts: the upstream station whose alert this one follows, and the
    # estimated arrival time of the pollution at `station`.
    source_station: StationInfo | None = None
    eta: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of an alert (an `alert_event` row)."""

    id: int
    alert_id: int
    at: datetime
    kind: AlertEventKind
    state: AlertState
    severity: Severity
    value: float | None = None


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """An alert and the event the message reports; `event` is None in a repeat."""

    alert: AlertSnapshot
    event: AlertEvent | None = None

    def __post_init__(self) -> None:
        if self.event is not None and self.event.alert_id != self.alert.id:
            raise InvalidInput(
                f"event {self.event.id} belongs to alert {self.event.alert_id}, "
                f"not to alert {self.alert.id}"
            )

    @property
    def severity(self) -> Severity:
        """The severity the event reports, else the alert's."""
        return self.event.severity if self.event is not None else self.alert.severity

    @property
    def at(self) -> datetime:
        """When it happened: the event's time, else the alert's latest transition."""
        if self.event is not None:
            return self.event.at
        latest = self.alert.retracted_at or self.alert.resolved_at or self.alert.fired_at
        return latest or self.alert.opened_at

    @property
    def value(self) -> float | None:
        """The value the event reports, else the alert's."""
        if self.event is not None and self.event.value is not None:
            return self.event.value
        return self.alert.value


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one subscriber; `id` is the idempotency key every channel sends."""

    id: str
    kind: NotificationKind
    language: Language
    agency: AgencyInfo
    events: tuple[NotificationEvent, ...]
    created_at: datetime

    def __post_init__(self) -> None:
        if not _ID_PATTERN.fullmatch(self.id):
            raise InvalidInput(
                f"notification id {self.id!r}: use 1-128 characters of A-Z a-z 0-9 . _ : / + = @ -"
            )
        if self.kind not in NOTIFICATION_KINDS:
            raise InvalidInput(
                f"notification {self.id}: kind {self.kind!r} is not one of {NOTIFICATION_KINDS}"
            )
        if self.language not in LANGUAGES:
            raise InvalidInput(
                f"notification {self.id}: language {self.language!r} is not one of {LANGUAGES}"
            )
        if not self.events:
            raise InvalidInput(f"notification {self.id} covers no alert")
        if self.created_at.tzinfo is None:
            raise InvalidInput(f"notification {self.id}: created_at must carry an offset")

    @property
    def is_repeat(self) -> bool:
        """A reminder while the alert still fires unacknowledged; it carries no new event."""
        return self.kind == "repeat"

    @property
    def is_resolved(self) -> bool:
        """The alerts it covers have cleared."""
        return self.kind == "resolved"

    @property
    def is_retracted(self) -> bool:
        """The alerts it covers were withdrawn (the data that fired them was re-flagged)."""
        return self.kind == "retracted"

    @property
    def severity(self) -> Severity:
        """The highest severity among the events it covers."""
        return max((item.severity for item in self.events), key=severity_rank)

    @property
    def alerts(self) -> tuple[AlertSnapshot, ...]:
        """The distinct alerts it covers, in the order they first appear."""
        seen: dict[int, AlertSnapshot] = {}
        for item in self.events:
            seen.setdefault(item.alert.id, item.alert)
        return tuple(seen.values())


def alert_links(public_base_url: str, alert_id: int) -> Links:
    """The API and CAP links of an alert under the public base URL."""
    base = public_base_url.rstrip("/")
    return Links(
        alert_url=f"{base}/v1/alerts/{alert_id}", cap_url=f"{base}/v1/alerts/{alert_id}.cap"
    )
