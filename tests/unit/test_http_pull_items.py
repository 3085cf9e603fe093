"""OpenAQ v3 measurements and generic JSON items to readings, without a server or database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.sources.http_pull import _MISSING, dig, iso_utc, json_feed_item, openaq_item
from schemas.common import QC
from schemas.readings import ReadingIn
from schemas.sources import JsonFeed, JsonMapping, OpenAqSensor

SENSOR = OpenAqSensor(sensor=7, location=70, station="gz-a-huangpu", parameter="no2")


def _measurement(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "value": 21.5,
        "flagInfo": {"hasFlags": False},
        "parameter": {"id": 7, "name": "no2", "units": "ppb", "displayName": None},
        "period": {
            "label": "raw",
            "interval": "01:00:00",
            "datetimeFrom": {"utc": "2026-11-26T01:00:00Z", "local": "2026-11-26T09:00:00+08:00"},
            "datetimeTo": {"utc": "2026-11-26T02:00:00Z", "local": "2026-11-26T10:00:00+08:00"},
        },
    }
    return base | overrides


def test_dig_follows_dotted_paths_through_objects_and_arrays() -> None:
    document = {"data": {"records": [{"v": 1}, {"v": 2}]}}
    assert dig(document, "") is document
    assert dig(document, "data.records.1.v") == 2
    assert dig(document, "data.records.-1.v") == 2
    assert dig(document, "data.records.2.v") is _MISSING
    assert dig(document, "data.nothing") is _MISSING
    assert dig(document, "data.records.v") is _MISSING


def test_an_openaq_measurement_is_a_reading_at_its_period_start_windowed_by_its_end() -> None:
    end, reading = openaq_item(_measurement(), SENSOR)
    assert end == datetime(2026, 11, 26, 2, tzinfo=UTC)
    assert reading == ReadingIn(
        station="gz-a-huangpu",
        parameter="no2",
        time=datetime(2026, 11, 26, 1, tzinfo=UTC),
        value=21.5,
        unit="ppb",
        period_s=3600,
        qc=QC.VALID,
    )
    _, flagged = openaq_item(_measurement(flagInfo={"hasFlags": True}), SENSOR)
    assert isinstance(flagged, ReadingIn) and flagged.qc is QC.SUSPECT


def test_openaq_measurements_that_cannot_be_stored_say_why() -> None:
    ten_minutes = _measurement(
        period={
            "label": "raw",
            "interval": "00:10:00",
            "datetimeFrom": {"utc": "2026-11-26T01:50:00Z"},
            "datetimeTo": {"utc": "2026-11-26T02:00:00Z"},
        }
    )
    assert openaq_item(ten_minutes, SENSOR) == (
        datetime(2026, 11, 26, 2, tzinfo=UTC),
        "period raw of 600 s is not one EnvLink stores (0, 60, 3600, 86400 s)",
    )
    assert openaq_item(_measurement(value="high"), SENSOR)[1] == (
        "value must be a number or null, not 'high'"
    )
    assert openaq_item(_measurement(period=None), SENSOR) == (
        None,
        "period.datetimeFrom.utc / period.datetimeTo.utc missing",
    )
    assert openaq_item([], SENSOR) == (None, "a measurement must be a JSON object")


FEED = JsonFeed(
    code="buoys",
    kind="json",
    url="http://127.0.0.1:1/api",
    time_format="epoch_ms",
    mapping=JsonMapping(
        items="data.records",
        time="ts",
        value="reading.value",
        station="site",
        parameter="kind",
        unit="reading.unit",
        flag="status",
    ),
    period_s=3600,
    station_map={"DG-B07": "dg-w-humen"},
    parameter_map={"dissolved_oxygen": "do"},
)


def test_a_generic_item_is_mapped_by_paths_translated_and_flagged() -> None:
    item = {
        "ts": 1_764_122_400_000,
        "site": "DG-B07",
        "kind": "dissolved_oxygen",
        "reading": {"value": 6.4, "unit": "mg/l"},
        "status": "C",
    }
    moment, reading = json_feed_item(item, FEED)
    assert moment == datetime(2025, 11, 26, 2, tzinfo=UTC)
    assert reading == ReadingIn(
        station="dg-w-humen",
        parameter="do",
        time=datetime(2025, 11, 26, 2, tzinfo=UTC),
        value=6.4,
        unit="mg/l",
        period_s=3600,
        qc=QC.CALIBRATION,
    )


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"site": "DG-B07"}, (None, "no time at 'ts'")),
        ({"ts": "yesterday"}, (None, "time must be a Unix time number, not 'yesterday'")),
        (
            {"ts": 1_764_122_400_000, "kind": "do", "reading": {"value": 1, "unit": "mg/L"}},
            (datetime(2025, 11, 26, 2, tzinfo=UTC), "no station at 'site'"),
        ),
        (
            {"ts": 1_764_122_400_000, "site": "x", "kind": "do", "reading": {"unit": "mg/L"}},
            (datetime(2025, 11, 26, 2, tzinfo=UTC), "no value at 'reading.value'"),
        ),
    ],
)
def test_generic_items_missing_a_field_name_its_path(
    item: dict[str, object], expected: tuple[datetime | None, str]
) -> None:
    assert json_feed_item(item, FEED) == expected


def test_query_times_are_utc_whole_seconds() -> None:
    moment = datetime(2026, 11, 26, 10, 0, 0, 999_999, tzinfo=UTC)
    assert iso_utc(moment) == "2026-11-26T10:00:00Z"
