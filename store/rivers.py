"""River reaches with their course and their stations, for maps (GET /v1/rivers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import class_row

from store.pool import Conn


@dataclass(frozen=True, slots=True)
class ReachRow:
    """A reach with its course ([lon, lat] points, None until seeded) and its stations."""

    code: str
    name: str
    name_zh: str
    downstream: list[str]
    length_km: float
    approximate: bool | None
    path: list[list[float]] | None
    stations: list[dict[str, Any]]  # station, name, name_zh, river_km; by river_km


_REACHES = """
SELECT r.code, r.name, r.name_zh, r.downstream, r.length_km, r.approximate, r.path,
       coalesce(json_agg(json_build_object('station', s.code, 'name', s.name,
                                           'name_zh', s.name_zh, 'river_km', s.river_km)
                         ORDER BY s.river_km, s.code) FILTER (WHERE s.id IS NOT NULL), '[]')
           AS stations
FROM reach r
LEFT JOIN station s ON s.reach_code = r.code
GROUP BY r.code
ORDER BY r.code
"""


async def reaches_with_stations(conn: Conn) -> list[ReachRow]:
    """Every reach, by code, with its course and its stations."""
    async with conn.cursor(row_factory=class_row(ReachRow)) as cur:
        await cur.execute(_REACHES.encode())
        return await cur.fetchall()
