"""Alerts, their timeline, acknowledgements and maintenance windows as the API shows them.

Times are RFC 3339 in Asia/Shanghai (+08:00). Data times (`trigger_time`, `pending_since`) are
the times of the statistic that fired (a window's start); the others say when EnvLink decided.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Area, City, Instant, Text
from schemas.rules import RuleKind, Severity

AlertState = Literal["pending", "firing", "resolved", "retracted"]
AlertEventKind = Literal[
    "pending",
    "firing",
    "escalated",
    "deescalated",
    "resolved",
    "retracted",
    "acknowledged",
    "cancelled",
]


class AlertOut(BaseModel):
    """One alert: one episode of one rule at one station (or one city for city-wide rules, or
    the region for regional episode rules)."""

    id: int
    rule_id: str
    rule_version: int = Field(description="The version of the rule that raised it")
    kind: RuleKind
    state: AlertState
    severity: Severity
    station: str | None = Field(description="None for a city-wide or regional alert")
    city: City | None = Field(description="None for a regional alert (both cities)")
    area: Area | None
    parameter: str | None
    value: float | None = Field(description="The statistic's latest value (canonical unit)")
    opened_at: datetime
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    retracted_at: datetime | None
    last_evaluated_at: datetime
    trigger_time: datetime | None = Field(description="Data time of the point that raised it")
    details: dict[str, Any]
    addressed_to: list[str] = Field(description="Agencies the alert is for")
    acknowledged_by: list[str]
    source_alert_id: int | None = Field(description="The upstream alert of a propagation pre-alert")


class AlertEventOut(BaseModel):
    id: int
    at: datetime
    kind: AlertEventKind
    state: AlertState
    severity: Severity
    value: float | None
    details: dict[str, Any]


class AckOut(BaseModel):
    agency: str
    key_id: int
    at: datetime
    comment: str | None


class AlertDetailOut(AlertOut):
    """An alert with its timeline (every transition, in order) and its acknowledgements."""

    timeline: list[AlertEventOut]
    acks: list[AckOut]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Text | None = Field(default=None, max_length=2000)


class AckResult(BaseModel):
    """`created` is False when the caller's agency had already acknowledged the alert."""

    created: bool
    alert: AlertDetailOut


class MaintenanceIn(BaseModel):
    """Planned work: the station's data in [starts_at, ends_at) raises no alert."""

    model_config = ConfigDict(extra="forbid")

    starts_at: Instant
    ends_at: Instant
    reason: Text = Field(min_length=1, max_length=500)


class MaintenanceOut(BaseModel):
    id: int
    station: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
