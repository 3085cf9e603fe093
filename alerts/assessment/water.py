"""The water class of a station for an hour (its sample) or a natural day (GB 3838 / GB 3097).

Numpy in, results out. A station is judged by the single-factor method on the items of its
standard (GB 3838 for its water body, or GB 3097) against its target class: per item class,
overall class, limiting items with their exceedance multiples.

Which value of an item a sample takes is decided here, once, for the API and the alerts alike.
The sample of an hour is judged from the hourly rollups, not from raw readings: that is where
the validity rules already apply (only QC valid and below-detection data, a station's own
reported hourly mean winning over samples, docs/standards.md §4), and it gives exactly one class per
hour, the unit /v1/water-quality is asked for — raw samples would give several classes within
an hour (DO every 15 minutes, nutrients at their own instants) and no single answer. An item's
value stands for one reporting interval of its series, counted in whole hours from the hour it
was measured in: the 08:00 value of a 4-hourly nutrient stands at 08:00-11:00 and no longer. A
sample describes the water until the next one is due; after that the item is missing, not old,
and reporting the missing sample is the staleness rule's business (it fires after two
intervals). Within its interval, the newest hour with a valid value stands; an interval that
holds rollups but no valid value is insufficient data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerts.assessment.observed import BoolArray, FloatArray, IntArray, status_of
from alerts.standards import (
    WaterAssessment,
    assess_sea_water,
    assess_surface_water,
    sea_class_label,
    surface_class_label,
)
from alerts.standards.tables import (
    SEA_WATER_ITEMS,
    SURFACE_WATER_ITEMS,
    SURFACE_WATER_NOT_EVALUATED,
)
from alerts.windows import HOUR_S
from schemas.quality import DataStatus

SEA_STANDARD = "gb3097"
# Every item any station may be judged on, whatever its standard.
WATER_ITEMS = frozenset({*SURFACE_WATER_ITEMS, *SEA_WATER_ITEMS})


@dataclass(frozen=True, slots=True)
class WaterSite:
    """What a water station is judged against: its standard, water body and target class."""

    standard: str
    water_body: str
    target_class: int

    @property
    def items(self) -> frozenset[str]:
        """The items its class is judged on (GB 3097, or GB 3838 for its water body)."""
        if self.standard == SEA_STANDARD:
            return frozenset(SEA_WATER_ITEMS)
        excluded = SURFACE_WATER_NOT_EVALUATED.get(self.water_body, frozenset())
        return frozenset(item for item in SURFACE_WATER_ITEMS if item not in excluded)

    def label(self, water_class: int) -> str:
        """A class as the site's standard writes it ('III', '劣V'; '2', '劣四类')."""
        if self.standard == SEA_STANDARD:
            return sea_class_label(water_class)
        return surface_class_label(water_class)


def water_class(site: WaterSite, values: Mapping[str, float]) -> WaterAssessment:
    """Single-factor class of one set of item values (an hour's sample, a day's or a longer
    period's means) against the site's standard and target; other items are ignored."""
    if site.standard == SEA_STANDARD:
        return assess_sea_water(values, target_class=site.target_class)
    return assess_surface_water(values, water_body=site.water_body, target_class=site.target_class)


def sample_hours(interval_s: int) -> int:
    """How many hours, from the one it was measured in, an item's value stands in a sample."""
    return max(1, math.ceil(interval_s / HOUR_S))


@dataclass(frozen=True, slots=True)
class Standing:
    """Per hour of an item's hourly grid: the value that stands (NaN: none), the hour it is
    from (-1: none), and whether anything was received within its interval. For a grid of
    several items (a row each), each array has a row an item."""

    values: FloatArray
    source: IntArray
    received: BoolArray

    def status(self, index: int | tuple[int, int]) -> DataStatus:
        """Whether the item is valid, insufficient or was never received in one hour's sample
        (of a grid of several items: the item's row and the hour)."""
        return status_of(float(self.values[index]), bool(self.received[index]))


def standing(
    values: npt.ArrayLike, received: npt.ArrayLike, *, hours: int | npt.ArrayLike
) -> Standing:
    """Which of an item's hourly means stands in each hour's sample (see the module docstring).

    `values` holds the item's hourly means over consecutive hours (NaN where an hour has no
    valid mean), `received` whether the hour holds a rollup at all; `hours` is sample_hours
    of the item's reporting interval. Where no valid value stands, `source` is the newest hour
    received within the interval, or -1. Several items at once: a row of hours each in
    `values` and `received`, and `hours` an item's (or one for all).
    """
    series = np.asarray(values, dtype=np.float64)
    held = np.asarray(received, dtype=bool)
    span = np.asarray(hours, dtype=np.int64)
    if series.ndim > 1:
        span = span[..., np.newaxis]  # an item's interval along its row
    index = np.arange(series.shape[-1])
    newest_valid = np.maximum.accumulate(np.where(np.isfinite(series), index, -1), axis=-1)
    newest_held = np.maximum.accumulate(np.where(held | np.isfinite(series), index, -1), axis=-1)
    valid = (newest_valid >= 0) & (index - newest_valid < span)
    within = (newest_held >= 0) & (index - newest_held < span)
    source = np.where(valid, newest_valid, np.where(within, newest_held, -1))
    value = np.take_along_axis(series, np.maximum(newest_valid, 0), axis=-1)
    stands = np.where(valid, value, np.nan)
    return Standing(stands, source.astype(np.int64), within)
