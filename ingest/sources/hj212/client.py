"""A small asyncio HJ 212 device (data logger): the simulator's, tests' and benchmark's station.

It keeps one TCP connection to the platform, uploads data packets under its own CRC mode and
password, matches the platform's answers (9013/9014) to uploads by QN, and answers the platform's
requests for stored data (CN 2051/2061/2031 with BeginTime/EndTime) from a `history` callback:
9011, the packets, then 9012 — as the standard's devices do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from core.timeutil import utcnow
from ingest.sources.hj212.protocol import (
    CRC_MODES,
    DATA_CNS,
    CrcMode,
    Frame,
    FrameDecoder,
    Packet,
    ProtocolError,
    build_frame,
    format_datatime,
    parse_datatime,
    parse_segment,
)
from schemas.readings import ReadingIn
from store.catalogue import CatalogueSnapshot, StationRef

log = logging.getLogger(__name__)

# code -> (value, HJ 212 data flag or None); the value in the unit the station is set to send.
Values = Mapping[str, tuple[float, str | None]]
# (CN, BeginTime, EndTime) -> the (DataTime, values) packets the device holds for that span.
History = Callable[[str, datetime, datetime], Sequence[tuple[datetime, Values]]]
# (QN, answer, perf_counter() when it arrived): lets a load generator time answers.
OnReply = Callable[[str, Packet, float], None]

# The HJ 212-2017 data flag of each EnvLink QC state a device can report.
FLAG_FOR_QC: Final[dict[str, str]] = {
    "valid": "N",
    "stopped": "F",
    "maintenance": "M",
    "manual": "S",
    "fault": "D",
    "calibration": "C",
    "over_range": "T",
    "comm_fault": "B",
}
_ANSWERS: Final = frozenset({"9013", "9014"})
_NO_DATA: Final = "100"  # ExeRtn when the device holds nothing for the requested span


def number_text(value: float) -> str:
    """A value as devices write it: positional, and exactly the float it stands for."""
    text = format(Decimal(repr(float(value))), "f")
    return text[:-2] if text.endswith(".0") else text


def data_segment(
    *,
    cn: str,
    mn: str,
    data_time: datetime,
    values: Values,
    qn: str | None,
    st: str,
    pw: str | None,
    flag: int | None,
) -> str:
    """A data upload's segment; `qn` and `flag` None give a 2005-style packet without them."""
    suffix = DATA_CNS[cn][0]
    header = [f"QN={qn}"] if qn is not None else []
    header += [f"ST={st}", f"CN={cn}"]
    if pw is not None:
        header.append(f"PW={pw}")
    header.append(f"MN={mn}")
    if flag is not None:
        header.append(f"Flag={flag}")
    cp = [f"DataTime={format_datatime(data_time)}"]
    for code, (value, data_flag) in values.items():
        entry = f"{code}-{suffix}={number_text(value)}"
        cp.append(f"{entry},{code}-Flag={data_flag}" if data_flag else entry)
    return ";".join(header) + ";CP=&&" + ";".join(cp) + "&&"


class Hj212Client:
    """One station's data logger connected to an HJ 212 platform."""

    def __init__(
        self,
        *,
        mn: str,
        pw: str | None = None,
        st: str = "22",
        crc_mode: CrcMode = "hj212",
        version: int = 1,
        history: History | None = None,
        on_reply: OnReply | None = None,
        record: bool = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.mn = mn
        self.pw = pw
        self.st = st
        self.crc_mode: CrcMode = crc_mode
        self.version = version
        self._history = history
        self._on_reply = on_reply
        self._record = record
        self._clock = clock
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_qn: datetime | None = None
        self._answers: dict[str, deque[Packet]] = {}
        self._waiters: dict[str, deque[asyncio.Future[Packet]]] = {}
        self.received: list[bytes] = []
        self.requests: list[Packet] = []
        self.bad_crc = 0

    @property
    def connected(self) -> bool:
        """Whether the connection is up and being read."""
        return self._read_task is not None and not self._read_task.done()

    async def connect(self, host: str, port: int, *, timeout_s: float = 5.0) -> None:
        """Open the connection and start reading the platform's frames."""
        async with asyncio.timeout(timeout_s):
            self._reader, self._writer = await asyncio.open_connection(host, port)
        self._read_task = asyncio.create_task(self._read_loop(), name=f"hj212-client-{self.mn}")

    async def close(self) -> None:
        """Close the connection and stop answering requests."""
        for task in [*self._tasks, *([self._read_task] if self._read_task else [])]:
            task.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._read_task is not None:
            await asyncio.gather(self._read_task, return_exceptions=True)
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()
        self._waiters.clear()

    def next_qn(self) -> str:
        """A fresh QN from the clock, strictly increasing on this device.

        A QN holds milliseconds: two frames within one (a device catching up on frames it
        is late with) must not share one, or the second's answer is taken for the first's.
        """
        now = self._clock()
        now -= timedelta(microseconds=now.microsecond % 1000)
        if self._last_qn is not None and now <= self._last_qn:
            now = self._last_qn + timedelta(milliseconds=1)
        self._last_qn = now
        return format_datatime(now, ms=True)

    def frame(self, segment: str | bytes) -> bytes:
        """Frame a segment under this device's CRC mode."""
        return build_frame(segment, self.crc_mode)

    def upload_frame(
        self,
        cn: str,
        data_time: datetime,
        values: Values,
        *,
        reply: bool = True,
        qn: str | None = None,
    ) -> tuple[str, bytes]:
        """A data upload (CN 2011/2051/2061/2031) with a fresh QN unless given, and its QN."""
        qn = qn or self.next_qn()
        segment = data_segment(
            cn=cn,
            mn=self.mn,
            data_time=data_time,
            values=values,
            qn=qn,
            st=self.st,
            pw=self.pw,
            flag=self.version << 2 | int(reply),
        )
        return qn, self.frame(segment)

    def write(self, data: bytes) -> None:
        """Queue bytes for the platform without waiting (see drain)."""
        if self._writer is None:
            raise ConnectionError(f"HJ 212 device {self.mn} is not connected")
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait until the queued bytes are handed to the OS."""
        if self._writer is None:
            raise ConnectionError(f"HJ 212 device {self.mn} is not connected")
        await self._writer.drain()

    async def send(self, data: bytes) -> None:
        """Write bytes and wait until they are handed to the OS."""
        self.write(data)
        await self.drain()

    async def upload(
        self,
        cn: str,
        data_time: datetime,
        values: Values,
        *,
        reply: bool = True,
        timeout_s: float = 10.0,
    ) -> Packet | None:
        """Send one data upload; with `reply`, wait for the platform's answer and return it."""
        qn, frame = self.upload_frame(cn, data_time, values, reply=reply)
        await self.send(frame)
        return await self.answer(qn, timeout_s=timeout_s) if reply else None

    async def answer(self, qn: str, *, timeout_s: float = 10.0) -> Packet:
        """The next answer (9013/9014) with this QN, waiting up to `timeout_s` seconds for it."""
        queued = self._answers.get(qn)
        if queued:
            answer = queued.popleft()
            if not queued:
                del self._answers[qn]
            return answer
        waiter: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(qn, deque()).append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        finally:
            waiters = self._waiters.get(qn)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[qn]

    async def _read_loop(self) -> None:
        assert self._reader is not None
        decoder = FrameDecoder()
        try:
            while data := await self._reader.read(65536):
                arrived = time.perf_counter()
                for event in decoder.feed(data):
                    if isinstance(event, Frame):
                        self._on_frame(event, arrived)
        except OSError as exc:
            log.debug("device %s: connection lost: %s", self.mn, exc)
        finally:
            # Whoever waits for an answer learns at once that none can come now.
            for waiters in self._waiters.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("the platform closed the connection"))

    def _on_frame(self, frame: Frame, arrived: float) -> None:
        if not frame.crc_ok(self.crc_mode):
            self.bad_crc += 1
            return
        if self._record:
            self.received.append(frame.raw)
        try:
            packet = parse_segment(frame.segment)
        except ProtocolError as exc:
            log.warning("device %s: unparsable frame from the platform: %s", self.mn, exc)
            return
        self._on_packet(packet, arrived)

    def _on_packet(self, packet: Packet, arrived: float) -> None:
        if packet.cn in _ANSWERS and packet.qn is not None:
            if self._on_reply is not None:
                self._on_reply(packet.qn, packet, arrived)
                return
            waiters = self._waiters.get(packet.qn)
            if waiters:
                waiters.popleft().set_result(packet)
                if not waiters:
                    del self._waiters[packet.qn]
            else:
                self._answers.setdefault(packet.qn, deque()).append(packet)
            return
        if packet.cn in DATA_CNS and "BeginTime" in packet.cp.fields:
            self.requests.append(packet)
            task = asyncio.create_task(self._answer_request(packet))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        log.debug("device %s: ignored CN=%s from the platform", self.mn, packet.cn)

    async def _answer_request(self, request: Packet) -> None:
        """9011 (ready), the stored packets of the span, 9012 (done) — HJ 212's request flow."""
        fields = request.cp.fields
        try:
            begin = parse_datatime(fields["BeginTime"])
            end = parse_datatime(fields.get("EndTime", fields["BeginTime"]))
        except ProtocolError as exc:
            log.warning("device %s: bad request from the platform: %s", self.mn, exc)
            return
        header = f"QN={request.qn};ST=91;CN={{cn}};PW={self.pw or ''};MN={self.mn};"
        flag = f"Flag={self.version << 2};"
        try:
            await self.send(self.frame(header.format(cn="9011") + flag + "CP=&&QnRtn=1&&"))
            records = self._history(request.cn, begin, end) if self._history else []
            for data_time, values in records:
                _, frame = self.upload_frame(request.cn, data_time, values, reply=True)
                self.write(frame)
            outcome = "1" if records else _NO_DATA
            done = header.format(cn="9012") + flag + f"CP=&&ExeRtn={outcome}&&"
            await self.send(self.frame(done))
        except OSError as exc:
            log.warning("device %s: could not answer the platform's request: %s", self.mn, exc)


# (catalogue, station code, period_s, first period start, last period start) -> its readings.
StationHistory = Callable[[CatalogueSnapshot, str, int, datetime, datetime], list[ReadingIn]]


class Hj212Fleet:
    """One device connection per catalogue station, delivering ReadingIn batches over HJ 212.

    Each station uploads with its own MN, password, CRC mode and units, one packet per
    (period, time) with a reply requested; platform requests for missed data are answered from
    `history`. Readings that cannot travel over HJ 212 are handed back to the caller.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        history: StationHistory | None = None,
        reply_timeout_s: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._history = history
        self._reply_timeout_s = reply_timeout_s
        self._catalogue: CatalogueSnapshot | None = None
        self._clients: dict[str, Hj212Client] = {}
        self.uploads = 0
        self.answered = 0

    async def deliver(
        self, catalogue: CatalogueSnapshot, readings: Sequence[ReadingIn]
    ) -> list[ReadingIn]:
        """Upload what can go over HJ 212 and wait for the answers; return the rest.

        A station whose connection fails or whose answers do not come has its readings
        returned too, so the caller's own path delivers them and nothing is lost.
        """
        self._catalogue = catalogue
        rest: list[ReadingIn] = []
        packets: dict[str, dict[tuple[int, datetime], list[ReadingIn]]] = {}
        for reading in readings:
            station = catalogue.stations.get(reading.station)
            parameter = catalogue.parameters.get(reading.parameter)
            over_hj212 = (
                station is not None
                and station.hj212_mn is not None
                and parameter is not None
                and parameter.hj212_code is not None
                and reading.value is not None
            )
            if not over_hj212:
                rest.append(reading)
            else:
                key = (reading.period_s, reading.time)
                packets.setdefault(reading.station, {}).setdefault(key, []).append(reading)
        stations = list(packets)
        failed = await asyncio.gather(
            *(self._upload(catalogue.stations[code], packets[code]) for code in stations)
        )
        for code, lost in zip(stations, failed, strict=True):
            if lost:
                rest.extend(reading for group in packets[code].values() for reading in group)
        return rest

    async def close(self) -> None:
        """Close every station's connection."""
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.close() for client in clients))

    async def _upload(
        self, station: StationRef, packets: dict[tuple[int, datetime], list[ReadingIn]]
    ) -> bool:
        """Send a station's packets and wait for every answer; True if that failed."""
        try:
            client = await self._client(station)
            qns = []
            for (period_s, data_time), group in sorted(packets.items()):
                qn, frame = client.upload_frame(
                    CN_OF_PERIOD[period_s], data_time, self._values(group)
                )
                client.write(frame)
                qns.append(qn)
            await client.drain()
            self.uploads += len(qns)
            async with asyncio.timeout(self._reply_timeout_s):
                for qn in qns:
                    await client.answer(qn, timeout_s=self._reply_timeout_s)
                    self.answered += 1
        except (OSError, TimeoutError) as exc:
            log.warning(
                "simulated device %s: HJ 212 upload failed (%s); delivering directly",
                station.code,
                exc or type(exc).__name__,
            )
            client_gone = self._clients.pop(station.code, None)
            if client_gone is not None:
                await client_gone.close()
            return True
        return False

    async def _client(self, station: StationRef) -> Hj212Client:
        client = self._clients.get(station.code)
        if client is not None and client.connected:
            return client
        if client is not None:
            await client.close()
        client = Hj212Client(
            mn=station.hj212_mn or "",
            # Devices always send a PW; where the platform checks none, the factory default.
            pw=station.hj212_password or "123456",
            st="21" if station.medium == "water" else "22",
            crc_mode=_crc_mode(station.hj212_crc),
            history=lambda cn, begin, end: self._history_of(station.code, cn, begin, end),
            record=False,
        )
        await client.connect(self._host, self._port)
        self._clients[station.code] = client
        return client

    def _history_of(
        self, station: str, cn: str, begin: datetime, end: datetime
    ) -> list[tuple[datetime, Values]]:
        if self._history is None or self._catalogue is None:
            return []
        grouped: dict[datetime, list[ReadingIn]] = {}
        for reading in self._history(self._catalogue, station, DATA_CNS[cn][1], begin, end):
            parameter = self._catalogue.parameters.get(reading.parameter)
            if parameter is not None and parameter.hj212_code and reading.value is not None:
                grouped.setdefault(reading.time, []).append(reading)
        return [(at, self._values(group)) for at, group in sorted(grouped.items())]

    def _values(self, readings: list[ReadingIn]) -> dict[str, tuple[float, str | None]]:
        assert self._catalogue is not None
        values: dict[str, tuple[float, str | None]] = {}
        for reading in readings:
            code = self._catalogue.parameters[reading.parameter].hj212_code
            assert code is not None and reading.value is not None
            values[code] = (reading.value, FLAG_FOR_QC.get(reading.qc.value, "N"))
        return values


CN_OF_PERIOD: Final = {period_s: cn for cn, (_, period_s) in DATA_CNS.items()}


def _crc_mode(setting: str) -> CrcMode:
    for mode in CRC_MODES:
        if setting == mode:
            return mode
    return "hj212"
