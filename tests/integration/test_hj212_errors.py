"""HJ 212 server trouble over real sockets: commits that fail, gap requests that go unanswered.

A commit failure leaves the frame unanswered (the device resends it) and shows on the `hj212`
source row, which /v1/sources reads; a request for missing hourly data is sent again while the
station does not answer, and given up after three sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST
from ingest import pipeline as pipeline_module
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.hj212.protocol import build_frame, build_request
from ingest.sources.hj212.server import Hj212Server
from schemas.readings import IntakeResult, ReadingIn, Rejection
from store.pool import Conn
from store.sources import SourceStatus, source_statuses
from tests.conftest import HJ212_NOW
from tests.e2e.test_hj212_server import Device

NOW = HJ212_NOW  # 12:00 China Standard Time, the start_server fixture's clock
WAIT_S = 5.0
SERVER_LOG = "ingest.sources.hj212.server"
PIPELINE_LOG = "ingest.pipeline"

HUANGPU_2011 = (
    "QN=20261126113000001;ST=22;CN=2011;PW=123456;MN=44010010000086;Flag=5;"
    "CP=&&DataTime=20261126113000;a34004-Rtd=35.5,a34004-Flag=N&&"
)
HUANGPU_REPLY = build_frame(
    "QN=20261126113000001;ST=91;CN=9014;PW=123456;MN=44010010000086;Flag=4;CP=&&&&"
)
# The same station half a minute later (another QN).
HUANGPU_LATER = HUANGPU_2011.replace("113000", "113100")
HUANGPU_LATER_REPLY = build_frame(
    "QN=20261126113100001;ST=91;CN=9014;PW=123456;MN=44010010000086;Flag=4;CP=&&&&"
)
HUANGPU_NOT_STORED = (
    "HJ 212 frame from gz-a-huangpu (MN 44010010000086) not stored, so not answered "
    "(the device will resend it): ConnectionError: the database went away"
)
XINTANG_MN = "44010020000001"
GAP_QN = "20261126120000000"


def gap_request(first: int, last: int) -> bytes:
    """The request the server sends gz-w-xintang for its hours first:00 to last:00 (QN = NOW)."""
    begin, end = (datetime(2026, 11, 26, hour, tzinfo=CST) for hour in (first, last))
    return build_request("2061", XINTANG_MN, "123456", NOW, begin, end, st="21")


GAP_REQUEST = gap_request(11, 12)


class FailingPipeline(Pipeline):
    """The real pipeline whose first `failures` intakes fail, by default as a lost database."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        failures: int = 1,
        error: type[Exception] = ConnectionError,
        message: str = "the database went away",
    ) -> None:
        super().__init__(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)
        self.calls = 0
        self.failures = failures
        self.error = error
        self.message = message

    async def ingest(
        self, items: Sequence[ReadingIn | Rejection], *, source: SourceRef
    ) -> IntakeResult:
        self.calls += 1
        if self.calls <= self.failures:
            suffix = f" ({self.calls})" if self.failures > 1 else ""
            raise self.error(self.message + suffix)
        return await super().ingest(items, source=source)


async def hj212_status(db: AsyncConnectionPool) -> SourceStatus | None:
    async with db.connection() as conn:
        return next((s for s in await source_statuses(conn) if s.code == "hj212"), None)


async def recorded_error(db: AsyncConnectionPool) -> tuple[str | None, datetime | None]:
    status = await hj212_status(db)
    return (status.last_error, status.last_error_at) if status else (None, None)


async def until_recorded(db: AsyncConnectionPool, error: str) -> None:
    """Wait (bounded by WAIT_S) until the hj212 source row shows `error`."""
    for _ in range(int(WAIT_S / 0.01)):
        if (await recorded_error(db))[0] == error:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"hj212 shows {await recorded_error(db)}, not {error!r}")


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded by WAIT_S) until `condition` holds."""
    for _ in range(int(WAIT_S / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met within the wait")


async def stored_values(db: AsyncConnectionPool) -> list[tuple[str, str, int, datetime, float]]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT s.code, p.code, r.period_s, r.time, r.value FROM reading r"
            " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
            " ORDER BY s.code, r.time, p.code"
        )
        return [(s, p, period, t.astimezone(CST), v) for s, p, period, t, v in await cur.fetchall()]


def server_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SERVER_LOG and r.levelno == logging.WARNING
    ]


async def test_failed_commit_is_recorded_on_the_source_and_the_resend_is_stored(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server(FailingPipeline(db), pool=db)
    device = await Device.open(server)
    await device.send_segments(HUANGPU_2011)
    # Not stored, so not answered: the device will send it again under the same QN.
    await device.silent(0.3)
    await until_recorded(db, HUANGPU_NOT_STORED)
    assert (server.stats.ingest_failures, server.stats.replies) == (1, 0)
    await device.send_segments(HUANGPU_2011)
    assert await device.frames(1) == [HUANGPU_REPLY]
    assert await stored_values(db) == [
        ("gz-a-huangpu", "pm25", 0, datetime(2026, 11, 26, 11, 30, tzinfo=CST), 35.5)
    ]
    status = await hj212_status(db)
    assert status is not None
    # The later success does not clear the error: /v1/sources shows both, each with its time.
    assert (status.last_error, status.last_error_at, status.last_success_at) == (
        HUANGPU_NOT_STORED,
        NOW,
        NOW,
    )
    assert (status.accepted, status.duplicate, status.revised, status.rejected) == (1, 0, 0, 0)
    await device.close()


async def test_batch_retried_frame_by_frame_records_only_the_frame_that_fails_again(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    # A long window puts both frames into one batch; only its first intake fails, over its data.
    pipeline = FailingPipeline(db, error=ValueError, message="a reading the store refuses")
    server = await start_server(pipeline, pool=db, batch_window_s=0.2)
    device = await Device.open(server)
    await device.send_segments(HUANGPU_2011, HUANGPU_LATER)
    assert await device.frames(2) == [HUANGPU_REPLY, HUANGPU_LATER_REPLY]
    # Both frames were stored and answered on their retry: nothing was left unanswered.
    await asyncio.sleep(0.2)
    assert await recorded_error(db) == (None, None)
    assert (server.stats.ingest_failures, server.stats.batches, server.stats.replies) == (1, 2, 2)
    assert server.stats.last_error == "ValueError: a reading the store refuses"
    assert pipeline.calls == 3
    await device.close()


async def test_a_batch_is_not_retried_frame_by_frame_while_the_database_is_out_of_reach(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    pipeline = FailingPipeline(db)
    server = await start_server(pipeline, pool=db, batch_window_s=0.2)
    device = await Device.open(server)
    await device.send_segments(HUANGPU_2011, HUANGPU_LATER)
    await device.silent(0.5)
    # One attempt for the batch, none per frame: no frame waits out the pool's timeout again.
    assert pipeline.calls == 1
    await until_recorded(
        db,
        "HJ 212 2 frames, from gz-a-huangpu (MN 44010010000086) and others, not stored, so not"
        " answered (the device will resend it): ConnectionError: the database went away",
    )
    assert (server.stats.ingest_failures, server.stats.replies) == (1, 0)
    # The devices resend under the same QNs once the database is back.
    await device.send_segments(HUANGPU_2011, HUANGPU_LATER)
    assert await device.frames(2) == [HUANGPU_REPLY, HUANGPU_LATER_REPLY]
    assert len(await stored_values(db)) == 2
    await device.close()


async def test_errors_are_written_at_most_once_a_second(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server(FailingPipeline(db, failures=3), pool=db)
    device = await Device.open(server)
    await device.send_segments(HUANGPU_2011)
    await device.silent(0.2)
    await until_recorded(db, HUANGPU_NOT_STORED + " (1)")
    first_at = asyncio.get_running_loop().time()
    await device.send_segments(HUANGPU_2011)
    await device.silent(0.2)
    # Within the second: counted, not written.
    assert server.stats.ingest_failures == 2
    assert asyncio.get_running_loop().time() - first_at < 1.0
    assert await recorded_error(db) == (HUANGPU_NOT_STORED + " (1)", NOW)
    await asyncio.sleep(1.0)
    await device.send_segments(HUANGPU_2011)
    await device.silent(0.2)
    await until_recorded(db, HUANGPU_NOT_STORED + " (3)")
    await device.send_segments(HUANGPU_2011)
    assert await device.frames(1) == [HUANGPU_REPLY]
    assert (server.stats.ingest_failures, server.stats.replies) == (3, 1)
    await device.close()


async def test_an_error_that_cannot_be_recorded_is_logged_and_the_server_goes_on(
    start_server: Callable[..., Awaitable[Hj212Server]],
    db: AsyncConnectionPool,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def unrecordable(conn: object, **_: object) -> None:
        raise OSError("the database is gone too")

    monkeypatch.setattr(pipeline_module, "record_source_error", unrecordable)
    broken = AsyncConnectionPool(database_url, open=False, name="broken")
    server = await start_server(FailingPipeline(db), pool=broken)
    device = await Device.open(server)
    await device.send_segments(HUANGPU_2011)
    await device.silent(0.3)
    # The start could not read the stations' last hours either; it went on all the same.
    assert server_warnings(caplog) == [
        "HJ 212: could not read the stations' last hours: "
        "PoolClosed(\"the pool 'broken' is not open yet\")",
    ]
    assert [r.getMessage() for r in caplog.records if r.name == PIPELINE_LOG] == [
        "hj212: could not record the error for /v1/sources: OSError('the database is gone too')"
    ]
    await device.send_segments(HUANGPU_2011)
    assert await device.frames(1) == [HUANGPU_REPLY]
    assert len(await stored_values(db)) == 1
    assert await recorded_error(db) == (None, None)
    await device.close()


async def test_recording_an_error_does_not_hold_up_other_connections(
    start_server: Callable[..., Awaitable[Hj212Server]],
    db: AsyncConnectionPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = asyncio.Event()
    record = pipeline_module.record_source_error

    async def slow(conn: Conn, **fields: Any) -> None:
        await written.wait()  # as a write waiting for a busy database would
        await record(conn, **fields)

    monkeypatch.setattr(pipeline_module, "record_source_error", slow)
    server = await start_server(FailingPipeline(db), pool=db)
    failing, other = await Device.open(server), await Device.open(server)
    await failing.send_segments(HUANGPU_2011)
    await failing.silent(0.2)
    started = asyncio.get_running_loop().time()
    await other.send_segments(HUANGPU_LATER)
    assert await other.frames(1) == [HUANGPU_LATER_REPLY]
    assert asyncio.get_running_loop().time() - started < 1.0
    assert await recorded_error(db) == (None, None)
    written.set()
    await until_recorded(db, HUANGPU_NOT_STORED)
    await failing.close()
    await other.close()


def hourly(hour: int, qn_suffix: str) -> str:
    """An hourly upload of gz-w-xintang (water temperature and pH), reply wanted."""
    return (
        f"QN=2026112612000{qn_suffix};ST=21;CN=2061;PW=123456;MN={XINTANG_MN};Flag=5;"
        f"CP=&&DataTime=20261126{hour:02d}0000;w01010-Avg={10 + hour},w01010-Flag=N;"
        f"w01001-Avg=7.{hour},w01001-Flag=N&&"
    )


def reply_to_hourly(qn_suffix: str) -> bytes:
    return build_frame(
        f"QN=2026112612000{qn_suffix};ST=91;CN=9014;PW=123456;MN={XINTANG_MN};Flag=4;CP=&&&&"
    )


def answer(cn: str, cp: str, qn: str = GAP_QN) -> str:
    """A device's 9011/9012 to a platform request."""
    return f"QN={qn};ST=91;CN={cn};PW=123456;MN={XINTANG_MN};Flag=4;CP=&&{cp}&&"


async def gap_requested(server: Hj212Server) -> tuple[Device, float]:
    """A device that uploads 10:00, then 13:00, and receives the request for 11:00 to 12:00."""
    device = await Device.open(server)
    await device.send_segments(hourly(10, "0010"))
    assert await device.frames(1) == [reply_to_hourly("0010")]
    await device.send_segments(hourly(13, "0013"))
    assert await device.frames(2) == [reply_to_hourly("0013"), GAP_REQUEST]
    return device, asyncio.get_running_loop().time()


async def test_unanswered_gap_request_is_sent_again_and_the_answer_stops_it(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    server = await start_server(gap_request_timeout_s=0.3)
    device, first_at = await gap_requested(server)
    # The device ignores the first request; the same frame (same QN) comes again.
    assert await device.frames(1) == [GAP_REQUEST]
    assert asyncio.get_running_loop().time() - first_at >= 0.3
    ready, done = answer("9011", "QnRtn=1"), answer("9012", "ExeRtn=1")
    await device.send_segments(ready, hourly(11, "0011"), hourly(12, "0012"), done)
    assert await device.frames(2) == [reply_to_hourly("0011"), reply_to_hourly("0012")]
    await device.silent(0.9)  # three timeouts: no third send
    assert (server.stats.requests, server.stats.requests_unanswered) == (2, 0)
    assert [(t.hour, p, v) for _, p, _, t, v in await stored_values(db)] == [
        (hour, parameter, value)
        for hour in (10, 11, 12, 13)
        for parameter, value in (("ph", float(f"7.{hour}")), ("water_temp", 10.0 + hour))
    ]
    await device.close()


async def test_a_gap_seen_in_a_frame_not_stored_is_requested_when_it_is_resent(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    pipeline = FailingPipeline(db)
    pipeline.failures = 0
    server = await start_server(pipeline, pool=db)
    device = await Device.open(server)
    await device.send_segments(hourly(10, "0010"))
    assert await device.frames(1) == [reply_to_hourly("0010")]
    pipeline.failures = pipeline.calls + 1  # the next intake fails
    await device.send_segments(hourly(13, "0013"))
    await device.silent(0.3)  # neither the answer nor the request
    await device.send_segments(hourly(13, "0013"))
    assert await device.frames(2) == [reply_to_hourly("0013"), GAP_REQUEST]
    assert server.stats.requests == 1
    await device.close()


async def test_a_gap_request_left_open_by_a_closed_connection_is_asked_on_the_next(
    start_server: Callable[..., Awaitable[Hj212Server]],
) -> None:
    server = await start_server(gap_request_timeout_s=60)
    device, _ = await gap_requested(server)
    await device.close()  # the station hangs up without answering
    again = await Device.open(server)
    await again.send_segments(hourly(14, "0014"))
    # The gap is asked for again, now up to the hour before 14:00 (13:00 is stored: harmless).
    assert await again.frames(2) == [reply_to_hourly("0014"), gap_request(11, 13)]
    assert server.stats.requests == 2
    await again.close()


async def test_after_a_restart_the_hours_missed_meanwhile_are_requested(
    start_server: Callable[..., Awaitable[Hj212Server]], db: AsyncConnectionPool
) -> None:
    before = await start_server(pool=db)
    device = await Device.open(before)
    await device.send_segments(hourly(10, "0010"))
    assert await device.frames(1) == [reply_to_hourly("0010")]
    await device.close()
    await before.stop()
    # EnvLink restarts; the station's first upload after it is 13:00.
    after = await start_server(pool=db)
    device = await Device.open(after)
    await device.send_segments(hourly(13, "0013"))
    assert await device.frames(2) == [reply_to_hourly("0013"), GAP_REQUEST]
    await device.close()


async def test_gap_request_is_given_up_after_three_sends(
    start_server: Callable[..., Awaitable[Hj212Server]], caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(gap_request_timeout_s=0.3)
    device, _ = await gap_requested(server)
    assert await device.frames(2) == [GAP_REQUEST, GAP_REQUEST]
    await until(lambda: server.stats.requests_unanswered == 1)
    await device.silent(0.9)  # no fourth send
    assert server.stats.requests == 3
    assert server_warnings(caplog) == [
        "gz-w-xintang: no answer to 3 requests for hourly data 20261126110000 to "
        "20261126120000; not asking again"
    ]
    await device.close()


@pytest.mark.parametrize(
    ("answers", "replies"),
    [
        ([answer("9011", "QnRtn=1")], []),
        ([answer("9012", "ExeRtn=100")], []),  # the device holds nothing for the window
        ([hourly(12, "0012")], [reply_to_hourly("0012")]),  # data, without the 9011
    ],
    ids=["9011", "9012", "data"],
)
async def test_any_answer_stops_the_gap_request(
    start_server: Callable[..., Awaitable[Hj212Server]],
    caplog: pytest.LogCaptureFixture,
    answers: list[str],
    replies: list[bytes],
) -> None:
    server = await start_server(gap_request_timeout_s=0.3)
    device, _ = await gap_requested(server)
    await device.send_segments(*answers)
    assert await device.frames(len(replies)) == replies
    await device.silent(0.9)
    assert (server.stats.requests, server.stats.requests_unanswered) == (1, 0)
    assert server_warnings(caplog) == []
    await device.close()


async def test_an_answer_to_another_request_does_not_stop_it(
    start_server: Callable[..., Awaitable[Hj212Server]],
) -> None:
    server = await start_server(gap_request_timeout_s=0.3)
    device, _ = await gap_requested(server)
    # Another QN, and data outside the requested window (09:00): the request is still open.
    await device.send_segments(answer("9011", "QnRtn=1", qn="20261126115959999"), hourly(9, "0009"))
    assert await device.frames(2) == [reply_to_hourly("0009"), GAP_REQUEST]
    await device.send_segments(answer("9011", "QnRtn=1"))
    await device.silent(0.9)
    assert server.stats.requests == 2
    await device.close()


async def test_closed_connection_drops_its_gap_request(
    start_server: Callable[..., Awaitable[Hj212Server]], caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(gap_request_timeout_s=0.3)
    device, _ = await gap_requested(server)
    await device.close()
    await until(lambda: server.connections == 0)
    await asyncio.sleep(1.0)  # past three timeouts
    assert (server.stats.requests, server.stats.requests_unanswered) == (1, 0)
    assert server_warnings(caplog) == []
