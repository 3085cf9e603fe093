"""Publication rounding (GB/T 8170, round half to even), applied to published figures only.

Statistics keep full precision; a published figure is rounded once: µg/m³ to integers, CO
(mg/m³) to one decimal, shares and changes to one decimal of a percent, indices and exceedance
multiples to two decimals. A float is read as its shortest decimal (0.125 is 0.125, not
0.1250000000000000069...) and rounded exactly, so 0.125 gives 0.12 and 0.135 gives 0.14: the
rule of every published value, core/rounding.py's.
"""

from __future__ import annotations

from fractions import Fraction

from core.rounding import Number, round_exact

CONCENTRATION_PLACES = {"co": 1}
SHARE_PLACES = 1
CHANGE_PLACES = 1
INDEX_PLACES = 2
MULTIPLE_PLACES = 2


def published(value: Number, places: int) -> int | float:
    """The JSON figure of `value` rounded to `places` decimals: an int for whole units."""
    rounded = round_exact(value, places)
    return int(rounded) if places == 0 else float(rounded)


def concentration_places(pollutant: str) -> int:
    """Decimals a concentration is published with: CO (mg/m³) 1, µg/m³ pollutants 0."""
    return CONCENTRATION_PLACES.get(pollutant, 0)


def published_concentration(pollutant: str, value: float) -> int | float:
    """A concentration as published: µg/m³ as integers, CO to one decimal."""
    return published(value, concentration_places(pollutant))


def published_share(share: Fraction) -> float:
    """A share (0..1) as a percent with one decimal."""
    return float(round_exact(share * 100, SHARE_PLACES))


def published_count(count: Fraction) -> int | float:
    """A day count: whole days as an int, a mean or split count to one decimal."""
    if count.denominator == 1:
        return int(count)
    return float(round_exact(count, SHARE_PLACES))
