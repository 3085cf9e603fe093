"""The HJ 212 TCP server over real sockets, storing into a real PostgreSQL.

Frames are written as devices write them (literal segments, framed with the station's CRC), and
every test checks what was stored, what was quarantined and what was answered, exactly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST, utcnow
from ingest.sources.hj212.client import Hj212Client, Values
from ingest.sources.hj212.protocol import (
    Frame,
    FrameDecoder,
    build_frame,
    build_request,
    crc_hj212,
    crc_modbus,
    crc_modbus_swapped,
    parse_segment,
)
from ingest.sources.hj212.server import ACCEPT_BACKLOG, Hj212Server
from schemas.common import QC
from store.intake import rejected_readings
from store.sources import source_statuses
from tests.conftest import CONFIG_DIR, HJ212_NOW, ROOT

pytestmark = pytest.mark.slow

NOW = HJ212_NOW  # 12:00 China Standard Time, the start_server fixture's clock
WAIT_S = 5.0

# HJ 212-2017's example frames and real frames sent by devices and platforms in public projects
# (CR LF removed). None of their MNs is in the catalogue.
DOC_9013 = (
    "##0087QN=20160801085857223;ST=91;CN=9013;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
    "CP=&&&&2A80"
)
DOC_9014 = (
    "##0096QN=20190925181031464;ST=91;CN=9014;PW=BF470F88957588DE902D1A52;MN=Z13401000010301;"
    "Flag=4;CP=&&&&CE81"
)
FIELD_PACKETS = [
    "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80",
    "##0435QN=20210301111100112;ST=21;CN=2011;PW=123456;MN=ZLDSZ20210127;Flag=8;CP=&&DataTime=20210301111100;w01001-Rtd=8.33,w01001-Flag=N;w01009-Rtd=10.15,w01009-Flag=N;w01010-Rtd=9.7,w01010-Flag=N;w01014-Rtd=1425,w01014-Flag=N;w01003-Rtd=13.10,w01003-Flag=N;w21011-Rtd=0,w21011-Flag=N;w21001-Rtd=3.563168,w21001-Flag=N;w21003-Rtd=0.09055002,w21003-Flag=N;w01019-Rtd=4.102818,w01019-Flag=N;w01008-Rtd=0,w01008-Flag=N;w23002-Rtd=0,w23002-Flag=N&&7d00",
    "##0411QN=20220513162608370;ST=22;CN=2051;PW=123456;MN=JLYP01_AIR01_0001;Flag=4;CP=&&DataTime=20220513162600;a21004-Avg=4,a21004-Flag=N;a05024-Avg=63,a05024-Flag=N;a21026-Avg=6,a21026-Flag=N;a21005-Avg=0.427,a21005-Flag=N;a34004-Avg=14,a34004-Flag=N;a34002-Avg=31,a34002-Flag=N;a01007-Avg=1,a01007-Flag=N;a01008-Avg=11,a01008-Flag=N;a01001-Avg=17,a01001-Flag=N;a01002-Avg=85,a01002-Flag=N;a01006-Avg=95,a01006-Flag=N&&D641",
    "##0285QN=20190925181031464;ST=22;CN=2061;PW=BF470F88957588DE902D1A52;MN=Z13401000010301;Flag=5;CP=&&DataTime=20190924220000;a34006-Avg=2.69700,a34006-Flag=N;a34007-Avg=7.96600,a34007-Flag=N;a34048-Avg=3.30600,a34048-Flag=N;a34047-Avg=7.35700,a34047-Flag=N;a34049-Avg=10.66300,a34049-Flag=N&&C181",
    "##0317QN=20191012133710130;ST=22;CN=2011;PW=123456;MN=Y80110010000010;Flag=4;CP=&&DataTime=20191012133710;a21005-Rtd=0.00,a21005-Flag=N;a21004-Rtd=0.00,a21004-Flag=N;a21007-Rtd=0.033,a21007-Flag=N;a21006-Rtd=0.036,a21006-Flag=N;a21001-Rtd=25.40,a21001-Flag=N;a21003-Rtd=101.94,a21003-Flag=N;a21002-Rtd=49.20,a21002-Flag=N&&cc01",
    "##0087QN=20201015123632010;ST=91;CN=9014;PW=123456;MN=410183160889201000212505;Flag=4;CP=&&&&f001",
    "##0162QN=20231008123340461;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20231008123340;w01008-SampleTime=20231008123340,w01008-Rtd=123.456&&F441",
    "##0094QN=20231008125115215;ST=22;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&CC01",
    "##0137QN=20231008130452757;ST=22;CN=2081;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20231008130452;RestartTime=20231007130452&&3AC0",
    "##0139ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;B01-Rtd=36.91;011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&4980",
    "##0234ST=101;CN=2011;PW=123456;MN=41050022000017;CP=&&DataTime=20200922110000;a34010-Rtd=2.017,a34010-Flag=N;a34009-Rtd=0.522,a34009-Flag=N;ua19004-Rtd=2.017,ua19004-Flag=N;ua19005-Rtd=0.522,ua19005-Flag=N;ua19003-Rtd=2.539,ua19003-Flag=N&&3300",
    "##0561QN=20201030000000437;ST=21;CN=2061;PW=123456;MN=NM100000_0005;Flag=9;CP=&&DataTime=20201129210001;w01010-Avg=23.1,w01010-Flag=N;w01001-Avg=7.64,w01001-Flag=N;w01009-Avg=6.60,w01009-Flag=N;w01014-Avg=300,w01014-Flag=N;w01003-Avg=17,w01003-Flag=N;w01019-Avg=1.4,w01019-Flag=N;w21011-Avg=0.042,w21011-Flag=N;w21001-Avg=3.04,w21001-Flag=N;w21003-Avg=0.16,w21003-Flag=N;w20120-Avg=0.00011,w20120-Flag=N;w20119-Avg=0.00000,w20119-Flag=N;w23002-Avg=0.0005,w23002-Flag=N;w21016-Avg=0.002,w21016-Flag=N;w20115-Avg=0.00001,w20115-Flag=N;w20122-Avg=0.00005,w20122-Flag=N&&4C80",
    "##0344QN=20220928142812336;ST=22;CN=2011;PW=123456;MN=JSRCTD000YD107;Flag=5;CP=&&DataTime=20220928142812;l01001-Flag=N,l01001-Rtd=119.90287;l01002-Flag=N,l01002-Rtd=32.48505;a34002-Rtd=5,a34002-Flag=N;a34004-Rtd=4,a34004-Flag=N;a21026-Rtd=22.25,a21026-Flag=N;a21004-Rtd=22.7,a21004-Flag=N;a21005-Rtd=0.36,a21005-Flag=N;a05024-Rtd=8.82,a05024-Flag=N&&9241",
    "##0245ST=32;CN=2051;PW=123456;MN=12091200160055;CP=&&DataTime=20150430135700;B01-Min=895.13,B01-Avg=909.87,B01-Max=932.28,B01-Cou=54.59;011-Min=999.99,011-Avg=999.99,011-Max=999.99,011-Cou=54.59;060-Min=30.18,060-Avg=30.18,060-Max=30.18,060-Cou=1.65&&7640",
]  # fmt: skip
ALL_PACKETS = [*FIELD_PACKETS, DOC_9013, DOC_9014]

Row = tuple[str, str, int, datetime, float | None, QC]


class Device:
    """A raw device socket: exact bytes out, decoded frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.frames_in: list[bytes] = []

    @classmethod
    async def open(cls, server: Hj212Server) -> Device:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_segments(self, *segments: str) -> None:
        """Frame data segments with the standard CRC and send them in one write."""
        await self.send(b"".join(framed(segment) for segment in segments))

    async def frames(self, count: int) -> list[bytes]:
        """The next `count` frames from the server (TimeoutError after WAIT_S)."""
        async with asyncio.timeout(WAIT_S):
            while len(self.frames_in) < count:
                data = await self.reader.read(65536)
                assert data, f"server closed the connection after {self.frames_in}"
                self.frames_in += [e.raw for e in self.decoder.feed(data) if isinstance(e, Frame)]
        taken, self.frames_in = self.frames_in[:count], self.frames_in[count:]
        return taken

    async def silent(self, seconds: float = 0.3) -> None:
        """Nothing arrives for `seconds`."""
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.reader.read(1)
        assert self.frames_in == []

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def wire(frame: str) -> bytes:
    """A frame as written in the docs, with the CR LF it ends with on the wire."""
    return frame.encode() + b"\r\n"


def framed(segment: str, mode: str = "hj212") -> bytes:
    return build_frame(segment, mode)  # type: ignore[arg-type]


async def stored(db: AsyncConnectionPool) -> list[Row]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT s.code, p.code, r.period_s, r.time, r.value, r.qc FROM reading r"
            " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
            " ORDER BY s.code, r.time, r.period_s, p.code"
        )
        return [
            (s, p, period, t.astimezone(CST), None if v is None else round(v, 6), QC.from_code(q))
            for s, p, period, t, v, q in await cur.fetchall()
        ]


async def quarantined(db: AsyncConnectionPool) -> list[tuple[str | None, str | None, str, str]]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT station_code, parameter_code, reason, payload FROM rejected_reading ORDER BY id"
        )
        return await cur.fetchall()


async def counts(db: AsyncConnectionPool) -> dict[str, tuple[int, int, int, int]]:
    async with db.connection() as conn:
        return {
            s.code: (s.accepted, s.duplicate, s.revised, s.rejected)
            for s in await source_statuses(conn)
        }


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded by WAIT_S) until `condition` holds."""
    for _ in range(int(WAIT_S / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met within the wait")


def at(hour: int, minute: int = 0, second: int = 0, day: int = 26) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=CST)


async def test_every_documented_and_field_packet(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    for packet in ALL_PACKETS:
        await device.send(wire(packet))
    replies = await device.frames(5)
    await device.silent()
    # Uploads asking for a reply, in order: 2061 (the documented answer, exact), 2011, the
    # 2081 restart, a version-2 2061 (answered with Flag=8), 2011.
    assert replies[0] == wire(DOC_9014)
    assert replies[1:] == [
        framed(
            "QN=20231008123340461;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
            "CP=&&&&"
        ),
        framed(
            "QN=20231008130452757;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
            "CP=&&&&"
        ),
        framed("QN=20201030000000437;ST=91;CN=9014;PW=123456;MN=NM100000_0005;Flag=8;CP=&&&&"),
        framed("QN=20220928142812336;ST=91;CN=9014;PW=123456;MN=JSRCTD000YD107;Flag=4;CP=&&&&"),
    ]
    # Every data upload and the restart notice are quarantined whole, with the raw frame; the
    # platform's own frames (1062, 9011, 9013, 9014) are logged and ignored.
    quarantinable = [p for p in ALL_PACKETS if parse_segment(p[6:-4].encode()).cn[0] == "2"]
    assert len(quarantinable) == 11
    assert await quarantined(db) == [
        (
            None,
            None,
            f"unknown MN {parse_segment(p[6:-4].encode()).mn}: "
            "no station in the catalogue has this HJ 212 MN",
            p + "\r\n",
        )
        for p in quarantinable
    ]
    assert await stored(db) == []
    assert await counts(db) == {"hj212": (0, 0, 0, 11)}
    stats = server.stats
    assert (stats.frames, stats.quarantined_frames, stats.other_frames, stats.replies) == (
        16,
        11,
        5,
        5,
    )
    assert (stats.bad_crc, stats.garbage_bytes, stats.unparsable) == (0, 0, 0)
    await device.close()


HUANGPU_2011 = (
    "QN=20261126113000001;ST=22;CN=2011;PW=123456;MN=44010010000086;Flag=5;"
    "CP=&&DataTime=20261126113000;a34004-Rtd=35.5,a34004-Flag=N;a21026-Rtd=8,a21026-Flag=M;"
    "a21005-Rtd=0.6,a21005-Flag=C;a99999-Rtd=1,a99999-Flag=N;a34002-Rtd=abc,a34002-Flag=N&&"
)
# Hourly, DataTime a few seconds late (floored to 10:00); SO2/NO2 in ppb, pressure in kPa; a
# water code this air station does not measure; PM2.5 with the instrument-fault flag.
SHILONG_2061 = (
    "ST=22;QN=20261126110000002;MN=44190010000002;CN=2061;PW=123456;Flag=5;"
    "CP=&&DataTime=20261126100012;a21026-Avg=10,a21026-Flag=N;a21004-Avg=20,a21004-Flag=N;"
    "a01006-Avg=101.3,a01006-Flag=N;a34004-Avg=41,a34004-Flag=D;w01010-Avg=20,w01010-Flag=N&&"
)
# gz-w-dadun checks its password (123456): daily data (DataTime = start of the CST day) with the
# over-range flag, and minute data in a 2017 packet whose header fields come in another order.
DADUN_2031 = (
    "QN=20261126000500003;ST=21;CN=2031;PW=123456;MN=44010020000002;Flag=5;"
    "CP=&&DataTime=20261125000000;w21003-Avg=0.35,w21003-Flag=N;w01001-Avg=7.2,w01001-Flag=T&&"
)
DADUN_2051 = (
    "MN=44010020000002;PW=123456;CN=2051;ST=21;QN=20261126120000004;Flag=5;"
    "CP=&&DataTime=20261126115900;w01009-Avg=6.1,w01009-Flag=N&&"
)


def reply_to(segment: str, *, version: int = 1, mode: str = "hj212") -> bytes:
    """The 9014 the platform owes an upload, written out field by field."""
    packet = parse_segment(segment.encode())
    return framed(
        f"QN={packet.qn};ST=91;CN=9014;PW={packet.pw};MN={packet.mn};Flag={version << 2};CP=&&&&",
        mode,
    )


async def test_station_packets_are_stored_exactly(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    segments = [HUANGPU_2011, SHILONG_2061, DADUN_2031, DADUN_2051]
    await device.send(b"".join(framed(segment) for segment in segments))
    assert await device.frames(4) == [reply_to(segment) for segment in segments]
    assert await stored(db) == [
        ("dg-a-shilong", "no2", 3600, at(10), 37.6, QC.VALID),
        ("dg-a-shilong", "pm25", 3600, at(10), 41.0, QC.FAULT),
        ("dg-a-shilong", "pressure", 3600, at(10), 1013.0, QC.VALID),
        ("dg-a-shilong", "so2", 3600, at(10), 26.2, QC.VALID),
        ("gz-a-huangpu", "co", 0, at(11, 30), 0.6, QC.CALIBRATION),
        ("gz-a-huangpu", "pm25", 0, at(11, 30), 35.5, QC.VALID),
        ("gz-a-huangpu", "so2", 0, at(11, 30), 8.0, QC.MAINTENANCE),
        ("gz-w-dadun", "nh3n", 86400, at(0, day=25), 0.35, QC.VALID),
        ("gz-w-dadun", "ph", 86400, at(0, day=25), 7.2, QC.OVER_RANGE),
        ("gz-w-dadun", "do", 60, at(11, 59), 6.1, QC.VALID),
    ]
    huangpu, shilong = (framed(s).decode() for s in segments[:2])
    assert await quarantined(db) == [
        (
            "gz-a-huangpu",
            "a99999",
            "HJ 212 code a99999 from MN 44010010000086 is not in the registry",
            huangpu,
        ),
        (
            "gz-a-huangpu",
            "pm10",
            "pm10 (HJ 212 code a34002): Rtd value 'abc' is not a number",
            huangpu,
        ),
        (
            "dg-a-shilong",
            "water_temp",
            "station dg-a-shilong does not measure water_temp (HJ 212 code w01010)",
            shilong,
        ),
    ]
    # In: 5 + 5 + 2 + 1 items = 10 stored + 3 quarantined.
    assert await counts(db) == {"hj212": (10, 0, 0, 3)}
    await device.close()


async def test_frames_split_at_every_offset_and_byte_by_byte(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    frame = framed(
        HUANGPU_2011.replace(";a99999-Rtd=1,a99999-Flag=N;a34002-Rtd=abc,a34002-Flag=N", "")
    )
    sent = 0

    async def read_by_server(total: int) -> None:
        # Each part is read on its own: the next is written only once the server has this one.
        await until(lambda: server.stats.bytes_received >= total)

    for offset in range(1, len(frame)):
        for part in (frame[:offset], frame[offset:]):
            await device.send(part)
            sent += len(part)
            await read_by_server(sent)
    second = framed(HUANGPU_2011.replace("20261126113000", "20261126113100"))
    for index in range(len(second)):
        await device.send(second[index : index + 1])
        sent += 1
        await read_by_server(sent)
    splits = len(frame) - 1
    replies = await device.frames(splits + 1)
    assert replies == [reply_to(HUANGPU_2011)] * splits + [
        reply_to(HUANGPU_2011.replace("20261126113000", "20261126113100"))
    ]
    assert (server.stats.frames, server.stats.garbage_bytes) == (splits + 1, 0)
    assert [(p, t, v) for _, p, _, t, v, _ in await stored(db)] == [
        ("co", at(11, 30), 0.6),
        ("pm25", at(11, 30), 35.5),
        ("so2", at(11, 30), 8.0),
        ("co", at(11, 31), 0.6),
        ("pm25", at(11, 31), 35.5),
        ("so2", at(11, 31), 8.0),
    ]
    # The first split frame stored 3 readings, the rest were the same readings again; the
    # byte-by-byte frame stored 3 more and quarantined its 2 bad items.
    assert await counts(db) == {"hj212": (6, 3 * (splits - 1), 0, 2)}
    await device.close()


async def test_two_frames_in_one_write_with_garbage_around_them(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    first = DADUN_2051
    second = DADUN_2051.replace("115900", "115800").replace("6.1", "6.3")
    noise, middle, tail = b"\x00\xff\r\nnoise", b"junk##12x#", b"\r\n"
    await device.send(noise + framed(first) + middle + framed(second) + tail)
    assert await device.frames(2) == [reply_to(first), reply_to(second)]
    assert server.stats.garbage_bytes == len(noise) + len(middle) + len(tail)
    assert [(t, v) for *_, t, v, _ in await stored(db)] == [(at(11, 58), 6.3), (at(11, 59), 6.1)]
    assert await counts(db) == {"hj212": (2, 0, 0, 0)}
    await device.close()


async def test_bad_crc_is_dropped_without_reply_and_the_connection_kept(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    good = framed(DADUN_2051)
    crc = int(good[-6:-2], 16)
    bad = framed(DADUN_2051.replace("6.1", "9.9"))[:-6] + b"%04X\r\n" % (crc ^ 0x0101)
    await device.send(bad)
    await device.silent()
    await device.send(good)
    assert await device.frames(1) == [reply_to(DADUN_2051)]
    await device.silent(0.1)
    assert (server.stats.frames, server.stats.bad_crc) == (2, 1)
    assert [(p, v) for _, p, _, _, v, _ in await stored(db)] == [("do", 6.1)]
    assert await quarantined(db) == []
    assert await counts(db) == {"hj212": (1, 0, 0, 0)}
    await device.close()


async def test_unknown_mn_is_quarantined_before_its_reply(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    segment = DADUN_2051.replace("44010020000002", "44010099999999")
    await device.send(framed(segment))
    assert await device.frames(1) == [reply_to(segment)]
    assert await quarantined(db) == [
        (
            None,
            None,
            "unknown MN 44010099999999: no station in the catalogue has this HJ 212 MN",
            framed(segment).decode(),
        )
    ]
    assert await stored(db) == []
    assert await counts(db) == {"hj212": (0, 0, 0, 1)}
    await device.close()


async def test_wrong_password_is_quarantined(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    segment = DADUN_2051.replace("PW=123456", "PW=000000")
    await device.send(framed(segment))
    assert await device.frames(1) == [reply_to(segment)]
    assert await quarantined(db) == [
        (
            "gz-w-dadun",
            None,
            "wrong PW for station gz-w-dadun (MN 44010020000002): the frame's data is quarantined",
            framed(segment).decode(),
        )
    ]
    assert await stored(db) == []
    assert await counts(db) == {"hj212": (0, 0, 0, 1)}
    await device.close()


async def test_frames_that_cannot_be_read_are_quarantined_with_the_reason(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    no_cp = "QN=20261126120000010;ST=21;CN=2051;PW=123456;MN=44010020000002;Flag=5;"
    no_time = (
        "QN=20261126120000011;ST=21;CN=2051;PW=123456;MN=44010020000002;Flag=5;"
        "CP=&&w01009-Avg=6.1,w01009-Flag=N&&"
    )
    await device.send(framed(DADUN_2051) + framed(no_cp) + framed(no_time))
    # The frame without CP has no QN the platform could echo; the one without DataTime does.
    assert await device.frames(2) == [reply_to(DADUN_2051), reply_to(no_time)]
    await device.silent(0.1)
    assert await quarantined(db) == [
        (
            "gz-w-dadun",
            None,
            "unparsable HJ 212 frame: data segment has no CP=&&…&& field",
            framed(no_cp).decode(),
        ),
        (
            "gz-w-dadun",
            None,
            "CN=2051 packet from MN 44010020000002 has no DataTime",
            framed(no_time).decode(),
        ),
    ]
    assert await counts(db) == {"hj212": (1, 0, 0, 2)}
    assert server.stats.unparsable == 1
    await device.close()


async def test_2005_packet_without_qn_and_flag_is_stored_without_reply(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    old_style = (
        "ST=22;CN=2011;PW=123456;MN=44010010000087;"
        "CP=&&DataTime=20261126112000;a34004-Rtd=12,a34004-Flag=N;a21005-Rtd=0.4,a21005-Flag=P&&"
    )
    await device.send(framed(old_style))
    await device.silent()
    # A later upload that wants a reply gets exactly one: the 2005 packet got none.
    await device.send(framed(DADUN_2051))
    assert await device.frames(1) == [reply_to(DADUN_2051)]
    await device.silent(0.1)
    assert await stored(db) == [
        ("gz-a-zengcheng", "co", 0, at(11, 20), 0.4, QC.FAULT),  # 2005 flag P: power fault
        ("gz-a-zengcheng", "pm25", 0, at(11, 20), 12.0, QC.VALID),
        ("gz-w-dadun", "do", 60, at(11, 59), 6.1, QC.VALID),
    ]
    assert await counts(db) == {"hj212": (3, 0, 0, 0)}
    await device.close()


async def test_version_2_flags_are_answered_with_flag_8(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    segment = (
        "QN=20261126110001005;ST=21;CN=2061;PW=123456;MN=44010020000001;Flag=9;"
        "CP=&&DataTime=20261126100000;w01010-Avg=23.1,w01010-Flag=N;w01001-Avg=7.64&&"
    )
    await device.send(framed(segment))
    reply = await device.frames(1)
    assert reply == [
        framed("QN=20261126110001005;ST=91;CN=9014;PW=123456;MN=44010020000001;Flag=8;CP=&&&&")
    ]
    assert reply == [reply_to(segment, version=2)]
    assert await stored(db) == [
        ("gz-w-xintang", "ph", 3600, at(10), 7.64, QC.VALID),
        ("gz-w-xintang", "water_temp", 3600, at(10), 23.1, QC.VALID),
    ]
    await device.close()


async def test_resent_frame_is_a_duplicate_and_answered_again(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    frame = framed(SHILONG_2061)
    await device.send(frame)
    assert await device.frames(1) == [reply_to(SHILONG_2061)]
    # The device missed the answer and re-sends with the same QN, twice, once in one write.
    await device.send(frame)
    await device.send(frame + frame)
    assert await device.frames(3) == [reply_to(SHILONG_2061)] * 3
    assert len(await stored(db)) == 4
    # 5 items a frame: 4 readings (stored once, then 3 duplicates each), 1 quarantined each time.
    assert await counts(db) == {"hj212": (4, 12, 0, 4)}
    await device.close()


async def test_reply_waits_for_the_commit(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    await device.send(framed(DADUN_2051))
    await device.frames(1)
    later = DADUN_2051.replace("115900", "115800")
    heartbeat = "QN=20261126115959999;ST=21;CN=9015;PW=123456;MN=44010020000002;Flag=5;CP=&&&&"
    # Hold the source's counter row: the intake transaction cannot finish until released.
    async with db.connection() as blocker:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM source WHERE code = 'hj212' FOR UPDATE")
            await device.send(framed(later))
            await asyncio.sleep(0.1)
            # Committed separately (nothing to store), yet answered only after the frame before.
            await device.send(framed(heartbeat))
            await device.silent(0.5)
            assert len(await stored(db)) == 1
        # Released: the commit completes and only then are the answers sent, in order.
        assert await device.frames(2) == [
            reply_to(later),
            framed("QN=20261126115959999;ST=91;CN=9013;PW=123456;MN=44010020000002;Flag=4;CP=&&&&"),
        ]
    assert len(await stored(db)) == 2
    assert server.stats.batches == 3
    await device.close()


async def test_idle_connections_are_closed(
    start_server: Callable[..., Awaitable[Hj212Server]],
) -> None:
    server = await start_server(idle_timeout_s=0.3)
    busy, idle = await Device.open(server), await Device.open(server)
    started = asyncio.get_running_loop().time()
    for _ in range(5):
        await busy.send(b"\r\n")  # anything the device sends keeps its connection open
        await asyncio.sleep(0.15)
    async with asyncio.timeout(WAIT_S):
        assert await idle.reader.read(1) == b""
    assert asyncio.get_running_loop().time() - started >= 0.3
    assert (server.stats.idle_closed, server.connections) == (1, 1)
    await busy.send(framed(DADUN_2051))
    assert await busy.frames(1) == [reply_to(DADUN_2051)]
    await busy.close()
    await idle.close()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2) to read the backlog")
async def test_a_fleet_reconnecting_at_once_finds_room_in_the_accept_queue(
    start_server: Callable[..., Awaitable[Hj212Server]],
) -> None:
    server = await start_server()
    backlog, somaxconn = await asyncio.to_thread(_accept_queue, server.port)
    assert backlog == min(ACCEPT_BACKLOG, somaxconn)


def _accept_queue(port: int) -> tuple[int, int]:
    """The accept queue size of the socket listening on `port`, and the kernel's cap on it."""
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    )
    # For a listening socket, ss shows the accept queue's size in the Send-Q column.
    backlog = int(listing.stdout.split()[2])
    return backlog, int(Path("/proc/sys/net/core/somaxconn").read_text())


async def test_modbus_crc_stations(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    wanjiang = (
        "QN=20261126110002006;ST=21;CN=2061;PW=123456;MN=44190020000004;Flag=5;"
        "CP=&&DataTime=20261126100000;w21003-Avg=0.52,w21003-Flag=N&&"
    )
    humen = (
        "QN=20261126110003007;ST=22;CN=2061;PW=123456;MN=44190010000004;Flag=5;"
        "CP=&&DataTime=20261126100000;a05024-Avg=88,a05024-Flag=N&&"
    )
    # The standard's CRC is wrong for a station set to MODBUS: dropped, unanswered.
    await device.send(framed(wanjiang.replace("0.52", "0.99")))
    await device.send(framed(humen.replace("88", "99")))
    await device.silent()
    assert server.stats.bad_crc == 2
    await device.send(framed(wanjiang, "modbus") + framed(humen, "modbus_swapped"))
    replies = await device.frames(2)
    assert replies == [reply_to(wanjiang, mode="modbus"), reply_to(humen, mode="modbus_swapped")]
    assert int(replies[0][-6:-2], 16) == crc_modbus(replies[0][6:-6]) != crc_hj212(replies[0][6:-6])
    assert int(replies[1][-6:-2], 16) == crc_modbus_swapped(replies[1][6:-6])
    assert [(s, p, v) for s, p, _, _, v, _ in await stored(db)] == [
        ("dg-a-humen", "o3", 88.0),
        ("dg-w-wanjiang", "nh3n", 0.52),
    ]
    assert await counts(db) == {"hj212": (2, 0, 0, 0)}
    await device.close()


async def test_gap_in_hourly_data_is_requested_and_backfilled(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()

    def values(hour: int) -> Values:
        return {"w01010": (20.0 + hour, "N"), "w01001": (7.0 + hour / 100, "N")}

    asked: list[tuple[str, datetime, datetime]] = []

    def history(cn: str, begin: datetime, end: datetime) -> list[tuple[datetime, Values]]:
        asked.append((cn, begin, end))
        hours = range(begin.astimezone(CST).hour, end.astimezone(CST).hour + 1)
        return [(at(hour), values(hour)) for hour in hours]

    device = Hj212Client(mn="44010020000001", pw="123456", st="21", history=history)
    await device.connect("127.0.0.1", server.port)
    await device.upload("2061", at(10), values(10), timeout_s=WAIT_S)
    await device.upload("2061", at(13), values(13), timeout_s=WAIT_S)
    await until(lambda: server.stats.replies == 4)  # 10:00, 13:00, the two backfilled hours
    assert asked == [("2061", at(11), at(12))]
    assert [p.cn for p in device.requests] == ["2061"]
    assert device.received[2] == build_request(
        "2061", "44010020000001", "123456", NOW, at(11), at(12), st="21"
    )
    assert device.requests[0].cp.fields == {
        "BeginTime": "20261126110000",
        "EndTime": "20261126120000",
    }
    # The next consecutive hour is no gap.
    await device.upload("2061", at(14), values(14), timeout_s=WAIT_S)
    assert len(device.requests) == 1
    assert [(p, t.hour, v) for _, p, _, t, v, _ in await stored(db)] == [
        (p, hour, v)
        for hour in range(10, 15)
        for p, v in (("ph", round(7.0 + hour / 100, 6)), ("water_temp", 20.0 + hour))
    ]
    assert await counts(db) == {"hj212": (10, 0, 0, 0)}
    assert (server.stats.requests, server.stats.other_frames) == (1, 2)  # 9011 and 9012
    await device.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_envlink_worker_serves_hj212(
    database_url: str, db: AsyncConnectionPool, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": database_url,
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_HJ212_PORT": str(port),
        "ENVLINK_MQTT_HOST": "",
    }
    # The log goes to a file: a pipe nobody reads could fill up and stall the worker.
    log = (tmp_path / "worker.log").open("wb")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envlink.cli", "worker",
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        device = Hj212Client(mn="44010010000086")
        async with asyncio.timeout(60):
            while True:
                try:
                    await device.connect("127.0.0.1", port)
                    break
                except OSError:
                    if worker.returncode is not None:
                        raise AssertionError((tmp_path / "worker.log").read_text()) from None
                    await asyncio.sleep(0.1)
        moment = utcnow().replace(microsecond=0) - timedelta(minutes=1)
        answer = await device.upload("2011", moment, {"a34004": (27.5, "N")}, timeout_s=WAIT_S)
        assert answer is not None and answer.cn == "9014"
        assert await stored(db) == [
            ("gz-a-huangpu", "pm25", 0, moment.astimezone(CST), 27.5, QC.VALID)
        ]
        # Hourly data with an isolated spike: answered as stored, then the worker's alert loop
        # judges the history and re-flags the spike.
        hour = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
        for step, value in enumerate([30.0, 150.0, 31.0]):
            at = hour + timedelta(hours=step)
            answer = await device.upload("2061", at, {"a34004": (value, "N")}, timeout_s=WAIT_S)
            assert answer is not None and answer.cn == "9014"
        expected = [
            ("gz-a-huangpu", "pm25", 3600, (hour + timedelta(hours=step)).astimezone(CST), v, q)
            for step, (v, q) in enumerate([(30.0, QC.VALID), (150.0, QC.SUSPECT), (31.0, QC.VALID)])
        ]
        hourly: list[Row] = []
        for _ in range(300):  # the loop wakes on the commit's NOTIFY; allow 30 s on a busy host
            hourly = [row for row in await stored(db) if row[2] == 3600]
            if hourly == expected:
                break
            await asyncio.sleep(0.1)
        assert hourly == expected
        await device.close()
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await worker.wait()
        except TimeoutError:
            worker.kill()
            raise
        finally:
            log.close()
    assert worker.returncode == 0


async def test_commits_are_bounded_and_answers_keep_their_order(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server(batch_max_readings=4, commits_in_flight=2)
    device = await Device.open(server)
    three = DADUN_2051.replace("-Flag=N", "-Flag=N;w01010-Avg=21;w01001-Avg=7")
    segments = [
        three.replace("115900", minute).replace("20261126120000004", f"2026112612000000{n}")
        for n, minute in enumerate(["115600", "115700", "115800", "115900"])
    ]
    await device.send(b"".join(framed(segment) for segment in segments))
    assert await device.frames(4) == [reply_to(segment) for segment in segments]
    # 3 readings a frame and at most 4 a commit: one frame per commit, answered in order.
    assert server.stats.batches == 4
    assert len(await stored(db)) == 12
    assert await counts(db) == {"hj212": (12, 0, 0, 0)}
    await device.close()


def _reply(qn: bytes, mn: bytes) -> bytes:
    """The 9014 owed to an upload with this QN and MN (PW 123456), bytes as the device sent them."""
    return build_frame(b"QN=%s;ST=91;CN=9014;PW=123456;MN=%s;Flag=4;CP=&&&&" % (qn, mn))


def _upload(qn: bytes, mn: bytes, cn: bytes, cp: bytes) -> bytes:
    return b"QN=%s;ST=22;CN=%s;PW=123456;MN=%s;Flag=5;CP=&&%s&&" % (qn, cn, mn, cp)


HUANGPU_MN, SHILONG_MN = b"44010010000086", b"44190010000002"
# Frames with valid CRCs carrying NUL, bytes that are neither UTF-8 nor GBK, absurd numbers and
# times, in CP and in MN; each is quarantined and answered.
HOSTILE_FRAMES = [
    _upload(
        b"20261126113000101",
        HUANGPU_MN,
        b"2011",
        b"DataTime=20261126113000;a34004-Rtd=35\x00.5,a34004-Flag=N;a21026-Rtd=8,a21026-Flag=N",
    ),
    _upload(
        b"20261126113100102",
        HUANGPU_MN,
        b"2011",
        b"DataTime=20261126113100;a34004-Rtd=3\xff5;a21026-Rtd=1e999;"
        b"a21005-Rtd=99999999999999999999999;a34002-Rtd=-0",
    ),
    _upload(b"20261126113200103", b"44010099999999\x00", b"2011", b"DataTime=20261126113200"),
    _upload(b"20261126113300104", b"4401\xfe\xff", b"2011", b"DataTime=20261126113300"),
    _upload(b"20261126113400105", SHILONG_MN, b"2061", b"DataTime=00000101000000;a21026-Avg=1"),
    _upload(
        b"20261126113500106",
        SHILONG_MN,
        b"2061",
        b"DataTime=99991231230000;a21026-Avg=1;a21004-Avg=2",
    ),
]


async def test_hostile_frames_are_quarantined_and_answered_beside_other_stations_frames(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    # One write: the hostile frames share their group commit with gz-w-dadun's good frame.
    await device.send(b"".join(build_frame(f) for f in HOSTILE_FRAMES) + framed(DADUN_2051))
    assert await device.frames(7) == [
        _reply(b"20261126113000101", HUANGPU_MN),
        _reply(b"20261126113100102", HUANGPU_MN),
        _reply(b"20261126113200103", b"44010099999999\x00"),
        _reply(b"20261126113300104", b"4401\xfe\xff"),
        _reply(b"20261126113400105", SHILONG_MN),
        _reply(b"20261126113500106", SHILONG_MN),
        reply_to(DADUN_2051),
    ]
    await device.silent()
    assert await stored(db) == [
        ("gz-a-huangpu", "so2", 0, at(11, 30), 8.0, QC.VALID),
        ("gz-a-huangpu", "pm10", 0, at(11, 31), 0.0, QC.VALID),
        ("gz-w-dadun", "do", 60, at(11, 59), 6.1, QC.VALID),
    ]
    async with db.connection() as conn:
        rows = sorted(await rejected_readings(conn), key=lambda r: r.id)
    frames = [build_frame(f).decode("utf-8", "surrogateescape") for f in HOSTILE_FRAMES]
    future = "time 9999-12-31T23:00:00+08:00 is more than a day in the future"
    assert [(r.station_code, r.parameter_code, r.reason) for r in rows] == [
        (
            "gz-a-huangpu",
            "pm25",
            "pm25 (HJ 212 code a34004): Rtd value '35\\x00.5' is not a number",
        ),
        (
            "gz-a-huangpu",
            "pm25",
            "pm25 (HJ 212 code a34004): Rtd value '3\\udcff5' is not a number",
        ),
        (
            "gz-a-huangpu",
            "so2",
            "so2 (HJ 212 code a21026): Rtd value '1e999' is not a finite number",
        ),
        (
            "gz-a-huangpu",
            "co",
            "co: value 1e+23 mg/m3 is outside the physically possible range [0, 200]",
        ),
        (
            None,
            None,
            "unknown MN 44010099999999\x00: no station in the catalogue has this HJ 212 MN",
        ),
        (None, None, "unknown MN 4401\udcfe\udcff: no station in the catalogue has this HJ 212 MN"),
        (
            "dg-a-shilong",
            None,
            "time '00000101000000' is not a valid date and time: year 0 is out of range",
        ),
        ("dg-a-shilong", "so2", future),
        ("dg-a-shilong", "no2", future),
    ]

    # Each frame is kept byte for byte; what the pipeline rejects is kept as the reading it got.
    def reading(parameter: str, time: str, value: str, unit: str, period_s: int) -> str:
        return (
            f'{{"station": "{"dg-a-shilong" if period_s else "gz-a-huangpu"}", "parameter":'
            f' "{parameter}", "time": "{time}", "value": {value}, "unit": "{unit}",'
            f' "period_s": {period_s}, "qc": "valid"}}'
        )

    assert [r.payload for r in rows] == [
        frames[0],
        frames[1],
        frames[1],
        reading("co", "2026-11-26T11:31:00+08:00", "1e+23", "mg/m3", 0),
        frames[2],
        frames[3],
        frames[4],
        reading("so2", "9999-12-31T23:00:00+08:00", "1.0", "ppb", 3600),
        reading("no2", "9999-12-31T23:00:00+08:00", "2.0", "ppb", 3600),
    ]
    async with db.connection() as conn:
        cur = await conn.execute("SELECT escaped FROM rejected_reading ORDER BY id")
        # Rows holding a NUL or a byte that is not UTF-8 are escaped; the others are as they were.
        escaped = [True, True, True, False, True, True, False, False, False]
        assert [e for (e,) in await cur.fetchall()] == escaped
    assert await counts(db) == {"hj212": (3, 0, 0, 9)}
    await device.close()


async def test_an_hour_far_ahead_does_not_hide_the_next_gap(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server()
    device = await Device.open(server)
    xintang = b"44010020000001"
    hours = [b"20261126090000", b"99991231230000", b"20261126110000"]
    for n, hour in enumerate(hours):
        qn = b"2026112612000000%d" % n
        await device.send(
            build_frame(_upload(qn, xintang, b"2061", b"DataTime=%s;w01010-Avg=20" % hour))
        )
        assert await device.frames(1) == [_reply(qn, xintang)]
    # The 9999 hour was refused and did not become the station's last hour: 10:00 is asked for.
    assert await device.frames(1) == [
        build_request("2061", "44010020000001", "123456", NOW, at(10), at(10), st="22")
    ]
    assert [(t.hour, p) for _, p, _, t, _, _ in await stored(db)] == [
        (9, "water_temp"),
        (11, "water_temp"),
    ]
    await device.close()
