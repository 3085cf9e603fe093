"""The MQTT subscriber against the local Mosquitto: payloads, quarantine, acks, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from envlink.runtime import Worker
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.mqtt import Broker, MqttPublisher, MqttSubscriber
from ingest.sources.simulator import SimulatorJob
from schemas.readings import IntakeResult, ReadingIn, Rejection
from schemas.sources import MqttOptions
from store.intake import rejected_readings
from store.listen import Listener
from store.pool import Conn
from store.sources import source_statuses

BROKER_HOST, BROKER_PORT = "127.0.0.1", 1883
NOW = datetime(2026, 11, 26, 4, tzinfo=UTC)
HOUR_CST = "2026-11-26T12:00:00"  # 04:00 UTC
HOUR = timedelta(hours=1)


def _broker_listens() -> bool:
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _broker_listens(),
    reason=f"no MQTT broker listens on {BROKER_HOST}:{BROKER_PORT} (start mosquitto to run these)",
)


class CountingPipeline(Pipeline):
    """The real pipeline, counting intakes; `fail_first` makes the first one fail as a DB would."""

    def __init__(self, pool: AsyncConnectionPool, *, fail_first: bool = False) -> None:
        super().__init__(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)
        self.calls = 0
        self.fail_first = fail_first

    async def ingest(
        self,
        items: Sequence[ReadingIn | Rejection],
        *,
        source: SourceRef,
        raw: Sequence[str | None] | None = None,
        then: Callable[[Conn, IntakeResult], Awaitable[None]] | None = None,
    ) -> IntakeResult:
        self.calls += 1
        if self.fail_first and self.calls == 1:
            raise ConnectionError("the database went away")
        return await super().ingest(items, source=source, raw=raw, then=then)


class Proxy:
    """A TCP proxy to the broker that the test can take down (connections cut, new ones refused)
    and bring back on the same port."""

    def __init__(self) -> None:
        self._links: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(BROKER_HOST, BROKER_PORT)
        self._links += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._links:
            writer.close()
        self._links.clear()


@dataclass
class Running:
    subscriber: MqttSubscriber
    pipeline: CountingPipeline
    broker: Broker
    prefix: str
    pool: AsyncConnectionPool
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def topic(self, city: str, station: str) -> str:
        return f"{self.prefix}/{city}/{station}/readings"

    async def publish(self, topic: str, payload: bytes | dict[str, Any] | list[Any]) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, timeout=5) as client:
            await client.publish(topic, data, qos=1)

    async def stored_messages(self, count: int) -> None:
        await _until(lambda: self.subscriber.messages >= count, f"{count} messages stored")


async def _until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _subscriber(
    pool: AsyncConnectionPool,
    *,
    port: int = BROKER_PORT,
    fail_first: bool = False,
    options: MqttOptions | None = None,
    prefix: str | None = None,
    group: str | None = None,
    member: str = "subscriber",
) -> AsyncIterator[Running]:
    prefix = prefix or f"envlink-test-{secrets.token_hex(4)}"
    broker = Broker(
        host=BROKER_HOST,
        port=port,
        prefix=prefix,
        client_id=f"{prefix}-{member}",
        shared_group=group,
    )
    pipeline = CountingPipeline(pool, fail_first=fail_first)
    options = options or MqttOptions(batch_window_s=0.05, reconnect_min_s=0.05, reconnect_max_s=0.2)
    subscriber = MqttSubscriber(pipeline, broker, options)
    running = Running(subscriber, pipeline, broker, prefix, pool)
    task = asyncio.create_task(subscriber.run())
    try:
        await asyncio.wait_for(subscriber.connected.wait(), timeout=10)
        yield running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Drop the persistent session this test made on the broker.
        async with aiomqtt.Client(
            BROKER_HOST, BROKER_PORT, identifier=broker.client_id, clean_session=True, timeout=5
        ):
            pass


def _reading(
    parameter: str = "pm25", value: float = 35.0, unit: str = "ug/m3", **extra: Any
) -> dict[str, Any]:
    return {
        "time": HOUR_CST,
        "parameter": parameter,
        "value": value,
        "unit": unit,
        "period_s": 3600,
    } | extra


async def _stored(pool: AsyncConnectionPool) -> list[tuple[str, str, datetime, float, int, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT s.code, p.code, r.time, r.value, r.period_s, src.code FROM reading r"
            " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
            " JOIN source src ON src.id = r.source_id ORDER BY s.code, p.code, r.time"
        )
        return await cur.fetchall()


async def _mqtt_status(pool: AsyncConnectionPool) -> Any:
    async with pool.connection() as conn:
        statuses = {s.code: s for s in await source_statuses(conn)}
    return statuses["mqtt"]


async def test_a_single_reading_is_stored_under_the_topics_station(db: AsyncConnectionPool) -> None:
    async with _subscriber(db) as run:
        await run.publish(run.topic("guangzhou", "gz-a-huangpu"), _reading())
        await run.stored_messages(1)
    assert await _stored(db) == [("gz-a-huangpu", "pm25", NOW, 35.0, 3600, "mqtt")]
    status = await _mqtt_status(db)
    assert (status.kind, status.accepted, status.duplicate, status.rejected) == ("mqtt", 1, 0, 0)


async def test_an_array_is_stored_and_units_are_converted(db: AsyncConnectionPool) -> None:
    async with _subscriber(db) as run:
        await run.publish(
            run.topic("dongguan", "dg-a-shilong"),
            [
                _reading("so2", 10.0, "ppb"),
                _reading("no2", 20.0, "ppb"),
                _reading("co", 1.0, "ppm"),
                _reading("pm10", 50.0, "μg/m³", flag="valid"),
            ],
        )
        await run.stored_messages(1)
    stored = await _stored(db)
    assert [(s, p, t, v) for s, p, t, v, _, _ in stored] == [
        ("dg-a-shilong", "co", NOW, pytest.approx(1.145)),
        ("dg-a-shilong", "no2", NOW, pytest.approx(37.6)),
        ("dg-a-shilong", "pm10", NOW, 50.0),
        ("dg-a-shilong", "so2", NOW, pytest.approx(26.2)),
    ]
    assert run.pipeline.calls == 1


async def test_bad_payloads_are_quarantined_and_the_subscriber_carries_on(
    db: AsyncConnectionPool,
) -> None:
    async with _subscriber(db) as run:
        await run.publish(run.topic("guangzhou", "gz-a-huangpu"), b'{"time": "2026-11-26T1')
        await run.publish(run.topic("guangzhou", "gz-a-nowhere"), _reading())
        await run.publish(run.topic("dongguan", "gz-a-huangpu"), _reading())
        await run.publish(run.topic("guangzhou", "gz-a-huangpu"), [_reading(), _reading("radon")])
        await run.stored_messages(4)
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    topic = run.topic("guangzhou", "gz-a-huangpu")
    assert [(q.station_code, q.parameter_code, q.reason, q.payload) for q in quarantined] == [
        (
            "gz-a-huangpu",
            None,
            f"topic {topic}: malformed JSON: unexpected end of data: line 1 column 23 (char 22)",
            '{"time": "2026-11-26T1',
        ),
        (
            "gz-a-nowhere",
            None,
            f"topic {run.topic('guangzhou', 'gz-a-nowhere')}: unknown station 'gz-a-nowhere'",
            orjson.dumps(_reading()).decode(),
        ),
        (
            "gz-a-huangpu",
            None,
            f"topic {run.topic('dongguan', 'gz-a-huangpu')}: station gz-a-huangpu is in guangzhou,"
            " not dongguan",
            orjson.dumps(_reading()).decode(),
        ),
        (
            "gz-a-huangpu",
            "radon",
            "unknown parameter 'radon'",
            orjson.dumps(_reading("radon")).decode(),
        ),
    ]
    assert [q.source_id is not None for q in quarantined] == [True] * 4
    assert await _stored(db) == [("gz-a-huangpu", "pm25", NOW, 35.0, 3600, "mqtt")]
    status = await _mqtt_status(db)
    assert (status.accepted, status.duplicate, status.rejected) == (1, 0, 4)


async def test_readings_the_pipeline_rejects_are_quarantined_as_their_element_was_received(
    db: AsyncConnectionPool,
) -> None:
    # Written by hand: spacing, key order, 1e1 and µg/m³ would all change if re-serialised.
    alone = '{"time":"2026-11-26T12:00:00", "parameter" : "pm25","value":35,"unit":"ppb"}'
    radon = '{ "time": "2026-11-26T12:00:00",\n  "parameter": "radon", "value": 1e1, "unit": "Bq" }'
    pm10 = (
        '{"parameter": "pm10", "time": "2026-11-26T12:00:00", "value": 50, "unit": "µg/m³",'
        ' "period_s": 3600}'
    )
    negative = '{"time":"2026-11-26T12:00:00","parameter":"pm25","value":-5,"unit":"µg/m³"}'
    array = f"[\n  {radon},\n\t{pm10} ,{negative}\n]\n"
    async with _subscriber(db) as run:
        topic = run.topic("guangzhou", "gz-a-huangpu")
        await run.publish(topic, alone.encode())
        await run.publish(topic, array.encode())
        await run.stored_messages(2)
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    assert [(q.parameter_code, q.reason, q.payload) for q in quarantined] == [
        ("pm25", "ppb is only accepted for the gases SO2, NO2, O3 and CO, not pm25", alone),
        ("radon", "unknown parameter 'radon'", radon),
        (
            "pm25",
            "pm25: value -5 ug/m3 is outside the physically possible range [0, 2000]",
            negative,
        ),
    ]
    assert await _stored(db) == [("gz-a-huangpu", "pm10", NOW, 50.0, 3600, "mqtt")]


async def test_elements_that_are_not_readings_are_quarantined_as_they_were_received(
    db: AsyncConnectionPool,
) -> None:
    # Written by hand: spacing, 1e1 and the \u escape would all change if re-serialised.
    bad_time = r'{ "time" : "not a time" ,"parameter":"pm25","value":1e1, "unit":"\u00b5g/m3" }'
    good = (
        '{"time": "2026-11-26T12:00:00", "parameter": "pm10", "value": 50, "unit": "µg/m³",'
        ' "period_s": 3600}'
    )
    no_unit = '{"time":"2026-11-26T12:00:00",  "parameter" : "o3","value":1E1}'
    array = f"[\n  {bad_time},\n\t{good} ]\n"
    async with _subscriber(db) as run:
        topic, nowhere = run.topic("guangzhou", "gz-a-huangpu"), run.topic("guangzhou", "nowhere")
        await run.publish(topic, array.encode())
        await run.publish(topic, no_unit.encode())
        await run.publish(nowhere, array.encode())
        await run.stored_messages(3)
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    assert [(q.station_code, q.parameter_code, q.reason, q.payload) for q in quarantined] == [
        (
            "gz-a-huangpu",
            "pm25",
            f"topic {topic}, reading 0: time: 'not a time' is not an ISO 8601 / RFC 3339 time",
            bad_time,
        ),
        ("gz-a-huangpu", "o3", f"topic {topic}, reading 0: missing unit", no_unit),
        # A message rejected whole keeps the whole message, not its first element.
        ("nowhere", None, f"topic {nowhere}: unknown station 'nowhere'", array),
    ]
    assert await _stored(db) == [("gz-a-huangpu", "pm10", NOW, 50.0, 3600, "mqtt")]


async def test_a_republished_reading_is_a_duplicate(db: AsyncConnectionPool) -> None:
    async with _subscriber(db) as run:
        topic = run.topic("guangzhou", "gz-a-huangpu")
        await run.publish(topic, _reading())
        await run.stored_messages(1)
        await run.publish(topic, _reading())
        await run.publish(topic, _reading(value=36.0))
        await run.stored_messages(3)
    assert await _stored(db) == [("gz-a-huangpu", "pm25", NOW, 36.0, 3600, "mqtt")]
    status = await _mqtt_status(db)
    assert (status.accepted, status.duplicate, status.revised, status.rejected) == (1, 1, 1, 0)


async def test_messages_arriving_together_are_stored_in_few_batches(
    db: AsyncConnectionPool,
) -> None:
    options = MqttOptions(batch_window_s=0.5, reconnect_min_s=0.05, reconnect_max_s=0.2)
    async with _subscriber(db, options=options) as run:
        topic = run.topic("guangzhou", "gz-a-huangpu")
        async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, timeout=5) as client:
            for minute in range(60):
                reading = _reading(value=30.0 + minute, period_s=60)
                reading["time"] = f"2026-11-26T11:{minute:02d}:00"
                await client.publish(topic, orjson.dumps(reading), qos=1)
        await run.stored_messages(60)
    stored = await _stored(db)
    assert [v for _, _, _, v, _, _ in stored] == [30.0 + m for m in range(60)]
    # 60 messages in a handful of intakes (the broker holds back more than 20 unacked ones).
    assert run.subscriber.batches == run.pipeline.calls
    assert run.subscriber.batches <= 6


async def test_a_batch_that_cannot_be_stored_is_not_acknowledged_and_comes_back(
    db: AsyncConnectionPool,
) -> None:
    async with _subscriber(db, fail_first=True) as run:
        await run.publish(run.topic("guangzhou", "gz-a-huangpu"), _reading())
        await _until(lambda: run.pipeline.calls == 2 and run.subscriber.messages == 1, "redelivery")
        assert run.subscriber.connections == 2
    assert await _stored(db) == [("gz-a-huangpu", "pm25", NOW, 35.0, 3600, "mqtt")]
    status = await _mqtt_status(db)
    assert (status.accepted, status.duplicate) == (1, 0)
    assert (
        status.last_error
        == "storing an MQTT batch failed: ConnectionError('the database went away')"
    )


async def test_the_subscriber_reconnects_and_gets_what_was_published_meanwhile(
    db: AsyncConnectionPool,
) -> None:
    proxy = Proxy()
    await proxy.start()
    try:
        async with _subscriber(db, port=proxy.port) as run:
            topic = run.topic("guangzhou", "gz-a-huangpu")
            await run.publish(topic, _reading(value=1.0, time="2026-11-26T10:00:00"))
            await run.stored_messages(1)

            await proxy.stop()
            await _until(lambda: not run.subscriber.connected.is_set(), "the disconnect")
            # Published straight to the broker while EnvLink is cut off: the persistent session
            # keeps them until the subscriber is back.
            await run.publish(topic, _reading(value=2.0, time="2026-11-26T11:00:00"))
            await run.publish(topic, _reading(value=3.0, time="2026-11-26T12:00:00"))
            await asyncio.sleep(0.5)  # several refused reconnects
            assert run.subscriber.messages == 1
            await proxy.start()
            await run.stored_messages(3)
            assert run.subscriber.connections == 2
    finally:
        await proxy.stop()
    assert [v for _, _, _, v, _, _ in await _stored(db)] == [1.0, 2.0, 3.0]
    status = await _mqtt_status(db)
    assert status.accepted == 3
    assert status.last_error.startswith(f"MQTT broker {BROKER_HOST}:{proxy.port}: ")


async def test_the_simulator_publishes_its_mqtt_stations_through_the_broker(
    db: AsyncConnectionPool,
) -> None:
    async with _subscriber(db) as run:
        publisher = MqttPublisher(run.pipeline.catalogue_cache, run.broker, stations=["dg-w-humen"])
        job = SimulatorJob(
            Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW),
            interval_s=60,
            history_hours=0,
            clock=lambda: NOW,
            mqtt=publisher,
        )
        direct = await job.run()
        await run.stored_messages(1)
    catalogue = await run.pipeline.catalogue()
    humen = len(catalogue.parameters_of(catalogue.stations["dg-w-humen"]))
    everyone = sum(len(catalogue.parameters_of(s)) for s in catalogue.stations.values())
    assert humen == 10
    assert len(direct.outcomes) == everyone - humen
    stored = await _stored(db)
    by_source = {(s, src) for s, _, _, _, _, src in stored}
    assert {s for s, src in by_source if src == "mqtt"} == {"dg-w-humen"}
    assert sum(1 for row in stored if row[5] == "mqtt") == humen
    assert len(stored) == everyone


async def test_workers_in_a_shared_group_split_the_messages_and_store_each_once(
    db: AsyncConnectionPool,
) -> None:
    prefix = f"envlink-test-{secrets.token_hex(4)}"
    async with (
        _subscriber(db, prefix=prefix, group="workers", member="a") as first,
        _subscriber(db, prefix=prefix, group="workers", member="b") as second,
    ):
        assert first.subscriber.subscription == f"$share/workers/{prefix}/+/+/readings"
        topic = first.topic("guangzhou", "gz-a-huangpu")
        async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, timeout=5) as client:
            for minute in range(10):
                reading = _reading(value=float(minute), period_s=60)
                reading["time"] = f"2026-11-26T11:{minute:02d}:00"
                await client.publish(topic, orjson.dumps(reading), qos=1)
        await _until(
            lambda: first.subscriber.messages + second.subscriber.messages == 10, "10 messages"
        )
    assert first.subscriber.messages > 0
    assert second.subscriber.messages > 0
    assert [v for _, _, _, v, _, _ in await _stored(db)] == [float(m) for m in range(10)]
    status = await _mqtt_status(db)
    assert (status.accepted, status.duplicate) == (10, 0)


async def test_a_worker_runs_the_subscriber_and_the_configured_feeds(
    db: AsyncConnectionPool, listener: Listener, settings: Settings, tmp_path: Path
) -> None:
    from tests.integration.test_http_pull import UpstreamServer

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    httpd = UpstreamServer()
    httpd.upstream.buoy_records = [
        {"ts": int((hour - n * HOUR).timestamp() * 1000), "v": 6.0 + n} for n in (1, 2)
    ]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "http_feeds:\n"
        "  - code: buoys-w\n"
        "    kind: json\n"
        f"    url: {httpd.url}/buoys\n"
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
        "    period_s: 3600\n",
        encoding="utf-8",
    )
    prefix = f"envlink-test-{secrets.token_hex(4)}"
    configured = settings.model_copy(
        update={
            "mqtt_host": BROKER_HOST,
            "mqtt_port": BROKER_PORT,
            "mqtt_topic_prefix": prefix,
            "mqtt_client_id": f"{prefix}-worker",
            "sources_file": sources,
            "hj212_enabled": False,
        }
    )
    worker = Worker(db, listener, configured, simulate=False)
    try:
        await worker.start()
        await _until(lambda: bool(worker.tasks), "the subscriber task")
        topic = f"{prefix}/guangzhou/gz-a-huangpu/readings"
        reading = _reading(time=hour.isoformat())
        for _ in range(50):  # the subscriber may still be connecting: QoS 1 + retry until stored
            async with aiomqtt.Client(BROKER_HOST, BROKER_PORT, timeout=5) as client:
                await client.publish(topic, orjson.dumps(reading), qos=1)
            await asyncio.sleep(0.1)
            if len(await _stored(db)) == 3:
                break
    finally:
        await worker.stop()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        async with aiomqtt.Client(
            BROKER_HOST, BROKER_PORT, identifier=f"{prefix}-worker", clean_session=True, timeout=5
        ):
            pass
    stored = await _stored(db)
    assert [(s, p, t, v, src) for s, p, t, v, _, src in stored] == [
        ("dg-w-humen", "do", hour - 2 * HOUR, 8.0, "http:buoys-w"),
        ("dg-w-humen", "do", hour - HOUR, 7.0, "http:buoys-w"),
        ("gz-a-huangpu", "pm25", hour, 35.0, "mqtt"),
    ]


async def test_hostile_elements_are_rejected_alone_and_quarantined_byte_for_byte(
    db: AsyncConnectionPool,
) -> None:
    def element(**fields: bytes) -> bytes:
        raw = {"time": b'"2026-11-26T12:00:00"', "parameter": b'"pm25"', "value": b"35"}
        raw |= {"unit": b'"ug/m3"', **fields}
        return b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in raw.items()) + b"}"

    # (element, why it is rejected, or None when it is stored)
    elements: list[tuple[bytes, str | None]] = [
        (element(), None),
        (element(parameter=rb'"pm25\u0000"'), "unknown parameter 'pm25\\x00'"),
        (
            element(unit=b'"ug/m3\xff"'),
            "unit 'ug/m3\\udcff' cannot be converted to ug/m3 for pm25",
        ),
        (element(parameter=rb'"pm\ud800"'), "unknown parameter 'pm\\ud800'"),
        (element(value=b"1e400"), "topic {topic}, reading 4: value inf is not a finite number"),
        (element(value=b"NaN"), "topic {topic}, reading 5: value nan is not a finite number"),
        (
            element(value=b"9" * 400),
            "topic {topic}, reading 6: value is an integer of 400 digits, beyond double precision",
        ),
        (
            element(value=b"18446744073709551616"),
            "pm25: value 1.84467e+19 ug/m3 is outside the physically possible range [0, 2000]",
        ),
        (
            element(time=b'"0001-01-01T00:00:00+14:00"'),
            "topic {topic}, reading 8: time: '0001-01-01T00:00:00+14:00' is outside the years"
            " 1900-2199",
        ),
        (
            element(time=b'"2026-11-26T12:00:00+25:00"'),
            "topic {topic}, reading 9: time: '2026-11-26T12:00:00+25:00' is not an ISO 8601 /"
            " RFC 3339 time",
        ),
        (element(parameter=b'"pm10"', value=b"-0"), None),
    ]
    not_json = b"\xff\x00{not json"
    async with _subscriber(db) as run:
        topic = run.topic("guangzhou", "gz-a-huangpu")
        await run.publish(topic, b"[" + b",\n".join(e for e, _ in elements) + b"]")
        await run.publish(topic, not_json)
        await run.publish(run.topic("dongguan", "dg-a-shilong"), _reading("so2", 10.0))
        await run.stored_messages(3)
    stored = await _stored(db)
    assert stored == [
        ("dg-a-shilong", "so2", NOW, 10.0, 3600, "mqtt"),
        ("gz-a-huangpu", "pm10", NOW, 0.0, 0, "mqtt"),
        ("gz-a-huangpu", "pm25", NOW, 35.0, 0, "mqtt"),
    ]
    assert str(stored[1][3]) == "0.0"  # -0 is stored without its sign
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    # The source's own rejections name the topic and the element; the pipeline's do not.
    expected = [(reason.format(topic=topic), e) for e, reason in elements if reason is not None]
    expected.append(
        (
            f"topic {topic}: malformed JSON: str is not valid UTF-8: surrogates not allowed:"
            " line 1 column 1 (char 0)",
            not_json,
        )
    )
    assert [
        (q.reason, q.payload.encode("utf-8", "surrogateescape")) for q in quarantined
    ] == expected
    assert [q.parameter_code for q in quarantined[:3]] == ["pm25\x00", "pm25", "pm\ud800"]
    status = await _mqtt_status(db)
    assert (status.accepted, status.duplicate, status.rejected) == (3, 0, 10)
