"""Benchmark the pure evaluation core: a city's year of hourly air data to its published report.

No database: synthetic hourly means (log-normal around typical Guangzhou levels, 3 % of hours
missing) for N assessment stations (default 20) × 6 pollutants × a year, then, timed per run:
station daily values (day means, O3 MDA8), the city's daily values (mean over stations), the
evaluation of each period part (statistics, AQI days, shares, composite index) and its
published report. A year across 2026-03-01 is two parts. It also times the standards' daily AQI
of the same year day by day (`daily_aqi`) against the array form the evaluation uses.

    .venv/bin/python bench/evaluation.py
    .venv/bin/python bench/evaluation.py --stations 40 --year 2026 --runs 9

Figures are CPU time of this process (time.process_time), so other load on the machine's
cores inflates them less than wall time would; the median of the runs is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.evaluation.air import air_report, evaluate_air  # noqa: E402
from alerts.evaluation.air_days import AirDays, city_days, station_days  # noqa: E402
from alerts.evaluation.periods import year  # noqa: E402
from alerts.evaluation.rules import rule_set_for  # noqa: E402
from alerts.standards import daily_aqi, daily_aqi_array  # noqa: E402

TYPICAL = {"so2": 8.0, "no2": 40.0, "co": 0.8, "o3": 70.0, "pm10": 50.0, "pm25": 30.0}


def _hourly(days: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    found = {}
    for code, level in TYPICAL.items():
        values = level * rng.lognormal(0.0, 0.45, (days, 24))
        values[rng.random((days, 24)) < 0.03] = np.nan
        found[code] = values
    return found


def _cpu_ms(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return (time.process_time() - start) * 1000


def main() -> None:
    """Time the evaluation of one city-year and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    period = year(args.year)
    rng = np.random.default_rng(2026)
    hourly = [_hourly(period.days, rng) for _ in range(args.stations)]
    settings = rule_set_for(period.start).settings
    timings: dict[str, list[float]] = {"stations": [], "city": [], "evaluate": [], "total": []}
    for _ in range(args.runs):
        start = time.process_time()
        stations = [station_days(period.start, series) for series in hourly]
        after_stations = time.process_time()
        city = city_days(stations, settings)
        after_city = time.process_time()
        for part in period.parts():
            air_report(evaluate_air(city, part))
        end = time.process_time()
        timings["stations"].append((after_stations - start) * 1000)
        timings["city"].append((after_city - after_stations) * 1000)
        timings["evaluate"].append((end - after_city) * 1000)
        timings["total"].append((end - start) * 1000)
    print(
        f"{args.stations} stations × 6 pollutants × {period.days} days of hourly means "
        f"({len(period.parts())} part(s)), {args.runs} runs, median CPU time:"
    )
    for name, values in timings.items():
        print(f"  {name:>8}: {statistics.median(values):7.1f} ms")
    _compare_daily_aqi(city, rule_set_for(period.start).hj633, args.runs)


def _compare_daily_aqi(city: AirDays, edition: str, runs: int) -> None:
    def one_by_one() -> None:
        for offset in range(city.days):
            day = city.first_day + timedelta(days=offset)
            daily_aqi({key: float(values[offset]) for key, values in city.values.items()}, day)

    scalar = statistics.median(_cpu_ms(one_by_one) for _ in range(runs))
    arrays = statistics.median(
        _cpu_ms(lambda: daily_aqi_array(city.values, edition)) for _ in range(runs)
    )
    print(f"  daily AQI of {city.days} days, one by one (daily_aqi): {scalar:7.1f} ms")
    print(f"  daily AQI of {city.days} days, as arrays (daily_aqi_array): {arrays:7.1f} ms")


if __name__ == "__main__":
    main()
