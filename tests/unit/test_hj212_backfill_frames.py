"""Backfill requests on the wire: the range a request asks for, its frame, the station's answers.

The frames are checked byte for byte, their CRC against HJ 212-2017's bit-by-bit definition (the
reference implementation of tests/unit/test_hj212_protocol.py), which gives 1C80 for the
standard's own example.
"""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.sources.hj212.protocol import (
    ProtocolError,
    RequestAnswer,
    build_frame,
    build_request,
    crc_modbus,
    parse_segment,
    request_answer,
    request_window,
)
from tests.unit.test_hj212_protocol import STANDARD_1062, exactly, reference_crc

CHINA = timezone(timedelta(hours=8))


def test_the_reference_crc_gives_the_standards_own_example() -> None:
    segment = STANDARD_1062[6:-4].encode()
    assert (len(segment), reference_crc(segment)) == (101, 0x1C80)


@pytest.mark.parametrize(
    ("period_s", "start", "end", "first", "last"),
    [
        # Hours overlapping [08:30, 11:00): 08:00, 09:00, 10:00.
        (3600, datetime(2026, 11, 25, 8, 30), datetime(2026, 11, 25, 11, 0), (25, 8), (25, 10)),
        # An end one microsecond into an hour takes that hour.
        (3600, datetime(2026, 11, 25, 8), datetime(2026, 11, 25, 11, 0, 0, 1), (25, 8), (25, 11)),
        # One minute.
        (60, datetime(2026, 11, 25, 8, 0, 30), datetime(2026, 11, 25, 8, 1), (25, 8), (25, 8)),
        # China days: [Nov 24 00:00, Nov 26 00:00) +08:00 is the 24th and the 25th.
        (86400, datetime(2026, 11, 24), datetime(2026, 11, 26), (24, 0), (25, 0)),
    ],
)
def test_request_window_is_the_period_starts_overlapping_the_range(
    period_s: int,
    start: datetime,
    end: datetime,
    first: tuple[int, int],
    last: tuple[int, int],
) -> None:
    begin, stop = request_window(period_s, start.replace(tzinfo=CHINA), end.replace(tzinfo=CHINA))
    assert begin == datetime(2026, 11, first[0], first[1], tzinfo=CHINA)
    assert stop == datetime(2026, 11, last[0], last[1], tzinfo=CHINA)


def test_request_window_days_follow_china_time_given_utc() -> None:
    # 2026-11-24T20:00Z is 04:00 on the 25th in China: the day asked for starts there.
    begin, stop = request_window(
        86400, datetime(2026, 11, 24, 20, tzinfo=UTC), datetime(2026, 11, 25, 1, tzinfo=UTC)
    )
    assert (begin, stop) == (datetime(2026, 11, 25, tzinfo=CHINA),) * 2


@pytest.mark.parametrize(
    ("period_s", "start", "end", "message"),
    [
        (0, 1, 2, "period of 0 s is not minute, hourly or daily data"),
        (1800, 1, 2, "period of 1800 s is not minute, hourly or daily data"),
        (3600, 2, 2, "2026-11-25T02:00:00+08:00 is not before 2026-11-25T02:00:00+08:00"),
        (3600, 3, 2, "2026-11-25T03:00:00+08:00 is not before 2026-11-25T02:00:00+08:00"),
    ],
)
def test_request_window_refuses_what_cannot_be_asked(
    period_s: int, start: int, end: int, message: str
) -> None:
    with pytest.raises(ProtocolError, match=exactly(message)):
        request_window(
            period_s,
            datetime(2026, 11, 25, start, tzinfo=CHINA),
            datetime(2026, 11, 25, end, tzinfo=CHINA),
        )


def test_a_backfill_request_frame_byte_for_byte() -> None:
    begin, end = request_window(
        3600, datetime(2026, 11, 25, 8, tzinfo=CHINA), datetime(2026, 11, 25, 11, tzinfo=CHINA)
    )
    raw = build_request(
        "2061",
        "44010010000086",
        "123456",
        datetime(2026, 11, 26, 4, 0, 0, 5000, tzinfo=UTC),  # 12:00:00.005 in China
        begin,
        end,
        st="22",
    )
    segment = (
        b"QN=20261126120000005;ST=22;CN=2061;PW=123456;MN=44010010000086;Flag=5;"
        b"CP=&&BeginTime=20261125080000;EndTime=20261125100000&&"
    )
    assert len(segment) == 124
    assert raw == b"##0124" + segment + b"%04X\r\n" % reference_crc(segment)
    packet = parse_segment(raw[6:-6])
    assert (packet.cn, packet.reply_wanted, packet.version, packet.cp.fields) == (
        "2061",
        True,
        1,
        {"BeginTime": "20261125080000", "EndTime": "20261125100000"},
    )


def test_a_minute_request_to_a_version_2_station_under_modbus_crc() -> None:
    moment = datetime(2026, 11, 25, 8, 0, tzinfo=CHINA)
    raw = build_request(
        "2051", "44190020000001", "654321", moment, moment, moment + timedelta(minutes=59),
        st="21", version=2, mode="modbus",
    )  # fmt: skip
    segment = (
        b"QN=20261125080000000;ST=21;CN=2051;PW=654321;MN=44190020000001;Flag=9;"
        b"CP=&&BeginTime=20261125080000;EndTime=20261125085900&&"
    )
    assert raw == b"##%04d%s%04X\r\n" % (len(segment), segment, crc_modbus(segment))
    assert raw != build_frame(segment)  # the station's own CRC, not the standard's


def answer(cn: str, cp: str) -> RequestAnswer:
    segment = f"QN=20261126120000005;ST=22;CN={cn};PW=123456;MN=44010010000086;Flag=4;CP=&&{cp}&&"
    return request_answer(parse_segment(segment.encode()))


@pytest.mark.parametrize(
    ("cn", "cp", "ok", "no_data", "text"),
    [
        ("9011", "QnRtn=1", True, False, "QnRtn=1 (ready)"),
        ("9011", "QnRtn=2", False, False, "QnRtn=2 (refused)"),
        ("9011", "QnRtn=3", False, False, "QnRtn=3 (wrong PW)"),
        ("9011", "", True, False, "CN=9011 without QnRtn"),
        ("9012", "ExeRtn=1", True, False, "ExeRtn=1 (done)"),
        ("9012", "ExeRtn=100", False, True, "ExeRtn=100 (no data)"),
        ("9012", "ExeRtn=5", False, False, "ExeRtn=5 (system busy)"),
        ("9012", "ExeRtn=42", False, False, "ExeRtn=42 (a code HJ 212 does not define)"),
    ],
)
def test_a_stations_answers_to_a_request(
    cn: str, cp: str, ok: bool, no_data: bool, text: str
) -> None:
    got = answer(cn, cp)
    assert (got.ok, got.no_data, got.text()) == (ok, no_data, text)


def test_only_9011_and_9012_are_answers_to_a_request() -> None:
    with pytest.raises(
        ProtocolError, match=exactly("CN=9014 is not an answer to a request (9011 or 9012)")
    ):
        answer("9014", "")
