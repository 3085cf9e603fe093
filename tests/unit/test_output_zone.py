"""api.output.in_zone: every time of a response in the caller's zone, nothing else changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from api.output import in_zone
from core.timeutil import CST

AT = datetime(2026, 12, 6, 1, 30, tzinfo=UTC)


class Level(StrEnum):
    HIGH = "high"


class Point(BaseModel):
    time: datetime
    value: float | None
    note: str


class Alert(BaseModel):
    id: int
    level: Level
    opened_at: datetime
    closed_at: datetime | None
    points: list[Point]
    codes: list[str]
    details: dict[str, Any]
    flags: list[bool]


class Station(BaseModel):
    code: str
    river_km: float
    codes: list[str]


def _alert() -> Alert:
    return Alert(
        id=7,
        level=Level.HIGH,
        opened_at=AT,
        closed_at=None,
        points=[
            Point(time=AT + timedelta(hours=h), value=1.5, note=AT.isoformat()) for h in (0, 1)
        ],
        codes=["gz-w-dadun", "2026-12-06T01:30:00Z"],
        details={
            "since": "2026-12-06T01:30:00Z",
            "stations": [{"code": "dg-w-zhongtang", "at": "2026-12-06T09:30:00+08:00"}],
            "label": "not a time",
            "count": 3,
            "times": ["2026-12-06T01:30:00Z"],
        },
        flags=[True, False],
    )


def test_every_time_is_shifted_and_only_times() -> None:
    alert = _alert()
    shifted = in_zone(alert, CST)
    assert shifted.model_dump() == {
        "id": 7,
        "level": Level.HIGH,
        "opened_at": AT,
        "closed_at": None,
        "points": [
            {"time": AT + timedelta(hours=h), "value": 1.5, "note": "2026-12-06T01:30:00+00:00"}
            for h in (0, 1)
        ],
        "codes": ["gz-w-dadun", "2026-12-06T01:30:00Z"],  # a model's own strings stay
        "details": {
            "since": "2026-12-06T09:30:00+08:00",
            "stations": [{"code": "dg-w-zhongtang", "at": "2026-12-06T09:30:00+08:00"}],
            "label": "not a time",
            "count": 3,
            "times": ["2026-12-06T09:30:00+08:00"],
        },
        "flags": [True, False],
    }
    eight = timezone(timedelta(hours=8))
    assert [shifted.opened_at.utcoffset(), *(p.time.utcoffset() for p in shifted.points)] == [
        timedelta(hours=8)
    ] * 3
    assert shifted.opened_at.tzinfo is CST and shifted.opened_at.astimezone(eight).hour == 9
    assert alert.opened_at.tzinfo is UTC  # the model given is not changed


def test_free_form_times_in_utc_are_written_with_z() -> None:
    shifted = in_zone(_alert(), UTC)
    assert shifted.details["stations"][0]["at"] == "2026-12-06T01:30:00Z"
    assert shifted.details["since"] == "2026-12-06T01:30:00Z"


def test_a_model_without_times_comes_back_as_it_was() -> None:
    point = Point(time=AT, value=None, note="x")
    assert in_zone(point, UTC) is point  # already UTC: nothing to copy
    station = Station(code="gz-w-dadun", river_km=12.5, codes=["a", "2026-12-06T01:30:00Z"])
    assert in_zone(station, CST) is station
