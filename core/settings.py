"""One validated Settings object, built once at start-up from ENVLINK_* variables."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import SettingsError

Port = Annotated[int, Field(ge=1, le=65535)]
TimescaleMode = Literal["auto", "required", "off"]


class Settings(BaseSettings):
    """EnvLink's settings; every field is read from ENVLINK_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="ENVLINK_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset means an embedded server in data_dir",
    )
    data_dir: Path = Field(default=Path(".envlink"), description="Embedded server and local state")
    config_dir: Path = Field(default=Path("config"), description="stations.yaml, rivers.yaml, ...")
    api_host: str = "127.0.0.1"
    api_port: Port = 8000
    hj212_host: str = "127.0.0.1"
    hj212_port: Port = 9212
    hj212_enabled: bool = Field(default=True, description="Listen for HJ 212 uploads (worker)")
    hj212_idle_timeout_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=600.0, description="Close an HJ 212 connection silent this long"
    )
    hj212_max_connections: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        default=None,
        description="Most HJ 212 connections open at once; unset: sized to the open-files limit",
    )
    hj212_batch_window_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=5.0, description="HJ 212 frames arriving within this window share one commit"
    )
    api_pool_min_size: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Database connections the API keeps open, per API process"
    )
    api_pool_max_size: Annotated[int, Field(ge=1, le=500)] = Field(
        default=10, description="Most database connections of the API, per API process"
    )
    worker_pool_min_size: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Database connections the worker keeps open"
    )
    worker_pool_max_size: Annotated[int, Field(ge=1, le=500)] = Field(
        default=10, description="Most database connections of the worker"
    )
    pool_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=5.0,
        description="How long an API request waits for a connection before a 503 overloaded",
    )
    rate_limits: Literal["on", "off"] = Field(
        default="on", description="Limit requests per API key and failed keys per client address"
    )
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=600, description="Requests a minute per API key, unless the key sets its own"
    )
    rate_limit_burst: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=100, description="Requests an API key may make at once after a quiet spell"
    )
    rate_limit_failed_auth_per_minute: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20, description="Unknown, revoked or expired keys a minute per client address"
    )
    timescaledb: TimescaleMode = Field(
        default="auto",
        description="TimescaleDB: auto (when the server preloads it), required or off",
    )
    timescaledb_chunk_days: Annotated[int, Field(ge=1, le=366)] = Field(
        default=7, description="Time span of one chunk of the `reading` hypertable"
    )
    timescaledb_compress_after_days: Annotated[int, Field(ge=1, le=36600)] = Field(
        default=30, description="Chunks of readings older than this are compressed"
    )
    raw_retention_days: Annotated[int, Field(ge=1, le=36600)] | None = Field(
        default=None, description="Real-time and minute readings older than this are deleted"
    )
    earliest_reading_date: date = Field(
        default=date(2000, 1, 1), description="Readings before this date are rejected"
    )
    simulator_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    leader_retry_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=5.0, description="How often a stand-by worker tries to take over the scheduler"
    )
    leader_check_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="How often the leading worker proves it still holds its lock"
    )
    csv_dir: Path | None = Field(
        default=None, description="Drop folder of laboratory CSV files; unset means not polled"
    )
    csv_poll_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    mqtt_host: str | None = Field(default=None, description="MQTT broker; unset means no MQTT")
    mqtt_port: Port = 1883
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_topic_prefix: str = Field(
        default="envlink", pattern=r"^[^+#]+$", description="Topics: <prefix>/<city>/<station>/…"
    )
    mqtt_client_id: str | None = Field(
        default=None, description="Broker session id, stable across restarts; unset: host name"
    )
    mqtt_shared_group: str | None = Field(
        default=None,
        pattern=r"^[^/+#\s]+$",
        description="Workers in one $share group split the messages; unset: each gets all",
    )
    sources_file: Path | None = Field(
        default=None, description="HTTP feeds and MQTT options; unset: <config_dir>/sources.yaml"
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="The API as users reach it; notifications link to alerts under it",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Signs the bulletin links sent to WeCom, DingTalk and webhooks (HMAC-SHA256);"
        " required when a bulletin subscription uses one of them",
    )
    map_tile_url: str | None = Field(
        default=None,
        pattern=r"^(https?://[^\s/]+)?/[^\s\"<>]*\{z\}[^\s\"<>]*$",
        description="A tile server for the screen's overview map, e.g."
        " https://tiles.example.org/{z}/{x}/{y}.png (Web Mercator, 256 px tiles); unset: no tiles",
    )
    notify_http_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0, description="Timeout of one webhook/WeCom/DingTalk/SMTP delivery attempt"
    )
    notify_enabled: bool = Field(
        default=True, description="Run the notification stage and dispatcher in the worker"
    )
    notify_poll_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=5.0, description="Longest wait of the notification stage and dispatcher"
    )
    notify_concurrency: Annotated[int, Field(ge=1, le=200)] = Field(
        default=8, description="Deliveries one dispatcher makes at a time"
    )
    notify_lease_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0, description="A claimed notification's lease; must exceed the HTTP timeout"
    )
    notify_retry_base_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0, description="First retry after about this long, doubling each time"
    )
    notify_retry_max_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=300.0, description="Longest wait between two attempts"
    )
    notify_deadline_s: Annotated[float, Field(gt=0, le=30 * 86400)] = Field(
        default=6 * 3600.0, description="Undelivered this long after it was made: dead-lettered"
    )
    smtp_host: str | None = Field(default=None, description="SMTP relay; unset means no e-mail")
    smtp_port: Port = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP session with STARTTLS")
    smtp_from: str = Field(
        default="EnvLink <envlink@localhost>", description="From address of notification e-mail"
    )
    alert_loop_enabled: bool = Field(
        default=True, description="Run the alert loop (history QC, rollups, engine) in the worker"
    )
    alert_sweep_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0, description="Alert loop sweep (staleness, timers) when no readings wake it"
    )
    water_daily_min_samples: Annotated[int, Field(ge=1, le=1440)] = Field(
        default=1, description="Valid samples a water parameter's daily mean needs"
    )
    export_max_days: Annotated[int, Field(ge=1, le=36600)] = Field(
        default=366, description="Longest period one export (API or CLI) may span"
    )
    heartbeat_file: Path | None = Field(
        default=None,
        description="Touched every few seconds by a running worker; unset: <data_dir>/heartbeat",
    )
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("postgresql://", "postgres://")) and "=" not in value:
            raise ValueError("must be a postgresql:// URL or a libpq key=value string")
        return value

    @field_validator("api_pool_max_size", "worker_pool_max_size")
    @classmethod
    def _not_below_min_size(cls, value: int, info: ValidationInfo) -> int:
        min_name = str(info.field_name).replace("_max_", "_min_")
        minimum = info.data.get(min_name)
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least ENVLINK_{min_name.upper()} ({minimum})")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("raw_retention_days", "hj212_max_connections", "signing_key", mode="before")
    @classmethod
    def _blank_keeps_everything(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("mqtt_host", "mqtt_username", "mqtt_client_id", "smtp_host", "smtp_username")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return None if value is None or value.strip() == "" else value.strip()

    @property
    def heartbeat_path(self) -> Path:
        """The worker's heartbeat file: ENVLINK_HEARTBEAT_FILE, or heartbeat in the data dir."""
        return self.heartbeat_file or self.data_dir / "heartbeat"

    @property
    def sources_path(self) -> Path:
        """The sources file in use: ENVLINK_SOURCES_FILE, or sources.yaml in the config dir."""
        return self.sources_file or self.config_dir / "sources.yaml"


# Settings whose values an error message must not show.
_SECRET_SETTINGS = {"ENVLINK_SIGNING_KEY", "ENVLINK_SMTP_PASSWORD", "ENVLINK_MQTT_PASSWORD"}


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation errors into one message that names each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "ENVLINK_" + "_".join(str(part) for part in error["loc"]).upper()
            given = error.get("input")
            if name in _SECRET_SETTINGS:
                given = "***"  # a secret is never repeated, even a wrong one
            problems.append(f"{name}={given!r}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
