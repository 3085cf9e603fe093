"""Subscriptions, silences, notifications and their deliveries, as config and the API write them.

One model serves config/subscriptions.yaml and the admin API, so a subscription is validated the
same way wherever it comes from. Secrets are write-only: no answer ever carries one.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from schemas.alerts import AlertDetailOut
from schemas.common import Area, City, Flag, Instant, Text, Whole
from schemas.config import read_yaml
from schemas.rules import RuleKind, Severity

ChannelName = Literal["webhook", "webhook_cap", "wecom", "dingtalk", "email"]
Language = Literal["zh", "en", "both"]
SubscriptionKind = Literal["alerts", "bulletin"]
GroupLabel = Literal["rule", "station", "area", "city", "kind"]
# "firing" is the first message of a group, "update" a later one with new events, "repeat" a
# reminder without new events, "escalation" the copy sent to a subscription's escalation target.
NotificationKind = Literal["firing", "update", "repeat", "resolved", "retracted", "escalation"]
NotificationStatus = Literal["pending", "sent", "failed", "cancelled"]
AttemptStatus = Literal["sent", "retry", "failed", "interrupted"]
DEFAULT_GROUP_BY: tuple[GroupLabel, ...] = ("rule", "station")
CHANNEL_NAMES: tuple[ChannelName, ...] = ("webhook", "webhook_cap", "wecom", "dingtalk", "email")
LANGUAGES: tuple[Language, ...] = ("zh", "en", "both")
NOTIFICATION_KINDS: tuple[NotificationKind, ...] = (
    "firing",
    "update",
    "repeat",
    "resolved",
    "retracted",
    "escalation",
)
_CODE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_DAY_S = 86400


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_target(channel: ChannelName, target: str) -> None:
    """A URL for the HTTP channels, comma-separated e-mail addresses for e-mail; ValueError."""
    if channel == "email":
        addresses = [part.strip() for part in target.split(",") if part.strip()]
        bad = [a for a in addresses if a.count("@") != 1 or any(c in a for c in " <>;")]
        if not addresses or bad:
            raise ValueError(f"an email target lists addresses separated by commas, not {target!r}")
        return
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a {channel} target is an http(s) URL, not {target!r}")


class Filters(Strict):
    """Which alerts a subscription hears of; a filter left out matches anything."""

    areas: list[Area] | None = Field(default=None, min_length=1)
    cities: list[City] | None = Field(default=None, min_length=1)
    stations: list[Text] | None = Field(default=None, min_length=1)
    kinds: list[RuleKind] | None = Field(default=None, min_length=1)
    rules: list[Text] | None = Field(default=None, min_length=1)
    min_severity: Severity = Field(
        default="advisory", description="Severity at least this (advisory < warning < critical)"
    )


class Escalation(Strict):
    """Where an alert still unacknowledged by the agency `after_s` after it fired is sent."""

    after_s: Whole = Field(gt=0, le=30 * _DAY_S)
    channel: ChannelName
    target: Text = Field(min_length=1, max_length=2000)
    secret: Text | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _target(self) -> Self:
        check_target(self.channel, self.target)
        return self


class SubscriptionIn(Strict):
    """A subscription as the admin API takes it (the agency is the caller's)."""

    code: Text = Field(pattern=_CODE, description="A stable name, unique across agencies")
    enabled: Flag = True
    channel: ChannelName
    target: Text = Field(
        min_length=1, max_length=2000, description="URL, or e-mail addresses separated by commas"
    )
    secret: Text | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Signs webhooks (HMAC-SHA256) and DingTalk URLs; never shown again",
    )
    language: Language = "zh"
    kind: SubscriptionKind = Field(
        default="alerts",
        description="alerts: alert notifications (filters and grouping apply); bulletin: the"
        " monthly joint bulletin",
    )
    filters: Filters = Field(default_factory=Filters)
    group_by: list[GroupLabel] = Field(
        default_factory=lambda: list(DEFAULT_GROUP_BY),
        description="Alert labels a group is keyed on, besides the subscription",
    )
    group_wait_s: Whole = Field(
        default=30, ge=0, le=_DAY_S, description="Wait before the first message of a new group"
    )
    group_wait_critical_s: Whole = Field(
        default=0, ge=0, le=_DAY_S, description="The same wait when the news is critical"
    )
    group_interval_s: Whole = Field(
        default=300, gt=0, le=_DAY_S, description="Wait between messages of one group"
    )
    repeat_interval_s: Whole = Field(
        default=4 * 3600,
        gt=0,
        le=30 * _DAY_S,
        description="Remind while alerts fire unacknowledged by the agency",
    )
    escalation: Escalation | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_target(self.channel, self.target)
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError(f"group_by {self.group_by} names a label twice")
        return self


class SubscriptionConfig(SubscriptionIn):
    """A subscription of config/subscriptions.yaml: the same, with the subscribing agency."""

    agency: Text = Field(min_length=1)


class SubscriptionSet(Strict):
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        codes = [s.code for s in self.subscriptions]
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            raise ValueError(f"subscription codes used twice: {twice}")
        return self


def load_subscriptions(path: Path) -> SubscriptionSet:
    """Read and validate a subscriptions file; a missing file is an empty set."""
    raw = read_yaml(path, required=False) or {}
    try:
        return SubscriptionSet.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            place = ".".join(str(part) for part in error["loc"])
            problems.append(f"{place}: {error['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None


class EscalationOut(BaseModel):
    after_s: int
    channel: ChannelName
    target: str
    has_secret: bool


class SubscriptionOut(BaseModel):
    """A subscription as its agency's admins see it: everything but the secrets."""

    id: int
    code: str
    agency: str
    enabled: bool
    channel: ChannelName
    target: str
    has_secret: bool
    language: Language
    kind: SubscriptionKind
    filters: Filters
    group_by: list[GroupLabel]
    group_wait_s: int
    group_wait_critical_s: int
    group_interval_s: int
    repeat_interval_s: int
    escalation: EscalationOut | None
    changed_via: Literal["config", "api"]
    created_at: datetime
    updated_at: datetime


class SilenceIn(Strict):
    """Mute messages (never alerts) to the caller's agency matching every matcher given."""

    rules: list[Text] | None = Field(default=None, min_length=1)
    stations: list[Text] | None = Field(default=None, min_length=1)
    areas: list[Area] | None = Field(default=None, min_length=1)
    severities: list[Severity] | None = Field(default=None, min_length=1)
    starts_at: Instant | None = Field(default=None, description="Default: now")
    ends_at: Instant
    comment: Text = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _some_matcher(self) -> Self:
        if not (self.rules or self.stations or self.areas or self.severities):
            raise ValueError(
                "give at least one matcher (rules, stations, areas or severities):"
                " a silence of everything would hide every message"
            )
        return self


class SilenceOut(BaseModel):
    id: int
    agency: str
    rules: list[str] | None
    stations: list[str] | None
    areas: list[str] | None
    severities: list[str] | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_at: datetime | None
    active: bool = Field(description="In force now")


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    finished_at: datetime
    status: AttemptStatus
    response_code: int | None
    error: str | None
    worker: str


class NotificationItemOut(BaseModel):
    alert_id: int
    event_id: int | None = Field(description="None in a repeat or an escalation")
    event_kind: str | None
    state: str
    severity: str


class NotificationOut(BaseModel):
    """One message to one target; `key` is the idempotency key its channel sends."""

    id: int
    key: str
    kind: NotificationKind | Literal["bulletin"] = Field(
        description="An alert message's kind, or bulletin (a stored monthly bulletin version)"
    )
    status: NotificationStatus
    agency: str
    subscription: str | None = Field(description="The subscription's code; None once deleted")
    channel: str
    target: str = Field(description="Query strings (robot keys) are shown as ***")
    language: Language
    group_key: str
    created_at: datetime
    due_at: datetime | None = Field(description="Next attempt while pending")
    deadline_at: datetime
    sent_at: datetime | None
    failed_at: datetime | None
    attempts: int
    last_error: str | None
    items: list[NotificationItemOut]


class DeliveryOut(NotificationOut):
    """A notification of an alert with every attempt made to deliver it."""

    attempt_log: list[AttemptOut]


class AlertWithDeliveriesOut(AlertDetailOut):
    """An alert with its timeline, acknowledgements and the notifications about it."""

    deliveries: list[DeliveryOut]


class StreamEventOut(BaseModel):
    """One alert event as GET /v1/alerts/stream pushes it (the SSE id is `id`)."""

    id: int
    alert_id: int
    at: datetime
    kind: str
    state: str
    severity: str
    value: float | None
    rule_id: str
    alert_kind: str
    station: str | None
    city: str | None
    area: str | None
    parameter: str | None
    details: dict[str, Any]
