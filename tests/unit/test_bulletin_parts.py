"""The bulletin's own small parts: its month, the CWQI change, the exceedance text."""

from __future__ import annotations

from datetime import date

import pytest

from alerts.bulletin.assemble import bulletin_month, change_percent, exceedances_text
from core.errors import InvalidInput
from schemas.bulletin import Exceedance


def test_a_month_is_a_calendar_month() -> None:
    november = bulletin_month("2026-11")
    assert (november.start, november.end, november.label) == (
        date(2026, 11, 1), date(2026, 12, 1), "2026-11",
    )  # fmt: skip
    assert bulletin_month(" 2026-12 ").end == date(2027, 1, 1)
    assert bulletin_month("1901-01").start == date(1901, 1, 1)
    assert bulletin_month("2198-12").end == date(2199, 1, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13", "month: '2026-13': month 13 is not 1..12"),
        ("2026-00", "month: '2026-00': month 0 is not 1..12"),
        ("2026-1", "month: '2026-1' is not YYYY-MM"),
        ("2026", "month: '2026' is not YYYY-MM"),
        ("1900-12", "month: '1900-12' is outside the years 1901-2198"),
        ("2199-01", "month: '2199-01' is outside the years 1901-2198"),
    ],
)
def test_a_bad_month_names_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        bulletin_month(text)
    assert str(raised.value) == message


def test_the_cwqi_change_is_of_the_published_figures_rounded_half_to_even() -> None:
    assert change_percent(0.4, 0.5) == -20.0
    assert change_percent(1.02, 0.5) == 104.0
    # 1.0005/1 → +0.05 % exactly: half to even gives 0.0, not 0.1.
    assert change_percent(1.0005, 1.0) == 0.0
    assert change_percent(1.0015, 1.0) == 0.2
    assert change_percent(None, 0.5) is None
    assert change_percent(0.4, None) is None
    assert change_percent(0.4, 0.0) is None


def test_exceedances_are_written_as_bulletins_write_them() -> None:
    found = [
        Exceedance(item="nh3n", name_zh="氨氮", multiple=0.24),
        Exceedance(item="tp", name_zh="总磷", multiple=0.1),
        Exceedance(item="do", name_zh="溶解氧", multiple=None),
    ]
    assert exceedances_text(found) == "氨氮(0.24)、总磷(0.10)、溶解氧"
    assert exceedances_text([]) == ""
