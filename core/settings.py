"""One validated Settings object, built once at start-up from ENVLINK_* variables."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import SettingsError

Port = Annotated[int, Field(ge=1, le=65535)]


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
    pool_min_size: Annotated[int, Field(ge=1, le=100)] = 1
    pool_max_size: Annotated[int, Field(ge=1, le=500)] = 10
    earliest_reading_date: date = Field(
        default=date(2000, 1, 1), description="Readings before this date are rejected"
    )
    simulator_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("postgresql://", "postgres://")) and "=" not in value:
            raise ValueError("must be a postgresql:// URL or a libpq key=value string")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation errors into one message that names each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "ENVLINK_" + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}={error.get('input')!r}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
