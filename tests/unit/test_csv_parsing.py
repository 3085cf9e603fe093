"""CSV lab files and pushed items without a database: encodings, lab notations, headers, flags."""

from __future__ import annotations

from datetime import datetime

import pytest

from core.timeutil import CST
from ingest.flags import qc_of_flag
from ingest.sources.csv_folder import (
    CsvFileError,
    CsvRow,
    decode,
    parse_csv_time,
    parse_rows,
    parse_value,
)
from ingest.sources.hj212.protocol import qc_for_flag
from schemas.common import QC
from schemas.push import DEVICE_FLAGS, QC_NAMES, validate_item
from schemas.readings import ReadingIn, Rejection

HEADER = "station,parameter,time,value,unit,period_s,flag\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", (0.5, False)),
        (" 12 ", (12.0, False)),
        ("0", (0.0, False)),
        ("1e-3", (0.001, False)),
        ("-3.5", (-3.5, False)),
        ("0.01L", (0.01, True)),
        ("0.00004l", (0.00004, True)),
        ("0.05 L", (0.05, True)),
        ("<0.01", (0.01, True)),
        ("< 0.2", (0.2, True)),
        ("ND", (None, True)),
        ("nd", (None, True)),
        ("N.D.", (None, True)),
        ("未检出", (None, True)),
    ],
)
def test_lab_values(text: str, expected: tuple[float | None, bool]) -> None:
    assert parse_value(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "value is empty"),
        ("  ", "value is empty"),
        ("abc", "value 'abc' is not a number, ND, or a detection limit like 0.01L"),
        ("L", "value 'L' is not a number, ND, or a detection limit like 0.01L"),
        ("-0.01L", "value '-0.01L' is not a number, ND, or a detection limit like 0.01L"),
        ("0,5", "value '0,5' is not a number, ND, or a detection limit like 0.01L"),
        ("nan", "value 'nan' is not a finite number"),
        ("inf", "value 'inf' is not a finite number"),
    ],
)
def test_bad_lab_values(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_value(text)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-03T10:00", datetime(2026, 11, 3, 10, tzinfo=CST)),
        ("2026-11-03 10:00:00", datetime(2026, 11, 3, 10, tzinfo=CST)),
        ("2026-11-03", datetime(2026, 11, 3, tzinfo=CST)),
        ("2026-11-03T02:00:00Z", datetime(2026, 11, 3, 10, tzinfo=CST)),
        ("2026/11/3 10:05", datetime(2026, 11, 3, 10, 5, tzinfo=CST)),
        ("2026/11/03 10:05:30", datetime(2026, 11, 3, 10, 5, 30, tzinfo=CST)),
        ("2026/11/3", datetime(2026, 11, 3, tzinfo=CST)),
    ],
)
def test_csv_times(text: str, expected: datetime) -> None:
    parsed = parse_csv_time(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_bad_csv_time() -> None:
    with pytest.raises(ValueError) as caught:
        parse_csv_time("3 Nov 2026")
    assert str(caught.value) == "time '3 Nov 2026' is not an ISO 8601 time like 2026-11-03T10:00"


def test_utf8_with_and_without_bom_and_gbk() -> None:
    text = HEADER + "gz-w-dadun,cu,2026-11-03,0.01L,毫克/升,,\n"
    assert decode(text.encode("utf-8")) == (text, "utf-8")
    assert decode(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, "utf-8")
    assert decode(text.encode("gbk")) == (text, "gbk")


def test_a_line_neither_utf8_nor_gbk_is_rejected_with_its_bytes_kept() -> None:
    good = "gz-w-dadun,cu,2026-11-03,0.5,毫克/升,,\n".encode()
    data = HEADER.encode() + good + b"gz-w-dadun,zn\xff\xfe,2026-11-03,0.5,mg/L,,\n"
    text, encoding = decode(data)
    assert (text, encoding) == (data.decode("utf-8", "surrogateescape"), "utf-8")
    first, second = parse_rows(text)
    assert isinstance(first.item, ReadingIn)
    assert second == CsvRow(
        3,
        Rejection(
            1,
            "byte 0xff (character 14 of the line) is not text in the file's encoding",
            "gz-w-dadun",
            "zn\udcff\udcfe",
            "gz-w-dadun,zn\udcff\udcfe,2026-11-03,0.5,mg/L,,",
        ),
        "gz-w-dadun,zn\udcff\udcfe,2026-11-03,0.5,mg/L,,",
    )


def test_a_gbk_file_with_a_bad_line_is_read_as_gbk() -> None:
    good = "gz-w-dadun,cu,2026-11-03,0.01L,毫克/升,,\n".encode("gbk")
    text, encoding = decode(HEADER.encode() + good * 3 + b"gz-w-dadun,zn,2026-11-03,\xff,mg/L,,\n")
    assert encoding == "gbk"
    assert text.splitlines()[1] == "gz-w-dadun,cu,2026-11-03,0.01L,毫克/升,,"
    assert text.splitlines()[4] == "gz-w-dadun,zn,2026-11-03,\udcff,mg/L,,"


def test_a_header_neither_utf8_nor_gbk_fails_the_file_naming_the_lines() -> None:
    data = b"station,\xff\xfe\n" + b"gz-w-dadun,cu,2026-11-03,0.5,mg/L,,\n"
    with pytest.raises(CsvFileError) as caught:
        decode(data)
    assert str(caught.value) == (
        "the file is neither UTF-8 (byte 0xff on line 1) nor GBK (byte 0xff on line 1);"
        " save it as UTF-8 CSV"
    )


def test_flags_map_like_hj212_or_name_a_state() -> None:
    assert tuple(state.value for state in QC) == QC_NAMES
    for letter in DEVICE_FLAGS:
        assert qc_of_flag(letter) is qc_for_flag(letter, 2017)
        assert qc_of_flag(letter) is not QC.INVALID
    assert [qc_of_flag(f) for f in ("N", "M", "C", "T", "B", "F", "D", "S")] == [
        QC.VALID,
        QC.MAINTENANCE,
        QC.CALIBRATION,
        QC.OVER_RANGE,
        QC.COMM_FAULT,
        QC.STOPPED,
        QC.FAULT,
        QC.MANUAL,
    ]
    assert qc_of_flag(None) is QC.VALID
    assert qc_of_flag("") is QC.VALID
    assert qc_of_flag("below_detection") is QC.BELOW_DETECTION
    with pytest.raises(ValueError) as caught:
        qc_of_flag("X")
    assert str(caught.value).startswith("flag 'X' is not an HJ 212 flag (N, F, M, S, D, C, T, B)")


def test_rows_good_and_bad_in_file_order() -> None:
    text = (
        " Station , PARAMETER,time,value,unit,period_s,flag\r\n"
        "gz-w-dadun,cu,2026-11-03T10:00,0.012,mg/L,,\r\n"
        "\r\n"
        "gz-w-dadun,cd,2026-11-03T10:00,0.0005L,mg/L,0,\r\n"
        "gz-w-dadun,hg,2026/11/3 10:00,ND,mg/L,,N\r\n"
        'gz-w-dadun,pb,2026-11-03T10:00,"1.5",ug/L,86400,m\r\n'
        "gz-w-dadun,as,yesterday,abc,mg/L,7,Q\r\n"
        ",cu,2026-11-03,1,mg/L,,\r\n"
        "gz-w-dadun,zn,2026-11-03,0.01L,mg/L,,C\r\n"
        "gz-w-dadun,cu,2026-11-03\r\n"
    )
    rows = parse_rows(text)
    assert [row.line for row in rows] == [2, 4, 5, 6, 7, 8, 9, 10]
    at = datetime(2026, 11, 3, 10, tzinfo=CST)
    assert rows[0].item == ReadingIn(
        station="gz-w-dadun", parameter="cu", time=at, value=0.012, unit="mg/L"
    )
    assert rows[1].item == ReadingIn(
        station="gz-w-dadun",
        parameter="cd",
        time=at,
        value=0.0005,
        unit="mg/L",
        qc=QC.BELOW_DETECTION,
    )
    assert rows[2].item == ReadingIn(
        station="gz-w-dadun", parameter="hg", time=at, value=None, unit="mg/L", qc="below_detection"
    )
    assert rows[3].item == ReadingIn(
        station="gz-w-dadun",
        parameter="pb",
        time=at,
        value=1.5,
        unit="ug/L",
        period_s=86400,
        qc=QC.MAINTENANCE,
    )
    assert rows[4].item == Rejection(
        4,
        "time 'yesterday' is not an ISO 8601 time like 2026-11-03T10:00; value 'abc' is not a"
        " number, ND, or a detection limit like 0.01L; period_s '7' is not one of 0, 60, 3600,"
        " 86400; flag 'Q' is not an HJ 212 flag (N, F, M, S, D, C, T, B) or a QC state (valid,"
        " suspect, invalid, below_detection, maintenance, calibration, manual, stopped, fault,"
        " over_range, comm_fault)",
        "gz-w-dadun",
        "as",
        "gz-w-dadun,as,yesterday,abc,mg/L,7,Q",
    )
    assert rows[5].item == Rejection(5, "station is empty", None, "cu", ",cu,2026-11-03,1,mg/L,,")
    assert rows[6].item == Rejection(
        6,
        "value '0.01L' is below the detection limit but flag 'C' says calibration",
        "gz-w-dadun",
        "zn",
        "gz-w-dadun,zn,2026-11-03,0.01L,mg/L,,C",
    )
    assert rows[7].item == Rejection(
        7, "the line has 3 fields; the header has 7", payload="gz-w-dadun,cu,2026-11-03"
    )


def test_optional_columns_may_be_left_out_and_reordered() -> None:
    rows = parse_rows("value,unit,time,parameter,station\n0.2,mg/L,2026-11-03,cu,gz-w-dadun\n")
    assert [row.item for row in rows] == [
        ReadingIn(
            station="gz-w-dadun",
            parameter="cu",
            time=datetime(2026, 11, 3, tzinfo=CST),
            value=0.2,
            unit="mg/L",
        )
    ]


def test_quoted_line_break_is_one_row_with_its_raw_text() -> None:
    rows = parse_rows('station,parameter,time,value,unit\n"gz-w-\ndadun",cu,2026-11-03,x,mg/L\n')
    assert [row.line for row in rows] == [2]
    assert rows[0].item == Rejection(
        0,
        "value 'x' is not a number, ND, or a detection limit like 0.01L",
        "gz-w-\ndadun",
        "cu",
        '"gz-w-\ndadun",cu,2026-11-03,x,mg/L',
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "",
            "the file is empty; line 1 must be the header station,parameter,time,value,unit"
            "[,period_s][,flag]",
        ),
        (
            "\n\n",
            "the file is empty; line 1 must be the header station,parameter,time,value,"
            "unit[,period_s][,flag]",
        ),
        (HEADER, "the file has a header but no data rows"),
        (HEADER + ",,,,,,\n", "the file has a header but no data rows"),
        (
            "station;parameter;time;value;unit\n",
            "line 1: bad header: unknown column(s) station;parameter;time;value;unit; missing"
            " column(s) station, parameter, time, value, unit (expected station,parameter,time,"
            "value,unit[,period_s][,flag])",
        ),
        (
            "站点,parameter,time,value,unit,remark\n",
            "line 1: bad header: unknown column(s) 站点, remark; missing column(s) station"
            " (expected station,parameter,time,value,unit[,period_s][,flag])",
        ),
        (
            "station,parameter,time,value,value,unit,\n",
            "line 1: bad header: repeated column(s) value; unknown column(s) (empty, column 7)"
            " (expected station,parameter,time,value,unit[,period_s][,flag])",
        ),
        (
            "gz-w-dadun,cu,2026-11-03,0.5,mg/L\n",
            "line 1: bad header: unknown column(s) gz-w-dadun, cu, 2026-11-03, 0.5, mg/l;"
            " missing column(s) station, parameter, time, value, unit (expected station,"
            "parameter,time,value,unit[,period_s][,flag])",
        ),
    ],
)
def test_unusable_files(text: str, reason: str) -> None:
    with pytest.raises(CsvFileError) as caught:
        parse_rows(text)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (42, "item must be a JSON object, not a number"),
        ("x", "item must be a JSON object, not a string"),
        (None, "item must be a JSON object, not null"),
        ([1], "item must be a JSON object, not an array"),
        (
            {"station": "gz-w-dadun", "parameter": "ph", "time": "2026-11-03T10:00"},
            "value: missing; unit: missing",
        ),
        (
            {"station": "s", "parameter": "p", "time": "noon", "value": 1, "unit": "1"},
            "time: 'noon' is not an ISO 8601 / RFC 3339 time",
        ),
        (
            {"station": "s", "parameter": "p", "time": 1700000000, "value": 1, "unit": "1"},
            "time: must be an RFC 3339 time string, not int (got 1700000000)",
        ),
        (
            {"station": "s", "parameter": "p", "time": "2026-11-03", "value": "7.1", "unit": "1"},
            'value: Input should be a valid number (got "7.1")',
        ),
        (
            {
                "station": "s",
                "parameter": "p",
                "time": "2026-11-03",
                "value": 1,
                "unit": "1",
                "period_s": 1800,
            },
            "period_s: Input should be 0, 60, 3600 or 86400 (got 1800)",
        ),
        (
            {
                "station": "s",
                "parameter": "p",
                "time": "2026-11-03",
                "value": 1,
                "unit": "1",
                "flag": "X",
            },
            "flag: 'X' is not an HJ 212 flag (N, F, M, S, D, C, T, B) or a QC state (valid,"
            " suspect, invalid, below_detection, maintenance, calibration, manual, stopped,"
            " fault, over_range, comm_fault)",
        ),
        (
            {
                "station": "",
                "parameter": "p",
                "time": "2026-11-03",
                "value": 1,
                "unit": "1",
                "colour": "red",
            },
            'station: String should have at least 1 character (got ""); colour: unexpected field'
            " (allowed: station, parameter, time, value, unit, period_s, flag)",
        ),
    ],
)
def test_pushed_item_problems_name_each_field(item: object, reason: str) -> None:
    assert validate_item(item) == reason


def test_pushed_item_without_offset_is_china_time() -> None:
    item = validate_item(
        {"station": "s", "parameter": "p", "time": "2026-11-03T10:00", "value": None, "unit": "1"}
    )
    assert not isinstance(item, str)
    assert item.time == datetime(2026, 11, 3, 10, tzinfo=CST)
    assert (item.value, item.period_s, item.flag) == (None, 0, None)
