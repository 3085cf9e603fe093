"""Backfill requests through the HJ 212 server, over real sockets into a real PostgreSQL.

A request row is claimed by the server holding the station's connection and sent as the standard
frames it; the device's exact answers (9011, packets, 9012) drive the row to completed, or to
failed with the reason: refused, silent after three sends, connection closed. A row nobody claims
fails as not connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from psycopg_pool import AsyncConnectionPool

from core.errors import InvalidInput, StationNotFound
from core.timeutil import CST
from ingest.sources.hj212.protocol import build_request
from ingest.sources.hj212.server import Hj212Server
from store.backfill import (
    NOT_CONNECTED,
    BackfillRequest,
    backfill_request,
    expire_backfill_requests,
    request_backfill,
)
from tests.conftest import HJ212_NOW
from tests.e2e.test_hj212_server import Device, framed

StartServer = Callable[..., Awaitable[Hj212Server]]
WAIT_S = 5.0
MN = "44010010000086"  # gz-a-huangpu: no PW configured, so the device's own is used
HEADER = f"ST=22;PW=123456;MN={MN}"
IDENTIFY = (
    f"QN=20261126115900001;{HEADER};CN=2011;Flag=5;CP=&&DataTime=20261126115900;a34004-Rtd=30&&"
)
BEGIN, END = (datetime(2026, 11, 26, hour, tzinfo=CST) for hour in (9, 10))
# The first request's QN is the server's clock (HJ212_NOW, 12:00 in China).
QN = "20261126120000000"
REQUEST = build_request("2061", MN, "123456", HJ212_NOW, BEGIN, END, st="22")


def reply(qn: str) -> bytes:
    return framed(f"QN={qn};ST=91;CN=9014;PW=123456;MN={MN};Flag=4;CP=&&&&")


def hourly(hour: int, value: float) -> str:
    return (
        f"QN=202611261200010{hour:02d};{HEADER};CN=2061;Flag=5;"
        f"CP=&&DataTime=20261126{hour:02d}0000;a34004-Avg={value},a34004-Flag=N&&"
    )


def answer(cn: str, cp: str) -> str:
    return f"QN={QN};ST=22;CN={cn};PW=123456;MN={MN};Flag=4;CP=&&{cp}&&"


async def started(start_server: StartServer, db: AsyncConnectionPool) -> tuple[Hj212Server, Device]:
    """A server that resends after 0.3 s of silence, and gz-a-huangpu connected to it."""
    server = await start_server(pool=db, gap_request_timeout_s=0.3, backfill_poll_s=0.05)
    device = await Device.open(server)
    await device.send(framed(IDENTIFY))
    assert await device.frames(1) == [reply("20261126115900001")]
    return server, device


async def ask(
    db: AsyncConnectionPool, *, station: str = "gz-a-huangpu", claim_within_s: float = 5.0
) -> BackfillRequest:
    async with db.connection() as conn, conn.transaction():
        return await request_backfill(
            conn, station=station, period_s=3600, begin=BEGIN, end=END,
            claim_within_s=claim_within_s, timeout_s=10.0,
        )  # fmt: skip


async def finished(db: AsyncConnectionPool, request_id: int) -> BackfillRequest:
    """The request once finished (bounded by WAIT_S)."""
    for _ in range(int(WAIT_S / 0.02)):
        async with db.connection() as conn:
            await expire_backfill_requests(conn)
            request = await backfill_request(conn, request_id)
        assert request is not None
        if request.finished:
            return request
        await asyncio.sleep(0.02)
    raise AssertionError(f"request {request_id} still {request.state}")


def outcome(request: BackfillRequest) -> tuple[object, ...]:
    return (
        request.state, request.packets, request.accepted, request.duplicate, request.revised,
        request.rejected, request.detail,
    )  # fmt: skip


async def test_the_answer_is_stored_counted_and_completed_by_the_9012(
    start_server: StartServer, db: AsyncConnectionPool
) -> None:
    _, device = await started(start_server, db)
    request = await ask(db)
    assert await device.frames(1) == [REQUEST]
    # The whole answer in one write: the 9012 must wait for the packets' commit.
    await device.send_segments(
        answer("9011", "QnRtn=1"), hourly(9, 41.5), hourly(10, 42.5), answer("9012", "ExeRtn=1")
    )
    assert await device.frames(2) == [reply("20261126120001009"), reply("20261126120001010")]
    done = await finished(db, request.id)
    assert outcome(done) == ("completed", 2, 2, 0, 0, 0, None)
    assert (done.worker, done.qn) == ("hj212", QN)
    assert done.sent_at is not None and done.answered_at is not None
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT time, value FROM reading WHERE period_s = 3600 ORDER BY time"
        )
        assert [(t.astimezone(CST), v) for t, v in await cur.fetchall()] == [
            (BEGIN, 41.5),
            (END, 42.5),
        ]
    await device.close()


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (
            [answer("9011", "QnRtn=2")],
            ("failed", 0, 0, 0, 0, 0, "the station refused the request: QnRtn=2 (refused)"),
        ),
        (
            [answer("9011", "QnRtn=1"), answer("9012", "ExeRtn=100")],
            ("completed", 0, 0, 0, 0, 0,
             "the station holds no data for the range (ExeRtn=100)"),
        ),
        (
            [answer("9011", "QnRtn=1"), hourly(9, 41.5), answer("9012", "ExeRtn=6")],
            ("failed", 1, 1, 0, 0, 0, "the station could not answer: ExeRtn=6 (system fault)"),
        ),
    ],
    ids=["refused", "no-data", "fault"],
)  # fmt: skip
async def test_what_the_station_answers_is_the_outcome(
    start_server: StartServer,
    db: AsyncConnectionPool,
    answers: list[str],
    expected: tuple[object, ...],
) -> None:
    _, device = await started(start_server, db)
    request = await ask(db)
    assert await device.frames(1) == [REQUEST]
    await device.send_segments(*answers)
    assert outcome(await finished(db, request.id)) == expected
    await device.close()


async def test_a_silent_station_is_asked_three_times_then_the_request_fails(
    start_server: StartServer, db: AsyncConnectionPool
) -> None:
    _, device = await started(start_server, db)
    request = await ask(db)
    # The same frame each time, QN included, so that a late answer to any send still matches.
    assert await device.frames(3) == [REQUEST] * 3
    assert outcome(await finished(db, request.id)) == (
        "failed", 0, 0, 0, 0, 0, "no answer to 3 sends of the request, 0.3 s apart",
    )  # fmt: skip
    await device.silent(0.5)
    await device.close()


async def test_a_connection_closed_mid_answer_fails_the_request(
    start_server: StartServer, db: AsyncConnectionPool
) -> None:
    _, device = await started(start_server, db)
    request = await ask(db)
    assert await device.frames(1) == [REQUEST]
    await device.send_segments(answer("9011", "QnRtn=1"), hourly(9, 41.5))
    assert await device.frames(1) == [reply("20261126120001009")]
    await device.close()
    assert outcome(await finished(db, request.id)) == (
        "failed", 1, 1, 0, 0, 0,
        "the station's connection closed after 1 packets, before its 9012 (end of the answer)",
    )  # fmt: skip


async def test_an_answer_without_its_9012_completes_after_a_quiet_spell(
    start_server: StartServer, db: AsyncConnectionPool
) -> None:
    _, device = await started(start_server, db)
    request = await ask(db)
    assert await device.frames(1) == [REQUEST]
    # No 9011 either: the data itself shows the station is answering.
    await device.send_segments(hourly(9, 41.5), hourly(10, 42.5))
    assert len(await device.frames(2)) == 2
    assert outcome(await finished(db, request.id)) == (
        "completed", 2, 2, 0, 0, 0,
        "the station sent no 9012 (end of the answer); taken as complete after 0.3 s without"
        " packets",
    )  # fmt: skip
    await device.silent(0.5)  # and it was not asked again
    await device.close()


async def test_a_server_stopping_fails_what_it_was_following(
    start_server: StartServer, db: AsyncConnectionPool
) -> None:
    server, device = await started(start_server, db)
    request = await ask(db)
    assert await device.frames(1) == [REQUEST]
    await device.send_segments(answer("9011", "QnRtn=1"))
    await until_state(db, request.id, "answered")
    await server.stop()
    assert outcome(await finished(db, request.id)) == (
        "failed", 0, 0, 0, 0, 0, "the HJ 212 server stopped before the station finished",
    )  # fmt: skip
    await device.close()


async def until_state(db: AsyncConnectionPool, request_id: int, state: str) -> None:
    for _ in range(int(WAIT_S / 0.02)):
        async with db.connection() as conn:
            request = await backfill_request(conn, request_id)
        assert request is not None
        if request.state == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"request {request_id} still {request.state}, not {state}")


async def test_a_station_nobody_holds_fails_as_not_connected(
    start_server: StartServer, db: AsyncConnectionPool
) -> None:
    await started(start_server, db)  # gz-a-huangpu is connected; gz-a-zengcheng is not
    request = await ask(db, station="gz-a-zengcheng", claim_within_s=0.3)
    done = await finished(db, request.id)
    assert outcome(done) == ("failed", 0, 0, 0, 0, 0, NOT_CONNECTED)
    assert (done.worker, done.sent_at) == (None, None)


async def test_one_open_request_per_station_and_known_stations_only(
    db: AsyncConnectionPool,
) -> None:
    first = await ask(db)
    with pytest.raises(InvalidInput) as refused:
        await ask(db)
    assert str(refused.value) == (
        f"station gz-a-huangpu already has backfill request {first.id} (pending) open;"
        " wait for it to finish"
    )
    with pytest.raises(StationNotFound) as unknown:
        await ask(db, station="gz-a-nowhere")
    assert str(unknown.value) == "no station with code 'gz-a-nowhere'"
