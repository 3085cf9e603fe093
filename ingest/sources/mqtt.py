"""MQTT: JSON readings on <prefix>/<city>/<station>/readings, and the simulator's publisher.

Acknowledged means stored. A QoS 1 PUBACK tells the broker it may forget a message; paho-mqtt
(under aiomqtt) sends it as soon as the message is read off the socket, before EnvLink has
stored anything, so a crash in that gap would lose messages the broker thinks delivered. The
subscriber therefore turns on paho's manual acknowledgements and sends each PUBACK only after
the batch holding the message is committed (readings and quarantine in one transaction). With a
persistent session (clean_session false, a stable client id) the broker redelivers whatever was
not acknowledged when the connection drops or the process dies, and keeps QoS 1 messages
published while EnvLink is away; the redelivered readings are duplicates, which are idempotent.
The remaining window is a batch committed but not yet acknowledged: it comes back as duplicates.
aiomqtt 2.x has no public switch for this yet (aiomqtt issue #345), so the paho client it wraps
is reached through `Client._client`; without `manual_ack_set` we fall back to paho's automatic
acknowledgement and say so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time as monotonic
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt
import orjson

from core.errors import InvalidInput
from core.retry import Backoff, keep_running
from core.settings import Settings
from core.timeutil import PERIODS_S, parse_time, rfc3339, utcnow
from ingest.flags import qc_of_flag
from ingest.pipeline import Pipeline, SourceRef
from ingest.received import (
    ReceivedJson,
    element_texts,
    json_text,
    parse_json,
    received_text,
)
from ingest.sources.base import SourceHealth
from schemas.common import QC
from schemas.readings import IntakeResult, ReadingIn, Rejection
from schemas.sources import MqttOptions
from store.catalogue import CatalogueCache

log = logging.getLogger(__name__)

MQTT = SourceRef(code="mqtt", kind="mqtt")
CITIES = ("guangzhou", "dongguan")


def _qc_or_reason(flag: object) -> QC | str:
    if flag is not None and not isinstance(flag, str):
        return f"flag must be a string, not {type(flag).__name__}"
    try:
        return qc_of_flag(flag)
    except ValueError as exc:
        return str(exc)


def reading_from_json(item: object, *, station: str) -> ReadingIn | str:
    """One JSON reading of `station`, or why it is not one."""
    if not isinstance(item, dict):
        return f"a reading must be a JSON object, not {_json_type(item)}"
    named = item.get("station")
    if named is not None and named != station:
        return f"payload names station {named!r} but the topic is station {station!r}"
    missing = [key for key in ("time", "parameter", "value", "unit") if key not in item]
    if missing:
        return "missing " + ", ".join(missing)
    time, parameter, value, unit = item["time"], item["parameter"], item["value"], item["unit"]
    if not isinstance(time, str):
        return f"time must be an RFC 3339 string, not {_json_type(time)}"
    try:
        moment = parse_time(time)
    except InvalidInput as exc:
        return str(exc)
    if not isinstance(parameter, str) or not parameter:
        return "parameter must be a non-empty string"
    number = finite_number(value)
    if isinstance(number, str):
        return number
    if not isinstance(unit, str):
        return f"unit must be a string, not {_json_type(unit)}"
    period = item.get("period_s", 0)
    if isinstance(period, bool) or period not in PERIODS_S:
        return f"period_s must be one of 0, 60, 3600, 86400, not {period!r}"
    qc = _qc_or_reason(item.get("flag"))
    if not isinstance(qc, QC):  # QC is a StrEnum: test for it, not for str
        return qc
    return ReadingIn(
        station=station,
        parameter=parameter,
        time=moment,
        value=number,
        unit=unit,
        period_s=period,
        qc=qc,
    )


def finite_number(value: object) -> float | str | None:
    """A JSON value as a reading's value: null, a finite float, or why it is neither."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"value must be a number or null, not {_json_type(value)}"
    try:
        number = float(value)
    except OverflowError:
        return f"value is an integer of {len(str(value))} digits, beyond double precision"
    if not math.isfinite(number):
        return f"value {value} is not a finite number"
    return number


def readings_of_message(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    cities: Mapping[str, str],
    max_payload_bytes: int,
) -> list[ReadingIn | Rejection]:
    """The items of one message: its readings, or rejections with the raw payload and reason.

    A message that cannot be attributed or parsed at all is one rejected item; an element that
    is not a reading is quarantined as its text in the message.
    """
    where = _topic_parts(topic, prefix)
    station = where[1] if isinstance(where, tuple) else None

    def whole(reason: str) -> list[ReadingIn | Rejection]:
        return [Rejection(0, f"topic {topic}: {reason}", station, None, received_text(payload))]

    if isinstance(where, str):
        return whole(where)
    city, station = where
    if len(payload) > max_payload_bytes:
        return whole(f"payload of {len(payload)} bytes exceeds {max_payload_bytes}")
    actual = cities.get(station)
    if actual is None:
        return whole(f"unknown station {station!r}")
    if actual != city:
        return whole(f"station {station} is in {actual}, not {city}")
    try:
        document = parse_json(payload)
    except orjson.JSONDecodeError as exc:
        return whole(f"malformed JSON: {exc}")
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        return whole(
            f"payload must be a JSON reading or an array of them, not {_json_type(document)}"
        )
    items: list[ReadingIn | Rejection] = []
    # The elements as received, cut out at the first rejection. A message with a reading the
    # pipeline rejects too is scanned once more in `store`: messages are small.
    texts: list[str] | None = None
    for position, element in enumerate(document):
        reading = reading_from_json(element, station=station)
        if isinstance(reading, ReadingIn):
            items.append(reading)
            continue
        if texts is None:
            texts = element_texts(payload) or []
        parameter = element.get("parameter") if isinstance(element, dict) else None
        items.append(
            Rejection(
                0,
                f"topic {topic}, reading {position}: {reading}",
                station,
                parameter if isinstance(parameter, str) else None,
                texts[position] if position < len(texts) else json_text(element),
            )
        )
    return items


def _topic_parts(topic: str, prefix: str) -> tuple[str, str] | str:
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return f"not under {head}"
    parts = topic[len(head) :].split("/")
    if len(parts) != 3 or parts[2] != "readings" or not parts[0] or not parts[1]:
        return "expected <prefix>/<city>/<station>/readings"
    if parts[0] not in CITIES:
        return f"unknown city {parts[0]!r} (guangzhou or dongguan)"
    return parts[0], parts[1]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


@dataclass(frozen=True)
class Broker:
    """Where the broker is and who we are to it (from settings)."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    prefix: str = "envlink"
    client_id: str = field(default_factory=lambda: f"envlink-{socket.gethostname()}")
    # Without a group every worker receives every message (the extra copies are duplicates).
    # With one, the broker hands each message to one member; a member that never comes back
    # strands what was queued for it, so grouped workers need stable client ids.
    shared_group: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Broker | None:
        """The configured broker, or None when ENVLINK_MQTT_HOST is unset."""
        if settings.mqtt_host is None:
            return None
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        return cls(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            username=settings.mqtt_username,
            password=password,
            prefix=settings.mqtt_topic_prefix,
            client_id=settings.mqtt_client_id or f"envlink-{socket.gethostname()}",
            shared_group=settings.mqtt_shared_group,
        )

    def topic(self, city: str, station: str) -> str:
        """The topic a station's readings are published on."""
        return f"{self.prefix.rstrip('/')}/{city}/{station}/readings"


class _StoreFailed(Exception):
    """Storing a batch failed; the cause says why."""


class MqttSubscriber:
    """Subscribes with QoS 1, batches close messages into one intake, acks once stored."""

    ref = MQTT
    interval_s = None

    def __init__(
        self,
        pipeline: Pipeline,
        broker: Broker,
        options: MqttOptions | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._broker = broker
        self._options = options or MqttOptions()
        self.connected = asyncio.Event()
        self._runner: asyncio.Task[object] | None = None
        self._problem: tuple[str, datetime] | None = None
        self.connections = 0
        self.batches = 0
        self.messages = 0

    @property
    def subscription(self) -> str:
        """The topic filter subscribed to (a shared subscription when grouped)."""
        topics = self._broker.topic("+", "+")
        group = self._broker.shared_group
        return topics if group is None else f"$share/{group}/{topics}"

    async def start(self) -> None:
        """Nothing to prepare: run() connects, and reconnects, by itself."""

    async def run(self) -> None:
        """Stay subscribed until stopped, reconnecting with bounded exponential backoff."""
        self._runner = asyncio.current_task()
        # Back off from the start again only after a session that worked: one that stored a
        # batch or stayed up a while. A batch that cannot be stored keeps backing off.
        backoff = Backoff(self._options.reconnect_min_s, self._options.reconnect_max_s, jitter=0.2)
        await keep_running(
            self._session,
            backoff=backoff,
            failed=self._failed,
            progress=lambda: self.batches,
            retry_on=(_StoreFailed, aiomqtt.MqttError, OSError, TimeoutError),
        )

    async def _failed(self, exc: Exception, delay: float) -> None:
        if isinstance(exc, _StoreFailed):
            # E.g. a database outage: the batch is not acknowledged, and dropping the
            # connection makes the broker deliver it again.
            log.error("MQTT batch could not be stored", exc_info=exc.__cause__)
            problem = f"storing an MQTT batch failed: {exc.__cause__!r}"
        elif isinstance(exc, aiomqtt.MqttError):
            problem = f"MQTT broker {self._broker.host}:{self._broker.port}: {exc}"
        else:
            problem = f"MQTT broker {self._broker.host}:{self._broker.port}: {exc!r}"
        log.warning("%s; reconnecting in %.2f s", problem, delay)
        self._problem = problem, utcnow()
        await self._pipeline.record_error(MQTT, problem)

    async def stop(self) -> None:
        """Leave the broker; a batch not yet stored is not acknowledged, so it is sent again."""
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.wait([runner])

    def health(self) -> SourceHealth:
        problem, at = self._problem or (None, None)
        return SourceHealth(
            MQTT.code,
            running=self.connected.is_set(),
            last_error=problem,
            last_error_at=at,
            counters={
                "connections": self.connections,
                "batches": self.batches,
                "messages": self.messages,
            },
        )

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self._broker.client_id,
            clean_session=False,
            keepalive=self._options.keepalive_s,
            timeout=self._options.timeout_s,
        )
        paho = client._client
        manual = hasattr(paho, "manual_ack_set") and hasattr(paho, "ack")
        if manual:
            paho.manual_ack_set(True)
        else:
            log.warning("paho-mqtt without manual acks: QoS 1 messages are acked on receipt")
        try:
            async with client:
                await client.subscribe(self.subscription, qos=1)
                self.connections += 1
                self.connected.set()
                log.info(
                    "MQTT: subscribed to %s on %s:%d as %s",
                    self.subscription,
                    self._broker.host,
                    self._broker.port,
                    self._broker.client_id,
                )
                while True:
                    batch = await self._next_batch(client)
                    try:
                        await self.store(batch)
                    except Exception as exc:
                        raise _StoreFailed from exc
                    if manual:
                        for message in batch:
                            paho.ack(message.mid, message.qos)
        finally:
            self.connected.clear()

    async def _next_batch(self, client: aiomqtt.Client) -> list[aiomqtt.Message]:
        # Never cancel a pending __anext__: aiomqtt could drop a message it had just dequeued.
        # After the first message, only messages already queued are taken, polling briefly.
        messages = client.messages
        batch = [await anext(messages)]
        deadline = monotonic.monotonic() + self._options.batch_window_s
        while len(batch) < self._options.batch_max_messages:
            if len(messages):
                batch.append(await anext(messages))
                continue
            remaining = deadline - monotonic.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.01))
        return batch

    async def store(self, batch: Sequence[aiomqtt.Message]) -> IntakeResult:
        """Parse every message of a batch and store them in one intake.

        A reading the pipeline rejects is quarantined as its message's JSON element as received.
        """
        prefix = self._broker.prefix
        cities = (await self._pipeline.catalogue()).cities
        items: list[ReadingIn | Rejection] = []
        received = ReceivedJson()
        for message in batch:
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            found = readings_of_message(
                message.topic.value,
                raw,
                prefix=prefix,
                cities=cities,
                max_payload_bytes=self._options.max_payload_bytes,
            )
            # Item k of a message is its element k (a message holding one object: that object);
            # a message rejected whole is one Rejection, which keeps its own payload.
            received.add(raw, range(len(found)))
            items.extend(found)
        result = await self._pipeline.ingest(items, source=MQTT, raw=received)
        self.batches += 1
        self.messages += len(batch)
        log.debug("MQTT: %d messages, %s", len(batch), result.summary)
        return result


def reading_json(reading: ReadingIn) -> dict[str, Any]:
    """A reading as an MQTT payload item (the station is in the topic)."""
    item: dict[str, Any] = {
        "time": rfc3339(reading.time),
        "parameter": reading.parameter,
        "value": reading.value,
        "unit": reading.unit,
        "period_s": reading.period_s,
    }
    if reading.qc is not QC.VALID:
        item["flag"] = reading.qc.value
    return item


class MqttPublisher:
    """Publishes readings as a station's sensors would: one JSON array per station, QoS 1."""

    def __init__(
        self,
        catalogue: CatalogueCache,
        broker: Broker,
        *,
        stations: Sequence[str] | None = None,
    ) -> None:
        """`catalogue` (the process's cache) tells each station's city, which is in its topic."""
        self._broker = broker
        self._catalogue = catalogue
        self._stations = None if stations is None else frozenset(stations)
        # A publisher's client id must differ from the subscriber's, or they evict each other.
        self._client_id = f"{broker.client_id}-publisher"

    async def publish(self, readings: Sequence[ReadingIn]) -> int:
        """Publish readings (each to its station's topic); returns how many messages were sent."""
        by_station: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for reading in readings:
            by_station[reading.station].append(reading_json(reading))
        cities = (await self._catalogue.get()).cities
        async with aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self._client_id,
            timeout=10,
        ) as client:
            for station, items in by_station.items():
                topic = self._broker.topic(cities.get(station, "unknown"), station)
                await client.publish(topic, orjson.dumps(items), qos=1)
        return len(by_station)

    async def divert(self, readings: Sequence[ReadingIn]) -> list[ReadingIn]:
        """Publish the readings of this publisher's stations; return the rest for other paths.

        If the broker cannot be reached, nothing is diverted: every reading is returned, so the
        caller's own path delivers it and nothing is lost.
        """
        ours = [r for r in readings if self._stations is None or r.station in self._stations]
        if not ours:
            return list(readings)
        try:
            await self.publish(ours)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            log.warning("simulator: MQTT publish failed (%s); delivering directly", exc)
            return list(readings)
        return [
            r for r in readings if self._stations is not None and r.station not in self._stations
        ]
