"""Exactly one active scheduler across workers: an advisory-lock election, and job status.

APScheduler 3.x has no coordination of its own (two schedulers run every job twice), so a
worker runs its scheduler only while it holds a PostgreSQL session advisory lock on a dedicated
connection. The server releases the lock when that session ends for any reason (process killed,
connection terminated, network gone), and a stand-by's next attempt takes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from psycopg_pool import AsyncConnectionPool

from core.errors import DatabaseUnavailable
from core.timeutil import rfc3339, utcnow
from store.coordination import SCHEDULER_LOCK
from store.pool import Conn, dedicated_connection
from store.scheduler import (
    WORKER_SCHEDULER,
    holds_lock,
    record_job_run,
    record_job_scheduled,
    record_leader,
    release_lock,
    try_lock,
)

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]
_LOST = (psycopg.Error, OSError, TimeoutError, DatabaseUnavailable)


class CancelledJobs(logging.Filter):
    """APScheduler logs a job cancelled at stand-down (shutdown, leadership lost) as a job that
    raised, traceback and all; it is no error, so it becomes one line at INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            record.msg = 'Job "%s" cancelled as the scheduler stood down'
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


_CANCELLED_JOBS = CancelledJobs()
# Where APScheduler 3 logs what a job raised.
_JOB_ERRORS_LOG = "apscheduler.executors.default"


def worker_name() -> str:
    """This process as a leader is named: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaderElection:
    """Leadership of scheduler `name`, held as a session advisory lock on its own connection.

    A stand-by tries the lock every `retry_s`. The leader waits on its connection's socket, so
    a terminated session is noticed at once, and proves it still holds the lock every `check_s`
    (a silent network path fails that check); on either it calls `on_lost` before anything
    else. A worker that has just lost leadership waits two retry intervals before competing
    again, so a healthy stand-by takes over rather than the worker whose connection failed.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        owner: str,
        on_elected: Callback,
        on_lost: Callback,
        retry_s: float = 5.0,
        check_s: float = 1.0,
        name: str = WORKER_SCHEDULER,
        key: int = SCHEDULER_LOCK,
    ) -> None:
        self._conninfo = conninfo
        self.owner = owner
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._retry_s = retry_s
        self._check_s = check_s
        self._name = name
        self._key = key
        self._conn: Conn | None = None
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    async def start(self) -> None:
        """Start competing in the background."""
        self._task = asyncio.create_task(self._run(), name=f"election {self._name}")

    async def stop(self) -> None:
        """Stop competing; a leader stands down (on_lost) and releases the lock."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def _run(self) -> None:
        pause = 0.0
        while True:
            if pause:
                await asyncio.sleep(pause)
            pause = self._retry_s
            try:
                conn = await self._connection()
                if not await try_lock(conn, key=self._key):
                    continue
                await record_leader(conn, name=self._name, owner=self.owner, at=utcnow())
            except _LOST as exc:
                log.warning("%s: election attempt failed (%s); retrying", self.owner, exc)
                await self._close()
                continue
            await self._lead(conn)
            pause = 2 * self._retry_s

    async def _lead(self, conn: Conn) -> None:
        self.leading = True
        log.info("%s leads the %s scheduler", self.owner, self._name)
        try:
            await self._on_elected()
            await self._watch(conn)
        except Exception:
            log.exception("%s: the %s scheduler failed", self.owner, self._name)
        finally:
            self.leading = False
            try:
                await self._on_lost()
            except Exception:
                log.exception("%s: standing down the %s scheduler failed", self.owner, self._name)
            finally:
                # Unlocking hands over at once on a clean stand-down; closing ends the session,
                # which releases the lock in any case, a moment later.
                with contextlib.suppress(*_LOST):
                    async with asyncio.timeout(self._check_s):
                        await release_lock(conn, key=self._key)
                await self._close()
        log.warning("%s no longer leads the %s scheduler", self.owner, self._name)

    async def _watch(self, conn: Conn) -> None:
        """Return as soon as the lock connection is lost or no longer holds the lock."""
        try:
            while True:
                # No notifications are expected: this only waits on the socket, which wakes
                # at once with an error when the server ends the session.
                async for _ in conn.notifies(timeout=self._check_s):
                    pass
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
                # that comes as the query completes, and the stopping worker watched forever.
                async with asyncio.timeout(self._check_s):
                    held = await holds_lock(conn, key=self._key)
                if not held:
                    log.error("%s: the election lock is gone from its session", self.owner)
                    return
        except _LOST as exc:
            log.error("%s: lost the election connection (%s)", self.owner, exc)

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = await dedicated_connection(
                self._conninfo, application_name=f"envlink {self._name} election {self.owner}"
            )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class JobStatusRecorder:
    """Writes every run of the scheduler's jobs (success, error, missed) to job_status."""

    def __init__(self, pool: AsyncConnectionPool, *, owner: str) -> None:
        self._pool = pool
        self._owner = owner
        self._scheduler: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()

    def attach(self, scheduler: Any) -> None:
        """Listen to an APScheduler 3 scheduler; call from the event loop it runs on."""
        self._scheduler = scheduler
        self._loop = asyncio.get_running_loop()
        scheduler.add_listener(
            self._on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
        )

    async def record_schedule(self) -> None:
        """Note every job of the scheduler as owned by this worker, with its next run."""
        async with self._pool.connection() as conn:
            for job in self._scheduler.get_jobs():
                await record_job_scheduled(
                    conn, job_id=job.id, owner=self._owner, next_run_at=job.next_run_time
                )

    async def drain(self) -> None:
        """Wait for the status writes already under way."""
        pending = [asyncio.wrap_future(f) for f in self._pending]
        await asyncio.gather(*pending, return_exceptions=True)

    def _on_event(self, event: Any) -> None:
        # APScheduler calls listeners synchronously, from the loop or an executor thread.
        job = self._scheduler.get_job(event.job_id)
        next_run_at = getattr(job, "next_run_time", None)
        cancelled = isinstance(event.exception, asyncio.CancelledError)
        # A run cancelled by losing leadership did not finish: it is noted, not counted.
        ran = event.code != EVENT_JOB_MISSED and not cancelled
        if cancelled:
            error: str | None = "cancelled: this worker stopped leading the scheduler"
        elif event.code == EVENT_JOB_ERROR:
            error = f"{type(event.exception).__name__}: {event.exception}"
        elif event.code == EVENT_JOB_MISSED:
            error = f"missed the run due at {rfc3339(event.scheduled_run_time)}"
        else:
            error = None
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(
            self._record(event.job_id, ran, error, next_run_at), self._loop
        )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _record(
        self, job_id: str, ran: bool, error: str | None, next_run_at: datetime | None
    ) -> None:
        try:
            async with self._pool.connection() as conn:
                await record_job_run(
                    conn,
                    job_id=job_id,
                    owner=self._owner,
                    at=utcnow(),
                    ran=ran,
                    error=error,
                    next_run_at=next_run_at,
                )
        except Exception:
            log.exception("could not record the status of job %s", job_id)


class ElectedScheduler:
    """An APScheduler 3 scheduler that runs only while this worker leads.

    Add jobs to `scheduler` as usual, then start(). While another worker leads, this one stands
    by with its jobs added but not running. On election the scheduler starts (a job whose run
    time passed while standing by runs at once rather than being reported missed); when
    leadership is lost it shuts down at once, cancelling the jobs in flight, and keeps its jobs
    for the next term. Every run is recorded in job_status.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, owner: str, retry_s: float, check_s: float
    ) -> None:
        if not isinstance(pool.conninfo, str):
            raise TypeError("the election connects like the pool: give the pool a conninfo string")
        # A busy machine may start a job a little late: run it then (once), never skip it.
        self.scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "misfire_grace_time": None}
        )
        self.status = JobStatusRecorder(pool, owner=owner)
        logging.getLogger(_JOB_ERRORS_LOG).addFilter(_CANCELLED_JOBS)  # once: filters are a set
        self.election = LeaderElection(
            pool.conninfo,
            owner=owner,
            on_elected=self._lead,
            on_lost=self._stand_by,
            retry_s=retry_s,
            check_s=check_s,
        )
        self._listening = False

    @property
    def leading(self) -> bool:
        """Whether this worker's scheduler is the active one."""
        return self.election.leading

    async def start(self) -> None:
        """Compete for leadership in the background."""
        await self.election.start()

    async def stop(self) -> None:
        """Stand down (if leading) and stop competing."""
        await self.election.stop()
        await self.status.drain()

    async def _lead(self) -> None:
        now = datetime.now(UTC)
        for job in self.scheduler.get_jobs():
            due = getattr(job, "next_run_time", None)
            if due is not None and due < now:
                job.modify(next_run_time=now)
        if not self._listening:
            self.status.attach(self.scheduler)
            self._listening = True
        self.scheduler.start()
        try:
            await self.status.record_schedule()
        except Exception:
            # Only the status page is behind; the jobs run regardless.
            log.exception("could not record the schedule in job_status")

    async def _stand_by(self) -> None:
        if self.scheduler.state == STATE_STOPPED:
            return
        # Pausing stops new runs at once; shutting down cancels the coroutine jobs in flight and
        # empties the job store, but AsyncIOScheduler does it in a loop callback: let it run.
        self.scheduler.pause()
        jobs = self.scheduler.get_jobs()
        self.scheduler.shutdown(wait=False)
        for _ in range(1000):
            if not self.scheduler.running:
                break
            await asyncio.sleep(0)
        for job in jobs:
            self.scheduler.add_job(
                job.func,
                job.trigger,
                args=job.args,
                kwargs=job.kwargs,
                id=job.id,
                name=job.name,
                misfire_grace_time=job.misfire_grace_time,
                coalesce=job.coalesce,
                max_instances=job.max_instances,
                executor=job.executor,
                next_run_time=job.next_run_time,
            )
