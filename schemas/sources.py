"""What config/sources.yaml holds: MQTT options and the HTTP feeds pulled on a schedule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from schemas.config import read_yaml

Period = Literal[0, 60, 3600, 86400]
# Dotted paths into a JSON document: `data.records`, `values.0.v`; "" is the document itself.
DottedPath = Annotated[str, Field(pattern=r"^$|^[^.\s]+(\.[^.\s]+)*$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttOptions(Strict):
    """How the subscriber batches, reconnects and bounds payloads (credentials live in settings)."""

    batch_window_s: float = Field(default=0.1, gt=0, le=10)
    batch_max_messages: int = Field(default=500, ge=1, le=10_000)
    max_payload_bytes: int = Field(default=1_000_000, ge=1_000, le=100_000_000)
    keepalive_s: int = Field(default=30, ge=2, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Connect, subscribe, publish")
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    # Stations whose simulated readings the simulator publishes over MQTT instead of its own path.
    simulator_stations: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _backoff(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


class FeedBase(Strict):
    """Schedule, timeouts, retries and the window arithmetic every pulled feed shares."""

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    enabled: bool = True
    interval_s: float = Field(default=900, gt=0, le=86400)
    timeout_s: float = Field(default=10, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0, le=60)
    backoff_max_s: float = Field(default=60.0, ge=0, le=3600)
    lookback_s: int = Field(default=86400, ge=60, description="First run: how far back to start")
    max_window_s: int = Field(default=86400, ge=60, description="Longest window in one request")
    max_windows_per_run: int = Field(default=48, ge=1, le=10_000)
    settle_s: int = Field(default=0, ge=0, description="Leave the newest seconds for next time")
    max_pages: int = Field(default=100, ge=1, le=10_000)
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the X-API-Key header's value"
    )


class OpenAqSensor(Strict):
    """One upstream sensor and the EnvLink series its measurements feed."""

    sensor: int = Field(ge=1)
    location: int | None = Field(default=None, ge=1, description="For the /latest freshness call")
    station: str
    parameter: str


class OpenAqFeed(FeedBase):
    """An OpenAQ-v3-style API: /v3/sensors/{id}/measurements and /v3/locations/{id}/latest."""

    kind: Literal["openaq_v3"]
    base_url: str = Field(pattern=r"^https?://")
    page_limit: int = Field(default=1000, ge=1, le=1000)
    sensors: list[OpenAqSensor] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_sensors(self) -> Self:
        seen = [s.sensor for s in self.sensors]
        if len(seen) != len(set(seen)):
            raise ValueError(f"feed {self.code}: a sensor is listed twice")
        return self


class JsonMapping(Strict):
    """Where a generic feed keeps things: dotted paths into the document and into each item."""

    items: DottedPath = ""
    time: DottedPath
    value: DottedPath
    station: DottedPath | None = None
    parameter: DottedPath | None = None
    unit: DottedPath | None = None
    period_s: DottedPath | None = None
    flag: DottedPath | None = None


class JsonFeed(FeedBase):
    """Any JSON API that answers a time range with a list of readings, mapped by dotted paths.

    Items are kept when their time falls in the window (from, to]; a value from `station_map` /
    `parameter_map` translates the feed's own names, constants fill what the items do not carry.
    """

    kind: Literal["json"]
    url: str = Field(pattern=r"^https?://")
    from_param: str = "from"
    to_param: str = "to"
    time_format: Literal["iso", "epoch_s", "epoch_ms"] = "iso"
    page_param: str | None = None
    page_size_param: str | None = None
    page_size: int = Field(default=1000, ge=1, le=100_000)
    mapping: JsonMapping
    station: str | None = None
    parameter: str | None = None
    unit: str | None = None
    period_s: Period = 0
    station_map: dict[str, str] = Field(default_factory=dict)
    parameter_map: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        for name in ("station", "parameter", "unit"):
            if getattr(self.mapping, name) is None and getattr(self, name) is None:
                raise ValueError(f"feed {self.code}: give mapping.{name} or a constant {name}")
        if (self.page_size_param is not None) and self.page_param is None:
            raise ValueError(f"feed {self.code}: page_size_param needs page_param")
        return self


Feed = Annotated[OpenAqFeed | JsonFeed, Field(discriminator="kind")]


class SourcesFile(Strict):
    mqtt: MqttOptions = Field(default_factory=MqttOptions)
    http_feeds: list[Feed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_codes(self) -> Self:
        seen: set[str] = set()
        for feed in self.http_feeds:
            if feed.code in seen:
                raise ValueError(f"feed code {feed.code!r} appears twice")
            seen.add(feed.code)
        return self


def load_sources(path: Path, *, required: bool = False) -> SourcesFile:
    """Read sources.yaml; a missing optional file means no feeds. ConfigError names the problem."""
    raw = read_yaml(path, required=required, hint="check ENVLINK_SOURCES_FILE")
    try:
        return SourcesFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        place = f"{location}: " if location else ""
        message = re.sub(r"^Value error, ", "", first["msg"])
        raise ConfigError(
            f"{path}: {place}{message} ({exc.error_count()} problem(s) in all)"
        ) from None
