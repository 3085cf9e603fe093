"""GET /v1/readings?interval=1h|1d: the hourly and daily rollups of ingested readings, with count,
coverage, origin and period_end, rounded as the raw readings are, paginated, in either zone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from store.readings import _READINGS_PAGE_RECORDS, _READINGS_PAGES, readings_page
from store.rollups import _DAILY_SERIES, _HOURLY_SERIES, rollup_series
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


async def test_a_page_holds_as_columns_the_rows_its_statement_reads(
    db: AsyncConnectionPool, series: None
) -> None:
    """readings_page aggregates the page's rows into one value of binary records: the same
    readings in the same order as the rows of its statement, a missing value masked, an empty
    page empty."""
    async with db.connection() as conn:
        (station_id,) = await _one(conn, "SELECT id FROM station WHERE code = 'gz-a-huangpu'")
        (parameter_id,) = await _one(conn, "SELECT id FROM parameter WHERE code = 'pm25'")
        # A reading without a value (as a device reports a fault), beside the others.
        await conn.execute(
            "INSERT INTO reading (station_id, parameter_id, period_s, time, value, qc,"
            " source_id, received_at)"
            " SELECT station_id, parameter_id, 3600, %s, NULL, qc, source_id, received_at"
            " FROM reading WHERE station_id = %s AND parameter_id = %s LIMIT 1",
            [DAY2 + 22 * HOUR, station_id, parameter_id],
        )
        pages: list[dict[str, Any]] = [
            {"start": None, "end": None, "period_s": None, "after": None, "limit": 1000},
            {"start": DAY1, "end": DAY2, "period_s": 60, "after": None, "limit": 1000},
            {"start": None, "end": None, "period_s": 3600, "after": (DAY2, 3600), "limit": 7},
            {"start": None, "end": None, "period_s": None, "after": (DAY1 + HOUR, 60), "limit": 99},
            {"start": DAY2, "end": None, "period_s": None, "after": None, "limit": 1000},
            {"start": NOW, "end": None, "period_s": None, "after": None, "limit": 1000},
        ]
        seen = []
        for page in pages:
            args = {"station_id": station_id, "parameter_id": parameter_id, **page}
            columns = await readings_page(conn, **args)
            statement = _READINGS_PAGES[page["period_s"] is not None, page["after"] is not None]
            after = page["after"] or (None, None)
            cursor = await conn.execute(
                statement,
                {
                    "station": station_id,
                    "parameter": parameter_id,
                    "start": page["start"],
                    "end": page["end"],
                    "period": page["period_s"],
                    "after_time": after[0],
                    "after_period": after[1],
                    "limit": page["limit"],
                },
            )
            rows = await cursor.fetchall()
            assert columns.rows() == [tuple(row) for row in rows]
            assert columns.time_us.dtype == np.int64 and columns.value.dtype == np.float64
            seen.append(len(columns))
    assert seen == [50 + 30 + 1 + 21 + 1, 50 + 30, 7, 29 + 1 + 21 + 1, 22, 0]
    assert columns.rows() == []


async def test_a_page_of_rollups_holds_as_columns_the_rows_its_statement_reads(
    db: AsyncConnectionPool, series: None
) -> None:
    async with db.connection() as conn:
        (station_id,) = await _one(conn, "SELECT id FROM station WHERE code = 'gz-a-huangpu'")
        (parameter_id,) = await _one(conn, "SELECT id FROM parameter WHERE code = 'pm25'")
        seen = []
        for period_s, statement in ((3600, _HOURLY_SERIES), (86400, _DAILY_SERIES)):
            for start, after, limit in ((None, None, 1000), (DAY1, DAY1, 5), (NOW, None, 10)):
                args = {"start": start, "end": None, "after": after, "limit": limit}
                page = await rollup_series(
                    conn,
                    station_id=station_id,
                    parameter_id=parameter_id,
                    period_s=period_s,
                    **args,
                )
                async with conn.cursor() as cur:
                    await cur.execute(
                        statement, {"station": station_id, "parameter": parameter_id, **args}
                    )
                    rows = await cur.fetchall()
                assert [point[:5] for point in page.rows()] == rows
                assert (page.unit, page.decimals) == ("ug/m3", 0)
                seen.append(len(page))
    assert seen == [2 + 1 + 21, 5, 0, 2, 1, 0]


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
        await conn.execute(_READINGS_PAGE_RECORDS[True, False], values, prepare=True)
        (name,) = await _one(
            conn, "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%period_s = $%'"
        )
        # The parameters in the order the statement names them first ($1, $2, ...).
        order = dict.fromkeys(re.findall(rb"%\((\w+)\)s", _READINGS_PAGE_RECORDS[True, False]))
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
