"""Plausible readings for every station × parameter of the catalogue, for demos and load.

Values are a deterministic function of (station, parameter, time): a diurnal cycle, a semidiurnal
tide in the estuary, day-long pollution episodes at some stations, rare sensor faults and noise.
Re-simulating the same instant gives the same value, so a restarted simulator re-sends
duplicates, never revisions. The simulator source (`SimulatorJob`) delivers them each round
through the real paths where it has them: its MQTT stations through the broker, every station
over its own HJ 212 connection, and the rest straight through the pipeline.
"""

from __future__ import annotations

import logging
import math
import random
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from core.timeutil import CST, utcnow
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.base import SourceHealth
from ingest.sources.hj212.client import Hj212Fleet
from ingest.sources.mqtt import MqttPublisher
from ingest.units import UnitError, conversion_factor
from schemas.common import QC
from schemas.readings import IntakeResult, ReadingIn
from store.catalogue import CatalogueSnapshot, ParameterRef, StationRef

log = logging.getLogger(__name__)

SIMULATOR = SourceRef(code="simulator", kind="simulator")

M2_TIDE_H = 12.42  # principal lunar semidiurnal period

# (base, diurnal amplitude, hour of the diurnal peak, relative noise) in canonical units.
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
    "do": (6.8, 0.9, 15.0, 0.04),
    "conductivity": (260.0, 10.0, 12.0, 0.03),
    "turbidity": (18.0, 3.0, 10.0, 0.15),
    "codmn": (2.9, 0.3, 12.0, 0.08),
    "nh3n": (0.32, 0.08, 6.0, 0.1),
    "tp": (0.09, 0.02, 6.0, 0.1),
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


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32("|".join(map(str, parts)).encode()))


def _has_episode(station: str, day: datetime) -> bool:
    """About one station-day in twelve has a pollution episode (06:00-18:00 local)."""
    return _rng("episode", station, day.date()).random() < 1 / 12


def canonical_value(
    station: StationRef, parameter: ParameterRef, at: datetime, *, estuary: bool
) -> float:
    """The simulated value of one parameter at one station and instant, in the canonical unit."""
    local = at.astimezone(CST)
    hour = local.hour + local.minute / 60 + local.second / 3600
    base, amplitude, peak, noise = _PROFILES.get(
        parameter.code,
        (parameter.valid_min + (parameter.valid_max - parameter.valid_min) * 0.002, 0.0, 12.0, 0.1),
    )
    value = base + amplitude * math.cos(2 * math.pi * (hour - peak) / 24)
    if estuary and parameter.code in ("salinity", "conductivity"):
        tide_h = at.timestamp() / 3600
        tide = 0.5 * (1 + math.sin(2 * math.pi * tide_h / M2_TIDE_H))
        value += (7.0 if parameter.code == "salinity" else 9000.0) * tide
    if 6 <= local.hour < 18 and _has_episode(station.code, local):
        value *= _EPISODE.get(parameter.code, 1.0)
    value *= 1 + noise * _rng("noise", station.code, parameter.code, int(at.timestamp())).gauss(
        0, 1
    )
    if parameter.code == "wind_dir":
        return value % 360
    return min(max(value, parameter.valid_min), parameter.valid_max)


def simulate(
    catalogue: CatalogueSnapshot,
    at: datetime,
    *,
    period_s: int = 0,
    stations: list[str] | None = None,
) -> list[ReadingIn]:
    """One reading per station × parameter at `at`, in the unit each station sends."""
    readings = []
    for station in catalogue.stations.values():
        if stations is not None and station.code not in stations:
            continue
        estuary = any(p.code == "salinity" for p, _ in catalogue.parameters_of(station))
        for parameter, link in catalogue.parameters_of(station):
            value = canonical_value(station, parameter, at, estuary=estuary)
            try:
                value /= conversion_factor(parameter.code, link.unit, parameter.unit)
            except UnitError:
                continue  # a catalogue unit the converter rejects is reported by real intake
            qc = QC.VALID
            if (
                _rng("fault", station.code, parameter.code, int(at.timestamp())).random()
                < _FAULT_RATE
            ):
                qc = QC.FAULT
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


def hourly_history(catalogue: CatalogueSnapshot, now: datetime, *, hours: int) -> list[ReadingIn]:
    """Hourly means for the `hours` full hours before `now` (a demo starts with a history)."""
    last_hour = now.astimezone(CST).replace(minute=0, second=0, microsecond=0)
    readings: list[ReadingIn] = []
    for back in range(hours, 0, -1):
        readings.extend(simulate(catalogue, last_hour - timedelta(hours=back), period_s=3600))
    return readings


def simulated_history(
    catalogue: CatalogueSnapshot, station: str, period_s: int, begin: datetime, end: datetime
) -> list[ReadingIn]:
    """A simulated station's stored period data from `begin` to `end` (HJ 212 requests)."""
    readings: list[ReadingIn] = []
    at, step = begin, timedelta(seconds=period_s)
    while at <= end and period_s:
        readings += simulate(catalogue, at, period_s=period_s, stations=[station])
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
    ) -> None:
        self._pipeline = pipeline
        self._mqtt = mqtt
        self._hj212 = hj212
        self.interval_s = interval_s
        self._history_hours = history_hours
        self._clock = clock
        self._started = False
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
        readings = simulate(catalogue, at)
        made = len(readings)
        if self._mqtt is not None:
            # Some stations report as MQTT sensors; they come back in through the subscriber.
            readings = await self._mqtt.divert(readings)
        if not self._started and self._history_hours:
            history = hourly_history(catalogue, now, hours=self._history_hours)
            readings += history
            made += len(history)
        if self._hj212 is not None:
            # Each station uploads over its own HJ 212 connection, as in production. Parameters
            # without an HJ 212 code (hj212: null in parameters.yaml, e.g. salinity) cannot
            # travel over HJ 212: they come back here and go through the pipeline directly.
            readings = await self._hj212.deliver(catalogue, readings)
        result = await self._pipeline.ingest(readings, source=SIMULATOR)
        self._started = True
        self._counters["rounds"] += 1
        self._counters["readings"] += made
        log.debug("simulator: %s", result.summary)
        return result
