"""Plausible readings for every station × parameter of the catalogue, for demos and load.

Values are a deterministic function of (station, parameter, time): a diurnal cycle, a semidiurnal
tide in the estuary, day-long pollution episodes at some stations, rare sensor faults and noise.
Re-simulating the same instant gives the same value, so a restarted simulator re-sends
duplicates, never revisions.
"""

from __future__ import annotations

import math
import random
import zlib
from datetime import datetime, timedelta

from core.timeutil import CST
from ingest.pipeline import IngestCatalogue
from ingest.units import UnitError, conversion_factor
from schemas.common import QC
from schemas.readings import ReadingIn
from store.catalogue import ParameterRef, StationRef

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
    catalogue: IngestCatalogue,
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


def hourly_history(catalogue: IngestCatalogue, now: datetime, *, hours: int) -> list[ReadingIn]:
    """Hourly means for the `hours` full hours before `now` (a demo starts with a history)."""
    last_hour = now.astimezone(CST).replace(minute=0, second=0, microsecond=0)
    readings: list[ReadingIn] = []
    for back in range(hours, 0, -1):
        readings.extend(simulate(catalogue, last_hour - timedelta(hours=back), period_s=3600))
    return readings
