"""Published values: half to even on the decimal a value arrived as (GB/T 8170)."""

from __future__ import annotations

import math
import random
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from core.rounding import round_exact, round_half_even, round_value


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (0.125, 2, 0.12),
        (0.135, 2, 0.14),
        (2.5, 0, 2.0),
        (3.5, 0, 4.0),
        (-2.5, 0, -2.0),
        (2.675, 2, 2.68),  # round(2.675, 2) is 2.67: the double lies just below the half
        (1.005, 2, 1.0),
        (1.015, 2, 1.02),
        (0.0005, 3, 0.0),
        (0.0015, 3, 0.002),
        (1009.8220000000001, 1, 1009.8),
        (0.1 + 0.2, 1, 0.3),
        (60.5, 0, 60.0),  # HJ 633-2026: PM2.5 60.5 → 60
        (60.6, 0, 61.0),
        (0.00004999, 5, 0.00005),
        (123.0, 3, 123.0),
        (7, 2, 7.0),
        (1e300, 2, 1e300),
        (5e-324, 2, 0.0),
    ],
)
def test_values_round_half_to_even_as_decimals(
    value: float, decimals: int, expected: float
) -> None:
    assert round_value(value, decimals) == expected
    assert repr(round_value(value, decimals)) == repr(expected)


def test_a_negative_value_rounding_to_zero_is_plain_zero() -> None:
    rounded = round_value(-0.04, 1)
    assert rounded == 0.0 and math.copysign(1.0, rounded) == 1.0  # type: ignore[arg-type]


def test_none_and_undeclared_decimals_leave_values_as_they_are() -> None:
    assert round_value(None, 2) is None
    assert round_value(1.23456, None) == 1.23456
    assert round_half_even([1.25, None, 2.35], 1) == [1.2, None, 2.4]
    assert round_half_even([1.25, 2.35, 3.45], [1, None, 0]) == [1.2, 2.35, 3.0]
    assert round_half_even([], 2) == []


def test_one_count_per_value_is_checked() -> None:
    with pytest.raises(ValueError, match="2 decimal counts for 3 values"):
        round_half_even([1.0, 2.0, 3.0], [1, 2])


def test_many_values_agree_with_decimal_rounding_of_their_repr() -> None:
    rng = random.Random(8170)
    texts, places = [], []
    for _ in range(20_000):
        kept = rng.randrange(0, 6)
        whole = rng.choice((0, rng.randrange(10), rng.randrange(100_000)))
        sign = rng.choice(("", "-"))
        if rng.random() < 0.5:  # a 5 right after the place kept: the halves that matter
            fraction = "".join(rng.choice("0123456789") for _ in range(kept)) + "5"
        else:
            fraction = "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 8)))
        texts.append(f"{sign}{whole}.{fraction}")
        places.append(kept)
    expected = [
        float(Decimal(text).quantize(Decimal(1).scaleb(-p), rounding=ROUND_HALF_EVEN)) + 0.0
        for text, p in zip(texts, places, strict=True)
    ]
    assert round_half_even([float(t) for t in texts], places) == expected


def test_halves_round_as_the_exact_rule_does_at_every_count_and_magnitude() -> None:
    """The decimal halves (rounded by quantizing the shortest decimal) against round_exact (the
    exact fraction), up to the end of the range that has a fraction to round (2**52 scaled), for
    tiny, negative, and tens and hundreds places."""
    rng = random.Random(212)
    cases: list[tuple[float, int]] = [
        (4503599627370495.5, 0),  # the largest half below 2**52
        (-4503599627370494.5, 0),
        (450359962737049.45, 1),
        (45035996273.70495, 5),
        (0.0000000005, 9),
        (0.0000000015, 9),
        (-0.0000000025, 9),
        (5e-324, 9),
        (-0.5, 0),
        (-0.05, 1),
        (1250.0, -2),
        (1350.0, -2),
        (-25.0, -1),
        (1.7410064453021594e17, -2),
    ]
    for _ in range(20_000):
        places = rng.randrange(0, 10)
        digits = rng.randrange(1, 17)
        sign = rng.choice(("", "-"))
        text = f"{sign}{rng.randrange(10**digits)}5e{rng.randrange(-12, 16) - digits}"
        cases.append((float(text), places))
    for value, places in cases:
        if abs(value) * 10.0**places >= 2.0**52:
            continue  # no fractional part left to round: kept as it is
        expected = float(round_exact(value, places)) + 0.0
        assert repr(round_value(value, places)) == repr(expected), (value, places)


def test_values_a_hair_beside_a_half_round_to_the_side_they_lie_on() -> None:
    """A value within 1e-9 of a half of its last place kept, but not that decimal half (…49999999,
    …50000001): rounded as its shortest decimal is, down or up, at every count of places."""
    rng = random.Random(8171)
    cases: list[tuple[float, int]] = [(2.67500000001, 2), (2.67499999999, 2), (-0.4999999999, 0)]
    for _ in range(20_000):
        places = rng.randrange(0, 12)
        digits = rng.randrange(1, 12)
        tail = rng.choice(("49999999", "50000001", "4999999999999", "5000000000001"))
        text = f"{rng.choice(('', '-'))}{rng.randrange(10**digits)}{tail}e{-places - len(tail)}"
        cases.append((float(text), places))
    for value, places in cases:
        expected = float(round_exact(value, places)) + 0.0
        assert repr(round_value(value, places)) == repr(expected), (value, places)
