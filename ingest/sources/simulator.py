"""Plausible readings for every station × parameter of the catalogue, for demos and load.

Values are a deterministic function of (station, parameter, time): a diurnal cycle, the seasons,
a semidiurnal tide in the estuary, day-long pollution episodes at some stations, rare sensor
faults and noise (counter-based, so a year of one series is computed at once). Re-simulating the
same instant gives the same value, so a restarted simulator re-sends duplicates, never
revisions, and the demo's history (envlink demo --history) stores what it would have sent.
Given the demo's story (ingest.sources.story), it also plays its scripted scenes, still as a
deterministic function of time. The simulator source (`SimulatorJob`) delivers them each round
through the real paths where it has them: its MQTT stations through the broker, every station
over its own HJ 212 connection, and the rest straight through the pipeline.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from core.timeutil import CST, utcnow
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.base import SourceHealth
from ingest.sources.hj212.client import Hj212Fleet
from ingest.sources.mqtt import MqttPublisher
from ingest.sources.story import Story
from ingest.units import UnitError, conversion_factor
from schemas.common import QC
from schemas.readings import IntakeResult, ReadingIn
from store.catalogue import CatalogueSnapshot, ParameterRef, StationRef

log = logging.getLogger(__name__)

SIMULATOR = SourceRef(code="simulator", kind="simulator")

M2_TIDE_H = 12.42  # principal lunar semidiurnal period
# The tide's range at the estuary stations, from low to high water. Kept small enough that a
# flood tide raises conductivity by less than the estuary's jump rule (+500 uS/cm within an
# hour, config/thresholds.yaml), which is meant for intrusions and discharges, not every tide.
TIDE_SALINITY_PSU = 0.5
TIDE_CONDUCTIVITY_US_CM = 800.0
HOUR_S = 3600
DAY_S = 24 * HOUR_S
YEAR_DAYS = 365.2425
CST_OFFSET_S = 8 * HOUR_S  # Asia/Shanghai has kept +08:00 since 1992
_EPOCH_DAY = date(1970, 1, 1)

# (base, diurnal amplitude, hour of the diurnal peak, relative noise) in canonical units. The
# water items sit inside GB 3838 class II on an ordinary day (the sections' usual target), so
# that a class alert means an episode or one of the demo's scenes, not the noise.
_PROFILES: dict[str, tuple[float, float, float, float]] = {
    "so2": (9.0, 3.0, 10.0, 0.15),
    "no2": (32.0, 14.0, 8.5, 0.15),
    "co": (0.7, 0.2, 8.0, 0.1),
    "o3": (70.0, 55.0, 15.0, 0.12),
    "pm10": (52.0, 12.0, 21.0, 0.12),
    "pm25": (31.0, 9.0, 21.0, 0.12),
    "air_temp": (23.0, 4.5, 14.0, 0.02),
    "humidity": (74.0, -14.0, 14.0, 0.03),
    "pressure": (1010.0, 1.5, 10.0, 0.0005),
    "wind_speed": (2.6, 1.1, 15.0, 0.25),
    "wind_dir": (120.0, 40.0, 15.0, 0.2),
    "water_temp": (25.0, 1.2, 16.0, 0.01),
    "ph": (7.35, 0.2, 15.0, 0.01),
    "do": (7.3, 0.9, 15.0, 0.04),
    "conductivity": (260.0, 10.0, 12.0, 0.03),
    "turbidity": (18.0, 3.0, 10.0, 0.15),
    "codmn": (2.9, 0.3, 12.0, 0.08),
    "nh3n": (0.24, 0.06, 6.0, 0.1),
    "tp": (0.065, 0.015, 6.0, 0.1),
    "tn": (1.7, 0.2, 6.0, 0.06),
    "salinity": (1.5, 0.0, 0.0, 0.05),
    # Laboratory items (monthly samples): typical values of a class II-III river.
    "cod": (12.0, 0.0, 0.0, 0.1),
    "bod5": (2.5, 0.0, 0.0, 0.1),
    "cu": (0.005, 0.0, 0.0, 0.2),
    "zn": (0.03, 0.0, 0.0, 0.2),
    "as": (0.002, 0.0, 0.0, 0.2),
    "hg": (0.00002, 0.0, 0.0, 0.2),
    "cd": (0.0003, 0.0, 0.0, 0.2),
    "cr6": (0.004, 0.0, 0.0, 0.2),
    "pb": (0.003, 0.0, 0.0, 0.2),
    "cn": (0.002, 0.0, 0.0, 0.2),
    "phenol": (0.001, 0.0, 0.0, 0.2),
    "petroleum": (0.02, 0.0, 0.0, 0.2),
    "las": (0.05, 0.0, 0.0, 0.2),
    "sulfide": (0.01, 0.0, 0.0, 0.2),
    "fecal_coliform": (1500.0, 0.0, 0.0, 0.3),
    "fluoride": (0.4, 0.0, 0.0, 0.1),
    "se": (0.001, 0.0, 0.0, 0.2),
    "din": (0.25, 0.0, 0.0, 0.1),
    "po4p": (0.02, 0.0, 0.0, 0.1),
    "cod_mn_alkaline": (1.8, 0.0, 0.0, 0.1),
}
# How strongly each air pollutant follows the day's weather (a stagnant day concentrates them,
# a rainy or windy one clears the air), as the exponent of a log-normal factor of spread
# WEATHER_SPREAD; the weather is shared region-wide in part and changes smoothly from day to day.
WEATHER_SPREAD = 0.35
_WEATHER = {"pm25": 1.0, "pm10": 1.0, "no2": 0.7, "so2": 0.6, "co": 0.6, "o3": 0.6}
# Pollutants that an episode multiplies (and DO, which an episode depresses).
_EPISODE = {
    "pm25": 2.8,
    "pm10": 2.2,
    "no2": 1.8,
    "so2": 1.6,
    "co": 1.5,
    "nh3n": 3.5,
    "tp": 2.5,
    "codmn": 1.8,
    "do": 0.45,
}
_FAULT_RATE = 0.002
# The seasons of the Pearl River Delta: (swing, relative?, day of the year it peaks). Relative
# swings multiply the value by 1 ± swing, the others add ± swing (canonical unit). Particles,
# NO2, SO2 and CO peak in the dry, still winter; ozone in the sunny autumn; heat, humidity and
# runoff (turbidity, phosphorus) in the wet summer; the salt tide creeps up the estuary in the
# dry season, when the river carries least water.
_SEASONS: dict[str, tuple[float, bool, float]] = {
    "pm25": (0.45, True, 15.0),
    "pm10": (0.40, True, 15.0),
    "no2": (0.20, True, 15.0),
    "so2": (0.15, True, 15.0),
    "co": (0.15, True, 15.0),
    "o3": (0.25, True, 280.0),
    "air_temp": (7.0, False, 200.0),
    "humidity": (8.0, False, 150.0),
    "pressure": (7.0, False, 15.0),
    "water_temp": (6.0, False, 210.0),
    "do": (0.12, True, 15.0),
    "turbidity": (0.35, True, 170.0),
    "tp": (0.15, True, 170.0),
    "nh3n": (0.25, True, 15.0),
    "conductivity": (0.10, True, 30.0),
    "salinity": (0.50, True, 20.0),
}


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32("|".join(map(str, parts)).encode()))


@functools.lru_cache(maxsize=1 << 16)
def _has_episode(station: str, day: date) -> bool:
    """About one station-day in twelve has a pollution episode (06:00-18:00 local)."""
    return _rng("episode", station, day).random() < 1 / 12


@functools.lru_cache(maxsize=1 << 16)
def _weather_day(city: str, day: int) -> float:
    """A city's weather on a local day (days since 1970-01-01), as a standard normal number:
    mostly the region's, partly its own."""
    region = _rng("weather", day).gauss(0, 1)
    return 0.8 * region + 0.6 * _rng("weather", city, day).gauss(0, 1)


def _weather(city: str, local_days: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The city's weather at these instants (local days), from one local noon to the next."""
    since_noon = local_days - 0.5
    first = np.floor(since_noon)
    days, which = np.unique(first, return_inverse=True)
    on_day = np.array([_weather_day(city, int(day)) for day in days.tolist()])
    next_day = np.array([_weather_day(city, int(day) + 1) for day in days.tolist()])
    share = since_noon - first
    index = which.reshape(-1)
    weather: npt.NDArray[np.float64] = (1 - share) * on_day[index] + share * next_day[index]
    return weather


# splitmix64's finaliser: a counter-based generator, so the noise of any instant is computed
# directly (and for a year of instants at once) rather than drawn from a stream.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _uniform(seconds: npt.NDArray[np.int64], *parts: object) -> npt.NDArray[np.float64]:
    """A uniform number in (0, 1) for each whole second, fixed by `parts` and the second."""
    salt = np.uint64(zlib.crc32("|".join(map(str, parts)).encode()) * _GOLDEN & _MASK64)
    x = seconds.astype(np.uint64) * np.uint64(_GOLDEN) + salt
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def _gauss(seconds: npt.NDArray[np.int64], *parts: object) -> npt.NDArray[np.float64]:
    """A standard normal number for each whole second (Box-Muller over two uniforms)."""
    radius = np.sqrt(-2.0 * np.log(_uniform(seconds, *parts, "r")))
    return radius * np.cos(2 * math.pi * _uniform(seconds, *parts, "a"))


def _seasonal(code: str, local_days: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The seasonal swing of a parameter on these local days: cos(day of year - peak day)."""
    _, _, peak_day = _SEASONS[code]
    return np.cos(2 * math.pi * (local_days - peak_day) / YEAR_DAYS)


def canonical_values(
    station: StationRef,
    parameter: ParameterRef,
    seconds: npt.ArrayLike,
    *,
    estuary: bool,
) -> npt.NDArray[np.float64]:
    """The simulated values of one parameter at one station at instants given in seconds since
    the epoch (whole seconds seed the noise), in the canonical unit."""
    moments = np.asarray(seconds, dtype=np.float64)
    whole = np.floor(moments).astype(np.int64)
    local = moments + CST_OFFSET_S
    hour = np.mod(local, DAY_S) / HOUR_S
    base, amplitude, peak, noise = _PROFILES.get(
        parameter.code,
        (parameter.valid_min + (parameter.valid_max - parameter.valid_min) * 0.002, 0.0, 12.0, 0.1),
    )
    value = base + amplitude * np.cos(2 * math.pi * (hour - peak) / 24)
    if parameter.code in _SEASONS:
        swing, relative, _ = _SEASONS[parameter.code]
        season = swing * _seasonal(parameter.code, local / DAY_S)
        value = value * (1 + season) if relative else value + season
    if estuary and parameter.code in ("salinity", "conductivity"):
        tide = 0.5 * (1 + np.sin(2 * math.pi * (moments / HOUR_S) / M2_TIDE_H))
        salinity = parameter.code == "salinity"
        value = value + (TIDE_SALINITY_PSU if salinity else TIDE_CONDUCTIVITY_US_CM) * tide
    if parameter.code in _WEATHER:
        spread = WEATHER_SPREAD * _WEATHER[parameter.code]
        value = value * np.exp(spread * _weather(station.city, local / DAY_S))
    factor = _EPISODE.get(parameter.code, 1.0)
    if factor != 1.0:
        days, which = np.unique(np.floor_divide(local, DAY_S), return_inverse=True)
        on_day = [_has_episode(station.code, _EPOCH_DAY + timedelta(days=d)) for d in days.tolist()]
        episode = np.array(on_day, dtype=bool)[which.reshape(-1)]
        value = np.where(episode & (hour >= 6) & (hour < 18), value * factor, value)
    value = value * (1 + noise * _gauss(whole, "noise", station.code, parameter.code))
    if parameter.code == "wind_dir":
        return np.mod(value, 360.0)
    return np.clip(value, parameter.valid_min, parameter.valid_max)


def canonical_value(
    station: StationRef, parameter: ParameterRef, at: datetime, *, estuary: bool
) -> float:
    """The simulated value of one parameter at one station and instant, in the canonical unit."""
    return float(canonical_values(station, parameter, [at.timestamp()], estuary=estuary)[0])


def faults(
    station: StationRef, parameter: ParameterRef, seconds: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """Which of these instants (seconds since the epoch) the sensor reports as faulty."""
    whole = np.floor(np.asarray(seconds, dtype=np.float64)).astype(np.int64)
    return _uniform(whole, "fault", station.code, parameter.code) < _FAULT_RATE


def simulate(
    catalogue: CatalogueSnapshot,
    at: datetime,
    *,
    period_s: int = 0,
    stations: list[str] | None = None,
    story: Story | None = None,
) -> list[ReadingIn]:
    """One reading per station × parameter at `at`, in the unit each station sends (with the
    story's scenes played, when given: a silent station sends nothing)."""
    readings = []
    moment = [at.timestamp()]
    for station in catalogue.stations.values():
        if stations is not None and station.code not in stations:
            continue
        if story is not None and story.silent(catalogue, station.code, moment, period_s)[0]:
            continue
        estuary = any(p.code == "salinity" for p, _ in catalogue.parameters_of(station))
        for parameter, link in catalogue.parameters_of(station):
            value = canonical_value(station, parameter, at, estuary=estuary)
            if story is not None:
                played = story.apply(catalogue, station.code, parameter.code, moment, [value])
                value = float(played[0])
            try:
                value /= conversion_factor(parameter.code, link.unit, parameter.unit)
            except UnitError:
                continue  # a catalogue unit the converter rejects is reported by real intake
            qc = QC.FAULT if faults(station, parameter, [at.timestamp()])[0] else QC.VALID
            readings.append(
                ReadingIn(
                    station=station.code,
                    parameter=parameter.code,
                    time=at,
                    value=round(value, 4),
                    unit=link.unit,
                    period_s=period_s,
                    qc=qc,
                )
            )
    return readings


def hourly_history(
    catalogue: CatalogueSnapshot, now: datetime, *, hours: int, story: Story | None = None
) -> list[ReadingIn]:
    """Hourly means for the `hours` full hours before `now` (a demo starts with a history)."""
    last_hour = now.astimezone(CST).replace(minute=0, second=0, microsecond=0)
    readings: list[ReadingIn] = []
    for back in range(hours, 0, -1):
        at = last_hour - timedelta(hours=back)
        readings.extend(simulate(catalogue, at, period_s=3600, story=story))
    return readings


def story_backfill(catalogue: CatalogueSnapshot, story: Story, now: datetime) -> list[ReadingIn]:
    """Real-time readings of the stations whose backfilled scenes were under way before `now`,
    every BACKFILL_STEP_S of the last hours: so a scene's alerts start when it did."""
    stations, instants = story.backfill(catalogue, now)
    readings: list[ReadingIn] = []
    for second in instants:
        at = datetime.fromtimestamp(second, tz=UTC)
        readings.extend(simulate(catalogue, at, stations=stations, story=story))
    return readings


def hours_ended(last: datetime, at: datetime) -> list[datetime]:
    """The clock hours that ended after a round at `last` and by a round at `at` (their starts)."""
    first = last.replace(minute=0, second=0, microsecond=0)
    ended = []
    while first + timedelta(hours=1) <= at:
        ended.append(first)
        first += timedelta(hours=1)
    return [hour for hour in ended if hour + timedelta(hours=1) > last]


def round_4(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Python's round(v, 4) of each value, as simulate() rounds what it sends, at numpy speed.

    numpy scales by 10^4 before rounding, which may tip a value lying within a hair of a half
    the other way; those few are rounded by Python itself.
    """
    scaled = values * 1e4
    rounded = np.rint(scaled) / 1e4
    near_half = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < 1e-6
    for index in np.flatnonzero(near_half).tolist():
        rounded[index] = round(float(values[index]), 4)
    return rounded


@dataclass(frozen=True, slots=True)
class StoredSeries:
    """One series' simulated hourly means as the pipeline stores them (canonical unit)."""

    station_id: int
    parameter_id: int
    hours_s: npt.NDArray[np.int64]  # each hour's start, seconds since the epoch, ascending
    values: npt.NDArray[np.float64]
    qc: npt.NDArray[np.int16]


def stored_hourly_means(
    catalogue: CatalogueSnapshot, hours_s: npt.NDArray[np.int64], story: Story | None = None
) -> Iterator[StoredSeries]:
    """Every series' hourly means at these hour starts, in key order (station id, parameter id).

    Exactly what `hourly_history` sends and the pipeline stores: the value in the station's
    unit to 4 decimals, converted back, and none outside the parameter's valid range (which
    the pipeline rejects); so a live simulator re-sending any of these hours sends duplicates.
    """
    for station in sorted(catalogue.stations.values(), key=lambda s: s.id):
        links = sorted(catalogue.parameters_of(station), key=lambda pair: pair[0].id)
        estuary = any(p.code == "salinity" for p, _ in links)
        for parameter, link in links:
            try:
                factor = conversion_factor(parameter.code, link.unit, parameter.unit)
            except UnitError:
                continue  # simulate() sends nothing for it either
            canonical = canonical_values(station, parameter, hours_s, estuary=estuary)
            if story is not None:
                canonical = story.apply(catalogue, station.code, parameter.code, hours_s, canonical)
            values = round_4(canonical / factor) * factor + 0.0
            kept = (values >= parameter.valid_min) & (values <= parameter.valid_max)
            if story is not None:
                kept &= ~story.silent(catalogue, station.code, hours_s, 3600)
            qc = np.where(faults(station, parameter, hours_s), QC.FAULT.code, QC.VALID.code)
            yield StoredSeries(
                station.id, parameter.id, hours_s[kept], values[kept], qc[kept].astype(np.int16)
            )


def simulated_history(
    catalogue: CatalogueSnapshot,
    station: str,
    period_s: int,
    begin: datetime,
    end: datetime,
    *,
    story: Story | None = None,
) -> list[ReadingIn]:
    """A simulated station's stored period data from `begin` to `end` (HJ 212 requests)."""
    readings: list[ReadingIn] = []
    at, step = begin, timedelta(seconds=period_s)
    while at <= end and period_s:
        readings += simulate(catalogue, at, period_s=period_s, stations=[station], story=story)
        at += step
    return readings


class SimulatorJob:
    """Each round: a real-time reading for every station × parameter, through the real paths."""

    ref = SIMULATOR

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        interval_s: float,
        history_hours: int = 24,
        clock: Callable[[], datetime] = utcnow,
        mqtt: MqttPublisher | None = None,
        hj212: Hj212Fleet | None = None,
        story: Story | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._mqtt = mqtt
        self._hj212 = hj212
        self.interval_s = interval_s
        self._history_hours = history_hours
        self._clock = clock
        self._story = story
        self._started = False
        self._last_at: datetime | None = None
        self._running = False
        self._problem: tuple[str, datetime] | None = None
        self._counters = {"rounds": 0, "readings": 0}

    async def start(self) -> None:
        """Nothing to prepare: the HJ 212 devices dial in on the first round."""
        self._running = True

    async def stop(self) -> None:
        """Hang up the simulated HJ 212 devices."""
        self._running = False
        if self._hj212 is not None:
            await self._hj212.close()

    def health(self) -> SourceHealth:
        problem, at = self._problem or (None, None)
        return SourceHealth(SIMULATOR.code, self._running, problem, at, dict(self._counters))

    async def run(self) -> IntakeResult:
        """Deliver one round of readings (and, on the first round, the recent hourly history)."""
        try:
            return await self._round()
        except Exception as exc:
            self._problem = f"{type(exc).__name__}: {exc}", self._clock()
            raise

    async def _round(self) -> IntakeResult:
        catalogue = await self._pipeline.catalogue()
        now = self._clock()
        # Rounds are aligned to the interval so a round repeated after a restart is a duplicate.
        step = max(int(self.interval_s), 1)
        at = datetime.fromtimestamp(int(now.timestamp()) // step * step, tz=UTC)
        readings = simulate(catalogue, at, story=self._story)
        made = len(readings)
        if self._mqtt is not None:
            # Some stations report as MQTT sensors; they come back in through the subscriber.
            readings = await self._mqtt.divert(readings)
        if not self._started and self._history_hours:
            history = hourly_history(catalogue, now, hours=self._history_hours, story=self._story)
            readings += history
            made += len(history)
        if not self._started and self._story is not None:
            # The scenes already under way, minute by minute (none at the round's own instant).
            backfill = [r for r in story_backfill(catalogue, self._story, now) if r.time < at]
            readings += backfill
            made += len(backfill)
        if self._started and self._story is not None and self._last_at is not None:
            # The demo's stations upload each hour's mean once it is over (HJ 212 CN 2061), as
            # real stations do: QC's flat-line check judges a stuck sensor on those.
            for hour in hours_ended(self._last_at, at):
                means = simulate(catalogue, hour, period_s=3600, story=self._story)
                readings += means
                made += len(means)
        if self._hj212 is not None:
            # Each station uploads over its own HJ 212 connection, as in production. Parameters
            # without an HJ 212 code (hj212: null in parameters.yaml, e.g. salinity) cannot
            # travel over HJ 212: they come back here and go through the pipeline directly.
            readings = await self._hj212.deliver(catalogue, readings)
        result = await self._pipeline.ingest(readings, source=SIMULATOR)
        self._started = True
        self._last_at = at
        self._counters["rounds"] += 1
        self._counters["readings"] += made
        log.debug("simulator: %s", result.summary)
        return result
