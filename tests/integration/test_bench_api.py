"""bench/api.py's loader builds what the app would hold, and its bare endpoints serve it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from alerts.loop import rebuild_rollups
from bench.api import WATER_MIN_SAMPLES, load
from bench.bare_api import create

# Tens of seconds on a busy machine: the loader makes 232 series one by one.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every column but computed_at; daily means compared to a relative 1e-12 (SQL's avg and
# numpy's mean may differ in the last bit, which for a mean of 5e8 is the 8th decimal place).
_HOURLY = (
    "SELECT station_id, parameter_id, hour, value, samples, coverage_s, min, max, origin"
    " FROM reading_hourly ORDER BY 1, 2, 3"
)
_DAILY = (
    "SELECT station_id, parameter_id, day, value, hours, min, max, origin"
    " FROM reading_daily ORDER BY 1, 2, 3"
)
_LATEST = "SELECT * FROM reading_latest ORDER BY 1, 2, 3"
# reading_latest as migration 0030 derives it from `reading`.
_LATEST_OF_READINGS = """
SELECT DISTINCT ON (station_id, parameter_id, period_s)
       station_id, parameter_id, period_s, time, value, qc
FROM reading ORDER BY station_id, parameter_id, period_s, time DESC
"""


def _means_aside(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Daily rows without their mean (compared apart, to a relative tolerance)."""
    return [(*row[:3], *row[4:]) for row in rows]


async def _all(conn: psycopg.AsyncConnection[Any], query: str) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query.encode())
    return await cur.fetchall()


async def test_the_loader_builds_the_rollups_and_current_values_the_app_would(
    new_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url: str = new_database()
    await load(url, 20_000, jobs=2)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT (station_id, parameter_id)) FROM reading"
        )
        assert await cur.fetchone() == (232 * (43 + 44), 232)
        loaded = [await _all(conn, query) for query in (_HOURLY, _DAILY, _LATEST)]
        async with conn.transaction():
            await rebuild_rollups(conn, water_min_samples=WATER_MIN_SAMPLES, now=datetime.now(UTC))
        rebuilt = [await _all(conn, query) for query in (_HOURLY, _DAILY)]
        rebuilt.append(await _all(conn, _LATEST_OF_READINGS))
        cur = await conn.execute(
            "SELECT count(*) FROM station_parameter sp JOIN station s ON s.id = sp.station_id"
            " WHERE s.area = 'shiziyang'"
        )
        in_area = await cur.fetchone()
    assert [len(rows) for rows in loaded] == [232 * 43, len(loaded[1]), 232 * 2]
    assert [loaded[0], _means_aside(loaded[1]), loaded[2]] == [
        rebuilt[0],
        _means_aside(rebuilt[1]),
        rebuilt[2],
    ]
    for ours, theirs in zip(loaded[1], rebuilt[1], strict=True):
        if theirs[3] is None:
            assert ours[3] is None, ours
        else:
            assert ours[3] == pytest.approx(theirs[3], rel=1e-12, abs=1e-12), ours

    monkeypatch.setenv("ENVLINK_BENCH_DATABASE_URL", url)
    bare = create()
    async with (
        bare.router.lifespan_context(bare),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=bare), base_url="http://bare"
        ) as client,
    ):
        answer = await client.get("/v1/latest", params={"area": "shiziyang"})
    assert answer.status_code == 200
    assert in_area is not None and len(answer.json()["items"]) == in_area[0] == 106
