"""Exactly one active scheduler across workers, over real PostgreSQL sessions and processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from psycopg_pool import AsyncConnectionPool

import ingest.leader
from core.settings import Settings
from envlink.runtime import Worker
from ingest.leader import ElectedScheduler, LeaderElection
from store.listen import Listener
from store.scheduler import WORKER_SCHEDULER, JobStatus, current_leader, job_statuses
from tests.conftest import CONFIG_DIR, ROOT

RETRY_S = 0.3
CHECK_S = 0.2


async def _until(condition: Callable[[], bool], *, limit_s: float, what: str) -> float:
    """Poll until `condition` holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"not within {limit_s} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _terminate_leader(pool: AsyncConnectionPool) -> str:
    async with pool.connection() as conn:
        leader = await current_leader(conn, name=WORKER_SCHEDULER)
        assert leader is not None
        await conn.execute("SELECT pg_terminate_backend(%s)", [leader.backend_pid])
    return leader.owner


async def _jobs(pool: AsyncConnectionPool) -> dict[str, JobStatus]:
    async with pool.connection() as conn:
        return {j.job_id: j for j in await job_statuses(conn)}


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"leader_retry_s": RETRY_S, "leader_check_s": CHECK_S, "hj212_enabled": False}
    )


@pytest.fixture
async def workers(
    db: AsyncConnectionPool, worker_settings: Settings
) -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        await worker.stop()


async def _start(
    workers: list[Worker],
    pool: AsyncConnectionPool,
    listener: Listener,
    settings: Settings,
    name: str,
    runs: list[tuple[str, str, float]],
) -> Worker:
    """A real Worker named `name`, with two probe jobs that log (job, worker, time) to `runs`."""
    worker = Worker(pool, listener, settings, simulate=False, name=name)
    await worker.start()
    workers.append(worker)

    async def probe(job: str) -> None:
        runs.append((job, name, time.monotonic()))

    # No misfire grace: a run delayed by a busy test machine still runs and is counted.
    worker.scheduler.add_job(
        probe,
        "interval",
        seconds=0.05,
        id="probe",
        args=["probe"],
        misfire_grace_time=None,
        coalesce=True,
    )
    # Due at once: the leader runs it now, a stand-by when it takes over.
    worker.scheduler.add_job(
        probe,
        "interval",
        hours=1,
        id="once",
        args=["once"],
        next_run_time=datetime.now(UTC),
        misfire_grace_time=None,
    )
    return worker


async def test_a_stop_that_comes_as_the_lock_check_completes_still_stops(
    db: AsyncConnectionPool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader's periodic lock check completing in the very step its task is cancelled (a
    worker told to stop): the cancellation ends the watch. Python 3.11's asyncio.wait_for lost
    it there, and a demo's Ctrl-C hung now and then on a busy machine."""
    events: list[str] = []

    async def elected() -> None:
        events.append("elected")

    async def lost() -> None:
        events.append("lost")

    election = LeaderElection(
        database_url, owner="w1", on_elected=elected, on_lost=lost, retry_s=RETRY_S,
        check_s=CHECK_S, name="test-stop-race", key=424242,
    )  # fmt: skip
    real_check = ingest.leader.holds_lock
    checks: list[bool] = []

    async def check_then_cancel(conn: object, *, key: int) -> bool:
        held = await real_check(conn, key=key)  # type: ignore[arg-type]
        checks.append(held)
        if len(checks) == 2:  # the stop comes as the second check returns
            assert election._task is not None
            election._task.cancel()
        return held

    monkeypatch.setattr(ingest.leader, "holds_lock", check_then_cancel)
    await election.start()
    assert election._task is not None
    ended, _ = await asyncio.wait({election._task}, timeout=10 * CHECK_S)
    await election.stop()
    assert ended, "the cancelled election kept watching"
    assert (checks, events) == ([True, True], ["elected", "lost"])
    assert election._task is None and not election.leading


async def test_one_leader_runs_the_jobs_and_a_stand_by_takes_over(
    db: AsyncConnectionPool, listener: Listener, worker_settings: Settings, workers: list[Worker]
) -> None:
    runs: list[tuple[str, str, float]] = []
    a = await _start(workers, db, listener, worker_settings, "worker-a", runs)
    await _until(lambda: a.elected.leading, limit_s=5, what="worker-a elected")
    b = await _start(workers, db, listener, worker_settings, "worker-b", runs)
    await asyncio.sleep(4 * RETRY_S)
    assert (a.elected.leading, b.elected.leading) == (True, False)
    assert {who for _, who, _ in runs} == {"worker-a"}
    assert [job for job, _, _ in runs].count("once") == 1

    assert await _terminate_leader(db) == "worker-a"
    stood_down = await _until(lambda: not a.elected.leading, limit_s=2, what="a stands down")
    # Until it notices, the old leader may still run a job: the guarantee starts from here.
    lost_at = time.monotonic()
    taken_over = await _until(lambda: b.elected.leading, limit_s=5, what="b takes over")
    # The old leader notices its dead session at once; the stand-by's next attempt wins.
    assert stood_down < 2.0
    assert taken_over < RETRY_S + 3.0
    assert [who for _, who, at in runs if at > lost_at] == ["worker-b"] * len(
        [1 for _, _, at in runs if at > lost_at]
    )
    await asyncio.sleep(4 * RETRY_S)  # worker-a competes again after its back-off, and loses
    assert (a.elected.leading, b.elected.leading) == (False, True)
    a_runs = [at for _, who, at in runs if who == "worker-a"]
    b_runs = [at for _, who, at in runs if who == "worker-b"]
    assert max(a_runs) < min(b_runs)  # never both at once
    assert len(b_runs) > 0
    # The job due while worker-b stood by ran once as it took over, not reported missed.
    assert [(job, who) for job, who, _ in runs if job == "once"] == [
        ("once", "worker-a"),
        ("once", "worker-b"),
    ]

    async with db.connection() as conn:
        leader = await current_leader(conn, name=WORKER_SCHEDULER)
    assert leader is not None and leader.owner == "worker-b"
    for worker in workers:
        await worker.stop()
    workers.clear()
    async with db.connection() as conn:
        assert await current_leader(conn, name=WORKER_SCHEDULER) is None
    jobs = await _jobs(db)
    probe_runs = [who for job, who, _ in runs if job == "probe"]
    assert (jobs["probe"].owner, jobs["probe"].runs, jobs["probe"].failures) == (
        "worker-b",
        len(probe_runs),
        0,
    )
    assert (jobs["once"].runs, jobs["once"].failures, jobs["once"].last_error) == (2, 0, None)
    assert jobs["partitions"].owner == "worker-b"
    assert jobs["partitions"].next_run_at is not None


async def test_a_failing_job_keeps_its_error_and_the_next_run(
    db: AsyncConnectionPool,
) -> None:
    elected = ElectedScheduler(db, owner="solo", retry_s=RETRY_S, check_s=CHECK_S)
    attempts: list[int] = []

    async def failing() -> None:
        attempts.append(1)
        raise ValueError("feed answered 503 three times")

    elected.scheduler.add_job(
        failing, "interval", seconds=0.05, id="pull", misfire_grace_time=None, coalesce=True
    )
    await elected.start()
    try:
        await _until(lambda: len(attempts) >= 3, limit_s=5, what="three failed runs")
    finally:
        await elected.stop()
    jobs = await _jobs(db)
    pull = jobs["pull"]
    assert (pull.owner, pull.runs, pull.failures) == ("solo", len(attempts), len(attempts))
    assert pull.last_error == "ValueError: feed answered 503 three times"
    assert pull.last_success_at is None
    assert pull.last_run_at == pull.last_error_at
    assert pull.next_run_at is not None and pull.next_run_at > pull.last_run_at  # type: ignore[operator]


def _worker_process(database_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENVLINK_DATABASE_URL": database_url,
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_LEADER_RETRY_S": "0.5",
        "ENVLINK_LEADER_CHECK_S": "0.5",
        "ENVLINK_HJ212_ENABLED": "false",
        "ENVLINK_LOG_LEVEL": "INFO",
    }
    env.pop("ENVLINK_MQTT_HOST", None)
    return subprocess.Popen(
        [sys.executable, "-m", "envlink.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _leader_owner(pool: AsyncConnectionPool) -> str | None:
    async with pool.connection() as conn:
        leader = await current_leader(conn, name=WORKER_SCHEDULER)
    return leader.owner if leader else None


async def _poll_leader(pool: AsyncConnectionPool, pid: int, *, limit_s: float) -> float:
    started = time.monotonic()
    while (owner := await _leader_owner(pool)) is None or not owner.endswith(f":{pid}"):
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"process {pid} did not lead within {limit_s} s (leader {owner})")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _poll_standing_by(pool: AsyncConnectionPool, pid: int, *, limit_s: float) -> None:
    """Wait until process `pid` has its election connection open (it is competing)."""
    started = time.monotonic()
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                [f"envlink worker election %:{pid}"],
            )
            row = await cur.fetchone()
        if row is not None and row[0] == 1:
            return
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"process {pid} never connected to compete")
        await asyncio.sleep(0.05)


async def test_two_worker_processes_and_the_leader_killed(
    db: AsyncConnectionPool, database_url: str
) -> None:
    first = _worker_process(database_url)
    second: subprocess.Popen[bytes] | None = None
    try:
        await _poll_leader(db, first.pid, limit_s=30)
        second = _worker_process(database_url)
        await _poll_standing_by(db, second.pid, limit_s=30)
        assert (await _leader_owner(db) or "").endswith(f":{first.pid}")
        first.send_signal(signal.SIGKILL)
        took = await _poll_leader(db, second.pid, limit_s=10)
        # One retry interval (0.5 s) plus the server noticing the dead socket, with room for a
        # busy machine; without a takeover _poll_leader would have failed at its limit.
        assert took < 3.0
        # The new leader registers its jobs right after it is elected, not in the same instant.
        owner = ""
        for _ in range(100):
            owner = (await _jobs(db))["partitions"].owner or ""
            if owner.endswith(f":{second.pid}"):
                break
            await asyncio.sleep(0.05)
        assert owner.endswith(f":{second.pid}")
        assert second.poll() is None
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
            if process is not None:
                process.wait(timeout=10)
                if process.stderr is not None:
                    process.stderr.close()
