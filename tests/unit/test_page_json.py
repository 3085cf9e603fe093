"""/v1/readings and /v1/latest write their items as dicts: byte for byte what the models write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from pydantic import TypeAdapter

from api.output import ZONES, json_response, steady_zone
from api.routers.readings import latest_items, reading_items, rollup_items
from schemas.common import QC, QC_BY_CODE, QC_CODES, Page
from schemas.readings import LatestOut, ReadingOut, RollupOut
from store.readings import LatestReading, PageRow
from store.rollups import RollupPoint

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
