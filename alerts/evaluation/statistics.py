"""Period statistics of daily values: the mean and the HJ 663 Appendix A percentile."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt


def percentile_rank(count: int, percent: int) -> Fraction:
    """HJ 663 App. A rank k = 1 + (n - 1)·p/100 of the p-th percentile of n sorted values."""
    if count < 1:
        raise ValueError(f"a percentile needs at least one value, not {count}")
    if not 0 <= percent <= 100:
        raise ValueError(f"percentile {percent} is not 0..100")
    return 1 + Fraction((count - 1) * percent, 100)


def percentile(values: npt.ArrayLike, percent: int) -> float:
    """HJ 663 App. A percentile of the valid (non-NaN) values: X(s) + (X(s+1) - X(s))·(k - s).

    It equals numpy's default (linear) percentile; the rank is computed exactly.
    """
    data = np.asarray(values, dtype=np.float64)
    ordered = np.sort(data[~np.isnan(data)])
    rank = percentile_rank(ordered.size, percent)
    whole = math.floor(rank)
    low = float(ordered[whole - 1])
    if whole == rank:
        return low
    return low + (float(ordered[whole]) - low) * float(rank - whole)


def mean(values: npt.ArrayLike) -> float:
    """Arithmetic mean of the valid (non-NaN) values, from an exactly rounded sum.

    So the mean of 30 values of 0.2 is 0.2, not 0.20000000000000004: a mean at a limit stays at
    the limit for classification and publication.
    """
    data = np.asarray(values, dtype=np.float64)
    valid = data[~np.isnan(data)]
    if valid.size == 0:
        raise ValueError("a mean needs at least one value")
    return math.fsum(valid.tolist()) / valid.size


def nan_mean(stack: npt.ArrayLike, axis: int = 0) -> npt.NDArray[np.float64]:
    """Mean over `axis` of the non-NaN values; NaN where there is none (no warning)."""
    data = np.asarray(stack, dtype=np.float64)
    valid = ~np.isnan(data)
    counts = valid.sum(axis=axis)
    sums = np.where(valid, data, 0.0).sum(axis=axis)
    result = np.full(counts.shape, np.nan)
    np.divide(sums, counts, out=result, where=counts > 0)
    return result
