"""One async connection pool per process, opened at start-up, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.errors import DatabaseUnavailable

Conn = psycopg.AsyncConnection[TupleRow]


# A connection attempt that keeps failing is given up after this long, freeing its place in the
# pool; psycopg_pool's own default (5 minutes, backing off to a minute and more between tries)
# would leave the pool waiting long after the database is back. Its tries come 1 s, 2 s, 4 s …
# apart until then, and a new one starts only once the last has given up (at the next request
# for a connection, or when the process's listener reconnects and checks the pool): 2 s keeps
# every gap between tries at about a second, so work resumes within a couple of seconds of the
# database's return.
RECONNECT_TIMEOUT_S = 2.0


@asynccontextmanager
async def alone(conn: Conn) -> AsyncIterator[Conn]:
    """`conn` for one statement that is a transaction by itself: run outside a transaction if
    the connection is in none (a pooled connection sends BEGIN before a statement and COMMIT
    after it, two round trips more than the statement's own), else in the caller's.

    Back in a transaction's mode afterwards, unless the statement left the connection busy or
    broken (cancelled, say): the pool discards such a connection when it is given back.
    """
    if conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        yield conn
        return
    await conn.set_autocommit(True)
    try:
        yield conn
    finally:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(False)


async def open_pool(
    url: str, *, name: str, min_size: int = 1, max_size: int = 10, timeout_s: float = 30.0
) -> AsyncConnectionPool:
    """Open a pool and wait until its first connection works, or say why it could not.

    `timeout_s` bounds every wait for a connection (PoolTimeout after it); the connections show
    in pg_stat_activity as application "envlink <name>".
    """
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        timeout=timeout_s,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        kwargs={"application_name": f"envlink {name}"},
    )
    try:
        await pool.open(wait=True, timeout=15)
    except Exception as exc:
        await pool.close()
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    return pool


async def connect(url: str, *, autocommit: bool = True) -> Conn:
    """One connection outside the pool (migrations, CLI commands)."""
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc


async def dedicated_connection(
    url: str, *, application_name: str, connect_timeout: int = 10
) -> Conn:
    """A long-lived autocommit connection of its own (a lock holder, a listener), with keepalives.

    Keepalives make a dead network path end the session on both sides, so the server releases
    what the session held and this side notices, instead of both waiting on a silent socket.
    """
    try:
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            application_name=application_name[:63],
            connect_timeout=connect_timeout,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc


def redact(url: str) -> str:
    """A URL fit for logs: the password replaced by ***."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    if "password" in info:
        info["password"] = "***"
    shown = {key: str(value) for key, value in info.items() if value is not None}
    return psycopg.conninfo.make_conninfo("", **shown)


async def ping(conn: Conn) -> None:
    """Round-trip to the server (health checks)."""
    await conn.execute("SELECT 1")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or lost the connection.

    Such a failure is not the data's fault: retrying its items one by one would only wait for
    the pool's timeout once per item. A transaction the server rolled back (a deadlock, a
    serialization failure: OperationalErrors too) reached it: each item alone may well pass.
    """
    if _rolled_back(exc):
        return False
    return isinstance(exc, psycopg.OperationalError | PoolTimeout | OSError)


def transient(exc: BaseException) -> bool:
    """Whether the same work may succeed if simply tried again: the database was out of reach,
    or rolled the transaction back for another's sake (a deadlock, a serialization failure)."""
    return unreachable(exc) or _rolled_back(exc)


def _rolled_back(exc: BaseException) -> bool:
    """SQLSTATE class 40, transaction rollback (psycopg's DeadlockDetected and
    SerializationFailure do not derive from its TransactionRollback)."""
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40")
