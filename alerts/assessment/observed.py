"""A statistic over consecutive periods, and what its absence means (insufficient, no data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.quality import DataStatus

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def status_of(value: float | None, received: bool) -> DataStatus:
    """A value is valid; without one, something received is insufficient data, else no data."""
    if value is not None and np.isfinite(value):
        return "valid"
    return "insufficient_data" if received else "no_data"


@dataclass(frozen=True, slots=True)
class Observed:
    """One statistic over consecutive periods: NaN where it has no valid value, and whether
    anything was received for it there (no value then is insufficient data, not no data)."""

    values: FloatArray
    received: BoolArray

    @classmethod
    def of(cls, values: npt.ArrayLike) -> Observed:
        """Values whose every NaN is a period nothing was received for."""
        array = np.asarray(values, dtype=np.float64)
        return cls(array, np.isfinite(array))

    @classmethod
    def single(cls, value: float | None, *, received: bool) -> Observed:
        """One period's value (None: none), and whether anything was received for it."""
        return cls(np.array([np.nan if value is None else value]), np.array([received]))

    def value(self, index: int) -> float | None:
        """The value of one period, or None."""
        value = float(self.values[index])
        return value if np.isfinite(value) else None

    def status(self, index: int) -> DataStatus:
        """Whether one period's value is valid, insufficient or was never received."""
        return status_of(self.value(index), bool(self.received[index]))
