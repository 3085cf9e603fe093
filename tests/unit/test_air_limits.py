"""GB 3095 limits by edition and grade, against GB 3095 Table 1 (docs/standards.md §3.1)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from alerts.standards import air_edition_for, air_limit

CST = timezone(timedelta(hours=8))
EDITIONS = ("2012", "2026_transition", "2026_final")
# A date inside each edition, and its first and last instants.
DATES = {
    "2012": (date(2020, 6, 1), date(2026, 2, 28), datetime(2026, 2, 28, 23, 59, tzinfo=CST)),
    "2026_transition": (
        datetime(2026, 3, 1, 0, 0, tzinfo=CST),
        datetime(2026, 2, 28, 16, 0, tzinfo=UTC),
        date(2030, 12, 31),
    ),
    "2026_final": (
        date(2031, 1, 1),
        datetime(2030, 12, 31, 16, 0, tzinfo=UTC),
        datetime(2040, 1, 1, tzinfo=CST),
    ),
}
# (pollutant, averaging, grade): (2012, 2026 transition, 2026 final)
LIMITS: dict[tuple[str, str, int], tuple[float | None, float | None, float | None]] = {
    ("so2", "24h", 2): (150, 150, 50),
    ("so2", "1h", 2): (500, 500, 150),
    ("no2", "24h", 2): (80, 80, 50),
    ("no2", "1h", 2): (200, 200, 200),
    ("co", "24h", 2): (4, 4, 4),
    ("co", "1h", 2): (10, 10, 10),
    ("o3", "8h", 2): (160, 160, 160),
    ("o3", "1h", 2): (200, 200, 200),
    ("pm10", "24h", 2): (150, 120, 100),
    ("pm10", "annual", 2): (70, 60, 50),
    ("pm25", "24h", 2): (75, 60, 50),
    ("pm25", "annual", 2): (35, 30, 25),
    ("so2", "24h", 1): (50, 50, 50),
    ("so2", "1h", 1): (150, 150, 150),
    ("no2", "24h", 1): (80, 80, 50),
    ("no2", "1h", 1): (200, 200, 200),
    ("pm10", "24h", 1): (50, 50, 50),
    ("pm25", "24h", 1): (35, 35, 25),
    ("o3", "8h", 1): (100, 100, 100),
    ("o3", "1h", 1): (160, 160, 160),
    # GB 3095-2012 Table 1 (docs/standards.md §3.1), kept by the transition; final not known.
    ("so2", "annual", 2): (60, 60, None),
    ("no2", "annual", 2): (40, 40, None),
    # No value is known for these (docs/standards.md §3.1).
    ("co", "24h", 1): (None, None, None),
    ("co", "1h", 1): (None, None, None),
    ("pm10", "annual", 1): (None, None, None),
    ("pm25", "annual", 1): (None, None, None),
    ("o3", "24h", 2): (None, None, None),
}
CASES = [
    (pollutant, averaging, grade, at, limits[index])
    for (pollutant, averaging, grade), limits in LIMITS.items()
    for index, edition in enumerate(EDITIONS)
    for at in DATES[edition]
]


@pytest.mark.parametrize(("pollutant", "averaging", "grade", "at", "expected"), CASES)
def test_air_limit(
    pollutant: str, averaging: str, grade: int, at: date | datetime, expected: float | None
) -> None:
    assert air_limit(pollutant, averaging, at, grade) == expected


def test_grade_2_is_the_default() -> None:
    assert air_limit("pm25", "24h", date(2026, 3, 1)) == 60.0


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (date(2026, 2, 28), "2012"),
        (datetime(2026, 2, 28, 15, 59, 59, tzinfo=UTC), "2012"),
        (datetime(2026, 2, 28, 16, 0, tzinfo=UTC), "2026_transition"),
        (date(2026, 3, 1), "2026_transition"),
        (datetime(2030, 12, 31, 23, 59, 59, tzinfo=CST), "2026_transition"),
        (datetime(2030, 12, 31, 15, 59, 59, tzinfo=UTC), "2026_transition"),
        (datetime(2030, 12, 31, 16, 0, tzinfo=UTC), "2026_final"),
        (date(2031, 1, 1), "2026_final"),
    ],
)
def test_air_edition_boundaries(at: date | datetime, expected: str) -> None:
    assert air_edition_for(at) == expected


@pytest.mark.parametrize(
    ("pollutant", "averaging", "grade"),
    [("pm2.5", "24h", 2), ("pm25", "month", 2), ("pm25", "24h", 3), ("pm25", "24h", 0)],
)
def test_air_limit_rejects_unknown(pollutant: str, averaging: str, grade: int) -> None:
    with pytest.raises(ValueError):
        air_limit(pollutant, averaging, date(2026, 3, 1), grade)


def test_air_limit_needs_aware_datetime() -> None:
    with pytest.raises(ValueError):
        air_limit("pm25", "24h", datetime(2026, 3, 1, 12, 0))
