"""Settings: defaults, and bad values that stop start-up with a message naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import SettingsError
from core.settings import load_settings
from store.timescale import TimescaleOptions


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATA_DIR", "API_HOST", "API_PORT", "HJ212_PORT"):
        monkeypatch.delenv(f"ENVLINK_{name}", raising=False)
    settings = load_settings()
    assert settings.database_url is None
    assert settings.data_dir == Path(".envlink")
    assert (settings.api_host, settings.api_port, settings.hj212_port) == ("127.0.0.1", 8000, 9212)


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVLINK_DATABASE_URL", "postgresql://u@db:5432/envlink")
    monkeypatch.setenv("ENVLINK_API_PORT", "8080")
    monkeypatch.setenv("ENVLINK_DATA_DIR", "/srv/envlink")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@db:5432/envlink"
    assert settings.api_port == 8080
    assert settings.data_dir == Path("/srv/envlink")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ENVLINK_API_PORT", "99999", "Input should be less than or equal to 65535"),
        (
            "ENVLINK_API_PORT",
            "http",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ("ENVLINK_HJ212_PORT", "0", "Input should be greater than or equal to 1"),
        (
            "ENVLINK_DATABASE_URL",
            "mysql://x",
            "Value error, must be a postgresql:// URL or a libpq key=value string",
        ),
        ("ENVLINK_LOG_LEVEL", "LOUD", "Value error, must be one of DEBUG, INFO, WARNING, ERROR"),
        ("ENVLINK_TIMESCALEDB", "yes", "Input should be 'auto', 'required' or 'off'"),
        (
            "ENVLINK_MAP_TILE_URL",
            "https://tiles.example.org/osm.png",
            "String should match pattern "
            "'^(https?://[^\\s/]+)?/[^\\s\\\"<>]*\\{z\\}[^\\s\\\"<>]*$'",
        ),
        ("ENVLINK_TIMESCALEDB_CHUNK_DAYS", "0", "Input should be greater than or equal to 1"),
        ("ENVLINK_RAW_RETENTION_DAYS", "0", "Input should be greater than or equal to 1"),
        (
            "ENVLINK_EARLIEST_READING_DATE",
            "yesterday",
            "Input should be a valid date or datetime, input is too short",
        ),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid settings: {name}={value!r}: {message}"


def test_the_signing_key_is_unset_when_blank_and_at_least_16_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVLINK_SIGNING_KEY", "")
    assert load_settings().signing_key is None
    monkeypatch.setenv("ENVLINK_SIGNING_KEY", "0123456789abcdef")
    key = load_settings().signing_key
    assert key is not None and key.get_secret_value() == "0123456789abcdef"
    monkeypatch.setenv("ENVLINK_SIGNING_KEY", "too-short")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid settings: ENVLINK_SIGNING_KEY='***': Value error, must be at least 16 characters"
    )


def test_empty_database_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVLINK_DATABASE_URL", "")
    assert load_settings().database_url is None


def test_timescaledb_is_automatic_and_raw_readings_are_kept_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ENVLINK_TIMESCALEDB", raising=False)
    monkeypatch.setenv("ENVLINK_RAW_RETENTION_DAYS", " ")
    settings = load_settings()
    assert (settings.timescaledb, settings.raw_retention_days) == ("auto", None)
    assert (settings.timescaledb_chunk_days, settings.timescaledb_compress_after_days) == (7, 30)


def test_migrations_default_to_the_timescaledb_settings_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("", "_CHUNK_DAYS", "_COMPRESS_AFTER_DAYS"):
        monkeypatch.delenv(f"ENVLINK_TIMESCALEDB{name}", raising=False)
    assert TimescaleOptions.from_settings(load_settings()) == TimescaleOptions()
