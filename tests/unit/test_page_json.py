"""/v1/readings and /v1/latest write their items as dicts: byte for byte what the models write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from pydantic import TypeAdapter

from api import columns
from api.output import ZONES, json_response, steady_zone
from api.routers.readings import (
    COVERAGE_DECIMALS,
    latest_items,
    reading_fields,
    reading_items,
    rollup_fields,
    rollup_items,
)
from core.rounding import round_half_even, round_half_even_array
from schemas.common import QC, QC_BY_CODE, QC_CODES, Page
from schemas.readings import LatestOut, ReadingOut, RollupOut
from store.readings import LatestReading, PageRow, ReadingColumns
from store.rollups import RollupColumns, RollupPoint

# Whole seconds and microseconds; a summer of 1988, when China kept daylight saving (+09:00).
TIMES = [
    datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 3, 1, 1, 2, 3, 500_000, tzinfo=UTC),
    datetime(1988, 7, 1, 12, 0, 0, 123, tzinfo=UTC),
]
# Float noise, tiny and huge values, a negative zero, a missing value.
VALUES: list[float | None] = [1009.8220000000001, 1e-05, 3.0e20, -0.0, 12.0, None]
PERIODS = [0, 60, 3600, 86400]
# Since 1991-09-14 17:00 UTC, +08:00 all year: a page of such times takes the fixed-offset path.
STEADY_TIMES = [time for time in TIMES if time.year > 1991] + [
    datetime(1991, 9, 15, 0, 0, tzinfo=UTC),
    datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC),
]
# Both kinds of page: with a 1988 time (the zone database's path) and without (a fixed offset).
PAGES = {"with_1988": TIMES, "steady": STEADY_TIMES}


def _stored(times: list[datetime] = TIMES) -> list[PageRow]:
    return [
        (time, period_s, value, QC_CODES[QC.SUSPECT if value == 12.0 else QC.VALID])
        for time in times
        for period_s in PERIODS
        for value in VALUES
    ]


def test_a_page_takes_a_fixed_offset_only_where_it_writes_the_same_times() -> None:
    assert steady_zone(ZONES["UTC"], min(TIMES)) is UTC
    assert steady_zone(ZONES["Asia/Shanghai"], min(TIMES)) is None  # 1988: +09:00 in summer
    fixed = steady_zone(ZONES["Asia/Shanghai"], min(STEADY_TIMES))
    assert fixed is not None and fixed.utcoffset(None) == timedelta(hours=8)
    assert steady_zone(ZONES["Asia/Shanghai"], None) == fixed  # an empty page
    assert steady_zone(ZONES["Asia/Shanghai"], datetime(1991, 9, 14, 16, tzinfo=UTC)) is None


def test_asia_shanghai_keeps_eight_hours_from_1991_09_15_to_2199() -> None:
    """What the fixed offset stands on: no daylight saving time since (each day checked: any
    such period lasts months)."""
    zone = ZONES["Asia/Shanghai"]
    day = datetime(1991, 9, 15, tzinfo=UTC)
    offsets = set()
    while day.year < 2200:
        offsets.add(day.astimezone(zone).utcoffset())
        day += timedelta(days=1)
    assert offsets == {timedelta(hours=8)}


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("zone_name", sorted(ZONES))
def test_reading_items_are_written_as_the_readings_page_model_writes_them(
    zone_name: str, page: str
) -> None:
    zone: tzinfo = ZONES[zone_name]
    rows = _stored(PAGES[page])
    values = [row[2] for row in rows]
    content = {"items": reading_items(rows, values, "ug/m3", zone), "next_cursor": "abc"}
    written = Page[ReadingOut].model_validate(content, strict=True)
    expected = TypeAdapter(Page[ReadingOut]).dump_json(written, by_alias=True)
    assert json_response(content).body == expected
    assert len(written.items) == len(PAGES[page]) * len(PERIODS) * len(VALUES)


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("zone_name", sorted(ZONES))
def test_latest_items_are_written_as_the_latest_page_model_writes_them(
    zone_name: str, page: str
) -> None:
    zone: tzinfo = ZONES[zone_name]
    rows = [
        LatestReading(
            1, 1, "gz-a-1", "pm25", time, period_s, value, "ug/m3", 1, QC_BY_CODE[qc], 3600
        )
        for time, period_s, value, qc in _stored(PAGES[page])
    ]
    values = [r.value for r in rows]
    content = {"items": latest_items(rows, values, zone), "next_cursor": None}
    written = Page[LatestOut].model_validate(content, strict=True)
    expected = TypeAdapter(Page[LatestOut]).dump_json(written, by_alias=True)
    assert json_response(content).body == expected
    assert written.items[0].age_s == 3600


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("period_s", [3600, 86400])
@pytest.mark.parametrize("zone_name", sorted(ZONES))
def test_rollup_items_are_written_as_the_rollup_page_model_writes_them(
    zone_name: str, period_s: int, page: str
) -> None:
    zone: tzinfo = ZONES[zone_name]
    coverages: list[float | None] = [1.0, 0.958, None]
    rows = [
        RollupPoint(time, value, 23, coverage, origin, "mg/L", 2)
        for time in PAGES[page]
        for value in VALUES
        for coverage in coverages
        for origin in ("reported", "computed")
    ]
    content = {
        "items": rollup_items(
            rows, [r.value for r in rows], [r.coverage for r in rows], period_s, zone
        ),
        "next_cursor": None,
    }
    written = Page[RollupOut].model_validate(content, strict=True)
    expected = TypeAdapter(Page[RollupOut]).dump_json(written, by_alias=True)
    assert json_response(content).body == expected
    assert len(written.items) == len(PAGES[page]) * len(VALUES) * len(coverages) * 2


# Pages written a field at a time (api.columns): the bytes reading_items and json_response
# write, wherever the columns write a page at all.

_UNIX = datetime(1970, 1, 1, tzinfo=UTC)


def _columns(rows: list[PageRow]) -> ReadingColumns:
    values = [row[2] for row in rows]
    return ReadingColumns(
        np.array([(row[0] - _UNIX) // timedelta(microseconds=1) for row in rows], np.int64),
        np.array([row[1] for row in rows], np.int32),
        np.array([np.nan if v is None else v for v in values], np.float64),
        np.array([row[3] for row in rows], np.int16),
    )


def _both(rows: list[PageRow], decimals: int | None, zone: tzinfo) -> tuple[bytes | None, bytes]:
    """The page as api.columns writes it (None where it does not), and as dicts."""
    page = _columns(rows)
    values = round_half_even_array(page.value, decimals)
    fields = reading_fields(page, values, decimals, "µg/m³", zone)
    written = None if fields is None else columns.items(fields)
    published = round_half_even([row[2] for row in rows], decimals)
    dicts = json_response({"items": reading_items(rows, published, "µg/m³", zone)}).body
    return written, bytes(dicts)[len(b'{"items":') : -1]


@pytest.mark.parametrize("zone_name", sorted(ZONES))
@pytest.mark.parametrize("decimals", range(10))
def test_a_page_of_columns_is_written_as_its_dicts(zone_name: str, decimals: int) -> None:
    """Random pages: values from 10^-9 to 10^16 at every count of decimals, negative, zero and
    missing; times with and without microseconds from 1991-09-15 to 9999, before 1970 in
    UTC; every period and QC code."""
    zone = ZONES[zone_name]
    random = np.random.default_rng(decimals)
    count = 3000
    earliest = (
        datetime(1991, 9, 15, tzinfo=UTC)
        if zone_name != "UTC"
        else datetime(1901, 1, 1, tzinfo=UTC)
    )
    span = (datetime(9999, 12, 30, tzinfo=UTC) - earliest) // timedelta(microseconds=1)
    offsets = np.sort(random.integers(0, span, count))
    offsets[: count // 2] -= offsets[: count // 2] % 1_000_000  # whole seconds
    times = [earliest + timedelta(microseconds=int(o)) for o in offsets]
    scale = 10.0 ** random.integers(-9, 17, count)
    values: list[float | None] = (random.standard_normal(count) * scale).tolist()
    for index in random.integers(0, count, 50).tolist():
        values[index] = None
    values[:4] = [0.0, -0.0, 0.5 * 10.0**-decimals, -2.5 * 10.0**-decimals]
    codes = sorted(QC_BY_CODE)
    rows = [
        (time, PERIODS[i % 4], value, codes[i % len(codes)])
        for i, (time, value) in enumerate(zip(times, values, strict=True))
    ]
    written, dicts = _both(rows, decimals, zone)
    # The huge and the tiny are left to the dicts: a page of values in range is written.
    assert written is None
    rounded = round_half_even([value for value in values], decimals)
    small = [v for v in rounded if v is not None and 0 < abs(v) < 1e-5]
    kept = [
        row
        for row, value in zip(rows, rounded, strict=True)
        if value is None or (abs(value) * 10**decimals < 1e15 and value not in small)
    ]
    written, dicts = _both(kept, decimals, zone)
    assert written == dicts
    assert len(orjson.loads(dicts)) == len(kept) > 1000


@pytest.mark.parametrize(
    ("value", "decimals", "writes"),
    [
        (99999999999999.9, 1, True),  # 15 digits
        (999999999999999.0, 0, True),
        (1e15, 0, False),  # 16 digits: orjson's own shortest decimal
        (0.00001, 5, True),  # orjson: 0.00001
        (0.00002, 6, True),
        (0.000001, 6, False),  # orjson: 1e-6
        (0.0000014, 9, False),
        (
            float("nan"),
            2,
            True,
        ),  # a missing value as the store reads it: null, as orjson writes NaN
        (float("nan"), 0, True),  # null is wider than the other values (1.0)
        (float("inf"), 2, False),
        (-0.0, 3, True),
        (2.675, 2, True),  # 2.68: the decimal half, not the double's
    ],
)
def test_a_value_is_written_by_the_columns_only_as_orjson_writes_it(
    value: float, decimals: int, writes: bool
) -> None:
    rows: list[PageRow] = [(STEADY_TIMES[0], 0, value, 0), (STEADY_TIMES[1], 60, 1.0, 0)]
    written, dicts = _both(rows, decimals, ZONES["Asia/Shanghai"])
    assert (written is not None) == writes
    if writes:
        assert written == dicts


def test_times_the_zone_wrote_with_daylight_saving_are_left_to_the_dicts() -> None:
    """1988 in Asia/Shanghai: +09:00 in summer; in UTC the same page is written."""
    summer = datetime(1988, 7, 1, 12, tzinfo=UTC)
    rows: list[PageRow] = [(summer, 3600, 1.5, 0), (datetime(2026, 1, 1, tzinfo=UTC), 0, 2.0, 0)]
    assert _both(rows, 1, ZONES["Asia/Shanghai"])[0] is None
    written, dicts = _both(rows, 1, ZONES["UTC"])
    assert (
        written
        == dicts
        == (
            b'[{"time":"1988-07-01T12:00:00Z","period_s":3600,"period_end":"1988-07-01T13:00:00Z",'
            b'"value":1.5,"unit":"\xc2\xb5g/m\xc2\xb3","qc":"valid"},'
            b'{"time":"2026-01-01T00:00:00Z","period_s":0,"period_end":null,"value":2.0,'
            b'"unit":"\xc2\xb5g/m\xc2\xb3","qc":"valid"}]'
        )
    )


def test_an_empty_page_of_columns_is_an_empty_array() -> None:
    assert _both([], 1, ZONES["Asia/Shanghai"]) == (b"[]", b"[]")


def test_a_column_of_codes_is_their_literals() -> None:
    assert columns.choices(np.array([3600, 3600], np.int32), lambda c: b"%d" % c) == b"3600"
    for codes in ([0, 60, 0, 86400], [0, 200_000, 0, 7]):  # a table by code; sorted codes
        column = columns.choices(np.array(codes, np.int32), lambda c: b"<%d>" % c)
        assert isinstance(column, np.ndarray)
        assert columns.literals(column) == [b"<%d>" % c for c in codes]
    flags = columns.choices(np.array([True, False, True]), lambda c: b"yes" if c else b"no")
    assert isinstance(flags, np.ndarray)
    assert columns.literals(flags) == [b"yes", b"no", b"yes"]


def _rollup_columns(rows: list[RollupPoint]) -> RollupColumns:
    def numbers(values: list[float | None]) -> npt.NDArray[np.float64]:
        return np.array([np.nan if v is None else v for v in values], np.float64)

    return RollupColumns(
        np.array([(r.time - _UNIX) // timedelta(microseconds=1) for r in rows], np.int64),
        numbers([r.value for r in rows]),
        np.array([r.count for r in rows], np.int64),
        numbers([r.coverage for r in rows]),
        np.array([r.origin == "reported" for r in rows], np.bool_),
        rows[0].unit if rows else "",
        rows[0].decimals if rows else None,
    )


@pytest.mark.parametrize("zone_name", sorted(ZONES))
@pytest.mark.parametrize("period_s", [3600, 86400])
@pytest.mark.parametrize("decimals", [0, 1, 3, 5])
def test_a_page_of_rollup_columns_is_written_as_its_dicts(
    zone_name: str, period_s: int, decimals: int
) -> None:
    zone = ZONES[zone_name]
    random = np.random.default_rng(period_s + decimals)
    count = 2000
    start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=int(random.integers(0, 9999)))
    values: list[float | None] = (random.standard_normal(count) * 10.0**decimals).tolist()
    coverages: list[float | None] = random.uniform(0, 1, count).tolist()
    for index in random.integers(0, count, 40).tolist():
        values[index] = None
    for index in random.integers(0, count, 40).tolist():
        coverages[index] = None
    rows = [
        RollupPoint(
            start + timedelta(seconds=i * period_s),
            value,
            int(random.integers(0, 8641)),
            coverage,
            "reported" if i % 7 == 0 else "computed",
            "mg/m³",
            decimals,
        )
        for i, (value, coverage) in enumerate(zip(values, coverages, strict=True))
    ]
    page = _rollup_columns(rows)
    published = round_half_even_array(page.value, decimals)
    shares = round_half_even_array(page.coverage, COVERAGE_DECIMALS)
    fields = rollup_fields(page, published, shares, period_s, zone)
    assert fields is not None
    written = columns.items(fields)
    dicts = json_response(
        {
            "items": rollup_items(
                rows,
                round_half_even(values, decimals),
                round_half_even(coverages, COVERAGE_DECIMALS),
                period_s,
                zone,
            )
        }
    ).body
    assert written == bytes(dicts)[len(b'{"items":') : -1]
    assert page.rows() == rows
    # Undeclared decimals (values as computed) are left to the dicts.
    undeclared = RollupColumns(*[getattr(page, f) for f in page.__slots__][:-1], None)
    assert rollup_fields(undeclared, page.value, shares, period_s, zone) is None


def test_integers_are_written_as_orjson_writes_them() -> None:
    numbers = [0, 7, -7, 10, 100, -1000, 8640, 2**62, -(2**62)]
    written = columns.integers(np.array(numbers, np.int64))
    assert columns.literals(written) == [orjson.dumps(n) for n in numbers]
    assert columns.literals(columns.integers(np.array([5, 12], np.int64))) == [b"5", b"12"]


def test_items_are_written_between_the_rest_of_the_response() -> None:
    names = np.frombuffer(b'"a"\0\0"bcd"', np.uint8).reshape(2, 5)  # "a" padded
    written = columns.items([("n", names), ("k", b"1")], before=b'{"items":', after=b"}")
    assert written == b'{"items":[{"n":"a","k":1},{"n":"bcd","k":1}]}'
    empty = np.empty((0, 1), dtype=np.uint8)
    assert columns.items([("n", empty)], before=b"<", after=b">") == b"<[]>"


def test_a_page_of_columns_is_cut_with_its_other_fields_kept() -> None:
    rows = [
        RollupPoint(datetime(2026, 3, 1, h, tzinfo=UTC), 1.0 * h, h, 0.5, "computed", "mg/L", 2)
        for h in range(5)
    ]
    page = _rollup_columns(rows)
    first = page.head(2)
    assert len(page) == 5 and len(first) == 2
    assert first.rows() == rows[:2] and (first.unit, first.decimals) == ("mg/L", 2)
    assert first.time(1) == datetime(2026, 3, 1, 1, tzinfo=UTC)
