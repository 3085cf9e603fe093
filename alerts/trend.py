"""A series' trend over its last three hours: a least-squares slope, judged against its noise.

The change over the window is slope × 3 h. Within ± the parameter's noise band (config/
parameters.yaml, `noise`) it is `steady`; beyond it, `rising` or `falling`. Fewer than three
points make no trend (`unknown`). Pure: numpy arrays in, a Trend out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt

TREND_WINDOW = timedelta(hours=3)
TREND_HOURS = TREND_WINDOW.total_seconds() / 3600
# A series is fitted on its newest valid value of each step of the window (at most 12 points):
# a 10-second real-time series says no more about 3 hours than that, and costs as little.
TREND_STEP = timedelta(minutes=15)
MIN_POINTS = 3

Direction = Literal["rising", "falling", "steady", "unknown"]


@dataclass(frozen=True, slots=True)
class Trend:
    """The slope (unit per hour; None when unknown), its direction and the points it used."""

    slope_per_hour: float | None
    direction: Direction
    points: int


def trend(hours: npt.ArrayLike, values: npt.ArrayLike, *, noise: float | None) -> Trend:
    """The least-squares trend of `values` at times `hours` (in hours, any origin).

    NaN values are no points. `noise` None is no band: any change is a rise or a fall.
    """
    x = np.asarray(hours, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    kept = np.isfinite(x) & np.isfinite(y)
    if not kept.all():
        x, y = x[kept], y[kept]
    count = int(x.size)
    if count < MIN_POINTS:
        return Trend(None, "unknown", count)
    dx = x - float(x.sum()) / count
    spread = float(dx @ dx)
    if spread == 0.0:
        return Trend(None, "unknown", count)  # every point at one instant: no slope
    slope = float(dx @ (y - float(y.sum()) / count)) / spread
    change = slope * TREND_HOURS
    band = noise or 0.0
    if abs(change) <= band:
        direction: Direction = "steady"
    else:
        direction = "rising" if change > 0 else "falling"
    return Trend(slope, direction, count)
