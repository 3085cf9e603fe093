"""Backfill requests asked of stations on their own HJ 212 connections.

`envlink backfill --station` leaves a pending row in `backfill_request` (store/backfill.py) and
notifies BACKFILL_CHANNEL. Every HJ 212 server hears it on its process's listening connection
(and looks again every `poll_s`, and whenever a station it had not seen identifies itself); the
one holding the station's connection claims the row and sends the station the history request
(CN 2051/2061/2031 with BeginTime/EndTime). The station answers 9011 (QnRtn), the packets, then
9012 (ExeRtn). The packets are stored as any upload (duplicates detected, revisions kept) and
counted on the row as their commits return; the 9012 completes the request once every packet
before it is stored. Failures are kept on the row with their reason: the station refusing, no
answer to ATTEMPTS sends, the connection closing, the deadline passing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from psycopg_pool import AsyncConnectionPool

from core.timeutil import utcnow
from ingest.sources.hj212.protocol import (
    DATA_CNS,
    CrcMode,
    ProtocolError,
    RequestAnswer,
    build_request,
    format_datatime,
)
from schemas.readings import Outcome
from store.backfill import (
    BackfillRequest,
    BackfillState,
    claim_backfill_request,
    claimable_backfill_requests,
    record_backfill,
)
from store.catalogue import StationRef
from store.coordination import BACKFILL_CHANNEL
from store.listen import Listener, Wakeup
from store.pool import unreachable

log = logging.getLogger(__name__)

# Sends of one request while the station says nothing at all, `answer_timeout_s` apart.
ATTEMPTS: Final = 3
# Writes of a request's state are retried this often, this far apart, while the database fails.
WRITE_ATTEMPTS: Final = 5
WRITE_RETRY_S: Final = 0.5
# The longest a stopping server waits for the requests' last writes.
STOP_WRITES_S: Final = 5.0
CN_OF_PERIOD: Final = {period_s: cn for cn, (_, period_s) in DATA_CNS.items()}
ST_OF_MEDIUM: Final = {"air": "22", "water": "21"}


class Line(Protocol):
    """What a backfill needs of a station's connection (the server's connection object)."""

    closed: bool
    version: int  # of the station's last packet: 0 = 2005, 1 = 2017, 2 = 2025
    password: str | None  # PW of its last packet
    system: str | None  # ST of its last packet
    backfills: list[Backfill]

    @property
    def label(self) -> str: ...

    def write(self, data: bytes) -> bool: ...


# station id -> the connection it last sent on, the station, and the CRC mode it is set to.
Lines = Mapping[int, tuple[Line, StationRef, CrcMode]]


@dataclass(eq=False)
class Backfill:
    """A claimed request on its station's connection, and what the station has sent so far."""

    request_id: int
    station: str
    cn: str
    qn: str
    begin: datetime
    end: datetime
    frame: bytes
    line: Line
    state: BackfillState = "sent"
    packets: int = 0
    counts: dict[Outcome, int] = field(
        default_factory=lambda: {"accepted": 0, "duplicate": 0, "revised": 0, "rejected": 0}
    )
    detail: str | None = None
    attempts: int = 0
    quiet: asyncio.TimerHandle | None = None
    deadline: asyncio.TimerHandle | None = None
    # Whether the row lags behind this object, and the task bringing it up to date.
    dirty: bool = False
    writer: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed")

    @property
    def window(self) -> str:
        return f"{format_datatime(self.begin)} to {format_datatime(self.end)}"

    def covers(self, cn: str, data_time: datetime) -> bool:
        """Whether a data packet (its CN and DataTime) is part of the answer."""
        return cn == self.cn and self.begin <= data_time <= self.end

    def stop_timers(self) -> None:
        for timer in (self.quiet, self.deadline):
            if timer is not None:
                timer.cancel()
        self.quiet = self.deadline = None


class Backfills:
    """The backfill requests of one HJ 212 server: claimed, sent, followed and recorded."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        lines: Lines,
        *,
        worker: str,
        listener: Listener | None = None,
        poll_s: float = 5.0,
        answer_timeout_s: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._lines = lines
        self._worker = worker
        self._listener = listener
        self._poll_s = poll_s
        self._answer_timeout_s = answer_timeout_s
        self._clock = clock
        self._wakeup = Wakeup()
        self._task: asyncio.Task[None] | None = None
        self._active: set[Backfill] = set()
        self._writers: set[asyncio.Task[None]] = set()
        self._last_qn: datetime | None = None

    def start(self) -> None:
        """Look for requests now, on each notification and every `poll_s`."""
        if self._listener is not None:
            self._listener.subscribe(BACKFILL_CHANNEL, self._wakeup)
        self._task = asyncio.create_task(self._run(), name="hj212-backfills")

    def ring(self) -> None:
        """A station identified itself on a connection: a request may be waiting for it."""
        self._wakeup.ring()

    async def stop(self) -> None:
        """Stop claiming; the requests under way fail (their connections are about to close)."""
        if self._listener is not None:
            self._listener.unsubscribe(BACKFILL_CHANNEL, self._wakeup)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for backfill in list(self._active):
            self._finish(
                backfill, "failed", "the HJ 212 server stopped before the station finished"
            )
        if self._writers:
            await asyncio.wait(self._writers, timeout=STOP_WRITES_S)

    # Events on a station's connection, called by the server.

    def answering(self, line: Line, qn: str | None) -> Backfill | None:
        """The request a 9011/9012 with this QN answers, if it is one of these."""
        return next((b for b in line.backfills if b.qn == qn), None)

    def ready(self, backfill: Backfill, answer: RequestAnswer) -> None:
        """The station's 9011: it will answer, or it refuses."""
        if backfill.finished:
            return
        if not answer.ok:
            self._finish(backfill, "failed", f"the station refused the request: {answer.text()}")
            return
        log.info(
            "%s: backfill %d %s: the station is answering",
            backfill.line.label,
            backfill.request_id,
            backfill.window,
        )
        self._answered(backfill)

    def arrival(self, line: Line, cn: str, data_time: datetime) -> Backfill | None:
        """A data packet arrived: the request it answers, if any (its quiet timer starts again)."""
        for backfill in line.backfills:
            if backfill.covers(cn, data_time):
                self._answered(backfill)
                return backfill
        return None

    def stored(self, backfill: Backfill, outcomes: list[Outcome]) -> None:
        """A packet of the answer is stored: count it and its readings' outcomes."""
        if backfill.finished:
            return
        backfill.packets += 1
        for outcome in outcomes:
            backfill.counts[outcome] += 1
        self._changed(backfill)

    def done(self, backfill: Backfill, answer: RequestAnswer) -> None:
        """The station's 9012, once every packet before it is stored."""
        if backfill.finished:
            return
        if answer.no_data:
            self._finish(
                backfill,
                "completed",
                f"the station holds no data for the range (ExeRtn={answer.code})",
            )
        elif answer.ok:
            self._finish(backfill, "completed", None)
        else:
            self._finish(backfill, "failed", f"the station could not answer: {answer.text()}")

    def closed(self, line: Line) -> None:
        """The station's connection closed: what it has not finished fails."""
        for backfill in list(line.backfills):
            self._finish(
                backfill,
                "failed",
                f"the station's connection closed after {backfill.packets} packets,"
                " before its 9012 (end of the answer)",
            )

    # Claiming and sending.

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait(self._poll_s)
            if not self._lines:
                continue
            try:
                async with self._pool.connection() as conn:
                    requests = await claimable_backfill_requests(conn)
                for request in requests:
                    if request.station_id in self._lines:
                        await self._take(request)
            except Exception as exc:
                # The database away is the server's own warning; this loop just looks again.
                level = logging.DEBUG if unreachable(exc) else logging.WARNING
                log.log(level, "HJ 212 backfill requests could not be read or claimed: %r", exc)

    async def _take(self, request: BackfillRequest) -> None:
        line, station, mode = self._lines[request.station_id]
        cn = CN_OF_PERIOD[request.period_s]
        qn_time = self._next_qn_time()
        qn = format_datatime(qn_time, ms=True)
        async with self._pool.connection() as conn:
            left_s = await claim_backfill_request(conn, request.id, worker=self._worker, qn=qn)
        if left_s is None:
            return  # another server took it, or its time to be claimed ran out
        password = station.hj212_password or line.password
        try:
            if not password:
                raise ProtocolError("the station sends no PW and has none configured")
            frame = build_request(
                cn,
                station.hj212_mn or "",
                password,
                qn_time,
                request.begin_time,
                request.end_time,
                st=line.system or ST_OF_MEDIUM.get(station.medium, "22"),
                version=line.version,
                mode=mode,
            )
        except ProtocolError as exc:
            frame = b""
            problem = f"the request cannot be sent: {exc}"
        else:
            problem = "the station's connection closed before the request was sent"
        backfill = Backfill(
            request.id, station.code, cn, qn, request.begin_time, request.end_time, frame, line
        )
        self._active.add(backfill)
        if not frame or line.closed:
            self._finish(backfill, "failed", problem)
            return
        line.backfills.append(backfill)
        loop = asyncio.get_running_loop()
        backfill.deadline = loop.call_later(max(left_s, 0.0), self._expire, backfill)
        self._send(backfill)

    def _send(self, backfill: Backfill) -> None:
        if not backfill.line.write(backfill.frame):
            self.closed(backfill.line)
            return
        backfill.attempts += 1
        log.info(
            "%s: backfill %d: requested CN=%s %s (send %d of %d)",
            backfill.line.label,
            backfill.request_id,
            backfill.cn,
            backfill.window,
            backfill.attempts,
            ATTEMPTS,
        )
        self._arm(backfill)

    def _next_qn_time(self) -> datetime:
        """The clock, strictly increasing, so that two requests never share a QN."""
        now = self._clock()
        if self._last_qn is not None and now <= self._last_qn:
            now = self._last_qn + timedelta(milliseconds=1)
        self._last_qn = now
        return now

    # Timers.

    def _arm(self, backfill: Backfill) -> None:
        """(Re)start the quiet timer: the station has `answer_timeout_s` for its next word."""
        if backfill.quiet is not None:
            backfill.quiet.cancel()
        loop = asyncio.get_running_loop()
        backfill.quiet = loop.call_later(self._answer_timeout_s, self._quiet, backfill)

    def _quiet(self, backfill: Backfill) -> None:
        backfill.quiet = None
        if backfill.finished:
            return
        wait = f"{self._answer_timeout_s:g} s"
        if backfill.state == "sent":
            if backfill.attempts < ATTEMPTS:
                self._send(backfill)
            else:
                self._finish(
                    backfill,
                    "failed",
                    f"no answer to {backfill.attempts} sends of the request, {wait} apart",
                )
        elif backfill.packets:
            self._finish(
                backfill,
                "completed",
                f"the station sent no 9012 (end of the answer);"
                f" taken as complete after {wait} without packets",
            )
        else:
            self._finish(
                backfill,
                "failed",
                f"the station answered 9011 but sent neither data nor 9012 within {wait}",
            )

    def _expire(self, backfill: Backfill) -> None:
        backfill.deadline = None
        self._finish(
            backfill,
            "failed",
            f"not finished by its deadline ({backfill.packets} packets stored by then)",
        )

    # State and its row.

    def _answered(self, backfill: Backfill) -> None:
        if backfill.finished:
            return
        if backfill.state == "sent":
            backfill.state = "answered"
            self._changed(backfill)
        self._arm(backfill)

    def _finish(self, backfill: Backfill, state: BackfillState, detail: str | None) -> None:
        if backfill.finished:
            return
        backfill.stop_timers()
        backfill.state, backfill.detail = state, detail
        with contextlib.suppress(ValueError):
            backfill.line.backfills.remove(backfill)
        self._active.discard(backfill)
        log.log(
            logging.INFO if state == "completed" else logging.WARNING,
            "%s: backfill %d %s %s: %d packets%s",
            backfill.line.label,
            backfill.request_id,
            backfill.window,
            state,
            backfill.packets,
            f"; {detail}" if detail else "",
        )
        self._changed(backfill)

    def _changed(self, backfill: Backfill) -> None:
        """Bring the row up to date, one write at a time per request, the latest state last."""
        backfill.dirty = True
        if backfill.writer is None or backfill.writer.done():
            task = asyncio.create_task(self._write(backfill), name="hj212-backfill-write")
            backfill.writer = task
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)

    async def _write(self, backfill: Backfill) -> None:
        failures = 0
        while backfill.dirty:
            backfill.dirty = False
            try:
                async with self._pool.connection() as conn:
                    await record_backfill(
                        conn,
                        backfill.request_id,
                        state=backfill.state,
                        packets=backfill.packets,
                        detail=backfill.detail,
                        **backfill.counts,
                    )
            except Exception as exc:
                failures += 1
                if failures >= WRITE_ATTEMPTS:
                    log.warning(
                        "backfill %d: its state could not be written: %r", backfill.request_id, exc
                    )
                    return
                backfill.dirty = True
                await asyncio.sleep(WRITE_RETRY_S)


__all__ = ["ATTEMPTS", "Backfill", "Backfills", "Line", "Lines"]
