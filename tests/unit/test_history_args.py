"""`envlink demo --history Nd`: the argument, and the batches a load is cut into."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from envlink.cli import _parser
from envlink.history import MAX_DAYS, batches, history_days


@pytest.mark.parametrize(("text", "days"), [("400d", 400), ("1d", 1), (f"{MAX_DAYS}d", MAX_DAYS)])
def test_the_demo_takes_days_of_history(text: str, days: int) -> None:
    assert _parser().parse_args(["demo", "--history", text]).history == days
    assert history_days(text) == days


def test_the_demo_loads_no_history_unless_asked() -> None:
    assert _parser().parse_args(["demo"]).history is None


@pytest.mark.parametrize(
    "text", ["400", "d", "0d", "-5d", "400days", "400D", "4.5d", " 400d", f"{MAX_DAYS + 1}d", "1y"]
)
def test_anything_else_is_refused_naming_the_form(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(["demo", f"--history={text}"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"argument --history: expected a number of days from 1 to {MAX_DAYS}" in error
    assert f"such as 400d, not {text!r}" in error


def test_days_are_cut_into_runs_of_consecutive_days() -> None:
    first = date(2026, 1, 1)
    days = [first + timedelta(days=n) for n in (0, 1, 2, 3, 4, 6, 7, 9)]
    assert batches(days, size=3) == [
        days[0:3],
        days[3:5],
        days[5:7],
        days[7:8],
    ]
    assert batches([]) == []
