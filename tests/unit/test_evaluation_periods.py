"""Rule sets by date, periods and their parts, and the valid days a statistic needs (§1, §2)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from alerts.evaluation.periods import (
    Period,
    date_range,
    month,
    month_spans,
    parse_period,
    quarter,
    year,
)
from alerts.evaluation.rules import rule_set_for
from alerts.evaluation.validity import Insufficient, air_requirement, water_requirement
from core.errors import InvalidInput

OLD = "HJ 663-2013 / GB 3095-2012 / HJ 633-2012"
NEW = "HJ 663-2026 / GB 3095-2026 (transition limits) / HJ 633-2026"
FINAL = "HJ 663-2026 / GB 3095-2026 (final limits) / HJ 633-2026"


@pytest.mark.parametrize(
    ("day", "name", "editions"),
    [
        (date(2018, 11, 15), OLD, ("2013", "2012", "2012")),
        (date(2026, 2, 28), OLD, ("2013", "2012", "2012")),
        (date(2026, 3, 1), NEW, ("2026", "2026_transition", "2026")),
        (date(2030, 12, 31), NEW, ("2026", "2026_transition", "2026")),
        (date(2031, 1, 1), FINAL, ("2026", "2026_final", "2026")),
    ],
)
def test_rule_set_by_date(day: date, name: str, editions: tuple[str, str, str]) -> None:
    rule_set = rule_set_for(day)
    assert rule_set.name == name
    assert (rule_set.hj663, rule_set.gb3095, rule_set.hj633) == editions


def test_rule_set_limits_follow_its_edition() -> None:
    old, new = rule_set_for(date(2026, 2, 28)), rule_set_for(date(2026, 3, 1))
    assert (old.limit("pm25", "annual"), new.limit("pm25", "annual")) == (35.0, 30.0)
    assert (old.limit("pm10", "annual"), new.limit("pm10", "annual")) == (70.0, 60.0)
    assert old.composite_limits() == {
        "so2": 60.0, "no2": 40.0, "co": 4.0, "o3": 160.0, "pm10": 70.0, "pm25": 35.0
    }  # fmt: skip
    assert new.composite_limits() == {
        "so2": 60.0, "no2": 40.0, "co": 4.0, "o3": 160.0, "pm10": 60.0, "pm25": 30.0
    }  # fmt: skip


def test_rule_sets_compare_and_hash_by_value() -> None:
    assert rule_set_for(date(2026, 3, 1)) == rule_set_for(date(2027, 6, 1))
    assert rule_set_for(date(2026, 2, 28)) != rule_set_for(date(2026, 3, 1))
    assert len({rule_set_for(date(2026, 3, 1)), rule_set_for(date(2030, 1, 1))}) == 1


def test_rule_set_describes_its_composite_basis() -> None:
    described = rule_set_for(date(2026, 11, 1)).describe()
    assert described["composite_index"]["basis"] == (
        "unweighted, GB 3095-2026 (transition limits) Grade II limits"
    )
    assert described["first_day"] == "2026-03-01"
    assert described["until"] == "2031-01-01"
    assert described["settings"]["version"] == "1"


def test_year_2026_is_two_parts_each_with_its_rule_set() -> None:
    parts = year(2026).parts()
    assert [(p.start, p.end, p.rule_set.name) for p in parts] == [
        (date(2026, 1, 1), date(2026, 3, 1), OLD),
        (date(2026, 3, 1), date(2027, 1, 1), NEW),
    ]
    assert [p.label for p in parts] == [
        "2026 [2026-01-01, 2026-03-01)",
        "2026 [2026-03-01, 2027-01-01)",
    ]
    assert {p.kind for p in parts} == {"year"}


@pytest.mark.parametrize(
    ("period", "starts"),
    [
        (quarter(2026, 1), [date(2026, 1, 1), date(2026, 3, 1)]),
        (month(2026, 2), [date(2026, 2, 1)]),
        (month(2026, 3), [date(2026, 3, 1)]),
        (date_range(date(2026, 2, 27), date(2026, 3, 2)), [date(2026, 2, 27), date(2026, 3, 1)]),
        (date_range(date(2030, 12, 1), date(2031, 2, 1)), [date(2030, 12, 1), date(2031, 1, 1)]),
        (year(2025), [date(2025, 1, 1)]),
    ],
)
def test_parts_cut_only_at_rule_set_changes(period: Period, starts: list[date]) -> None:
    assert [part.start for part in period.parts()] == starts


@pytest.mark.parametrize(
    ("text", "start", "end", "kind"),
    [
        ("2026-11", date(2026, 11, 1), date(2026, 12, 1), "month"),
        ("2026-12", date(2026, 12, 1), date(2027, 1, 1), "month"),
        ("2026-Q3", date(2026, 7, 1), date(2026, 10, 1), "quarter"),
        ("2026-Q4", date(2026, 10, 1), date(2027, 1, 1), "quarter"),
        ("2026", date(2026, 1, 1), date(2027, 1, 1), "year"),
    ],
)
def test_parse_period(text: str, start: date, end: date, kind: str) -> None:
    period = parse_period(text)
    assert (period.start, period.end, period.kind, period.label) == (start, end, kind, text)


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-Q5", "26", "2026-1", "0000", "x"])
def test_parse_period_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_period(text)


def test_range_needs_end_after_start() -> None:
    with pytest.raises(InvalidInput):
        date_range(date(2026, 3, 1), date(2026, 3, 1))


@pytest.mark.parametrize(
    ("period", "earlier", "label"),
    [
        (month(2026, 11), (date(2025, 11, 1), date(2025, 12, 1)), "2025-11"),
        (quarter(2026, 1), (date(2025, 1, 1), date(2025, 4, 1)), "2025-Q1"),
        (year(2026), (date(2025, 1, 1), date(2026, 1, 1)), "2025"),
        (month(2024, 2), (date(2023, 2, 1), date(2023, 3, 1)), "2023-02"),
        (
            date_range(date(2024, 2, 29), date(2024, 3, 1)),
            (date(2023, 2, 28), date(2023, 3, 1)),
            "2023-02-28/2023-03-01",
        ),
        (
            date_range(date(2024, 2, 1), date(2024, 2, 29)),
            (date(2023, 2, 1), date(2023, 3, 1)),
            "2023-02-01/2023-03-01",
        ),
    ],
)
def test_year_earlier(period: Period, earlier: tuple[date, date], label: str) -> None:
    found = period.year_earlier()
    assert ((found.start, found.end), found.label) == (earlier, label)


def test_month_spans() -> None:
    assert month_spans(date(2026, 1, 20), date(2026, 3, 2)) == (
        (date(2026, 1, 1), 12, 31),
        (date(2026, 2, 1), 28, 28),
        (date(2026, 3, 1), 1, 31),
    )


def _days(total: int, valid: int) -> np.ndarray:
    flags = np.zeros(total, dtype=bool)
    flags[:valid] = True
    return flags


@pytest.mark.parametrize(
    ("start", "end", "valid", "expected"),
    [
        (date(2026, 11, 1), date(2026, 12, 1), 27, None),
        (date(2026, 11, 1), date(2026, 12, 1), 26, Insufficient(26, 27)),
        (date(2025, 2, 1), date(2025, 3, 1), 25, None),
        (date(2025, 2, 1), date(2025, 3, 1), 24, Insufficient(24, 25)),
        (date(2024, 2, 1), date(2024, 3, 1), 25, None),
        (date(2024, 2, 1), date(2024, 3, 1), 24, Insufficient(24, 25)),
        (date(2025, 1, 1), date(2026, 1, 1), 324, None),
        (date(2025, 1, 1), date(2026, 1, 1), 323, Insufficient(323, 324)),
        (date(2024, 1, 1), date(2025, 1, 1), 324, None),
        (date(2024, 1, 1), date(2025, 1, 1), 323, Insufficient(323, 324)),
    ],
)
def test_air_month_and_year_minimums(
    start: date, end: date, valid: int, expected: Insufficient | None
) -> None:
    requirement = air_requirement(start, end, every_month_valid=True)
    assert requirement.check(_days((end - start).days, valid)) == expected


def test_quarter_needs_every_month_valid() -> None:
    requirement = air_requirement(date(2025, 1, 1), date(2025, 4, 1), every_month_valid=True)
    assert requirement.need == 27 + 25 + 27
    flags = np.ones(90, dtype=bool)
    flags[31:35] = False  # February: 24 valid days, the quarter 86 of 90
    assert requirement.check(flags) == Insufficient(86, 79, ("2025-02",))
    flags[31] = True
    assert requirement.check(flags) is None


def test_quarter_by_total_when_the_setting_says_so() -> None:
    requirement = air_requirement(date(2025, 1, 1), date(2025, 4, 1), every_month_valid=False)
    flags = np.ones(90, dtype=bool)
    flags[31:35] = False
    assert requirement.check(flags) is None
    assert requirement.check(_days(90, 78)) == Insufficient(78, 79)


def test_year_parts_and_ranges_need_each_month_in_proportion() -> None:
    # The 2026 part from March: ten whole months; a range ending on 10 March: 10/31 of 27.
    requirement = air_requirement(date(2026, 3, 1), date(2027, 1, 1), every_month_valid=True)
    assert requirement.need == 9 * 27 + 27
    assert [m.label for m in requirement.months][:2] == ["2026-03", "2026-04"]
    short = air_requirement(date(2026, 3, 1), date(2026, 3, 11), every_month_valid=True)
    assert short.need == 9  # ceil(27 x 10 / 31) = ceil(8.7)
    assert short.check(_days(10, 9)) is None
    assert short.check(_days(10, 8)) == Insufficient(8, 9)


@pytest.mark.parametrize(("valid", "short"), [(20, False), (19, True)])
def test_water_month_completeness(valid: int, short: bool) -> None:
    requirement = water_requirement(date(2026, 11, 1), date(2026, 12, 1), month_min_valid_days=20)
    found = requirement.check(_days(30, valid))
    assert found == (Insufficient(19, 20) if short else None)


def test_insufficient_describes_itself() -> None:
    assert Insufficient(26, 27).describe() == {
        "status": "insufficient_data",
        "have": 26,
        "need": 27,
    }
    assert Insufficient(86, 79, ("2025-02",)).describe() == {
        "status": "insufficient_data",
        "have": 86,
        "need": 79,
        "short_months": ["2025-02"],
    }
