"""The scheduler's leader election (a session advisory lock) and the status of its jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from store.coordination import SCHEDULER_LOCK
from store.pool import Conn

# The scheduler every `envlink worker` competes to run.
WORKER_SCHEDULER = "worker"

# A session advisory lock on a bigint key shows in pg_locks as classid = high 32 bits,
# objid = low 32 bits, objsubid = 1, in the current database.
_HOLDS = """
SELECT 1 FROM pg_locks k
WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
  AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND k.classid = (%(key)s::bigint >> 32)::oid AND k.objid = (%(key)s::bigint & 4294967295)::oid
"""


async def try_lock(conn: Conn, *, key: int = SCHEDULER_LOCK) -> bool:
    """Take the session advisory lock `key` if nobody holds it; never waits."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [key])
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0])


async def release_lock(conn: Conn, *, key: int = SCHEDULER_LOCK) -> None:
    """Give up the session advisory lock `key` now rather than when the session ends."""
    await conn.execute("SELECT pg_advisory_unlock(%s)", [key])


async def holds_lock(conn: Conn, *, key: int = SCHEDULER_LOCK) -> bool:
    """Whether this session still holds the lock `key` (a heartbeat that proves something)."""
    cur = await conn.execute(
        ("SELECT EXISTS (" + _HOLDS + " AND k.pid = pg_backend_pid())").encode(), {"key": key}
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0])


async def record_leader(conn: Conn, *, name: str, owner: str, at: datetime) -> None:
    """Name this session's owner as the elected leader of scheduler `name`."""
    await conn.execute(
        "INSERT INTO scheduler_leader (name, owner, backend_pid, elected_at)"
        " VALUES (%s, %s, pg_backend_pid(), %s)"
        " ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner,"
        " backend_pid = EXCLUDED.backend_pid, elected_at = EXCLUDED.elected_at",
        [name, owner, at],
    )


@dataclass(frozen=True, slots=True)
class Leader:
    name: str
    owner: str
    backend_pid: int
    elected_at: datetime


async def current_leader(conn: Conn, *, name: str, key: int = SCHEDULER_LOCK) -> Leader | None:
    """The live leader of scheduler `name`: its row counts only while its session holds the lock."""
    async with conn.cursor(row_factory=class_row(Leader)) as cur:
        await cur.execute(
            (
                "SELECT l.name, l.owner, l.backend_pid, l.elected_at FROM scheduler_leader l"
                " WHERE l.name = %(name)s AND EXISTS (" + _HOLDS + " AND k.pid = l.backend_pid)"
            ).encode(),
            {"name": name, "key": key},
        )
        return await cur.fetchone()


async def record_job_scheduled(
    conn: Conn, *, job_id: str, owner: str, next_run_at: datetime | None
) -> None:
    """Note that `owner` now schedules the job and when it runs next."""
    await conn.execute(
        "INSERT INTO job_status (job_id, owner, next_run_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (job_id) DO UPDATE SET owner = EXCLUDED.owner,"
        " next_run_at = EXCLUDED.next_run_at",
        [job_id, owner, next_run_at],
    )


async def record_job_run(
    conn: Conn,
    *,
    job_id: str,
    owner: str,
    at: datetime,
    ran: bool,
    error: str | None,
    next_run_at: datetime | None,
) -> None:
    """Record a job's run (`ran`; `error` None for success) or a missed run (not `ran`)."""
    await conn.execute(
        "INSERT INTO job_status AS j (job_id, owner, runs, failures, last_run_at,"
        " last_success_at, last_error_at, last_error, next_run_at)"
        " VALUES (%(job)s, %(owner)s, %(runs)s, %(failures)s, %(last_run)s, %(success)s,"
        " %(error_at)s, %(error)s, %(next)s)"
        " ON CONFLICT (job_id) DO UPDATE SET owner = EXCLUDED.owner,"
        " runs = j.runs + EXCLUDED.runs, failures = j.failures + EXCLUDED.failures,"
        " last_run_at = coalesce(EXCLUDED.last_run_at, j.last_run_at),"
        " last_success_at = coalesce(EXCLUDED.last_success_at, j.last_success_at),"
        " last_error_at = coalesce(EXCLUDED.last_error_at, j.last_error_at),"
        " last_error = coalesce(EXCLUDED.last_error, j.last_error),"
        " next_run_at = EXCLUDED.next_run_at",
        {
            "job": job_id,
            "owner": owner,
            "runs": int(ran),
            "failures": int(ran and error is not None),
            "last_run": at if ran else None,
            "success": at if ran and error is None else None,
            "error_at": at if error is not None else None,
            "error": error[:2000] if error is not None else None,
            "next": next_run_at,
        },
    )


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    owner: str | None
    runs: int
    failures: int
    last_run_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    next_run_at: datetime | None


async def job_statuses(conn: Conn) -> list[JobStatus]:
    """Every scheduled job's last run, success, error and next run, by job id."""
    async with conn.cursor(row_factory=class_row(JobStatus)) as cur:
        await cur.execute(
            "SELECT job_id, owner, runs, failures, last_run_at, last_success_at, last_error_at,"
            " last_error, next_run_at FROM job_status ORDER BY job_id"
        )
        return await cur.fetchall()
