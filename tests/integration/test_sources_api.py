"""`GET /v1/sources` on real PostgreSQL: counters, lag, errors, the scheduler leader and jobs."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import date, datetime, timedelta

import httpx
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST, utcnow
from ingest.leader import ElectedScheduler
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from store.keys import create_key
from store.sources import ensure_source, record_source_error
from tests.conftest import worker_loop

T0 = datetime(2026, 11, 25, 0, tzinfo=CST)


async def _key(pool: AsyncConnectionPool, roles: list[str]) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency="dg_eeb", roles=roles)
    return {"X-API-Key": plain}


def _reading(hour: int, value: float, **fields: object) -> ReadingIn:
    base: dict[str, object] = {
        "station": "gz-a-huangpu",
        "parameter": "pm25",
        "time": T0 + timedelta(hours=hour),
        "value": value,
        "unit": "ug/m3",
        "period_s": 3600,
    }
    return ReadingIn.model_validate(base | fields)


async def test_sources_need_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sources")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_sources_show_counts_lag_errors_and_qc(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    delivered_at = utcnow().replace(microsecond=0) - timedelta(seconds=120)
    pipeline = Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: delivered_at)
    push = SourceRef("push:gz_eeb", "push")
    first: list[ReadingIn | Rejection] = [
        _reading(0, 30.0),
        _reading(1, 150.0),
        _reading(2, 31.0),  # shows 150 to be an isolated spike: the qc source re-flags it
        _reading(3, 33.0, unit="furlongs"),
        Rejection(4, "value: 'n/a' is not a number", "gz-a-huangpu", "pm25", '{"value": "n/a"}'),
    ]
    await pipeline.ingest(first, source=push)
    await pipeline.ingest([_reading(0, 30.0), _reading(2, 32.0)], source=push)
    await worker_loop(db, pipeline, clock=lambda: delivered_at).drain()
    failed_at = delivered_at + timedelta(seconds=30)
    async with db.connection() as conn:
        mqtt = await ensure_source(conn, code="mqtt", kind="mqtt")
        await record_source_error(
            conn, source_id=mqtt, at=failed_at, error="broker 127.0.0.1:1883: connection refused"
        )

    for roles in (["reader"], ["writer"]):
        before = time.time()
        response = await client.get("/v1/sources", headers=await _key(db, roles))
        after = time.time()
        assert response.status_code == 200
        body = response.json()
        items = {item["code"]: item for item in body["items"]}
        assert list(items) == ["mqtt", "push:gz_eeb", "qc"]
        lag = items["push:gz_eeb"].pop("lag_s")
        span = (math.floor(before - delivered_at.timestamp()), after - delivered_at.timestamp())
        assert span[0] <= lag <= span[1]
        assert items["push:gz_eeb"] == {
            "code": "push:gz_eeb",
            "kind": "push",
            "last_success_at": delivered_at.astimezone(CST).isoformat(),
            "accepted": 3,
            "duplicate": 1,
            "revised": 1,
            "rejected": 2,
            "last_error": None,
            "last_error_at": None,
        }
        assert items["mqtt"] == {
            "code": "mqtt",
            "kind": "mqtt",
            "last_success_at": None,
            "lag_s": None,
            "accepted": 0,
            "duplicate": 0,
            "revised": 0,
            "rejected": 0,
            "last_error": "broker 127.0.0.1:1883: connection refused",
            "last_error_at": failed_at.astimezone(CST).isoformat(),
        }
        assert (items["qc"]["kind"], items["qc"]["revised"], items["qc"]["accepted"]) == (
            "qc",
            1,
            0,
        )
        assert body["next_cursor"] is None
        assert body["scheduler"] == {"leader": None, "jobs": []}


async def test_sources_show_the_scheduler_leader_and_its_jobs(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    elected = ElectedScheduler(db, owner="gz-worker-1:4242", retry_s=0.3, check_s=0.2)
    runs: list[int] = []

    async def tick() -> None:
        runs.append(1)

    async def broken() -> None:
        raise ConnectionError("feed unreachable")

    # No misfire grace: on a busy machine a late run still runs rather than being "missed".
    often = {"misfire_grace_time": None, "coalesce": True}
    elected.scheduler.add_job(tick, "interval", seconds=0.05, id="simulator", **often)
    elected.scheduler.add_job(broken, "interval", seconds=0.05, id="http:openaq-gz", **often)
    elected.scheduler.add_job(tick, "interval", hours=6, id="partitions")
    elected_before = utcnow()
    await elected.start()
    try:
        for _ in range(500):
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.01)
        headers = await _key(db, ["responder"])
        body = (await client.get("/v1/sources", headers=headers)).json()
    finally:
        await elected.stop()
    leader = body["scheduler"]["leader"]
    assert leader["owner"] == "gz-worker-1:4242"
    elected_at = datetime.fromisoformat(leader["elected_at"])
    assert elected_at.utcoffset() == timedelta(hours=8)
    assert elected_before <= elected_at <= utcnow()
    jobs = {job["id"]: job for job in body["scheduler"]["jobs"]}
    assert list(jobs) == ["http:openaq-gz", "partitions", "simulator"]
    assert {job["owner"] for job in jobs.values()} == {"gz-worker-1:4242"}
    partitions = jobs["partitions"]
    assert (partitions["runs"], partitions["last_run_at"], partitions["last_error"]) == (
        0,
        None,
        None,
    )
    assert datetime.fromisoformat(partitions["next_run_at"]).utcoffset() == timedelta(hours=8)
    failing = jobs["http:openaq-gz"]
    assert failing["last_error"] == "ConnectionError: feed unreachable"
    assert failing["runs"] == failing["failures"]
    assert failing["last_success_at"] is None
    simulator = jobs["simulator"]
    assert (simulator["failures"], simulator["last_error"]) == (0, None)
    assert simulator["last_success_at"] == simulator["last_run_at"]

    # With the leader gone the API says so, and keeps the jobs' last known state.
    body = (await client.get("/v1/sources", headers=headers)).json()
    assert body["scheduler"]["leader"] is None
    assert [job["id"] for job in body["scheduler"]["jobs"]] == list(jobs)
