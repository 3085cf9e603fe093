"""MQTT topics and payloads to readings or rejections, without a broker or a database."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from core.timeutil import CST
from ingest.flags import qc_of_flag
from ingest.received import received_text
from ingest.sources.mqtt import (
    reading_from_json,
    reading_json,
    readings_of_message,
)
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection

CITIES = {"gz-a-huangpu": "guangzhou", "dg-w-humen": "dongguan"}


def _items(topic: str, payload: bytes, max_payload_bytes: int = 10_000) -> list[object]:
    return list(
        readings_of_message(
            topic, payload, prefix="envlink", cities=CITIES, max_payload_bytes=max_payload_bytes
        )
    )


def test_a_single_reading_takes_its_station_from_the_topic() -> None:
    payload = b'{"time": "2026-11-26T10:00:00", "parameter": "pm25", "value": 35, "unit": "ug/m3"}'
    [item] = _items("envlink/guangzhou/gz-a-huangpu/readings", payload)
    assert item == ReadingIn(
        station="gz-a-huangpu",
        parameter="pm25",
        time=datetime(2026, 11, 26, 10, tzinfo=CST),
        value=35.0,
        unit="ug/m3",
        period_s=0,
        qc=QC.VALID,
    )


def test_an_array_keeps_good_items_and_rejects_bad_ones_with_their_position() -> None:
    payload = orjson.dumps(
        [
            {
                "time": "2026-11-26T02:00:00Z",
                "parameter": "do",
                "value": 6.8,
                "unit": "mg/L",
                "period_s": 3600,
                "flag": "M",
            },
            {"time": "2026-11-26T02:00:00Z", "parameter": "ph", "unit": "1"},
            {
                "time": "2026-11-26T02:00:00Z",
                "parameter": "ph",
                "value": 7.1,
                "unit": "1",
                "period_s": 600,
            },
            {"time": "2026-11-26T02:00:00Z", "parameter": "ph", "value": "7.1", "unit": "1"},
            {
                "time": "2026-11-26T02:00:00Z",
                "parameter": "ph",
                "value": 7.1,
                "unit": "1",
                "flag": "Z",
            },
            {
                "time": "2026-11-26T02:00:00Z",
                "parameter": "ph",
                "value": 7.1,
                "unit": "1",
                "station": "gz-a-huangpu",
            },
            "not an object",
            {
                "time": "2026-11-26T02:00:00Z",
                "parameter": "ph",
                "value": None,
                "unit": "1",
                "flag": "calibration",
            },
        ]
    )
    items = _items("envlink/dongguan/dg-w-humen/readings", payload)
    assert len(items) == 8
    first, last = items[0], items[7]
    assert isinstance(first, ReadingIn) and isinstance(last, ReadingIn)
    assert (first.period_s, first.qc, first.time) == (
        3600,
        QC.MAINTENANCE,
        datetime(2026, 11, 26, 2, tzinfo=UTC),
    )
    assert (last.value, last.qc) == (None, QC.CALIBRATION)
    rejections = items[1:7]
    assert all(isinstance(r, Rejection) for r in rejections)
    prefix = "topic envlink/dongguan/dg-w-humen/readings, reading"
    assert [r.reason for r in rejections] == [  # type: ignore[union-attr]
        f"{prefix} 1: missing value",
        f"{prefix} 2: period_s must be one of 0, 60, 3600, 86400, not 600",
        f"{prefix} 3: value must be a number or null, not a string",
        f"{prefix} 4: flag 'Z' is not an HJ 212 flag (N, F, M, S, D, C, T, B) or a QC state "
        "(valid, suspect, invalid, below_detection, maintenance, calibration, manual, stopped, "
        "fault, over_range, comm_fault)",
        f"{prefix} 5: payload names station 'gz-a-huangpu' but the topic is station 'dg-w-humen'",
        f"{prefix} 6: a reading must be a JSON object, not a string",
    ]
    assert rejections[0].payload == (  # type: ignore[union-attr]
        '{"time":"2026-11-26T02:00:00Z","parameter":"ph","unit":"1"}'
    )
    assert rejections[0].station == "dg-w-humen"  # type: ignore[union-attr]
    assert rejections[0].parameter == "ph"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (
            "envlink/guangzhou/gz-a-nowhere/readings",
            b"{}",
            "topic envlink/guangzhou/gz-a-nowhere/readings: unknown station 'gz-a-nowhere'",
        ),
        (
            "envlink/dongguan/gz-a-huangpu/readings",
            b"{}",
            "topic envlink/dongguan/gz-a-huangpu/readings: station gz-a-huangpu is in guangzhou,"
            " not dongguan",
        ),
        (
            "envlink/shenzhen/gz-a-huangpu/readings",
            b"{}",
            "topic envlink/shenzhen/gz-a-huangpu/readings: unknown city 'shenzhen'"
            " (guangzhou or dongguan)",
        ),
        (
            "envlink/guangzhou/gz-a-huangpu/readings",
            b'{"time": "2026-11-26T10:00:00", "value": ',
            "topic envlink/guangzhou/gz-a-huangpu/readings: malformed JSON: unexpected end of"
            " data: line 1 column 42 (char 41)",
        ),
        (
            "envlink/guangzhou/gz-a-huangpu/readings",
            b"42",
            "topic envlink/guangzhou/gz-a-huangpu/readings: payload must be a JSON reading or an"
            " array of them, not a number",
        ),
        (
            "envlink/guangzhou/gz-a-huangpu/readings",
            b"[" + b" " * 20_000 + b"]",
            "topic envlink/guangzhou/gz-a-huangpu/readings: payload of 20002 bytes exceeds 10000",
        ),
    ],
)
def test_a_message_that_cannot_be_read_is_one_rejection_with_its_raw_payload(
    topic: str, payload: bytes, reason: str
) -> None:
    [item] = _items(topic, payload)
    assert isinstance(item, Rejection)
    assert item.reason == reason
    assert item.payload == received_text(payload)


@pytest.mark.parametrize(
    ("flag", "qc"),
    [
        (None, QC.VALID),
        ("N", QC.VALID),
        ("n", QC.VALID),
        ("D", QC.FAULT),
        ("T", QC.OVER_RANGE),
        ("B", QC.COMM_FAULT),
        ("suspect", QC.SUSPECT),
        ("Below_Detection", QC.BELOW_DETECTION),
    ],
)
def test_flags_are_hj212_letters_or_qc_states(flag: str | None, qc: QC) -> None:
    assert qc_of_flag(flag) == qc


def test_time_without_offset_is_china_standard_time_and_bad_times_are_named() -> None:
    base = {"parameter": "pm25", "value": 1, "unit": "ug/m3"}
    reading = reading_from_json({**base, "time": "2026-11-26 10:00"}, station="gz-a-huangpu")
    assert isinstance(reading, ReadingIn)
    assert reading.time == datetime(2026, 11, 26, 2, tzinfo=UTC)
    assert (
        reading_from_json({**base, "time": "soon"}, station="gz-a-huangpu")
        == "time: 'soon' is not an ISO 8601 / RFC 3339 time"
    )
    assert (
        reading_from_json({**base, "time": 1764122400}, station="gz-a-huangpu")
        == "time must be an RFC 3339 string, not a number"
    )


def test_published_json_reads_back_as_the_same_reading() -> None:
    reading = ReadingIn(
        station="dg-w-humen",
        parameter="do",
        time=datetime(2026, 11, 26, 10, tzinfo=CST),
        value=6.25,
        unit="mg/L",
        period_s=3600,
        qc=QC.FAULT,
    )
    payload = orjson.dumps([reading_json(reading)])
    assert _items("envlink/dongguan/dg-w-humen/readings", payload) == [reading]
