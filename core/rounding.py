"""Published values: rounded half to even (GB/T 8170) to a parameter's decimal places.

A value is rounded as the decimal it arrived as (its shortest repr), not as the binary double
that holds it: at two places 0.125 → 0.12, 0.135 → 0.14 and 2.675 → 2.68, at none 2.5 → 2.
(Python's round() works on the double: round(2.675, 2) is 2.67, as the double nearest 2.675
lies just below it.) Only a value whose decimal form ends in a 5 right after the last place
kept can tell the two apart: numpy rounds all others, and those few are rounded exactly.
Exact numbers (fractions, decimals, the periodic evaluations' shares and indices) are rounded
by `round_exact`, the same rule on the exact value.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

import numpy as np
import numpy.typing as npt

Number = float | int | Fraction | Decimal

# How far from an exact half a scaled double may sit and still be a decimal half: scaling errs
# by a few units in the last place, far below this; a false candidate only costs one exact
# decimal rounding.
_NEAR_HALF = 1e-9
# From 2**52 up, a double has no fractional part left to round.
_WHOLE = 2.0**52
# Below 2**44 units of the last place kept, a double is within 2**-7 units of its value: the
# double nearest a decimal half is read back from no other decimal of as few digits.
_EXACT_HALVES = 2.0**44
# 10**0 to 10**22: every one exact as a double.
_TENS = np.array([float(10**places) for places in range(23)])


def round_half_even(
    values: Sequence[float | None], decimals: int | Sequence[int | None] | None
) -> list[float | None]:
    """Each value rounded half to even to its decimal places (one count, or one per value).

    None stays None, and so does a value whose count is None (nothing declared: left as is).
    """
    count = len(values)
    places = [decimals] * count if decimals is None or isinstance(decimals, int) else decimals
    if len(places) != count:
        raise ValueError(f"{len(places)} decimal counts for {count} values")
    present = [i for i in range(count) if values[i] is not None and places[i] is not None]
    if not present:
        return list(values)
    value = np.array([values[i] for i in present], dtype=np.float64)
    counts = np.array([places[i] for i in present], dtype=np.int64)
    out: list[float | None] = _rounded(value, counts).tolist()
    if len(present) == count:
        return out
    result = list(values)
    for slot, index in enumerate(present):
        result[index] = out[slot]
    return result


def round_half_even_array(
    values: npt.NDArray[np.float64], decimals: int | None
) -> npt.NDArray[np.float64]:
    """A column of values rounded half to even to `decimals` places, as `round_half_even`
    rounds each (NaN stays NaN; None: left as is)."""
    if decimals is None:
        return values
    return _rounded(values, np.full(len(values), decimals, dtype=np.int64))


def _rounded(
    value: npt.NDArray[np.float64], places: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    scale = _scales(places)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = value * scale
        whole = ~(np.abs(scaled) < _WHOLE)  # also NaN and the infinities
        fraction = np.abs(scaled - np.trunc(scaled))
        half = np.abs(fraction - 0.5) <= _NEAR_HALF * np.maximum(1.0, np.abs(scaled))
        rounded = np.where(whole, value, np.round(scaled) / scale) + 0.0  # -0.0 becomes 0.0
    slots = np.flatnonzero(half & ~whole)
    if len(slots):
        rounded[slots] = _halves(value[slots], places[slots], scaled[slots])
    return rounded


def _scales(places: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """10**places as doubles: exact from 10**0 to 10**22 (a table, not pow)."""
    exact = (places >= 0) & (places < len(_TENS))
    if exact.all():
        return _TENS[places]
    return np.where(exact, _TENS[np.clip(places, 0, len(_TENS) - 1)], 10.0 ** places.astype(float))


def _halves(
    value: npt.NDArray[np.float64], places: npt.NDArray[np.int64], scaled: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Values lying within a hair of a half of their last place kept, rounded as their shortest
    decimals are: half to even where a value is the double nearest that decimal half (then,
    below _EXACT_HALVES, its shortest decimal is the half itself), else away from the half on
    the side the value lies (the shortest decimal lies on the same side: a decimal is read as
    its nearest double, in order). Others (tens and hundreds, more than 22 places, the huge)
    are rounded one by one."""
    lower = np.floor(np.abs(scaled))
    exact = (places >= 0) & (places < len(_TENS)) & (lower < _EXACT_HALVES)
    tens = _TENS[np.where(exact, places, 0)]
    # The double nearest (2·lower + 1) / (2·10^places): both exact, divided correctly rounded.
    half = (2.0 * lower + 1.0) / (2.0 * tens)
    magnitude = np.abs(value)
    units = np.where(
        magnitude == half, lower + lower % 2, np.where(magnitude > half, lower + 1.0, lower)
    )
    rounded: npt.NDArray[np.float64] = np.copysign(units / tens, value) + 0.0
    for slot in np.flatnonzero(~exact).tolist():
        rounded[slot] = _decimal_round(float(value[slot]), int(places[slot]))
    return rounded


def round_value(value: float | None, decimals: int | None) -> float | None:
    """One value rounded half to even to `decimals` places (None: left as is)."""
    if value is None or decimals is None:
        return value
    return round_half_even([value], decimals)[0]


def exact(value: Number) -> Fraction:
    """A number as an exact fraction; a float as the shortest decimal that reads back as it."""
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    return Fraction(value)


def round_exact(value: Number, places: int) -> Decimal:
    """`value` rounded half to even to `places` decimals, exactly (a float as its decimal)."""
    # round() of a Fraction rounds half to even on the exact value, never on a binary float.
    units = round(exact(value) * 10**places)
    return Decimal(units).scaleb(-places)


# Rounding a double's shortest decimal: a candidate half (at most 17 digits, scaled below 2**52)
# needs far fewer digits than this, so no step of it is ever inexact; the context is explicit so
# that no caller's decimal context can change a published value.
_DECIMAL = Context(prec=60, rounding=ROUND_HALF_EVEN, Emin=MIN_EMIN, Emax=MAX_EMAX)
# The quantum of each count of decimal places: 10**-places.
_QUANTUM: dict[int, Decimal] = {}


def _decimal_round(value: float, decimals: int) -> float:
    """The shortest decimal of `value` quantized half to even to `decimals` places: the value
    `round_exact` gives (tests/unit/test_rounding.py compares the two), without the Fraction."""
    quantum = _QUANTUM.get(decimals)
    if quantum is None:
        if decimals < 0:  # tens, hundreds …: as round_exact, which scales by a float there
            return float(round_exact(value, decimals)) + 0.0
        quantum = _QUANTUM[decimals] = Decimal((0, (1,), -decimals))
    return float(Decimal(repr(value)).quantize(quantum, context=_DECIMAL)) + 0.0
