"""config/sources.yaml: the shipped file, its commented examples, and the errors it can raise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings
from schemas.sources import JsonFeed, OpenAqFeed, load_sources

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "sources.yaml"


def test_the_shipped_file_enables_no_feed() -> None:
    sources = load_sources(SHIPPED, required=True)
    assert sources.http_feeds == []
    assert sources.mqtt.simulator_stations == ["dg-w-humen", "gz-w-nansha"]
    assert sources.mqtt.batch_window_s == 0.1


def test_the_commented_examples_are_valid_when_uncommented(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    head, examples = text.split("http_feeds: []\n")
    uncommented = "\n".join(re.sub(r"^#", "", line) for line in examples.splitlines())
    path = tmp_path / "sources.yaml"
    path.write_text(head + "http_feeds:\n" + uncommented + "\n", encoding="utf-8")
    feeds = load_sources(path).http_feeds
    assert [type(f) for f in feeds] == [OpenAqFeed, JsonFeed]
    openaq, buoys = feeds
    assert isinstance(openaq, OpenAqFeed) and isinstance(buoys, JsonFeed)
    assert [(s.sensor, s.location, s.station, s.parameter) for s in openaq.sensors] == [
        (12345, 6789, "gz-a-huangpu", "pm25"),
        (12346, 6789, "gz-a-huangpu", "no2"),
    ]
    assert (openaq.retries, openaq.api_key_env) == (3, "OPENAQ_API_KEY")
    assert (buoys.mapping.items, buoys.mapping.value, buoys.period_s) == (
        "data.records",
        "reading.value",
        3600,
    )
    assert buoys.parameter_map == {"dissolved_oxygen": "do", "temperature": "water_temp"}


def test_a_missing_default_file_means_no_feeds_but_a_named_one_must_exist(tmp_path: Path) -> None:
    assert load_sources(tmp_path / "sources.yaml").http_feeds == []
    with pytest.raises(ConfigError, match=r"sources\.yaml: file not found"):
        load_sources(tmp_path / "sources.yaml", required=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http_feeds: [", "not valid YAML"),
        (
            "http_feeds:\n  - {code: a, kind: soap, url: 'http://x'}",
            "http_feeds.0: Input tag 'soap' found using 'kind' does not match any of the expected"
            " tags: 'openaq_v3', 'json'",
        ),
        (
            "http_feeds:\n  - {code: a, kind: json, url: 'http://x', mapping: {time: t, value: v}}",
            "http_feeds.0.json: feed a: give mapping.station or a constant station",
        ),
        (
            "http_feeds:\n  - {code: a, kind: openaq_v3, base_url: 'http://x', sensors: []}",
            "http_feeds.0.openaq_v3.sensors: List should have at least 1 item",
        ),
        (
            "mqtt: {reconnect_min_s: 10, reconnect_max_s: 1}",
            "mqtt: reconnect_min_s must not exceed reconnect_max_s",
        ),
        (
            "http_feeds:\n"
            "  - {code: a, kind: openaq_v3, base_url: 'http://x',"
            " sensors: [{sensor: 1, station: s, parameter: p}]}\n"
            "  - {code: a, kind: openaq_v3, base_url: 'http://x',"
            " sensors: [{sensor: 2, station: s, parameter: p}]}",
            "feed code 'a' appears twice (1 problem(s) in all)",
        ),
    ],
)
def test_bad_files_name_the_entry_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_sources(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert ": :" not in str(caught.value)


def test_mqtt_settings_default_off_and_sources_file_follows_the_config_dir(tmp_path: Path) -> None:
    settings = Settings(config_dir=tmp_path, mqtt_host="  ")
    assert settings.mqtt_host is None
    assert settings.sources_path == tmp_path / "sources.yaml"
    named = Settings(sources_file=tmp_path / "feeds.yaml", mqtt_password="s3cret")
    assert named.sources_path == tmp_path / "feeds.yaml"
    assert "s3cret" not in repr(named)
