"""QC without a database: ranges, times, flat lines, isolated spikes, and planning the windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from ingest.qc import (
    FLAT_LINE,
    HISTORY_RULES,
    SPIKE,
    HistoryRules,
    Readings,
    SeriesPlan,
    SeriesWindow,
    SpikeRule,
    flat_line_flags,
    history_checks,
    judge,
    plan_windows,
    range_problem,
    run_readings,
    spike_flags,
    suspect_flags,
    time_problem,
)
from schemas.common import QC
from store.qc import QcFlag, WindowReadings, WindowSpec
from store.readings import ReadingRow

HOUR = 3600
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
V, S = QC.VALID.code, QC.SUSPECT.code
PM25 = HISTORY_RULES["pm25"]


def hourly(values: list[float], **options: object) -> SeriesWindow:
    return SeriesWindow.of([T0 + i * HOUR for i in range(len(values))], values, **options)  # type: ignore[arg-type]


def flat(
    window: SeriesWindow, parameter: str, step_s: int = HOUR, period_s: int | None = None
) -> list[int]:
    rule = HISTORY_RULES[parameter].flat_line
    assert rule is not None
    return sorted(flat_line_flags(window, step_s=step_s, rule=rule, unit="u", period_s=period_s))


def spikes(window: SeriesWindow, rule: SpikeRule | None = None, step_s: int = HOUR) -> list[int]:
    chosen = rule or PM25.spike
    assert chosen is not None
    return sorted(spike_flags(window, step_s=step_s, rule=chosen, unit="ug/m3"))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, None),
        (0.0, None),
        (2000.0, None),
        (-0.5, "value -0.5 ug/m3 is outside the physically possible range [0, 2000]"),
        (2000.1, "value 2000.1 ug/m3 is outside the physically possible range [0, 2000]"),
        (float("nan"), "value nan is not a finite number"),
        (float("inf"), "value inf is not a finite number"),
    ],
)
def test_range_problem(value: float | None, problem: str | None) -> None:
    assert range_problem(value, low=0, high=2000, unit="ug/m3") == problem


def test_time_problem() -> None:
    now = datetime(2026, 11, 26, 4, tzinfo=UTC)
    earliest = datetime(2000, 1, 1, tzinfo=UTC)
    assert time_problem(now + timedelta(days=1), now=now, earliest=earliest) is None
    assert time_problem(now + timedelta(days=1, seconds=1), now=now, earliest=earliest) == (
        "time 2026-11-27T04:00:01+00:00 is more than a day in the future"
    )
    assert time_problem(earliest, now=now, earliest=earliest) is None
    assert time_problem(earliest - timedelta(seconds=1), now=now, earliest=earliest) == (
        "time 1999-12-31T23:59:59+00:00 is before the earliest accepted date 2000-01-01"
    )


@pytest.mark.parametrize(
    ("parameter", "step_s", "readings"),
    [
        ("pm25", HOUR, 6),
        ("so2", HOUR, 12),
        ("ph", HOUR, 24),
        ("tp", 4 * HOUR, 6),  # nutrients every 4 hours
        ("pm25", 86400, 5),  # daily means: at least min_readings
        ("pm25", 60, 360),  # minute data
        ("ph", 60, 1440),
        ("ph", 30, None),  # over the bound: judged through the period data instead
    ],
)
def test_run_length_per_cadence(parameter: str, step_s: int, readings: int | None) -> None:
    rule = HISTORY_RULES[parameter].flat_line
    assert rule is not None
    assert run_readings(rule, step_s) == readings


def test_every_rule_is_for_a_registered_parameter_and_has_sane_thresholds() -> None:
    known = {
        "so2", "no2", "co", "o3", "pm10", "pm25", "air_temp", "humidity", "pressure",
        "wind_speed", "wind_dir", "water_temp", "ph", "do", "conductivity", "turbidity",
        "codmn", "nh3n", "tp", "tn", "salinity",
    }  # fmt: skip
    assert set(HISTORY_RULES) <= known
    assert "wind_dir" not in HISTORY_RULES  # the vane rests in calm: a constant is no fault
    for rules in HISTORY_RULES.values():
        if rules.flat_line:
            assert rules.flat_line.hours >= 6 and rules.flat_line.min_readings >= 5
        if rules.spike:
            assert rules.spike.jump > 0 and 0 < rules.spike.agree < 1


@pytest.mark.parametrize(
    ("values", "parameter", "flagged"),
    [
        ([35.0] * 5, "pm25", []),
        ([35.0] * 6, "pm25", [0, 1, 2, 3, 4, 5]),
        ([20.0, *[35.0] * 6, 40.0], "pm25", [1, 2, 3, 4, 5, 6]),
        ([35.0, 35.0, 35.0, 35.01, 35.0, 35.0, 35.0], "pm25", []),  # resolution is not a stop
        ([8.0] * 11, "so2", []),  # clean air repeats low SO2 for hours
        ([8.0] * 12, "so2", list(range(12))),
        ([0.0] * 10, "wind_speed", []),  # calm
        ([2.5] * 6, "wind_speed", list(range(6))),
        ([100.0] * 12, "humidity", []),  # saturated in fog
        ([7.21] * 23, "ph", []),
        ([7.21] * 24, "ph", list(range(24))),
        ([0.0] * 30, "salinity", []),  # fresh water in the wet season
    ],
)
def test_flat_lines(values: list[float], parameter: str, flagged: list[int]) -> None:
    assert flat(hourly(values), parameter) == flagged


def test_flat_line_reason_names_the_value_and_the_rule() -> None:
    rule = PM25.flat_line
    assert rule is not None
    found = flat_line_flags(hourly([35.0] * 7), step_s=HOUR, rule=rule, unit="ug/m3")
    assert found[0] == (
        "flat line: 35 ug/m3 unchanged over 7 readings in a row (7 h);"
        " 6 readings over 6 h mean a stuck sensor"
    )


def test_flat_line_counts_suspect_readings_but_flags_only_valid_ones() -> None:
    window = hourly([35.0] * 7, qc=[S, S, S, S, S, S, V])
    assert flat(window, "pm25") == [6]


def test_flat_line_needs_a_touched_reading_in_the_run() -> None:
    window = hourly([35.0] * 6 + [40.0], touched=[False] * 6 + [True])
    assert flat(window, "pm25") == []
    window = hourly([35.0] * 6 + [40.0], touched=[False] * 5 + [True, False])
    assert flat(window, "pm25") == [0, 1, 2, 3, 4, 5]


def test_flat_line_in_real_time_data_must_last_the_rule_hours() -> None:
    # Identical instants 30 s apart from a station declaring hourly data: minutes, not hours.
    fast = SeriesWindow.of([T0 + i * 30 for i in range(7)], [35.0] * 7)
    assert flat(fast, "pm25", period_s=0) == []
    # Instants last nothing: six hourly ones span 5 h, seven span 6 h.
    slow = SeriesWindow.of([T0 + i * HOUR for i in range(7)], [35.0] * 7)
    assert flat(SeriesWindow.of(slow.readings.times_s[:6], [35.0] * 6), "pm25", period_s=0) == []
    assert flat(slow, "pm25", period_s=0) == [0, 1, 2, 3, 4, 5, 6]
    # A long run of fast instants that lasts 6 h is stuck too.
    long = SeriesWindow.of([T0 + i * 30 for i in range(721)], [35.0] * 721)
    assert flat(long, "pm25", period_s=0) == list(range(721))


def test_flat_line_of_daily_means() -> None:
    days = [T0 + i * 86400 for i in range(5)]
    assert flat(SeriesWindow.of(days[:4], [12.0] * 4), "pm25", 86400) == []
    assert flat(SeriesWindow.of(days, [12.0] * 5), "pm25", 86400) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("values", "flagged"),
    [
        ([30.0, 31.0, 150.0, 32.0, 30.0], [2]),  # isolated outlier
        ([30.0, 31.0, 150.0, 150.0, 151.0], []),  # step change: real, stays valid
        ([30.0, 31.0, 150.0], []),  # no following reading yet
        ([30.0, 60.0, 90.0, 120.0, 150.0], []),  # ramp
        ([30.0, 80.0, 150.0, 80.0, 30.0], []),  # broad episode peak
        ([30.0, 60.0, 30.0], []),  # jump 30 < 40 ug/m3
        ([300.0, 360.0, 300.0], []),  # jump 60 does not double the level of 300
        ([300.0, 700.0, 310.0], [1]),
        ([30.0, 150.0, 90.0], []),  # before and after disagree
        ([30.0, 2.0, 31.0], []),  # a dip of 28 < 40
        ([100.0, 5.0, 100.0], [1]),  # a dropout
        ([100.0, 60.0, 100.0], []),  # a dip that does not halve the level
        ([30.0, 150.0, 32.0, 160.0, 31.0], [1, 3]),
    ],
)
def test_spikes(values: list[float], flagged: list[int]) -> None:
    assert spikes(hourly(values)) == flagged


def test_dip_spike_with_a_rule_that_allows_it() -> None:
    rule = SpikeRule(jump=3)  # like water temperature: no relative floor
    assert spikes(hourly([25.0, 18.0, 25.2]), rule) == [1]
    assert spikes(hourly([25.0, 18.0, 18.2]), rule) == []


def test_spike_reason() -> None:
    rule = PM25.spike
    assert rule is not None
    found = spike_flags(hourly([30.0, 150.0, 32.0]), step_s=HOUR, rule=rule, unit="ug/m3")
    assert found == {
        1: "isolated spike: 150 ug/m3 between 30 and 32"
        " (a jump of 118, at least 40, and straight back)"
    }


def test_spike_neighbours_must_be_valid_and_close() -> None:
    assert spikes(hourly([30.0, 150.0, 32.0], qc=[S, V, V])) == []
    assert spikes(hourly([30.0, 150.0, 32.0], qc=[V, S, V])) == []  # already suspect
    gap = SeriesWindow.of([T0, T0 + HOUR, T0 + 5 * HOUR], [30.0, 150.0, 32.0])
    assert spikes(gap) == []  # 4 steps to the next reading
    near = SeriesWindow.of([T0, T0 + HOUR, T0 + 4 * HOUR], [30.0, 150.0, 32.0])
    assert spikes(near) == [1]
    realtime = SeriesWindow.of([T0, T0 + 10, T0 + 20], [30.0, 150.0, 32.0])
    assert spikes(realtime) == [1]


def test_spike_needs_a_touched_reading_next_to_it() -> None:
    window = hourly([30.0, 150.0, 32.0, 33.0], touched=[False, False, False, True])
    assert spikes(window) == []
    window = hourly([30.0, 150.0, 32.0, 33.0], touched=[False, False, True, True])
    assert spikes(window) == [1]


def test_spike_threshold_grows_with_a_noisy_window() -> None:
    rule = SpikeRule(jump=1, spread=6)
    calm = [10.0, 10.1, 10.0, 10.1, 10.0, 10.1, 10.0, 10.1, 25.0, 10.0]
    assert spikes(hourly(calm), rule) == [8]
    noisy = [10.0, 16.0, 10.0, 16.0, 10.0, 16.0, 10.0, 16.0, 25.0, 10.0]
    assert spikes(hourly(noisy), rule) == []


def test_history_checks_combine_and_respect_switched_off_checks() -> None:
    window = hourly([30.0, 150.0, 32.0, *[40.0] * 6])
    found = history_checks(window, step_s=HOUR, rules=PM25, unit="ug/m3")
    assert {i: check for i, (check, _) in found.items()} == {
        1: SPIKE,
        3: FLAT_LINE,
        4: FLAT_LINE,
        5: FLAT_LINE,
        6: FLAT_LINE,
        7: FLAT_LINE,
        8: FLAT_LINE,
    }
    wind = HISTORY_RULES["wind_speed"]
    assert history_checks(window, step_s=HOUR, rules=wind, unit="m/s").keys() == set(range(3, 9))
    nothing = HistoryRules()
    assert history_checks(window, step_s=HOUR, rules=nothing, unit="ug/m3") == {}


def test_windows_judged_together_never_mix() -> None:
    # Two series side by side: across the boundary 31, 150, 32 would look like a spike and the
    # two runs of 35 like one flat line of six.
    values = [30.0, 31.0, 35.0, 35.0, 35.0, 150.0, 32.0, 35.0, 35.0, 35.0]
    window = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    times = [T0 + i * HOUR for i in range(5)] * 2
    readings = Readings(
        np.array(window, dtype=np.intp),
        np.array(times),
        np.array(values),
        np.full(10, V, dtype=np.int16),
        np.ones(10, dtype=np.bool_),
    )
    plans = [SeriesPlan(PM25, HOUR, "ug/m3", HOUR)] * 2
    assert judge(readings, plans) == {}
    values[8] = 150.0  # window 1 now holds 150, 32, 35, 150, 35: a spike of its own
    found = judge(
        Readings(
            readings.window, readings.times_s, np.array(values), readings.qc, readings.touched
        ),
        plans,
    )
    assert {i: check for i, (check, _) in found.items()} == {8: SPIKE}


START = datetime(2026, 11, 26, 0, tzinfo=UTC)


def row(
    hour: float, value: float | None = 35.0, *, qc: int = V, period_s: int = HOUR
) -> ReadingRow:
    return ReadingRow(1, 6, period_s, START + timedelta(hours=hour), value, qc)


PLAN = SeriesPlan(PM25, HOUR, "ug/m3", HOUR)
PLANS = {(1, 6, HOUR): PLAN, (1, 6, 0): SeriesPlan(PM25, HOUR, "ug/m3", 0)}


def test_plan_one_stretch_for_contiguous_hours_with_context() -> None:
    rows = [row(h) for h in range(24)]
    planned = plan_windows(rows, [True] * 24, PLANS)
    assert [p.spec for p in planned] == [
        WindowSpec(
            1,
            6,
            HOUR,
            rows[0].time,
            rows[-1].time,
            before=6,
            after=6,
            inside=False,
            horizon=timedelta(hours=24),
        )
    ]
    assert planned[0].rows == tuple(rows)
    assert planned[0].touched == frozenset(int(r.time.timestamp()) * 1_000_000 for r in rows)


def test_plan_context_covers_the_longest_run() -> None:
    plan = SeriesPlan(HISTORY_RULES["ph"], HOUR, "1", HOUR)
    planned = plan_windows([row(0)], [True], {(1, 6, HOUR): plan})
    assert (planned[0].spec.before, planned[0].spec.after) == (24, 24)


def test_plan_splits_at_grid_gaps_and_skips_untouched_stretches() -> None:
    rows = [row(0), row(1), row(3), row(4), row(8)]
    planned = plan_windows(rows, [True, True, False, False, True], PLANS)
    assert [(p.spec.first, p.spec.last, len(p.rows)) for p in planned] == [
        (rows[0].time, rows[1].time, 2),
        (rows[4].time, rows[4].time, 1),
    ]


def test_plan_nothing_for_duplicates_or_series_without_rules() -> None:
    assert plan_windows([row(0), row(1)], [False, False], PLANS) == []
    other = ReadingRow(1, 99, HOUR, START, 1.0, V)
    assert plan_windows([other], [True], PLANS) == []


def test_plan_a_repeated_key_is_judged_as_its_last_occurrence() -> None:
    planned = plan_windows([row(0, 35.0), row(0, 50.0)], [True, True], PLANS)
    assert [r.value for r in planned[0].rows] == [50.0]
    planned = plan_windows([row(0, 35.0), row(0, 35.0, qc=10)], [True, True], PLANS)
    # The stored state is maintenance: nothing of the batch is judged, its neighbours are.
    assert [(p.spec.inside, p.rows, p.touched) for p in planned] == [(True, (), None)]


def test_plan_real_time_is_fetched_whole_in_clusters() -> None:
    rows = [row(0, period_s=0), row(1, period_s=0), row(20, period_s=0)]
    planned = plan_windows(rows, [True] * 3, PLANS)
    assert [(p.spec.first, p.spec.last, p.spec.inside, p.rows) for p in planned] == [
        (rows[0].time, rows[1].time, True, ()),
        (rows[2].time, rows[2].time, True, ()),
    ]
    assert [p.spec.before for p in planned] == [6, 6]


def test_plan_real_time_faster_than_declared_fetches_only_spike_neighbours() -> None:
    rows = [row(h / 3600, period_s=0) for h in (0, 30, 60)]  # every 30 s, declared hourly
    planned = plan_windows(rows, [True] * 3, PLANS)
    assert [(p.spec.before, p.spec.after, p.spec.horizon) for p in planned] == [
        (2, 2, timedelta(hours=8))
    ]


def test_suspect_flags_joins_fetched_context_and_batch_rows() -> None:
    batch = [row(2, 32.0)]
    planned = plan_windows(batch, [True], PLANS)
    at = int(START.timestamp()) * 1_000_000
    fetched = WindowReadings((0, 0), (at, at + HOUR * 1_000_000), (30.0, 150.0), (V, V))
    flags = suspect_flags(planned, fetched)
    assert flags == [
        QcFlag(
            1,
            6,
            HOUR,
            START + timedelta(hours=1),
            150.0,
            SPIKE,
            "isolated spike: 150 ug/m3 between 30 and 32 (a jump of 118, at least 40,"
            " and straight back)",
        )
    ]
