"""HJ 212 TCP server: stations' data loggers connect, upload, and are answered after commit.

Each connection is read by its own task. A frame is checked (CRC under the station's own
setting, MN, PW) and turned into readings (SourceReading) or quarantine Rejections; one group commit
gathers the frames of all connections that arrive within a few milliseconds into a single
Pipeline.ingest call. Only after that call returns — readings committed or quarantined — are the
frames' replies written, so an acknowledged reading is a stored reading. A couple of batches
may be committing at once (their database round trips overlap); each connection's replies still
leave in the order its frames came in. A frame that cannot be stored is left unanswered (the device
resends it) and the failure is recorded on the source for /v1/sources. A gap in a station's hourly
data is requested on its connection and asked again, a few times, while the station does not answer.
A range an operator asks for (`envlink backfill --station`, a row in the database) is requested by
the server holding the station's connection and followed to its end (backfill.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from psycopg_pool import AsyncConnectionPool

from core.errors import SettingsError
from core.logging import EveryInterval
from core.timeutil import utcnow
from ingest.pipeline import Pipeline, SourceRef
from ingest.qc import MAX_AHEAD
from ingest.received import received_text
from ingest.sources.base import SourceHealth
from ingest.sources.hj212.backfill import ST_OF_MEDIUM, Backfill, Backfills
from ingest.sources.hj212.protocol import (
    CRC_MODES,
    DATA_CNS,
    CrcMode,
    Frame,
    FrameDecoder,
    Garbage,
    Packet,
    ProtocolError,
    build_request,
    data_items,
    detect_crc_mode,
    format_datatime,
    parse_segment,
    qc_for_flag,
    reply_for,
    request_answer,
)
from schemas.common import QC
from schemas.readings import IntakeResult, Outcome, Rejection, SourceReading
from store.catalogue import CatalogueSnapshot, StationRef
from store.listen import Listener
from store.pool import unreachable
from store.readings import last_hourly

log = logging.getLogger(__name__)

SOURCE: Final = SourceRef(code="hj212", kind="hj212")
READ_SIZE: Final = 65536
# A device that stops reading its answers must not make the server buffer them without bound.
MAX_WRITE_BUFFER: Final = 1 << 20
# Frames of one connection waiting for their commit; beyond this the connection is not read
# until the commits catch up (TCP flow control then slows the device down).
MAX_INFLIGHT: Final = 2000
HOUR: Final = timedelta(hours=1)
_RESTART_CN: Final = "2081"
# After a restart every station reconnects at once; with asyncio's default queue of 100, the
# connections beyond it wait for a SYN retry (1 s, then 3 s). The kernel caps it (somaxconn).
ACCEPT_BACKLOG: Final = 1024
# A device's answers to a platform request (ready, done), echoing the request's QN.
_REQUEST_ANSWERS: Final = frozenset({"9011", "9012"})
# Sends of one gap request before the server gives up on it.
GAP_REQUEST_ATTEMPTS: Final = 3
# Commit failures written to the source row at most this often (the stats count them all).
ERROR_RECORD_INTERVAL_S: Final = 1.0
# Connections refused over the cap are logged at most this often (an attacker can open thousands).
REFUSED_LOG_INTERVAL_S: Final = 10.0
# How soon a connection waiting for the catalogue (the database away) asks for it again.
CATALOGUE_RETRY_S: Final = 0.5
# The longest the start may wait for the stations' last stored hours; without them it goes on.
RECALL_TIMEOUT_S: Final = 5.0
_PERIODS: Final[dict[int, Literal[0, 60, 3600, 86400]]] = {0: 0, 60: 60, 3600: 3600, 86400: 86400}


@dataclass
class Hj212Stats:
    """What the server has seen since it started (a later /v1/sources may show it)."""

    connections: int = 0
    refused: int = 0
    idle_closed: int = 0
    bytes_received: int = 0
    frames: int = 0
    bad_crc: int = 0
    garbage_bytes: int = 0
    unparsable: int = 0
    quarantined_frames: int = 0
    other_frames: int = 0
    replies: int = 0
    requests: int = 0
    requests_unanswered: int = 0
    batches: int = 0
    ingest_failures: int = 0
    accepted: int = 0
    duplicate: int = 0
    revised: int = 0
    rejected: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None


class _Connection:
    """One device's TCP connection: its decoder, the station it speaks for, unanswered frames."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.decoder = FrameDecoder()
        self.station: StationRef | None = None
        # Frames in arrival order until answered: batches may commit out of order, answers not.
        self.unanswered: deque[_Entry] = deque()
        self.resume = asyncio.Event()
        self.closed = False
        # Gap requests sent on this connection and not yet answered.
        self.requests: list[_GapRequest] = []
        # Backfill requests sent on this connection and not yet finished.
        self.backfills: list[Backfill] = []
        # The stations that sent on it, and the version, PW and ST of the last packet.
        self.station_ids: set[int] = set()
        self.version = 1
        self.password: str | None = None
        self.system: str | None = None
        self._warned: set[str] = set()

    @property
    def label(self) -> str:
        """The station code once known, else the peer address (for logs)."""
        return f"{self.station.code} ({self.peer})" if self.station else self.peer

    def warn_once(self, kind: str, message: str, *args: object) -> None:
        """Warn at the first occurrence of a kind of problem on this connection, then debug."""
        level = logging.DEBUG if kind in self._warned else logging.WARNING
        self._warned.add(kind)
        log.log(level, "%s: " + message, self.label, *args)

    def write(self, data: bytes) -> bool:
        """Queue bytes for the device; False if the connection is gone."""
        if self.closed or self.writer.is_closing():
            return False
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning(
                "%s: not reading its answers (over %d bytes queued); closing",
                self.label,
                MAX_WRITE_BUFFER,
            )
            self.close()
        return True

    def pause_reading(self) -> None:
        """Stop taking bytes from the device (shutdown: what was read is still answered)."""
        transport = self.writer.transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            transport.pause_reading()

    def close(self) -> None:
        """Close the connection (idempotent); frames still in commit get no answer."""
        self.closed = True
        self.resume.set()
        self.writer.close()
        # A request is the station's own connection's business: a reconnect starts afresh.
        for request in self.requests:
            request.stop()
        self.requests.clear()

    def request_answered(self, packet: Packet) -> None:
        """A 9011/9012 from the station: the request with its QN is being handled."""
        for request in [r for r in self.requests if (r.mn, r.qn) == (packet.mn, packet.qn)]:
            fields = ";".join(f"{key}={value}" for key, value in packet.cp.fields.items())
            self._answered(request, f"CN={packet.cn} {fields}".rstrip())

    def hour_arrived(self, station: StationRef, hour: datetime) -> None:
        """Hourly data from the station: a request whose window holds it is being answered."""
        for request in self.requests:
            if request.station_id == station.id and request.begin <= hour <= request.end:
                self._answered(request, f"data for {format_datatime(hour)}")
                break

    def _answered(self, request: _GapRequest, how: str) -> None:
        request.stop()
        self.requests.remove(request)
        log.info("%s: request for hourly data %s answered (%s)", self.label, request.window, how)


@dataclass(slots=True, eq=False)
class _GapRequest:
    """A CN 2061 request for a station's missing hours, re-sent while it goes unanswered."""

    station_id: int
    station_code: str
    mn: str
    qn: str
    begin: datetime
    end: datetime
    frame: bytes
    attempts: int = 0
    timer: asyncio.TimerHandle | None = None

    @property
    def window(self) -> str:
        """BeginTime to EndTime as the request has them (for logs)."""
        return f"{format_datatime(self.begin)} to {format_datatime(self.end)}"

    def stop(self) -> None:
        """Send it no more."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(slots=True)
class _Entry:
    """A checked frame waiting for its commit, with what to send once it is stored."""

    connection: _Connection
    items: list[SourceReading | Rejection]
    reply: bytes | None
    request: _GapRequest | None = None
    label: str = ""
    # None while committing; then whether it was stored (answer) or not (no answer).
    stored: bool | None = None
    # The backfill request a data packet answers: its outcomes are counted there once stored.
    backfill: Backfill | None = None
    # Run once the frame and every frame before it on its connection are stored (a 9012).
    after: Callable[[], None] | None = None


class _GroupCommit:
    """Gathers checked frames from every connection and stores them together.

    A batch closes `window_s` after its first frame or as soon as it holds `max_readings`
    items, and is committed as soon as one of `in_flight` commit slots is free; while the slots
    are busy the next batch keeps filling, so under load batches grow instead of commits
    queueing up. A few commits in flight overlap their database round trips.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        stats: Hj212Stats,
        *,
        window_s: float,
        max_readings: int,
        in_flight: int,
        ask: Callable[[_Connection, _GapRequest], None],
        unask: Callable[[_GapRequest], None],
        record_error: Callable[[str], None],
        backfill_stored: Callable[[Backfill, list[Outcome]], None],
    ) -> None:
        self._pipeline = pipeline
        self._backfill_stored = backfill_stored
        self._stats = stats
        self._ask = ask
        self._unask = unask
        self._record_error = record_error
        self._window_s = window_s
        self._max_readings = max_readings
        self._slots = asyncio.Semaphore(in_flight)
        self._commits: set[asyncio.Task[None]] = set()
        self._pending: list[_Entry] = []
        self._readings = 0
        self._first_at = 0.0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False

    def submit(self, entry: _Entry) -> None:
        """Add a frame to the open batch."""
        if not self._pending:
            self._first_at = asyncio.get_running_loop().time()
        self._pending.append(entry)
        entry.connection.unanswered.append(entry)
        self._readings += len(entry.items)
        if self._readings >= self._max_readings:
            self._full.set()
        self._wake.set()

    async def run(self) -> None:
        """Commit batches until closed; what is pending at close is still committed."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            delay = self._first_at + self._window_s - loop.time()
            if delay > 0 and not self._full.is_set() and not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._full.wait()
            # Frames that arrive while every slot is busy join this batch, up to max_readings;
            # the rest start the next one at once.
            await self._slots.acquire()
            batch = self._take()
            if batch:
                task = asyncio.create_task(self._commit_in_slot(batch), name="hj212-commit")
                self._commits.add(task)
                task.add_done_callback(self._commits.discard)
            else:
                self._slots.release()
            if self._closing and not self._pending:
                await asyncio.gather(*self._commits)
                return

    def _take(self) -> list[_Entry]:
        taken = 0
        for cut, entry in enumerate(self._pending):
            if cut and taken + len(entry.items) > self._max_readings:
                break
            taken += len(entry.items)
        else:
            cut = len(self._pending)
        batch, self._pending = self._pending[:cut], self._pending[cut:]
        self._readings -= taken
        if not self._pending:
            self._wake.clear()
        if self._readings < self._max_readings:
            self._full.clear()
        return batch

    def close(self) -> None:
        """Let run() return once everything pending is committed."""
        self._closing = True
        self._wake.set()
        self._full.set()

    async def _commit_in_slot(self, batch: list[_Entry]) -> None:
        try:
            await self._commit(batch)
        finally:
            self._slots.release()

    async def _commit(self, batch: list[_Entry]) -> None:
        items = [item for entry in batch for item in entry.items]
        try:
            result = await self._pipeline.ingest(items, source=SOURCE) if items else IntakeResult()
        except Exception as exc:
            self._stats.ingest_failures += 1
            self._stats.last_error = f"{type(exc).__name__}: {exc}"
            self._stats.last_error_at = utcnow()
            if len(batch) > 1 and not unreachable(exc):
                # Retried frame by frame, so that one frame the pipeline cannot take does not
                # keep every other station's data from being stored and answered. Not when the
                # database is out of reach: then every frame would wait out the pool's timeout
                # in turn; the devices resend what is not answered.
                log.warning(
                    "HJ 212 batch of %d frames failed (%s); retrying frame by frame",
                    len(batch),
                    exc,
                )
                for entry in batch:
                    await self._commit([entry])
                return
            frames = f"frame from {batch[0].label}"
            if len(batch) > 1:
                frames = f"{len(batch)} frames, from {batch[0].label} and others,"
            log.exception("HJ 212 %s not stored; no answer, the devices will resend", frames)
            # Only a frame left unanswered is a failure worth showing; a batch retried frame by
            # frame is not, unless one of its frames fails again here.
            self._record_error(
                f"HJ 212 {frames} not stored, so not answered "
                f"(the device will resend it): {type(exc).__name__}: {exc}"
            )
            for entry in batch:
                self._done(entry, stored=False)
            return
        self._stats.batches += 1
        counts = result.summary
        self._stats.accepted += counts["accepted"]
        self._stats.duplicate += counts["duplicate"]
        self._stats.revised += counts["revised"]
        self._stats.rejected += counts["rejected"]
        offset = 0
        for entry in batch:
            size = len(entry.items)
            if entry.backfill is not None:
                self._backfill_stored(entry.backfill, result.outcomes[offset : offset + size])
            if size and log.isEnabledFor(logging.DEBUG):
                outcomes = result.outcomes[offset : offset + size]
                log.debug(
                    "%s: %d items: %d accepted, %d duplicate, %d revised, %d rejected",
                    entry.label,
                    size,
                    outcomes.count("accepted"),
                    outcomes.count("duplicate"),
                    outcomes.count("revised"),
                    outcomes.count("rejected"),
                )
            offset += size
            self._done(entry, stored=True)

    def _done(self, entry: _Entry, *, stored: bool) -> None:
        entry.stored = stored
        connection = entry.connection
        queue = connection.unanswered
        # Answer in arrival order: a frame committed early waits for the frames before it.
        while queue and queue[0].stored is not None:
            head = queue.popleft()
            if not head.stored:
                if head.request is not None:
                    self._unask(head.request)
                continue
            if head.reply is not None and connection.write(head.reply):
                self._stats.replies += 1
            if head.request is not None:
                self._ask(connection, head.request)
            if head.after is not None:
                head.after()
        if len(queue) < MAX_INFLIGHT:
            connection.resume.set()


class Hj212Server:
    """Listens for HJ 212 uploads and stores them through the pipeline as source `hj212`.

    `pool` is where the start reads the stations' last stored hours (without one, gaps count
    from the first hourly upload) and where backfill requests are claimed and recorded (without
    one, none are); a gap request unanswered for `gap_request_timeout_s` is sent again, and a
    backfill request is sent again or given up after as long without a word from the station.
    `listener` (the process's) tells of new backfill requests at once; they are also looked for
    every `backfill_poll_s`. `worker` names this process on the requests it claims. Commit
    failures are recorded on the source row through the pipeline. At most `max_connections` are
    open at once: one more is closed as soon as it is accepted, so that the stations already
    connected keep the descriptors and database connections they need.
    """

    ref: Final = SOURCE
    interval_s: Final = None

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        pool: AsyncConnectionPool | None = None,
        host: str = "127.0.0.1",
        port: int = 9212,
        idle_timeout_s: float = 600.0,
        max_connections: int = 10_000,
        batch_window_s: float = 0.005,
        batch_max_readings: int = 5000,
        commits_in_flight: int = 2,
        gap_max_hours: int = 72,
        gap_request_timeout_s: float = 60.0,
        listener: Listener | None = None,
        worker: str = "hj212",
        backfill_poll_s: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pipeline = pipeline
        self._pool = pool
        self._host = host
        self._port = port
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._log_refused = EveryInterval(log, REFUSED_LOG_INTERVAL_S)
        self._log_waiting = EveryInterval(log, REFUSED_LOG_INTERVAL_S)
        self._gap_max_hours = gap_max_hours
        self._gap_request_timeout_s = gap_request_timeout_s
        self._clock = clock
        self.stats = Hj212Stats()
        self._commit = _GroupCommit(
            pipeline,
            self.stats,
            window_s=batch_window_s,
            max_readings=batch_max_readings,
            in_flight=commits_in_flight,
            ask=self._ask,
            unask=self._unask,
            record_error=self._record_error,
            backfill_stored=self._backfill_stored,
        )
        # Each station's connection (the one it last sent on), for backfill requests.
        self._lines: dict[int, tuple[_Connection, StationRef, CrcMode]] = {}
        self._backfills = (
            Backfills(
                pool,
                self._lines,
                worker=worker,
                listener=listener,
                poll_s=backfill_poll_s,
                answer_timeout_s=gap_request_timeout_s,
                clock=clock,
            )
            if pool is not None
            else None
        )
        self._server: asyncio.Server | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[object]] = set()
        self._connections: set[_Connection] = set()
        # Newest hourly (CN 2061) period start per station id, to see gaps in hourly data.
        self._last_hour: dict[int, datetime] = {}
        self._error_task: asyncio.Task[None] | None = None
        self._error_recorded_at = float("-inf")
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen; a port that cannot be bound is a SettingsError naming the setting."""
        await self._recall_last_hours()
        try:
            self._server = await asyncio.start_server(
                self._accept, self._host, self._port, backlog=ACCEPT_BACKLOG
            )
        except OSError as exc:
            raise SettingsError(
                f"cannot listen for HJ 212 uploads on {self._host}:{self._port}: "
                f"{exc.strerror or exc}; set ENVLINK_HJ212_PORT to a free port "
                "(or ENVLINK_HJ212_ENABLED=false)"
            ) from exc
        self._commit_task = asyncio.create_task(self._commit.run(), name="hj212-commit")
        if self._backfills is not None:
            self._backfills.start()
        log.info(
            "HJ 212 server on %s:%d (at most %d connections)",
            self._host,
            self.port,
            self._max_connections,
        )

    async def run(self) -> None:
        """Serve (in the tasks start() began) until stopped."""
        await self._stopped.wait()

    def health(self) -> SourceHealth:
        stats = self.stats
        return SourceHealth(
            SOURCE.code,
            running=self._server is not None and self._server.is_serving(),
            last_error=stats.last_error,
            last_error_at=stats.last_error_at,
            counters={
                "open_connections": self.connections,
                **{name: value for name, value in asdict(stats).items() if isinstance(value, int)},
            },
        )

    async def _recall_last_hours(self) -> None:
        """Remember each station's newest stored hour (within the last `gap_max_hours`).

        Hours missed while EnvLink was down are then requested on the station's first hourly
        upload after a (re)start, as any other gap.
        """
        if self._pool is None:
            return
        since = self._clock() - HOUR * self._gap_max_hours
        try:
            async with asyncio.timeout(RECALL_TIMEOUT_S), self._pool.connection() as conn:
                self._last_hour = await last_hourly(conn, since=since)
        except Exception as exc:  # the server still takes uploads; gaps count from then on
            log.warning("HJ 212: could not read the stations' last hours: %r", exc)

    async def stop(self) -> None:
        """Stop listening and reading, commit and answer what was received, close connections."""
        if self._server is not None:
            self._server.close()
        for connection in self._connections:
            connection.pause_reading()
        if self._commit_task is not None:
            self._commit.close()
            await self._commit_task
        if self._error_task is not None:
            await self._error_task
        if self._backfills is not None:
            await self._backfills.stop()
        for connection in list(self._connections):
            connection.close()
        if self._handlers:
            # Closed connections read as EOF, so the handlers end by themselves.
            _, stuck = await asyncio.wait(self._handlers, timeout=5)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Counted by handler, not by _connections: a handler's task has not started yet when
        # the next connection of a burst is accepted.
        if len(self._handlers) >= self._max_connections:
            self._refuse(writer)
            return
        # The connection's task is ours rather than asyncio.start_server's: Python 3.11 logs a
        # spurious error for every such task cancelled at interpreter shutdown.
        task = asyncio.create_task(self._handle(reader, writer), name="hj212-connection")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Close a connection over the cap at once, without reading from it."""
        self.stats.refused += 1
        writer.transport.abort()
        peer = writer.get_extra_info("peername")
        self._log_refused(
            logging.WARNING,
            "HJ 212 connection from %s refused: %d open, the most allowed"
            " (ENVLINK_HJ212_MAX_CONNECTIONS)",
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else peer,
            self._max_connections,
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        self._connections.add(connection)
        self.stats.connections += 1
        log.debug("HJ 212 connection from %s", connection.peer)
        why = ""
        try:
            while not connection.closed:
                try:
                    async with asyncio.timeout(self._idle_timeout_s):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    self.stats.idle_closed += 1
                    why = f"idle for {self._idle_timeout_s:g} s"
                    break
                if not data:
                    break
                self.stats.bytes_received += len(data)
                catalogue = await self._catalogue(connection)
                if catalogue is None:
                    break
                for event in connection.decoder.feed(data):
                    if isinstance(event, Garbage):
                        self.stats.garbage_bytes += len(event.raw)
                        connection.warn_once(
                            event.reason,
                            "skipped %d bytes (%s%s)",
                            len(event.raw),
                            event.reason,
                            f": {event.detail}" if event.detail else "",
                        )
                        continue
                    self.stats.frames += 1
                    entry = self._on_frame(connection, event, catalogue)
                    if entry is not None:
                        self._commit.submit(entry)
                while len(connection.unanswered) >= MAX_INFLIGHT and not connection.closed:
                    connection.resume.clear()
                    await connection.resume.wait()
        except ConnectionError as exc:
            why = f"connection error: {exc}"
        except Exception:
            log.exception("HJ 212 connection %s failed", connection.label)
            why = "internal error"
        finally:
            for request in connection.requests:
                self._unask(request)
            connection.close()
            self._connections.discard(connection)
            self._forget_line(connection)
            # A device hanging up is routine; an idle or broken connection is worth a line.
            log.log(
                logging.INFO if why else logging.DEBUG,
                "HJ 212 connection %s closed: %s",
                connection.label,
                why or "closed by the device",
            )

    async def _catalogue(self, connection: _Connection) -> CatalogueSnapshot | None:
        """The pipeline's catalogue, waited for while the database is out of reach.

        Meanwhile nothing more is read from the device (TCP flow control holds its frames), and
        its connection stays open: a database outage is no reason to cut every station off.
        None once the connection is closed (shutdown).
        """
        while not connection.closed:
            try:
                return await self._pipeline.catalogue()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                self._log_waiting(
                    logging.WARNING,
                    "HJ 212: frames wait, the station catalogue cannot be read: %s: %s",
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(CATALOGUE_RETRY_S)
        return None

    def _on_frame(
        self, connection: _Connection, frame: Frame, catalogue: CatalogueSnapshot
    ) -> _Entry | None:
        try:
            packet = parse_segment(frame.segment)
        except ProtocolError as exc:
            return self._unparsable(connection, frame, exc)
        station = catalogue.stations_by_mn.get(packet.mn)
        if station is None:
            return self._unknown_mn(connection, frame, packet)
        mode = _crc_mode(station)
        if not frame.crc_ok(mode):
            self._bad_crc(connection, frame, f"station {station.code} is set to {mode} CRC")
            return None
        connection.station = station
        self._note_line(connection, packet, station, mode)
        label = f"{station.code} (MN {packet.mn})"
        # The PW guards what a device uploads; heartbeats and answers carry nothing to protect.
        uploads = packet.cn in DATA_CNS or packet.cn == _RESTART_CN
        if station.hj212_password is not None and packet.pw != station.hj212_password and uploads:
            self.stats.quarantined_frames += 1
            connection.warn_once("pw", "wrong PW for MN %s; its data is quarantined", packet.mn)
            reason = (
                f"wrong PW for station {station.code} (MN {packet.mn}): "
                "the frame's data is quarantined"
            )
            rejection = Rejection(0, reason, station.code, None, _raw_text(frame))
            return _Entry(connection, [rejection], reply_for(packet, mode), label=label)
        if packet.cn in DATA_CNS:
            return self._data(connection, frame, packet, station, catalogue, mode, label)
        after = None
        if packet.cn in _REQUEST_ANSWERS:
            connection.request_answered(packet)
            after = self._backfill_answer(connection, packet)
        reply = reply_for(packet, mode)
        if packet.cn == _RESTART_CN:
            log.info(
                "%s: data logger restarted (%s)",
                label,
                packet.cp.fields.get("RestartTime", "no RestartTime"),
            )
        else:
            self.stats.other_frames += 1
            log.debug("%s: CN=%s %s", label, packet.cn, "answered" if reply else "ignored")
        if reply is None and after is None:
            return None
        # Answered through the group commit too, so answers keep the frames' order (and a 9012
        # completes its backfill only once the packets before it are stored).
        return _Entry(connection, [], reply, label=label, after=after)

    def _data(
        self,
        connection: _Connection,
        frame: Frame,
        packet: Packet,
        station: StationRef,
        catalogue: CatalogueSnapshot,
        mode: CrcMode,
        label: str,
    ) -> _Entry:
        reply = reply_for(packet, mode)
        try:
            found = data_items(packet)
        except ProtocolError as exc:
            rejection = Rejection(0, str(exc), station.code, None, _raw_text(frame))
            return _Entry(connection, [rejection], reply, label=label)
        items: list[SourceReading | Rejection] = []
        raw: str | None = None
        for item in found:
            parameter = catalogue.parameters_by_hj212.get(item.code)
            link = (
                catalogue.station_parameters.get((station.id, parameter.id))
                if parameter is not None
                else None
            )
            if parameter is None or link is None or item.error is not None:
                if parameter is None:
                    reason = f"HJ 212 code {item.code} from MN {packet.mn} is not in the registry"
                elif link is None:
                    reason = (
                        f"station {station.code} does not measure {parameter.code} "
                        f"(HJ 212 code {item.code})"
                    )
                else:
                    reason = f"{parameter.code} (HJ 212 code {item.code}): {item.error}"
                raw = raw if raw is not None else _raw_text(frame)
                code = parameter.code if parameter is not None else item.code
                items.append(Rejection(0, reason, station.code, code, raw))
                continue
            items.append(
                SourceReading(
                    station.code,
                    parameter.code,
                    item.time,
                    item.value,
                    link.unit,
                    _PERIODS[item.period_s],
                    _qc(item.flag, packet.version),
                )
            )
        backfill = None
        if found and connection.backfills and self._backfills is not None:
            backfill = self._backfills.arrival(connection, packet.cn, found[0].time)
        request = None
        # An hour the pipeline refuses as in the future must not become the station's last
        # hour: every real hour after it would look old, and no gap would be asked for again.
        if packet.cn == "2061" and found and found[0].time <= self._clock() + MAX_AHEAD:
            connection.hour_arrived(station, found[0].time)
            request = self._gap_request(packet, station, found[0].time, mode)
        return _Entry(connection, items, reply, request, label, backfill=backfill)

    def _note_line(
        self, connection: _Connection, packet: Packet, station: StationRef, mode: CrcMode
    ) -> None:
        """Remember the station's connection and how it speaks, for backfill requests."""
        connection.version = packet.version
        connection.password = packet.pw or connection.password
        connection.system = packet.st or connection.system
        line = self._lines.get(station.id)
        if line is None or line[0] is not connection or line[1] is not station:
            self._lines[station.id] = (connection, station, mode)
            connection.station_ids.add(station.id)
            if self._backfills is not None:
                self._backfills.ring()

    def _forget_line(self, connection: _Connection) -> None:
        """A closed connection: its stations' lines go, its backfills fail."""
        for station_id in connection.station_ids:
            line = self._lines.get(station_id)
            if line is not None and line[0] is connection:
                del self._lines[station_id]
        if self._backfills is not None:
            self._backfills.closed(connection)

    def _backfill_answer(
        self, connection: _Connection, packet: Packet
    ) -> Callable[[], None] | None:
        """Take a 9011 to a backfill request now; a 9012 once the packets before it are stored."""
        if self._backfills is None or not connection.backfills:
            return None
        backfill = self._backfills.answering(connection, packet.qn)
        if backfill is None:
            return None
        answer = request_answer(packet)
        if packet.cn == "9011":
            self._backfills.ready(backfill, answer)
            return None
        return functools.partial(self._backfills.done, backfill, answer)

    def _backfill_stored(self, backfill: Backfill, outcomes: list[Outcome]) -> None:
        if self._backfills is not None:
            self._backfills.stored(backfill, outcomes)

    def _gap_request(
        self, packet: Packet, station: StationRef, hour: datetime, mode: CrcMode
    ) -> _GapRequest | None:
        """The CN 2061 request for the hours missing before `hour`, if there is a gap."""
        last = self._last_hour.get(station.id)
        if last is None or hour > last:
            self._last_hour[station.id] = hour
        if last is None or hour - last <= HOUR:
            return None
        begin = max(last + HOUR, hour - HOUR * self._gap_max_hours)
        end = hour - HOUR
        password = packet.pw or station.hj212_password
        st = packet.st or ST_OF_MEDIUM.get(station.medium, "22")
        sent_at = self._clock()
        try:
            if not password:
                raise ProtocolError("the station sends no PW and has none configured")
            request = build_request(
                "2061",
                packet.mn,
                password,
                sent_at,
                begin,
                end,
                st=st,
                version=packet.version,
                mode=mode,
            )
        except ProtocolError as exc:
            log.warning(
                "%s: hourly data missing %s to %s, not requested: %s",
                station.code,
                format_datatime(begin),
                format_datatime(end),
                exc,
            )
            return None
        log.info(
            "%s: hourly data missing %s to %s; requesting it",
            station.code,
            format_datatime(begin),
            format_datatime(end),
        )
        qn = format_datatime(sent_at, ms=True)
        return _GapRequest(station.id, station.code, packet.mn, qn, begin, end, request)

    def _unask(self, request: _GapRequest) -> None:
        """A gap request that will get no answer (its frame not stored, or the connection gone).

        The station's last hour goes back to before the gap, so its next hourly upload (the
        resend, or the first on a new connection) shows the gap again and asks for it again.
        """
        last = self._last_hour.get(request.station_id, request.begin)
        self._last_hour[request.station_id] = min(last, request.begin - HOUR)

    def _ask(self, connection: _Connection, request: _GapRequest) -> None:
        """Send a gap request (once its frame is stored), then again on each timeout unanswered.

        The same frame each time, QN included, so that a late answer to an earlier send still
        matches; after GAP_REQUEST_ATTEMPTS sends the server gives up on the gap.
        """
        request.timer = None
        if connection.closed:
            self._unask(request)
            return
        if request.attempts >= GAP_REQUEST_ATTEMPTS:
            connection.requests.remove(request)
            self.stats.requests_unanswered += 1
            log.warning(
                "%s: no answer to %d requests for hourly data %s; not asking again",
                request.station_code,
                request.attempts,
                request.window,
            )
            return
        if not connection.write(request.frame) or connection.closed:
            return
        request.attempts += 1
        self.stats.requests += 1
        if request.attempts == 1:
            connection.requests.append(request)
        log.info(
            "%s: requested hourly data %s (send %d of %d)",
            connection.label,
            request.window,
            request.attempts,
            GAP_REQUEST_ATTEMPTS,
        )
        loop = asyncio.get_running_loop()
        request.timer = loop.call_later(self._gap_request_timeout_s, self._ask, connection, request)

    def _record_error(self, problem: str) -> None:
        """Show a commit failure on the source row, at most once a second, off the reply path.

        The write has its own task, so no connection's replies wait for it; while one is under
        way or for a second after it, later failures reach only the stats.
        """
        now = asyncio.get_running_loop().time()
        busy = self._error_task is not None and not self._error_task.done()
        if busy or now - self._error_recorded_at < ERROR_RECORD_INTERVAL_S:
            return
        self._error_recorded_at = now
        self._error_task = asyncio.create_task(
            self._pipeline.record_error(SOURCE, problem, at=self._clock()), name="hj212-error"
        )

    def _unknown_mn(self, connection: _Connection, frame: Frame, packet: Packet) -> _Entry | None:
        # No station, so no CRC setting: any variant the frame carries is accepted, since
        # quarantining an unknown device's data beats dropping it.
        mode = detect_crc_mode(frame.segment, frame.crc_text)
        if mode is None:
            self._bad_crc(connection, frame, f"unknown MN {packet.mn}, no CRC variant matches")
            return None
        reply = reply_for(packet, mode)
        if packet.cn not in DATA_CNS and packet.cn != _RESTART_CN:
            self.stats.other_frames += 1
            log.debug("%s: CN=%s from unknown MN %s", connection.label, packet.cn, packet.mn)
            return _Entry(connection, [], reply, label=packet.mn) if reply else None
        self.stats.quarantined_frames += 1
        connection.warn_once("mn:" + packet.mn, "unknown MN %s; its data is quarantined", packet.mn)
        reason = f"unknown MN {packet.mn}: no station in the catalogue has this HJ 212 MN"
        rejection = Rejection(0, reason, None, None, _raw_text(frame))
        return _Entry(connection, [rejection], reply, label=f"unknown MN {packet.mn}")

    def _unparsable(
        self, connection: _Connection, frame: Frame, error: ProtocolError
    ) -> _Entry | None:
        station = connection.station
        crc_ok = (
            frame.crc_ok(_crc_mode(station))
            if station is not None
            else detect_crc_mode(frame.segment, frame.crc_text) is not None
        )
        if not crc_ok:
            self._bad_crc(connection, frame, f"and the segment does not parse: {error}")
            return None
        self.stats.unparsable += 1
        connection.warn_once("parse", "unparsable frame quarantined: %s", error)
        rejection = Rejection(
            0,
            f"unparsable HJ 212 frame: {error}",
            station.code if station is not None else None,
            None,
            _raw_text(frame),
        )
        return _Entry(connection, [rejection], None, label=connection.label)

    def _bad_crc(self, connection: _Connection, frame: Frame, detail: str) -> None:
        self.stats.bad_crc += 1
        matches = detect_crc_mode(frame.segment, frame.crc_text)
        hint = f" (it matches {matches} CRC)" if matches else ""
        connection.warn_once(
            "crc", "frame dropped, CRC %s does not match%s: %s", frame.crc_text, hint, detail
        )


@functools.lru_cache(maxsize=256)
def _qc(flag: str | None, version: int) -> QC:
    """The QC state of a data flag (cached: there are few flags and many readings)."""
    return QC(qc_for_flag(flag, version))


def _crc_mode(station: StationRef) -> CrcMode:
    """The station's CRC setting (the database allows only the three modes)."""
    for mode in CRC_MODES:
        if station.hj212_crc == mode:
            return mode
    return "hj212"


def _raw_text(frame: Frame) -> str:
    """The frame as received, for the quarantine (which escapes what text cannot hold)."""
    return received_text(frame.raw)


__all__ = ["SOURCE", "Hj212Server", "Hj212Stats"]
