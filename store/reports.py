"""Reads for period reports: a scope's assessment stations and their rollups as day/hour grids.

Daily means come from reading_daily (a natural day of Asia/Shanghai, NULL under 20 valid hours)
and hourly means from reading_hourly; both are returned as offsets into the period so the
caller can lay them into numpy arrays without touching a datetime per row. Laboratory items
(parameter group `lab`) are read as the period's samples instead, each with whether it was
below detection: a period mean of samples takes half a detection limit (docs/evaluation.md §5),
which a daily rollup holding the limit itself could no longer tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import numpy.typing as npt
from psycopg.rows import class_row

from schemas.common import QC
from store.pool import Conn


@dataclass(frozen=True, slots=True)
class AirStation:
    """An air station of a report's scope."""

    id: int
    code: str
    city: str


async def air_stations(
    conn: Conn, *, code: str | None = None, city: str | None = None
) -> list[AirStation]:
    """One air station by code (any), or a city's (None: both cities') assessment stations.

    Assessment stations are the air stations not marked background (docs/evaluation.md §2).
    """
    cur = await conn.execute(
        "SELECT id, code, city FROM station WHERE medium = 'air'"
        " AND (%(code)s::text IS NOT NULL OR background IS NOT TRUE)"
        " AND (%(code)s::text IS NULL OR code = %(code)s)"
        " AND (%(city)s::text IS NULL OR city = %(city)s) ORDER BY code",
        {"code": code, "city": city},
    )
    return [AirStation(int(i), str(c), str(y)) for i, c, y in await cur.fetchall()]


@dataclass(frozen=True)
class GridValues:
    """Values by (station id, parameter code, offset): days or hours from the start."""

    station_ids: npt.NDArray[np.int64]
    parameters: npt.NDArray[np.str_]
    offsets: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


_DAILY = """
SELECT d.station_id, p.code, d.day - %(start)s::date, d.value
FROM reading_daily d JOIN parameter p ON p.id = d.parameter_id
WHERE d.station_id = ANY(%(stations)s) AND (%(codes)s::text[] IS NULL OR p.code = ANY(%(codes)s))
  AND d.day >= %(start)s AND d.day < %(end)s AND d.value IS NOT NULL
"""

_HOURLY = """
SELECT h.station_id, p.code, (extract(epoch FROM h.hour - %(start)s) / 3600)::int, h.value
FROM reading_hourly h JOIN parameter p ON p.id = h.parameter_id
WHERE h.station_id = ANY(%(stations)s) AND p.code = ANY(%(codes)s)
  AND h.hour >= %(start)s AND h.hour < %(end)s AND h.value IS NOT NULL
"""


async def daily_grid(
    conn: Conn, station_ids: Sequence[int], codes: Sequence[str] | None, *, start: date, end: date
) -> GridValues:
    """Valid daily means of these stations × parameters (None: all) on days [start, end)."""
    return await _grid(conn, _DAILY, station_ids, codes, start, end)


async def hourly_grid(
    conn: Conn,
    station_ids: Sequence[int],
    codes: Sequence[str],
    *,
    start: datetime,
    end: datetime,
) -> GridValues:
    """Valid hourly means of these stations × parameters in hours [start, end)."""
    return await _grid(conn, _HOURLY, station_ids, codes, start, end)


async def _grid(
    conn: Conn,
    query: str,
    station_ids: Sequence[int],
    codes: Sequence[str] | None,
    start: date | datetime,
    end: date | datetime,
) -> GridValues:
    # Binary results: numbers arrive as bytes to unpack, not text to parse (a year of hours).
    async with conn.cursor(binary=True) as cur:
        await cur.execute(
            query.encode(),
            {
                "stations": list(station_ids),
                "codes": None if codes is None else list(codes),
                "start": start,
                "end": end,
            },
        )
        rows = await cur.fetchall()
    return GridValues(
        station_ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
        parameters=np.array([r[1] for r in rows], dtype=np.str_),
        offsets=np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows)),
        values=np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows)),
    )


@dataclass(frozen=True)
class Samples:
    """Laboratory samples by (station id, parameter code): value (a detection limit where
    below detection) and whether it was below detection, in time order."""

    station_ids: npt.NDArray[np.int64]
    parameters: npt.NDArray[np.str_]
    values: npt.NDArray[np.float64]
    below_detection: npt.NDArray[np.bool_]


_LAB_SAMPLES = """
SELECT r.station_id, p.code, r.value, r.qc = %(below)s
FROM reading r JOIN parameter p ON p.id = r.parameter_id
WHERE r.station_id = ANY(%(stations)s)
  AND r.parameter_id = ANY(ARRAY(SELECT id FROM parameter WHERE grp = 'lab'))
  AND r.qc = ANY(%(qc)s) AND r.value IS NOT NULL AND r.time >= %(start)s AND r.time < %(end)s
ORDER BY r.station_id, p.code, r.time, r.period_s
"""


async def lab_parameters(conn: Conn) -> frozenset[str]:
    """The codes of the laboratory parameters (group `lab`)."""
    cur = await conn.execute("SELECT code FROM parameter WHERE grp = 'lab'")
    return frozenset(str(code) for (code,) in await cur.fetchall())


async def lab_samples(
    conn: Conn, station_ids: Sequence[int], *, start: datetime, end: datetime
) -> Samples:
    """The laboratory samples of these stations in [start, end) that feed statistics (QC valid
    or below detection)."""
    cur = await conn.execute(
        _LAB_SAMPLES,
        {
            "stations": list(station_ids),
            "below": QC.BELOW_DETECTION.code,
            "qc": [QC.VALID.code, QC.BELOW_DETECTION.code],
            "start": start,
            "end": end,
        },
    )
    rows = await cur.fetchall()
    return Samples(
        station_ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
        parameters=np.array([r[1] for r in rows], dtype=np.str_),
        values=np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows)),
        below_detection=np.fromiter((r[3] for r in rows), dtype=np.bool_, count=len(rows)),
    )


@dataclass(frozen=True, slots=True)
class WaterSection:
    """A water station of a report's scope: a GB 3838 section or a GB 3097 sea point."""

    id: int
    code: str
    name: str
    name_zh: str
    city: str
    area: str
    reach: str | None
    river: str | None
    river_km: float | None
    water_standard: str | None
    water_body: str | None
    target_class: int | None


_WATER_FILTER = {
    "station": "s.code",
    "reach": "s.reach_code",
    "river": "r.river",
    "area": "s.area",
    "city": "s.city",
}


async def water_sections(conn: Conn, *, scope: str, code: str) -> list[WaterSection]:
    """The water stations of a station, reach, river, area or city, along the river."""
    column = _WATER_FILTER[scope]
    async with conn.cursor(row_factory=class_row(WaterSection)) as cur:
        await cur.execute(
            "SELECT s.id, s.code, s.name, s.name_zh, s.city, s.area, s.reach_code AS reach,"
            " r.river, s.river_km, s.water_standard, s.water_body, s.target_class"
            " FROM station s LEFT JOIN reach r ON r.code = s.reach_code"
            f" WHERE s.medium = 'water' AND {column} = %s"
            " ORDER BY r.river NULLS LAST, s.reach_code, s.river_km, s.code",
            [code],
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class Named:
    """A station's, parameter's or reach's code and its English and Chinese names."""

    code: str
    name: str
    name_zh: str


async def station_names(conn: Conn) -> dict[str, Named]:
    """Every station's names by code."""
    cur = await conn.execute("SELECT code, name, name_zh FROM station")
    return {str(c): Named(str(c), str(n), str(z)) for c, n, z in await cur.fetchall()}


async def parameter_names(conn: Conn) -> dict[str, Named]:
    """Every parameter's names by code."""
    cur = await conn.execute("SELECT code, name, name_zh FROM parameter")
    return {str(c): Named(str(c), str(n), str(z)) for c, n, z in await cur.fetchall()}
