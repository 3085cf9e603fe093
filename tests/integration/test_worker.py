"""Which loops and sources a worker runs, by its settings, over real PostgreSQL and sockets."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import orjson
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from core.settings import Settings
from core.timeutil import CST, utcnow
from envlink.runtime import Worker
from ingest.sources.hj212.server import Hj212Server
from schemas.notifications import SubscriptionIn
from store.listen import Listener
from store.sources import source_statuses
from store.subscriptions import create_subscription
from tests.integration.test_http_pull import UpstreamServer
from tests.integration.test_mqtt import BROKER_HOST, BROKER_PORT, HOUR, _broker_listens


@pytest.mark.parametrize(
    ("alert_loop", "notify", "expected"),
    [
        (True, True, ["alerts", "notify-stage", "notify-dispatch"]),
        (False, True, ["notify-stage", "notify-dispatch"]),
        (True, False, ["alerts"]),
        (False, False, []),
    ],
)
async def test_the_worker_runs_the_loops_its_settings_ask_for(
    db: AsyncConnectionPool,
    listener: Listener,
    settings: Settings,
    alert_loop: bool,
    notify: bool,
    expected: list[str],
) -> None:
    configured = settings.model_copy(
        update={
            "hj212_enabled": False,
            "mqtt_host": None,
            "alert_loop_enabled": alert_loop,
            "notify_enabled": notify,
        }
    )
    worker = Worker(db, listener, configured, simulate=False)
    try:
        await worker.start()
        assert [task.get_name() for task in worker.tasks] == expected
        assert all(not task.done() for task in worker.tasks)
    finally:
        await worker.stop()


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    """A JSON feed of two buoy readings, an hour apart, the last an hour ago."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    httpd = UpstreamServer()
    httpd.upstream.buoy_records = [
        {"ts": int((hour - n * HOUR).timestamp() * 1000), "v": 6.0 + n} for n in (1, 2)
    ]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sources_file(directory: Path, feed_url: str) -> Path:
    """One JSON feed of minute data (a period the simulator never sends), pulled hourly."""
    path = directory / "sources.yaml"
    path.write_text(
        "http_feeds:\n"
        "  - code: buoys\n"
        "    kind: json\n"
        f"    url: {feed_url}/buoys\n"
        "    interval_s: 3600\n"
        "    from_param: start\n"
        "    to_param: end\n"
        "    time_format: epoch_ms\n"
        "    page_param: page\n"
        "    page_size_param: size\n"
        "    lookback_s: 21600\n"
        "    mapping: {items: data.records, time: ts, value: v}\n"
        "    station: dg-w-humen\n"
        "    parameter: do\n"
        "    unit: mg/L\n"
        "    period_s: 60\n",
        encoding="utf-8",
    )
    return path


async def _until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within_s: float
) -> None:
    """Poll `condition` (a check, or a coroutine function) until it holds, within a limit."""
    started = time.monotonic()
    while True:
        held = condition()
        if held if isinstance(held, bool) else await held:
            return
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.05)


async def _accepted(pool: AsyncConnectionPool) -> dict[str, tuple[int, int, int, int]]:
    async with pool.connection() as conn:
        return {
            s.code: (s.accepted, s.duplicate, s.revised, s.rejected)
            for s in await source_statuses(conn)
        }


@pytest.mark.skipif(
    not _broker_listens(),
    reason=f"no MQTT broker listens on {BROKER_HOST}:{BROKER_PORT} (start mosquitto to run it)",
)
async def test_the_worker_starts_runs_and_stops_all_five_sources_through_one_loop(
    db: AsyncConnectionPool,
    listener: Listener,
    settings: Settings,
    upstream: UpstreamServer,
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    day = datetime.now(CST).date() - timedelta(days=1)
    (drop / "lab.csv").write_text(
        f"station,parameter,time,value,unit,period_s\ndg-w-humen,do,{day}T00:00,7.1,mg/L,86400\n",
        encoding="utf-8",
    )
    prefix = f"envlink-test-{secrets.token_hex(4)}"
    configured = settings.model_copy(
        update={
            "hj212_enabled": True,
            "hj212_host": "127.0.0.1",
            "hj212_port": 0,
            "mqtt_host": BROKER_HOST,
            "mqtt_port": BROKER_PORT,
            "mqtt_topic_prefix": prefix,
            "mqtt_client_id": f"{prefix}-worker",
            "sources_file": _sources_file(tmp_path, upstream.url),
            "csv_dir": drop,
            "csv_poll_s": 0.2,
            "simulator_interval_s": 3600,
            "leader_retry_s": 0.3,
            "leader_check_s": 0.2,
            "alert_loop_enabled": False,
            "notify_enabled": False,
        }
    )
    worker = Worker(db, listener, configured, simulate=True)
    try:
        await worker.start()
        hj212, mqtt = worker.sources[:2]
        assert isinstance(hj212, Hj212Server)
        assert [task.get_name() for task in worker.tasks] == ["hj212", "mqtt"]
        await _until(lambda: mqtt.health().running, "MQTT subscribed", 10)
        minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
        async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, timeout=5) as client:
            reading = {"time": minute.isoformat(), "parameter": "pm25", "value": 35.0,
                       "unit": "ug/m3", "period_s": 60}  # fmt: skip
            await client.publish(
                f"{prefix}/guangzhou/gz-a-huangpu/readings", orjson.dumps(reading), qos=1
            )
        catalogue = await worker.pipeline.catalogue()
        pairs = len(catalogue.station_parameters)
        uncoded = sum(
            1
            for _, parameter_id in catalogue.station_parameters
            if catalogue.parameters_by_id[parameter_id].hj212_code is None
        )
        rounds = 1 + 24  # the first round brings the last 24 hours too
        expected = {
            "hj212": ((pairs - uncoded) * rounds, 0, 0, 0),
            "mqtt": (1, 0, 0, 0),
            "http:buoys": (2, 0, 0, 0),
            "csv": (1, 0, 0, 0),
            "simulator": (uncoded * rounds, 0, 0, 0),
        }

        async def everything_stored() -> bool:
            return await _accepted(db) == expected

        await _until(everything_stored, f"every source stored its readings: {expected}", 60)
        health = {h.code: h for h in worker.health()}
        assert list(health) == ["hj212", "mqtt", "http:buoys", "csv", "simulator"]
        assert {code: (h.running, h.last_error) for code, h in health.items()} == {
            code: (True, None) for code in health
        }
        assert health["hj212"].counters["open_connections"] == len(catalogue.stations)
        assert health["hj212"].counters["ingest_failures"] == 0
        assert health["mqtt"].counters == {"connections": 1, "batches": 1, "messages": 1}
        assert health["http:buoys"].counters == {
            "runs": 1, "windows": 1, "requests": 1, "errors": 0
        }  # fmt: skip
        assert (health["csv"].counters["imported"], health["csv"].counters["failed"]) == (1, 0)
        assert health["simulator"].counters == {"rounds": 1, "readings": pairs * rounds}
        assert sorted(path.name for path in (drop / "processed").iterdir()) == [
            "lab.csv",
            "lab.report.csv",
        ]
        port = hj212.port
    finally:
        await worker.stop()
        async with aiomqtt.Client(
            BROKER_HOST, BROKER_PORT, identifier=f"{prefix}-worker", clean_session=True, timeout=5
        ):
            pass
    stopped = {h.code: (h.running, h.counters.get("open_connections")) for h in worker.health()}
    assert stopped == {
        "hj212": (False, 0),
        "mqtt": (False, None),
        "http:buoys": (False, None),
        "csv": (False, None),
        "simulator": (False, None),
    }
    assert [(t.get_name(), t.done(), t.cancelled()) for t in worker.tasks] == [
        ("hj212", True, False),
        ("mqtt", True, True),
    ]
    assert worker.tasks[0].exception() is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_scheduled_sources_run_only_on_the_worker_that_leads(
    db: AsyncConnectionPool,
    listener: Listener,
    settings: Settings,
    upstream: UpstreamServer,
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    configured = settings.model_copy(
        update={
            "hj212_enabled": False,
            "mqtt_host": None,
            "sources_file": _sources_file(tmp_path, upstream.url),
            "csv_dir": drop,
            "csv_poll_s": 3600,
            "simulator_interval_s": 3600,
            "leader_retry_s": 0.3,
            "leader_check_s": 0.2,
            "alert_loop_enabled": False,
            "notify_enabled": False,
        }
    )
    first = Worker(db, listener, configured, simulate=True, name="first")
    second = Worker(db, listener, configured, simulate=True, name="second")

    def rounds(worker: Worker) -> list[int]:
        """How often each scheduled source ran: the feed's runs, the folder's polls, the ticks."""
        runs, polls, ticks = worker.health()
        return [runs.counters["runs"], polls.counters["polls"], ticks.counters["rounds"]]

    try:
        await first.start()
        await _until(lambda: first.elected.leading, "the first worker leads", 10)
        await second.start()
        assert [h.code for h in second.health()] == ["http:buoys", "csv", "simulator"]
        await _until(lambda: rounds(first) == [1, 1, 1], "the leader's rounds", 30)
        await asyncio.sleep(1.0)  # three of the stand-by's election attempts
        assert (rounds(first), rounds(second)) == ([1, 1, 1], [0, 0, 0])
        await first.stop()
        await _until(lambda: rounds(second) == [1, 1, 1], "the new leader's rounds", 30)
        assert rounds(first) == [1, 1, 1]
    finally:
        await first.stop()
        await second.stop()


@pytest.mark.parametrize("days", [None, 90])
async def test_raw_retention_is_scheduled_only_when_set(
    db: AsyncConnectionPool, listener: Listener, settings: Settings, days: int | None
) -> None:
    configured = settings.model_copy(
        update={
            "hj212_enabled": False,
            "mqtt_host": None,
            "alert_loop_enabled": False,
            "notify_enabled": False,
            "raw_retention_days": days,
        }
    )
    worker = Worker(db, listener, configured, simulate=False)
    try:
        await worker.start()
        job = worker.scheduler.get_job("raw_retention")
        assert (job.kwargs if job else None) == (None if days is None else {"days": days})
    finally:
        await worker.stop()


@pytest.mark.parametrize("signing_key", [None, "worker-signing-key-0123"])
async def test_a_worker_without_a_signing_key_says_so_once_at_start(
    db: AsyncConnectionPool,
    listener: Listener,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    signing_key: str | None,
) -> None:
    spec = SubscriptionIn(
        code="dg-bulletin-hook", channel="webhook", target="http://127.0.0.1:9/", kind="bulletin"
    )
    async with db.connection() as conn, conn.transaction():
        await create_subscription(conn, agency="dg_eeb", spec=spec, via="api", at=utcnow())
    configured = settings.model_copy(
        update={
            "hj212_enabled": False,
            "mqtt_host": None,
            "alert_loop_enabled": False,
            "notify_enabled": True,
            "signing_key": None if signing_key is None else SecretStr(signing_key),
        }
    )
    worker = Worker(db, listener, configured, simulate=False)
    caplog.set_level(logging.ERROR, logger="envlink.runtime")
    try:
        await worker.start()
        # It still starts: alerts and e-mailed bulletins need no key.
        assert [task.get_name() for task in worker.tasks] == ["notify-stage", "notify-dispatch"]
    finally:
        await worker.stop()
    errors = [r.getMessage() for r in caplog.records if r.name == "envlink.runtime"]
    if signing_key is not None:
        assert errors == []
        return
    assert errors == [
        "ENVLINK_SIGNING_KEY is not set, but bulletin subscriptions dg-bulletin-hook send the"
        " bulletin as a signed link (webhook, WeCom, DingTalk): their deliveries fail. Set it"
        " (the same value on the worker and the API), or send them by e-mail"
    ]
