"""API keys, stream tokens and the audit log as the API shows them.

A key's plain text appears once, in the answer to its creation; only its SHA-256 is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Instant, Role, Text

KeyState = Literal["active", "expired", "revoked"]


class KeyIn(BaseModel):
    """A key to create: for an agency, with one or more roles."""

    model_config = ConfigDict(extra="forbid")

    agency: Text = Field(description="Agency code: gz_eeb, dg_eeb or joint_office")
    roles: list[Role] = Field(min_length=1, max_length=5)
    label: Text | None = Field(default=None, max_length=200)
    expires_at: Instant | None = Field(
        default=None, description="When the key stops working; none = never (no offset = +08:00)"
    )
    rate_limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Requests a minute for this key; none = the server's default",
    )


class KeyOut(BaseModel):
    """A key as listed: never the key itself, only the prefix it starts with (elk_<prefix>_…)."""

    id: int
    prefix: str
    agency: str
    roles: list[str]
    label: str | None
    state: KeyState
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(
        description="Last time the key was checked against the database; API processes cache"
        " a checked key for up to 30 s, so uses within that time are not counted again"
    )
    rate_limit: int | None = Field(
        default=None, description="Requests a minute for this key; none = the server's default"
    )


class KeyCreatedOut(KeyOut):
    key: str = Field(description="The API key: shown this once, stored only as a SHA-256")


class MeOut(BaseModel):
    """The caller's own key: who it speaks for and what it may do (GET /v1/me)."""

    key_id: int
    prefix: str
    agency: str
    agency_city: str | None = Field(description="guangzhou, dongguan, or null (joint office)")
    roles: list[str]
    label: str | None
    expires_at: datetime | None = Field(description="When the key stops working; null = never")
    rate_limit: int | None = Field(
        description="Requests a minute this key may make; null when the server has rate limits off"
    )


class StreamTokenOut(BaseModel):
    """A token for `GET /v1/alerts/stream?token=…`, for clients that cannot send headers."""

    token: str
    expires_at: datetime


AuditAction = Literal[
    "readings.push",
    "alert.ack",
    "silence.create",
    "silence.end",
    "maintenance.create",
    "rule.change",
    "subscription.create",
    "subscription.change",
    "subscription.delete",
    "key.create",
    "key.revoke",
]


class AuditEntryOut(BaseModel):
    """One change: who (key and agency; null for the server's command line), what, when."""

    id: int
    at: datetime
    key_id: int | None
    agency: str | None
    action: AuditAction
    target: str = Field(description="What was changed, as kind:id (key:7, alert:42, rule:…)")
    before: dict[str, Any] | None = Field(description="The thing before the change, if it existed")
    after: dict[str, Any] | None = Field(description="The thing after the change, if it exists")
