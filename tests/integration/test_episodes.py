"""A regional air episode over real PostgreSQL, from daily means through the ingest pipeline and
the alert loop to its alert, GET /v1/episodes and the air report.

The joint rule of config/thresholds.yaml: both cities' daily AQI above 100 for 2 days or more.
One assessment station per city reports its daily means (PM2.5 as below, the rest clean); with
O3 missing, HJ 633-2026 publishes a day's AQI only above 100.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import cst_day_start
from schemas.readings import ReadingIn
from schemas.rules import RuleDefinition, load_rules
from store.keys import create_key
from tests.conftest import CONFIG_DIR
from tests.integration.test_engine import HOUR, Feed, _air, _alerts, _events, _rules

RULE = next(
    r for r in load_rules(CONFIG_DIR / "thresholds.yaml").rules if r.kind == "regional_episode"
)
D1 = date(2026, 11, 10)
CLEAN = {"so2": 5.0, "no2": 20.0, "co": 0.5, "pm10": 30.0}
# PM2.5 daily means (ug/m3) -> daily AQI: Guangzhou 119, 137, 158, 210, 128; Dongguan 110, 114,
# 119, 123 and then none published (AQI <= 100 with O3 missing).
GUANGZHOU = [80.0, 100.0, 120.0, 160.0, 90.0]
DONGGUAN = [70.0, 75.0, 80.0, 85.0, 40.0]


@pytest.fixture
async def reader(db: AsyncConnectionPool, client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The API client with a reader key of Dongguan's."""
    async with db.connection() as conn:
        _, plain = await create_key(conn, agency="dg_eeb", roles=["reader"])
    client.headers["X-API-Key"] = plain
    return client


def _day(n: int) -> date:
    return D1 + timedelta(days=n)


def _means(station: str, day: date, pm25: float) -> list[ReadingIn]:
    """A station's daily means, the clean ones a little different each day (a value repeated
    day after day would be a stuck sensor to history QC)."""
    at = cst_day_start(day)
    vary = 1 + (day - D1).days / 20
    return [
        _air(value, at, parameter=code, station=station, period_s=86400)
        for code, value in {**{c: v * vary for c, v in CLEAN.items()}, "pm25": pm25}.items()
    ]


async def _feed(feed: Feed, n: int) -> None:
    """Day n's daily means of both cities, sent an hour after the day."""
    await feed.send(
        *_means("gz-a-huangpu", _day(n), GUANGZHOU[n]),
        *_means("dg-a-shilong", _day(n), DONGGUAN[n]),
        at=cst_day_start(_day(n + 1)) + timedelta(hours=1),
    )


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_episode_opens_escalates_closes_and_is_listed(
    db: AsyncConnectionPool, reader: httpx.AsyncClient
) -> None:
    await _rules(db, RULE)
    feed = Feed(db)
    rule = RULE.id
    await _feed(feed, 0)  # one day above in both cities: not yet an episode
    assert await _alerts(db) == []
    await _feed(feed, 1)  # the second day completes it: the alert opens on that day
    trigger = cst_day_start(_day(1))
    assert await _alerts(db) == [(1, rule, None, None, "firing", "advisory", 137, trigger)]
    await _feed(feed, 2)  # Guangzhou 158: moderately polluted
    await _feed(feed, 3)  # Guangzhou 210: heavy
    assert await _alerts(db) == [(1, rule, None, None, "firing", "critical", 210, trigger)]
    ongoing = await _get(reader, "/v1/episodes")
    assert [(e["end"], e["city_days"], e["peak_aqi"]) for e in ongoing["items"]] == [(None, 8, 210)]
    # The regional alert concerns each city: their lists and situations show it.
    for city in ("guangzhou", "dongguan"):
        listed = await _get(reader, "/v1/alerts", city=city)
        assert [a["id"] for a in listed["items"]] == [1], city
        now = await _get(reader, "/v1/situation", city=city)
        assert [a["id"] for a in now["alerts"]] == [1], city
    await _feed(feed, 4)  # Dongguan has no AQI above 100: the episode ends
    assert await _alerts(db) == [(1, rule, None, None, "resolved", "critical", 0, trigger)]
    assert await _events(db) == [
        (1, "firing", "firing", "advisory", 137),
        (1, "escalated", "firing", "warning", 158),
        (1, "escalated", "firing", "critical", 210),
        (1, "resolved", "resolved", "critical", 0),
    ]
    alert = await _get(reader, "/v1/alerts/1")
    assert (alert["station"], alert["city"], alert["kind"]) == (None, None, "regional_episode")
    assert sorted(alert["addressed_to"]) == ["dg_eeb", "gz_eeb", "joint_office"]

    episode = {
        "id": 1,
        "rule_id": rule,
        "series": "daily",
        "start": "2026-11-10T00:00:00+08:00",
        "end": "2026-11-14T00:00:00+08:00",
        "cities": ["guangzhou", "dongguan"],
        "city_days": 8,
        "peak_aqi": 210,
        "peak_category": "heavily_polluted",
        "primary_pollutants": ["pm25"],
        "alert_id": 1,
    }
    assert await _get(reader, "/v1/episodes") == {"items": [episode], "next_cursor": None}
    # [start, end) half-open, like every other range: an episode ending on the 14th is not on it.
    for params, found in [
        ({"start": "2026-11-13", "end": "2026-11-14"}, [episode]),
        ({"start": "2026-11-14", "end": "2026-11-20"}, []),
        ({"start": "2026-11-01", "end": "2026-11-10"}, []),
        ({"end": "2026-11-11"}, [episode]),
        ({"city": "dongguan"}, [episode]),
    ]:
        assert (await _get(reader, "/v1/episodes", **params))["items"] == found, params
    wrong = await reader.get("/v1/episodes", params={"start": "2026-11-14", "end": "2026-11-14"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["message"].startswith("end:")

    region = await _get(reader, "/v1/reports/air", scope="region", period="2026-11")
    assert region["episodes"] == [episode]
    city = await _get(reader, "/v1/reports/air", scope="city", code="dongguan", period="2026-11")
    assert city["episodes"] == [episode]
    october = await _get(reader, "/v1/reports/air", scope="region", period="2026-10")
    assert october["episodes"] == []
    # tz=UTC: the same episode with its times in UTC, as /v1/episodes gives them.
    in_utc = (await _get(reader, "/v1/episodes", tz="UTC"))["items"]
    assert in_utc[0]["start"].endswith("T16:00:00Z") and in_utc[0]["id"] == episode["id"]
    region = await _get(reader, "/v1/reports/air", scope="region", period="2026-11", tz="UTC")
    assert region["episodes"] == in_utc


async def test_episodes_page_latest_first(
    db: AsyncConnectionPool, reader: httpx.AsyncClient
) -> None:
    await _rules(db, RULE)
    feed = Feed(db)
    for n in range(5):
        await _feed(feed, n)
    # A second episode a week later: two days above, then both cities clean.
    later = [(_day(7), 100.0, 101.0), (_day(8), 102.0, 103.0), (_day(9), 20.0, 21.0)]
    for day, gz, dg in later:
        await feed.send(
            *_means("gz-a-huangpu", day, gz),
            *_means("dg-a-shilong", day, dg),
            at=cst_day_start(day + timedelta(days=1)) + timedelta(hours=1),
        )
    first = await _get(reader, "/v1/episodes", limit="1")
    assert [e["start"] for e in first["items"]] == ["2026-11-17T00:00:00+08:00"]
    rest = await _get(reader, "/v1/episodes", limit="1", cursor=first["next_cursor"])
    assert [e["start"] for e in rest["items"]] == ["2026-11-10T00:00:00+08:00"]
    assert rest["next_cursor"] is None
    bad = await reader.get("/v1/episodes", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400


async def test_revised_data_that_undoes_an_episode_closes_it_and_unlists_it(
    db: AsyncConnectionPool, reader: httpx.AsyncClient
) -> None:
    await _rules(db, RULE)
    feed = Feed(db)
    await _feed(feed, 0)
    await _feed(feed, 1)
    assert [e["start"] for e in (await _get(reader, "/v1/episodes"))["items"]] == [
        "2026-11-10T00:00:00+08:00"
    ]
    # Guangzhou's second day is revised to PM2.5 40: no AQI above 100 that day, no episode.
    revised = [r for r in _means("gz-a-huangpu", _day(1), 40.0) if r.parameter == "pm25"]
    await feed.send(*revised, at=cst_day_start(_day(2)) + timedelta(hours=3))
    trigger = cst_day_start(_day(1))
    assert await _alerts(db) == [(1, RULE.id, None, None, "resolved", "advisory", 0, trigger)]
    assert await _get(reader, "/v1/episodes") == {"items": [], "next_cursor": None}


async def test_a_rolling_24_hour_episode_from_hourly_means(
    db: AsyncConnectionPool, reader: httpx.AsyncClient
) -> None:
    definition = RULE.model_dump()
    definition["id"] = "episode_24h"
    definition["episode"]["series"] = "rolling_24h"
    await _rules(db, RuleDefinition.model_validate(definition))
    feed = Feed(db)
    first = cst_day_start(D1)
    wobble = [0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0, -1.0]  # no stuck sensor to history QC

    def hours(day: int, pm25: float) -> list[ReadingIn]:
        found = []
        for h in range(day * 24, day * 24 + 24):
            values = {**CLEAN, "o3": 50.0, "pm25": pm25}
            for code, value in values.items():
                moved = (
                    value * (1 + wobble[h % 8] / 100) if code != "pm25" else pm25 + wobble[h % 8]
                )
                for station in ("gz-a-huangpu", "dg-a-shilong"):
                    found.append(
                        _air(moved, first + h * HOUR, parameter=code, station=station,
                             period_s=3600)
                    )  # fmt: skip
        return found

    # PM2.5 about 80 for three days: the rolling 24-hour AQI is about 120 from the 20th hour
    # (the first 24-hour mean with 20 valid hours); 48 hours of it complete the episode.
    for day in range(3):
        await feed.send(*hours(day, 80.0), at=first + (day + 1) * 24 * HOUR + HOUR)
    ((alert_id, _, _, _, state, severity, _, trigger),) = await _alerts(db)
    assert (state, severity, trigger) == ("firing", "advisory", first + 66 * HOUR)
    (episode,) = (await _get(reader, "/v1/episodes"))["items"]
    assert (episode["series"], episode["start"], episode["end"]) == (
        "rolling_24h", "2026-11-10T19:00:00+08:00", None
    )  # fmt: skip
    # Clean air on the fourth day: the 24-hour means fall below the threshold within hours.
    await feed.send(*hours(3, 20.0), at=first + 4 * 24 * HOUR + HOUR)
    assert [row[4] for row in await _alerts(db)] == ["resolved"]
    (episode,) = (await _get(reader, "/v1/episodes"))["items"]
    assert episode["end"].startswith("2026-11-13T")
    assert (episode["city_days"], episode["alert_id"]) == (8, alert_id)
