"""GET /v1/readings?interval=1h|1d: the hourly and daily rollups of ingested readings, with count,
coverage, origin and period_end, rounded as the raw readings are, paginated, in either zone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from api.routers.readings import ZONE_READ_LIMIT
from core.settings import Settings
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from store.readings import _READINGS_OF_PERIOD_PAGE, readings_page
from tests.conftest import worker_loop
from tests.integration.conftest import reader_client

NOW = datetime(2026, 11, 23, 0, tzinfo=CST)
DAY1 = datetime(2026, 11, 20, 0, tzinfo=CST)
DAY2 = DAY1 + timedelta(days=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "gz_eeb") as client:
        yield client


def _pm25(time: datetime, value: float, period_s: int) -> ReadingIn:
    return ReadingIn(
        station="gz-a-huangpu",
        parameter="pm25",
        time=time,
        value=value,
        unit="ug/m3",
        period_s=period_s,  # type: ignore[arg-type]
    )


async def _store(pool: AsyncConnectionPool, items: list[ReadingIn]) -> None:
    """Ingest, then let the alert loop bring the rollups up to date."""
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW.astimezone(UTC))
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items), result.rejections
    await worker_loop(pool, pipeline, clock=lambda: NOW.astimezone(UTC)).drain()


@pytest.fixture
async def series(db: AsyncConnectionPool) -> None:
    """PM2.5 at Huangpu: day 1 with two valid hours and one short one, day 2 with 21 hours."""
    minutes = [_pm25(DAY1 + i * MINUTE, 10.0 if i % 2 else 15.0, 60) for i in range(50)]
    short = [_pm25(DAY1 + HOUR + i * MINUTE, 10.0 if i % 2 else 15.0, 60) for i in range(30)]
    reported = [_pm25(DAY1 + 2 * HOUR, 20.5, 3600)]
    day2 = [_pm25(DAY2 + h * HOUR, 30.0 + h % 2, 3600) for h in range(21)]
    nh3n = [
        ReadingIn(
            station="dg-w-humen",
            parameter="nh3n",
            time=DAY2 + h * HOUR,
            value=value,
            unit="mg/L",
        )
        for h, value in ((0, 0.1), (4, 0.2), (8, 0.3))
    ]
    await _store(db, minutes + short + reported + day2 + nh3n)


async def _get(client: httpx.AsyncClient, **params: str | int) -> dict[str, Any]:
    response = await client.get("/v1/readings", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_hourly_rollups_with_count_coverage_and_pages(
    client: httpx.AsyncClient, series: None
) -> None:
    query = {"station": "gz-a-huangpu", "parameter": "pm25", "interval": "1h"}
    first = await _get(client, **query, end=DAY2.isoformat(), limit=2)
    assert first["items"] == [
        {
            "time": "2026-11-20T00:00:00+08:00",
            "period_s": 3600,
            "period_end": "2026-11-20T01:00:00+08:00",
            "value": 12.0,  # the mean 12.5, half to even
            "unit": "ug/m3",
            "count": 50,
            "coverage": 0.833,
            "origin": "computed",
        },
        {
            "time": "2026-11-20T01:00:00+08:00",
            "period_s": 3600,
            "period_end": "2026-11-20T02:00:00+08:00",
            "value": None,  # 30 minutes: under the 45 an hourly mean needs
            "unit": "ug/m3",
            "count": 30,
            "coverage": 0.5,
            "origin": "computed",
        },
    ]
    second = await _get(
        client, **query, end=DAY2.isoformat(), limit=2, cursor=first["next_cursor"], tz="UTC"
    )
    assert second == {
        "items": [
            {
                "time": "2026-11-19T18:00:00Z",
                "period_s": 3600,
                "period_end": "2026-11-19T19:00:00Z",
                "value": 20.0,
                "unit": "ug/m3",
                "count": 1,
                "coverage": 1.0,
                "origin": "reported",
            }
        ],
        "next_cursor": None,
    }
    later = await _get(client, **query, start=(DAY2 + 19 * HOUR).isoformat())
    assert [(i["time"], i["value"]) for i in later["items"]] == [
        ("2026-11-21T19:00:00+08:00", 31.0),
        ("2026-11-21T20:00:00+08:00", 30.0),
    ]


async def test_daily_rollups_by_natural_day(client: httpx.AsyncClient, series: None) -> None:
    air = await _get(client, station="gz-a-huangpu", parameter="pm25", interval="1d")
    assert air == {
        "items": [
            {
                "time": "2026-11-20T00:00:00+08:00",
                "period_s": 86400,
                "period_end": "2026-11-21T00:00:00+08:00",
                "value": None,  # two valid hours: a day needs 20
                "unit": "ug/m3",
                "count": 2,
                "coverage": 0.083,
                "origin": "computed",
            },
            {
                "time": "2026-11-21T00:00:00+08:00",
                "period_s": 86400,
                "period_end": "2026-11-22T00:00:00+08:00",
                "value": 30.0,  # 11 hours of 30 and 10 of 31: 30.476
                "unit": "ug/m3",
                "count": 21,
                "coverage": 0.875,
                "origin": "computed",
            },
        ],
        "next_cursor": None,
    }
    utc = await _get(
        client,
        station="gz-a-huangpu",
        parameter="pm25",
        interval="1d",
        start=DAY2.isoformat(),
        tz="UTC",
    )
    assert [(i["time"], i["period_end"]) for i in utc["items"]] == [
        ("2026-11-20T16:00:00Z", "2026-11-21T16:00:00Z")
    ]
    water = await _get(client, station="dg-w-humen", parameter="nh3n", interval="1d")
    # Three 4-hourly samples of the six the station's interval gives a day.
    assert [(i["value"], i["count"], i["coverage"]) for i in water["items"]] == [(0.2, 3, 0.5)]


async def test_raw_stays_the_default(client: httpx.AsyncClient, series: None) -> None:
    raw = await _get(
        client,
        station="gz-a-huangpu",
        parameter="pm25",
        start=(DAY1 + 2 * HOUR).isoformat(),
        end=(DAY1 + 3 * HOUR).isoformat(),
    )
    assert raw["items"] == [
        {
            "time": "2026-11-20T02:00:00+08:00",
            "period_s": 3600,
            "period_end": "2026-11-20T03:00:00+08:00",
            "value": 20.0,
            "unit": "ug/m3",
            "qc": "valid",
        }
    ]


async def test_bad_interval_queries_are_4xx(client: httpx.AsyncClient, series: None) -> None:
    base = {"station": "gz-a-huangpu", "parameter": "pm25"}
    raw_cursor = (await _get(client, **base, limit=1))["next_cursor"]
    cases = [
        (
            base | {"interval": "1h", "period_s": "3600"},
            400,
            "period_s applies to interval=raw only, not interval=1h",
        ),
        (
            base | {"interval": "1d", "cursor": raw_cursor},
            400,
            "cursor: not a cursor this API issued",
        ),
        (
            base | {"interval": "5m"},
            422,
            "interval: Input should be 'raw', '1h' or '1d'",
        ),
    ]
    for params, status, message in cases:
        response = await client.get("/v1/readings", params=params)
        assert (response.status_code, response.json()["error"]["message"]) == (status, message)


async def test_large_pages_read_in_the_zone_write_the_same_bytes(
    client: httpx.AsyncClient, series: None
) -> None:
    """From ZONE_READ_LIMIT items a page's times are read in the caller's zone by the store:
    the page is byte for byte the one shifted one time at a time, in either zone."""
    assert ZONE_READ_LIMIT == 2000
    for tz in ("Asia/Shanghai", "UTC"):
        query = {"station": "gz-a-huangpu", "parameter": "pm25", "start": DAY1.isoformat()}
        query["tz"] = tz
        shifted = await client.get("/v1/readings", params={**query, "limit": 1999})
        read_in_zone = await client.get("/v1/readings", params={**query, "limit": 2000})
        assert shifted.status_code == read_in_zone.status_code == 200
        assert read_in_zone.content == shifted.content
        items = shifted.json()["items"]
        assert len(items) == 50 + 30 + 1 + 21
        assert items[-1]["period_end"] == (
            "2026-11-21T21:00:00+08:00" if tz == "Asia/Shanghai" else "2026-11-21T13:00:00Z"
        )


async def test_a_page_read_in_a_zone_leaves_the_session_zone_as_it_was(
    db: AsyncConnectionPool, series: None
) -> None:
    async with db.connection() as conn:
        await conn.execute("SELECT 1")  # within a transaction, as a request's connection
        session = conn.info.parameter_status("TimeZone")
        assert session is not None and session != "Asia/Shanghai"
        (station_id,) = await _one(conn, "SELECT id FROM station WHERE code = 'gz-a-huangpu'")
        (parameter_id,) = await _one(conn, "SELECT id FROM parameter WHERE code = 'pm25'")
        page = {"station_id": station_id, "parameter_id": parameter_id}
        args: dict[str, Any] = {**page, "start": None, "end": None, "period_s": None}
        rows = await readings_page(conn, **args, after=None, limit=5, time_zone="Asia/Shanghai")
        assert [row[0].tzinfo for row in rows] == [CST] * 5
        assert rows[0][0] == DAY1 and rows[0][0].isoformat() == "2026-11-20T00:00:00+08:00"
        assert conn.info.parameter_status("TimeZone") == session
        plain = await readings_page(conn, **args, after=None, limit=5)
        assert plain == rows and all(row[0].tzinfo is not CST for row in plain)
        # A statement that fails leaves the zone to the transaction, rolled back with it.
        with pytest.raises(psycopg.errors.InvalidRowCountInLimitClause):
            await readings_page(conn, **args, after=None, limit=-1, time_zone="Asia/Shanghai")
        await conn.rollback()
        assert conn.info.parameter_status("TimeZone") == session
    async with db.connection() as conn:
        await conn.set_autocommit(True)
        try:
            rows = await readings_page(conn, **args, after=None, limit=5, time_zone="Asia/Shanghai")
            assert rows == plain and all(row[0].tzinfo is not CST for row in rows)
            assert conn.info.parameter_status("TimeZone") == session
        finally:
            # The pool does not reset it: a later test would run outside transactions.
            await conn.set_autocommit(False)


async def test_a_page_of_one_period_is_one_index_range_of_that_period(
    db: AsyncConnectionPool, series: None, database_url: str
) -> None:
    # Even as the generic plan a statement prepared after a few runs gets: a filter on the
    # period instead would read every period's rows of the range (a year of hourly means read
    # the months' real-time data too). A connection of its own, in a transaction (SET LOCAL)
    # and with no other statement prepared that the name's lookup below could match.
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        (station_id,) = await _one(conn, "SELECT id FROM station WHERE code = 'gz-a-huangpu'")
        (parameter_id,) = await _one(conn, "SELECT id FROM parameter WHERE code = 'pm25'")
        values: dict[str, Any] = {
            "station": station_id,
            "parameter": parameter_id,
            "start": DAY1,
            "end": DAY1 + timedelta(days=365),
            "period": 3600,
            "after_time": None,
            "after_period": None,
            "limit": 10001,
        }
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(_READINGS_OF_PERIOD_PAGE, values, prepare=True)
        (name,) = await _one(
            conn, "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%period_s = $%'"
        )
        # The parameters in the order the statement names them first ($1, $2, ...).
        order = dict.fromkeys(re.findall(rb"%\((\w+)\)s", _READINGS_OF_PERIOD_PAGE))
        arguments = sql.SQL(", ").join(sql.Literal(values[n.decode()]) for n in order)
        cursor = await conn.execute(
            sql.SQL("EXPLAIN EXECUTE {}({})").format(sql.Identifier(name), arguments)
        )
        plan = [line for (line,) in await cursor.fetchall()]
    ranges = [line for line in plan if "Index Cond" in line]
    assert ranges, plan
    assert all("period_s = $" in line for line in ranges), plan


async def _one(conn: Any, query: str) -> tuple[Any, ...]:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    assert row is not None
    return tuple(row)
