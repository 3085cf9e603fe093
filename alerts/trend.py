"""A series' trend over its last three hours: a least-squares slope, judged against its noise.

The change over the window is slope × 3 h. Within ± the parameter's noise band (config/
parameters.yaml, `noise`) it is `steady`; beyond it, `rising` or `falling`. Fewer than three
points make no trend (`unknown`). Pure: numpy arrays in, Trends out.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def trends(
    hours: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    noise: Sequence[float | None],
) -> list[Trend]:
    """The least-squares trend of each row: row i of `values` at times `hours` (in hours, any
    origin; 2-D, as wide as the most points a series has; NaN is no point, so shorter rows are
    padded with NaN) against `noise[i]`, where None is no band: any change is a rise or a fall.

    A situation fits a hundred series or more at once, for the cost of a few of them one by one.
    """
    kept = np.isfinite(hours) & np.isfinite(values)
    count = kept.sum(axis=1)
    # Each row's points about their means (0 where there is no point).
    dx = np.where(kept, hours, 0.0)
    dx = np.where(kept, dx - dx.sum(axis=1, keepdims=True) / np.maximum(count, 1)[:, None], 0.0)
    dy = np.where(kept, values, 0.0)
    dy = np.where(kept, dy - dy.sum(axis=1, keepdims=True) / np.maximum(count, 1)[:, None], 0.0)
    spread = (dx * dx).sum(axis=1)
    slope = (dx * dy).sum(axis=1) / np.where(spread == 0.0, 1.0, spread)
    found = []
    for points, width, rate, band in zip(
        count.tolist(), spread.tolist(), slope.tolist(), noise, strict=True
    ):
        if points < MIN_POINTS or width == 0.0:  # too few, or every point at one instant
            found.append(Trend(None, "unknown", points))
            continue
        change = rate * TREND_HOURS
        direction: Direction
        if abs(change) <= (band or 0.0):
            direction = "steady"
        else:
            direction = "rising" if change > 0 else "falling"
        found.append(Trend(rate, direction, points))
    return found
