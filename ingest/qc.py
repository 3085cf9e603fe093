"""Quality checks: ranges and times need no history; flat lines and spikes look at the series.

History checks (docs/conventions.md §4) only ever move a `valid` reading to `suspect`; device
states (M, C, S, F, D, T, B) and `below_detection` are the sources' word and are neither judged
nor used as evidence. They run over the readings of one series (station, parameter, averaging
period) in time order, with numpy:

- **Flat line / stuck value**: a run of readings, each unchanged (within a tiny tolerance) from
  the one before, of at least N = ceil(hours / step) readings (and `min_readings`) that lasts
  the rule's `hours` (first start to last end; an instant lasts nothing). The step is the
  averaging period, or for real-time data (period 0) the interval the station declares; as only
  about N readings around a batch are fetched, real-time data arriving much faster than declared
  is judged through the station's period data instead. Every valid reading of the run is
  flagged. Readings already `suspect` still count as part of a run, so a sensor that stays stuck
  stays flagged reading by reading.
- **Isolated spike**: a valid reading that jumps away from its valid neighbours and back, while
  the neighbours agree with each other. It is stored `valid` (and may alert at once) and is only
  re-flagged once the following reading exists. A step change (the next reading stays at the new
  level) and a ramp or a broad episode peak are never flagged.

The thresholds are data: HISTORY_RULES, per parameter in its canonical unit. Parameters that are
legitimately constant are exempt where they are: calm wind (wind_speed 0; wind_dir is not
checked at all, as the vane rests in calm), saturated humidity (100 %), fresh water's salinity
(0). Slow, coarsely quantised series (pH, water temperature, nutrients every 4 h, CO at 0.1 mg/m3,
SO2 in clean air) get longer runs. Lab items (monthly samples, often repeated "below detection")
have no history rules.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from schemas.common import QC
from store.qc import QcFlag, WindowReadings, WindowSpec
from store.readings import ReadingRow

FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int16]
BoolArray = npt.NDArray[np.bool_]

FLAT_LINE = "flat_line"
SPIKE = "spike"
# A reading time further ahead of the clock than this cannot be right (docs/conventions.md §3).
MAX_AHEAD = timedelta(days=1)


def range_problem(value: float | None, *, low: float, high: float, unit: str) -> str | None:
    """Why a value cannot be physically right, or None if it can."""
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return f"value {value} is not a finite number"
    if not low <= value <= high:
        return (
            f"value {value:g} {unit} is outside the physically possible range [{low:g}, {high:g}]"
        )
    return None


def time_problem(moment: datetime, *, now: datetime, earliest: datetime) -> str | None:
    """Why a reading time cannot be right (over a day ahead, or before the earliest date)."""
    if moment > now + MAX_AHEAD:
        return f"time {moment.isoformat()} is more than a day in the future"
    if moment < earliest:
        return f"time {moment.isoformat()} is before the earliest accepted date {earliest.date()}"
    return None


@dataclass(frozen=True)
class FlatLineRule:
    """A value unchanged (within `tolerance`) for `hours` is stuck, unless it is `exempt`."""

    hours: float
    min_readings: int = 5
    tolerance: float = 1e-9
    exempt: tuple[float, ...] = ()


@dataclass(frozen=True)
class SpikeRule:
    """A jump away from agreeing neighbours and straight back is an isolated outlier.

    The jump (the smaller of the rise and the fall) must reach `jump` (canonical unit) and
    `spread` x the window's robust spread of steps; with `relative`, the reading must also be at
    least (1 + relative) x the neighbours' mean level, or at most that level / (1 + relative)
    for a dip. The neighbours agree when they differ by at most `agree` x the jump, and each
    lies within `max_gap_steps` steps of the reading.
    """

    jump: float
    relative: float = 0.0
    spread: float = 6.0
    agree: float = 0.25
    max_gap_steps: float = 3.0


@dataclass(frozen=True)
class HistoryRules:
    """The history checks of one parameter; None switches a check off."""

    flat_line: FlatLineRule | None = None
    spike: SpikeRule | None = None


HISTORY_RULES: Mapping[str, HistoryRules] = {
    # Air pollutants, ug/m3 (co mg/m3). A spike must also double the level around it (or a dip
    # halve it).
    "so2": HistoryRules(FlatLineRule(hours=12), SpikeRule(jump=30, relative=1.0)),
    "no2": HistoryRules(FlatLineRule(hours=6), SpikeRule(jump=40, relative=1.0)),
    "co": HistoryRules(FlatLineRule(hours=12), SpikeRule(jump=1.0, relative=1.0)),
    "o3": HistoryRules(FlatLineRule(hours=6), SpikeRule(jump=60, relative=1.0)),
    "pm10": HistoryRules(FlatLineRule(hours=6), SpikeRule(jump=60, relative=1.0)),
    "pm25": HistoryRules(FlatLineRule(hours=6), SpikeRule(jump=40, relative=1.0)),
    # Weather. Gusts are real, so wind speed has no spike check.
    "air_temp": HistoryRules(FlatLineRule(hours=6), SpikeRule(jump=5)),
    "humidity": HistoryRules(FlatLineRule(hours=6, exempt=(100.0,)), SpikeRule(jump=25)),
    "pressure": HistoryRules(FlatLineRule(hours=6), SpikeRule(jump=5)),
    "wind_speed": HistoryRules(FlatLineRule(hours=6, exempt=(0.0,)), None),
    # Water, hourly; nutrients and CODMn every 4 hours.
    "water_temp": HistoryRules(FlatLineRule(hours=12), SpikeRule(jump=3)),
    "ph": HistoryRules(FlatLineRule(hours=24), SpikeRule(jump=1.0)),
    "do": HistoryRules(FlatLineRule(hours=12), SpikeRule(jump=3)),
    "conductivity": HistoryRules(FlatLineRule(hours=12), SpikeRule(jump=300, relative=0.5)),
    "turbidity": HistoryRules(FlatLineRule(hours=12), SpikeRule(jump=50, relative=1.0)),
    "codmn": HistoryRules(FlatLineRule(hours=24), SpikeRule(jump=4, relative=1.0)),
    "nh3n": HistoryRules(FlatLineRule(hours=24), SpikeRule(jump=1.0, relative=1.0)),
    "tp": HistoryRules(FlatLineRule(hours=24), SpikeRule(jump=0.2, relative=1.0)),
    "tn": HistoryRules(FlatLineRule(hours=24), SpikeRule(jump=2, relative=1.0)),
    "salinity": HistoryRules(FlatLineRule(hours=24, exempt=(0.0,)), SpikeRule(jump=8)),
}

# Runs longer than a day of minute data are not looked for: it bounds the window per series.
MAX_RUN_READINGS = 1440
# Readings fetched on each side of a stretch for the spike check and its spread estimate.
SPIKE_CONTEXT = 6
# The fewest that still judge a spike next to the stretch (the reading before the one before).
FAST_CONTEXT = 2
# Context is looked for no further than this many times its readings' steps from the stretch:
# enough for a series with gaps, and it keeps each lookup to the partitions near the stretch.
HORIZON_STEPS = 4
# The robust spread of steps is trusted from this many steps on; below, only the floors apply.
MIN_STEPS_FOR_SPREAD = 8
# 1.4826 x median absolute deviation estimates a normal standard deviation.
MAD_TO_SIGMA = 1.4826

SeriesKey = tuple[int, int, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_JUDGED = (QC.VALID.code, QC.SUSPECT.code)
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class SeriesPlan:
    """How to judge one series: its rules, its step and period in seconds, its unit.

    The step is the averaging period, or for real-time data the interval the station declares;
    a reading lasts its period (an instant lasts nothing).
    """

    rules: HistoryRules
    step_s: int
    unit: str
    period_s: int = 0

    def context(self) -> int:
        """Readings to fetch on each side of a stretch."""
        flat = self.rules.flat_line
        run = run_readings(flat, self.step_s) if flat is not None else None
        return max(SPIKE_CONTEXT, run or 1)


def run_readings(rule: FlatLineRule, step_s: float) -> int | None:
    """How many readings in a row make a flat line at this step; None if over the bound."""
    readings = max(rule.min_readings, math.ceil(rule.hours * 3600 / step_s - 1e-9))
    return readings if readings <= MAX_RUN_READINGS else None


@dataclass(frozen=True)
class Readings:
    """Valid and suspect readings of many windows, sorted by window then time.

    `touched` marks the readings a batch changed: a check only fires where it involves one, so
    readings judged before are not judged again on a different window.
    """

    window: npt.NDArray[np.intp]
    times_s: FloatArray
    values: FloatArray
    qc: CodeArray
    touched: BoolArray


@dataclass(frozen=True)
class SeriesWindow:
    """The readings of one series in time order, for judging a single window."""

    readings: Readings

    @classmethod
    def of(
        cls,
        times_s: Sequence[float],
        values: Sequence[float],
        qc: Sequence[int] | None = None,
        touched: Sequence[bool] | None = None,
    ) -> SeriesWindow:
        """Build a window; QC defaults to all valid and `touched` to all touched."""
        n = len(values)
        return cls(
            Readings(
                np.zeros(n, dtype=np.intp),
                np.asarray(times_s, dtype=np.float64),
                np.asarray(values, dtype=np.float64),
                np.asarray(qc if qc is not None else [QC.VALID.code] * n, dtype=np.int16),
                np.asarray(touched if touched is not None else [True] * n, dtype=np.bool_),
            )
        )


def flat_line_flags(
    window: SeriesWindow, *, step_s: int, rule: FlatLineRule, unit: str, period_s: int | None = None
) -> dict[int, str]:
    """Valid readings of the window that belong to a flat line, with the reason."""
    plan = SeriesPlan(
        HistoryRules(flat_line=rule), step_s, unit, step_s if period_s is None else period_s
    )
    return _flat_lines(window.readings, _RuleArrays.of([plan]))


def spike_flags(window: SeriesWindow, *, step_s: int, rule: SpikeRule, unit: str) -> dict[int, str]:
    """Valid readings the following reading shows to be isolated outliers, with the reason."""
    plan = SeriesPlan(HistoryRules(spike=rule), step_s, unit, step_s)
    return _spikes(window.readings, _RuleArrays.of([plan]))


def history_checks(
    window: SeriesWindow,
    *,
    step_s: int,
    rules: HistoryRules,
    unit: str,
    period_s: int | None = None,
) -> dict[int, tuple[str, str]]:
    """Every valid reading of the window a history check finds suspect: (check, reason)."""
    plan = SeriesPlan(rules, step_s, unit, step_s if period_s is None else period_s)
    return judge(window.readings, [plan])


def judge(readings: Readings, plans: Sequence[SeriesPlan]) -> dict[int, tuple[str, str]]:
    """Run both checks over many windows at once; `plans[w]` is window w's plan."""
    rules = _RuleArrays.of(plans)
    found = {index: (SPIKE, reason) for index, reason in _spikes(readings, rules).items()}
    for index, reason in _flat_lines(readings, rules).items():
        found.setdefault(index, (FLAT_LINE, reason))
    return found


@dataclass(frozen=True)
class _RuleArrays:
    """The plans' thresholds as arrays indexed by window, so one numpy pass judges them all."""

    step_s: FloatArray
    period_s: FloatArray
    run: npt.NDArray[np.int64]
    hours_s: FloatArray
    tolerance: FloatArray
    exempt: FloatArray  # windows x most exempt values, NaN-padded
    spike: BoolArray
    jump: FloatArray
    relative: FloatArray
    spread: FloatArray
    agree: FloatArray
    max_gap_s: FloatArray
    units: list[str]

    @classmethod
    def of(cls, plans: Sequence[SeriesPlan]) -> _RuleArrays:
        width = max([len(p.rules.flat_line.exempt) for p in plans if p.rules.flat_line] + [1])
        exempt = np.full((len(plans), width), np.nan)
        columns: dict[str, list[float]] = defaultdict(list)
        for index, plan in enumerate(plans):
            flat, spike = plan.rules.flat_line, plan.rules.spike
            run = run_readings(flat, plan.step_s) if flat is not None else None
            columns["run"].append(run if run is not None else _NEVER)
            columns["hours_s"].append(flat.hours * 3600 if flat else 0.0)
            columns["tolerance"].append(flat.tolerance if flat else 0.0)
            if flat and flat.exempt:
                exempt[index, : len(flat.exempt)] = flat.exempt
            columns["spike"].append(spike is not None)
            columns["jump"].append(spike.jump if spike else np.inf)
            columns["relative"].append(spike.relative if spike else 0.0)
            columns["spread"].append(spike.spread if spike else 0.0)
            columns["agree"].append(spike.agree if spike else 0.0)
            columns["max_gap_s"].append(spike.max_gap_steps * plan.step_s if spike else 0.0)
        return cls(
            step_s=np.array([p.step_s for p in plans], dtype=np.float64),
            period_s=np.array([p.period_s for p in plans], dtype=np.float64),
            run=np.array(columns["run"], dtype=np.int64),
            hours_s=np.array(columns["hours_s"]),
            tolerance=np.array(columns["tolerance"]),
            exempt=exempt,
            spike=np.array(columns["spike"], dtype=np.bool_),
            jump=np.array(columns["jump"]),
            relative=np.array(columns["relative"]),
            spread=np.array(columns["spread"]),
            agree=np.array(columns["agree"]),
            max_gap_s=np.array(columns["max_gap_s"]),
            units=[p.unit for p in plans],
        )


def _flat_lines(r: Readings, rules: _RuleArrays) -> dict[int, str]:
    n = r.values.size
    if n == 0:
        return {}
    w, x, t = r.window, r.values, r.times_s
    # Runs of readings unchanged from one to the next, within a window.
    same = np.zeros(n, dtype=np.bool_)
    same[1:] = (w[1:] == w[:-1]) & (np.abs(np.diff(x)) <= rules.tolerance[w[1:]])
    first = np.flatnonzero(~same)
    last = np.append(first[1:] - 1, n - 1)
    rw = w[first]
    length = last - first + 1
    span_s = t[last] - t[first] + rules.period_s[rw]
    touched = np.add.reduceat(r.touched.astype(np.int64), first) > 0
    exempt = np.any(np.abs(x[first, None] - rules.exempt[rw]) <= rules.tolerance[rw, None], axis=1)
    flat = (length >= rules.run[rw]) & (span_s >= rules.hours_s[rw] - 1e-6) & touched & ~exempt
    flags: dict[int, str] = {}
    for run in np.flatnonzero(flat):
        window = int(rw[run])
        hours = span_s[run] / 3600
        rule_hours = rules.hours_s[window] / 3600
        for index in range(int(first[run]), int(last[run]) + 1):
            if r.qc[index] == QC.VALID.code:
                flags[index] = (
                    f"flat line: {x[index]:g} {rules.units[window]} unchanged over"
                    f" {length[run]} readings in a row ({hours:g} h); {rules.run[window]}"
                    f" readings over {rule_hours:g} h mean a stuck sensor"
                )
    return flags


def _spikes(r: Readings, rules: _RuleArrays) -> dict[int, str]:
    n = r.values.size
    if n < 3:
        return {}
    w, x, t = r.window, r.values, r.times_s
    # The robust spread of each window's steps: 1.4826 x the median absolute step.
    within = w[1:] == w[:-1]
    steps = np.abs(np.diff(x))[within]
    owner = w[1:][within]
    counts = np.bincount(owner, minlength=rules.step_s.size)
    ordered = steps[np.lexsort((steps, owner))]
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    enough = counts >= MIN_STEPS_FOR_SPREAD
    median = np.zeros(counts.size)
    low, high = offsets + (counts - 1) // 2, offsets + counts // 2
    median[enough] = (ordered[low[enough]] + ordered[high[enough]]) / 2
    spread = MAD_TO_SIGMA * median

    wi = w[1:-1]
    before, value, after = x[:-2], x[1:-1], x[2:]
    rise, fall = value - before, value - after
    jump = np.minimum(np.abs(rise), np.abs(fall))
    threshold = np.maximum(rules.jump[wi], rules.spread[wi] * spread[wi])
    level = (before + after) / 2
    factor = 1 + rules.relative[wi]
    valid = r.qc == QC.VALID.code
    touched = r.touched
    outlier = (
        (w[:-2] == wi)
        & (w[2:] == wi)
        & rules.spike[wi]
        & (np.sign(rise) * np.sign(fall) > 0)
        & (jump >= threshold)
        & np.where(rise > 0, value >= factor * level, value * factor <= level)
        & (np.abs(after - before) <= rules.agree[wi] * jump)
        & (t[1:-1] - t[:-2] <= rules.max_gap_s[wi])
        & (t[2:] - t[1:-1] <= rules.max_gap_s[wi])
        & valid[:-2]
        & valid[1:-1]
        & valid[2:]
        & (touched[:-2] | touched[1:-1] | touched[2:])
    )
    flags: dict[int, str] = {}
    for i in np.flatnonzero(outlier):
        # In arrival order a flagged reading stops being its neighbour's valid evidence: in a
        # saw-tooth only every other reading is the outlier.
        if int(i) in flags:
            continue
        flags[int(i) + 1] = (
            f"isolated spike: {value[i]:g} {rules.units[wi[i]]} between {before[i]:g} and"
            f" {after[i]:g} (a jump of {jump[i]:g}, at least {threshold[i]:g}, and straight back)"
        )
    return flags


@dataclass(frozen=True)
class PlannedWindow:
    """A stretch to fetch, with the batch's own rows of it when they need not be fetched.

    `touched` holds the times (microseconds since the epoch) the batch changed; None means judge
    the whole window (the batch changed a reading that is not judged itself, such as a device
    state, next to these).
    """

    spec: WindowSpec
    plan: SeriesPlan
    rows: tuple[ReadingRow, ...]
    touched: frozenset[int] | None


def plan_windows(
    rows: Sequence[ReadingRow], touched: Sequence[bool], plans: Mapping[SeriesKey, SeriesPlan]
) -> list[PlannedWindow]:
    """The stretches of the series a batch touched, each to be fetched with its context.

    `touched[i]` says whether rows[i] changed the store (not a duplicate). Period data is split
    wherever the batch leaves a gap on its grid, so no stored reading can sit inside a stretch
    and the batch's rows stand in for it; real-time data has no grid, so it is fetched whole.
    """
    judged: dict[SeriesKey, dict[datetime, ReadingRow]] = defaultdict(dict)
    changed: dict[SeriesKey, set[datetime]] = defaultdict(set)
    for row, was_touched in zip(rows, touched, strict=True):
        key = (row.station_id, row.parameter_id, row.period_s)
        if key not in plans:
            continue
        # A key repeated in a batch is stored as its last occurrence.
        judged[key].pop(row.time, None)
        if row.value is not None and row.qc in _JUDGED:
            judged[key][row.time] = row
        if was_touched:
            changed[key].add(row.time)
    planned: list[PlannedWindow] = []
    for key, times in changed.items():
        plan = plans[key]
        moments = sorted(times)
        series = judged[key]
        period_s = key[2]
        if period_s:
            ordered = sorted(series.values(), key=lambda r: r.time)
            for stretch in _grid_stretches(ordered, period_s):
                first, last = stretch[0].time, stretch[-1].time
                if bisect_right(moments, last) > bisect_left(moments, first):
                    planned.append(_window(key, plan, first, last, stretch, moments, series))
            planned.extend(
                _window(key, plan, m, m, (), moments, series) for m in moments if m not in series
            )
        else:
            for cluster in _clusters(moments, plan.context() * plan.step_s):
                first, last = cluster[0], cluster[-1]
                spacing_s = (last - first).total_seconds() / max(len(cluster) - 1, 1)
                # Arriving faster than declared, no flat line can last its hours within the
                # context: the spike check's neighbours are all that is worth fetching.
                fast = len(cluster) > 1 and spacing_s < plan.step_s / 2
                context = FAST_CONTEXT if fast else plan.context()
                planned.append(_window(key, plan, first, last, (), moments, series, context))
    return planned


def suspect_flags(planned: Sequence[PlannedWindow], fetched: WindowReadings) -> list[QcFlag]:
    """Judge every planned window, with its fetched context, in one pass; a flag per reading."""
    window = list(fetched.window)
    times_us = list(fetched.times_us)
    values = list(fetched.values)
    qc = list(fetched.qc)
    touched = []
    for w, moment in zip(window, times_us, strict=True):
        marks = planned[w].touched
        touched.append(marks is None or moment in marks)
    for w, plan in enumerate(planned):
        for row in plan.rows:
            assert row.value is not None
            moment = (row.time - _EPOCH) // _US
            window.append(w)
            times_us.append(moment)
            values.append(row.value)
            qc.append(row.qc)
            touched.append(plan.touched is None or moment in plan.touched)
    if not window:
        return []
    micros = np.array(times_us, dtype=np.int64)
    order = np.lexsort((micros, np.array(window, dtype=np.intp)))
    readings = Readings(
        np.array(window, dtype=np.intp)[order],
        micros[order] / 1e6,
        np.array(values, dtype=np.float64)[order],
        np.array(qc, dtype=np.int16)[order],
        np.array(touched, dtype=np.bool_)[order],
    )
    # Windows of one series may overlap: each reading is flagged once.
    flags: dict[tuple[int, int, int, datetime], QcFlag] = {}
    for index, (check, reason) in sorted(judge(readings, [p.plan for p in planned]).items()):
        spec = planned[int(readings.window[index])].spec
        at = _EPOCH + int(micros[order[index]]) * _US
        key = (spec.station_id, spec.parameter_id, spec.period_s, at)
        flags.setdefault(
            key, QcFlag(*key, value=float(readings.values[index]), check=check, reason=reason)
        )
    return list(flags.values())


def series_slices(rows: Sequence[ReadingRow], size: int) -> Iterator[list[ReadingRow]]:
    """The rows in slices of whole series, each about `size` rows, so judging can pause between."""
    by_series: dict[SeriesKey, list[ReadingRow]] = defaultdict(list)
    for row in rows:
        by_series[(row.station_id, row.parameter_id, row.period_s)].append(row)
    part: list[ReadingRow] = []
    for series in by_series.values():
        part += series
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def window_slices(
    planned: Sequence[PlannedWindow], fetched: WindowReadings, size: int
) -> Iterator[tuple[Sequence[PlannedWindow], WindowReadings]]:
    """The planned windows `size` at a time, each slice with its own fetched readings."""
    for start in range(0, len(planned), size):
        part = planned[start : start + size]
        low = bisect_left(fetched.window, start)
        high = bisect_left(fetched.window, start + len(part))
        yield (
            part,
            WindowReadings(
                tuple(w - start for w in fetched.window[low:high]),
                fetched.times_us[low:high],
                fetched.values[low:high],
                fetched.qc[low:high],
            ),
        )


def _window(
    key: SeriesKey,
    plan: SeriesPlan,
    first: datetime,
    last: datetime,
    batch_rows: Sequence[ReadingRow],
    moments: Sequence[datetime],
    judged: Mapping[datetime, ReadingRow],
    context: int | None = None,
) -> PlannedWindow:
    """A stretch [first, last] of a series; without `batch_rows` its inside is fetched too."""
    context = context or plan.context()
    hit = moments[bisect_left(moments, first) : bisect_right(moments, last)]
    return PlannedWindow(
        spec=WindowSpec(
            *key,
            first=first,
            last=last,
            before=context,
            after=context,
            inside=not batch_rows,
            horizon=timedelta(seconds=HORIZON_STEPS * context * plan.step_s),
        ),
        plan=plan,
        rows=tuple(batch_rows),
        touched=frozenset(map(_micros, hit)) if all(m in judged for m in hit) else None,
    )


@lru_cache(maxsize=4096)
def _micros(moment: datetime) -> int:
    """Microseconds since the epoch; remembered, as a batch's series share most of their times."""
    return (moment - _EPOCH) // _US


def _grid_stretches(rows: list[ReadingRow], period_s: int) -> list[list[ReadingRow]]:
    stretches: list[list[ReadingRow]] = []
    for row in rows:
        if stretches and (row.time - stretches[-1][-1].time).total_seconds() == period_s:
            stretches[-1].append(row)
        else:
            stretches.append([row])
    return stretches


def _clusters(moments: list[datetime], gap_s: float) -> list[list[datetime]]:
    clusters = [[moments[0]]]
    for moment in moments[1:]:
        if (moment - clusters[-1][-1]).total_seconds() <= gap_s:
            clusters[-1].append(moment)
        else:
            clusters.append([moment])
    return clusters
