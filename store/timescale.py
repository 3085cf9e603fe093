"""TimescaleDB: whether a database uses it, and `reading` as a compressed hypertable on it.

The migrations are the same SQL on every server and create `reading` range-partitioned by
month. Where TimescaleDB is used, `reading` is then laid out again as a hypertable: a
partitioned table cannot become one in place, so a new hypertable takes its structure (LIKE
... INCLUDING ALL), its rows are copied partition by partition, the counts are checked and
only then is the old table dropped and the new one renamed — all in one transaction, so a
failure leaves the old table as it was. In a new database there is nothing to copy and
migrate() does it by itself; an existing database with readings is moved only when asked
(`envlink migrate --to-timescaledb`), because copying a large table takes a while and writers
wait for it. The SQL that reads and writes readings is the same on both layouts.

Compression segments by series (station, parameter, period) and orders by time, so a late
reading decompresses one short segment; DML on compressed chunks can decompress any number of
rows in this database (TimescaleDB's default stops a transaction at 100,000), so a large late
batch is stored rather than refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from core.errors import TimescaleDbUnavailable
from core.settings import Settings, TimescaleMode
from store.partitions import list_partitions
from store.pool import Conn

log = logging.getLogger(__name__)

SEGMENT_BY = ("station_id", "parameter_id", "period_s")
ORDER_BY = "time"
# The new hypertable's name while the old table still holds the readings.
_MOVING = "reading_move"

# (rows copied so far, rows to copy)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TimescaleOptions:
    """ENVLINK_TIMESCALEDB and the hypertable's chunk span and compression age."""

    mode: TimescaleMode = "auto"
    chunk_days: int = 7
    compress_after_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> TimescaleOptions:
        return cls(
            mode=settings.timescaledb,
            chunk_days=settings.timescaledb_chunk_days,
            compress_after_days=settings.timescaledb_compress_after_days,
        )


@dataclass(frozen=True)
class ReadingLayout:
    """How `reading` is stored in a database."""

    timescaledb: str | None  # the extension's version in this database, if installed
    hypertable: bool
    chunk_interval: timedelta | None
    compress_after: timedelta | None

    def describe(self) -> str:
        if not self.hypertable:
            using = f", TimescaleDB {self.timescaledb} unused" if self.timescaledb else ""
            return f"reading: monthly partitions (plain PostgreSQL{using})"
        chunks = f"chunks of {_days(self.chunk_interval)}"
        compressed = (
            f"compressed after {_days(self.compress_after)}"
            if self.compress_after
            else "no compression policy"
        )
        return f"reading: hypertable (TimescaleDB {self.timescaledb}; {chunks}, {compressed})"


def _days(span: timedelta | None) -> str:
    if span is None:
        return "?"
    days = span / timedelta(days=1)
    return f"{days:g} day{'s' if days != 1 else ''}"


async def extension_version(conn: Conn) -> str | None:
    """The TimescaleDB version installed in this database, or None."""
    cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def server_offers_timescaledb(conn: Conn) -> bool:
    """Whether the server has TimescaleDB installed and preloaded, so a database can use it."""
    cur = await conn.execute(
        "SELECT current_setting('shared_preload_libraries'),"
        " EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb')"
    )
    row = await cur.fetchone()
    assert row is not None
    preloaded, available = row
    # Entries may be quoted or carry a path: '$libdir/timescaledb'.
    names = {entry.strip().strip('"').rsplit("/", 1)[-1] for entry in preloaded.split(",")}
    return bool(available) and "timescaledb" in names


async def is_hypertable(conn: Conn) -> bool:
    """Whether `reading` is a TimescaleDB hypertable (else it has monthly partitions)."""
    if await extension_version(conn) is None:
        return False
    cur = await conn.execute(
        "SELECT EXISTS (SELECT FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = 'reading')"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def require_hypertable(conn: Conn) -> None:
    """Refuse to run on readings that are not in a hypertable (ENVLINK_TIMESCALEDB=required)."""
    if not await is_hypertable(conn):
        raise TimescaleDbUnavailable(
            "ENVLINK_TIMESCALEDB=required, but readings are not in a TimescaleDB hypertable:"
            " run `envlink migrate` (a new database, on a server that preloads TimescaleDB) or"
            " `envlink migrate --to-timescaledb` (one that holds readings)"
        )


async def chunk_ranges(conn: Conn) -> list[tuple[datetime, datetime]]:
    """[start, end) of each chunk of the `reading` hypertable, in order."""
    cur = await conn.execute(
        "SELECT range_start, range_end FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = 'reading'"
        " ORDER BY range_start"
    )
    return [(start, end) for start, end in await cur.fetchall()]


async def reading_layout(conn: Conn) -> ReadingLayout:
    """The extension's version, and whether and how `reading` is a hypertable."""
    version = await extension_version(conn)
    if not await is_hypertable(conn):
        return ReadingLayout(version, False, None, None)
    cur = await conn.execute(
        "SELECT (SELECT time_interval FROM timescaledb_information.dimensions"
        "        WHERE hypertable_schema = current_schema() AND hypertable_name = 'reading'"
        "        AND dimension_number = 1),"
        " (SELECT (config->>'compress_after')::interval FROM timescaledb_information.jobs"
        "  WHERE proc_name = 'policy_compression' AND hypertable_schema = current_schema()"
        "  AND hypertable_name = 'reading')"
    )
    row = await cur.fetchone()
    assert row is not None
    return ReadingLayout(version, True, row[0], row[1])


async def enable(conn: Conn, mode: TimescaleMode) -> bool:
    """Install the extension in this database as `mode` says; whether the database uses it."""
    if mode == "off":
        return False
    if await extension_version(conn) is not None:
        return True
    if not await server_offers_timescaledb(conn):
        if mode == "required":
            raise TimescaleDbUnavailable(
                "ENVLINK_TIMESCALEDB=required, but this PostgreSQL server does not offer"
                " TimescaleDB (it must be installed and in shared_preload_libraries); use a"
                " server that preloads it, or set ENVLINK_TIMESCALEDB=auto"
            )
        return False
    try:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        if mode == "required":
            raise TimescaleDbUnavailable(
                f"ENVLINK_TIMESCALEDB=required, but CREATE EXTENSION timescaledb failed: {exc}"
            ) from exc
        log.warning("TimescaleDB not used: CREATE EXTENSION timescaledb failed: %s", exc)
        return False
    log.info("TimescaleDB %s installed in this database", await extension_version(conn))
    return True


async def adopt(conn: Conn, options: TimescaleOptions) -> None:
    """Lay `reading` out as a hypertable if it holds no rows yet, and configure it (after enable).

    A `reading` with rows stays partitioned (auto) or is refused (required) until
    `envlink migrate --to-timescaledb` moves it. Needs autocommit; holds the migration lock.
    """
    if not await is_hypertable(conn):
        cur = await conn.execute("SELECT EXISTS (SELECT FROM reading)")
        row = await cur.fetchone()
        if row and row[0]:
            message = (
                "reading holds rows in monthly partitions; `envlink migrate --to-timescaledb`"
                " moves them onto a TimescaleDB hypertable"
            )
            if options.mode == "required":
                raise TimescaleDbUnavailable(f"ENVLINK_TIMESCALEDB=required, but {message}")
            log.warning("TimescaleDB is available, but %s", message)
            return
        async with conn.transaction():
            await move_readings(conn, options)
    async with conn.transaction():
        await configure(conn, options)


@dataclass(frozen=True)
class MoveReport:
    """What `envlink migrate --to-timescaledb` did."""

    moved: int  # rows copied into the hypertable
    already: bool  # `reading` was a hypertable before: nothing to move


async def prepare_move(conn: Conn, options: TimescaleOptions) -> None:
    """Install the extension for `--to-timescaledb`, or refuse: settings or server say no."""
    if options.mode == "off":
        raise TimescaleDbUnavailable(
            "ENVLINK_TIMESCALEDB=off: unset it (auto) or set it to required to move onto"
            " TimescaleDB; nothing was changed"
        )
    if await extension_version(conn) is None and not await server_offers_timescaledb(conn):
        raise TimescaleDbUnavailable(
            "this PostgreSQL server does not offer TimescaleDB (it must be installed and in"
            " shared_preload_libraries); nothing was changed"
        )
    await enable(conn, "required")


async def move_to_timescaledb(
    conn: Conn, options: TimescaleOptions, progress: Progress | None = None
) -> MoveReport:
    """Move a partitioned `reading` with its rows onto a hypertable (after prepare_move).

    Needs autocommit (the move is one transaction of its own); holds the migration lock.
    """
    already = await is_hypertable(conn)
    moved = 0
    if not already:
        async with conn.transaction():
            moved = await move_readings(conn, options, progress)
    async with conn.transaction():
        await configure(conn, options)
    return MoveReport(moved=moved, already=already)


async def move_readings(
    conn: Conn, options: TimescaleOptions, progress: Progress | None = None
) -> int:
    """Copy the partitioned `reading` into a new hypertable that takes its place; rows moved.

    Run it in a transaction: writers of readings wait for it (readers do not until the last
    moment, when the old table is dropped).
    """
    await conn.execute("LOCK TABLE reading IN EXCLUSIVE MODE")
    total = await _count(conn, "reading")
    indexes = await _index_names(conn, "reading")
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in await _columns(conn, "reading"))
    await conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE reading INCLUDING ALL)").format(sql.Identifier(_MOVING))
    )
    # No extra index on time: every query names a series, which the primary key leads with.
    await conn.execute(
        "SELECT create_hypertable(%s::regclass, by_range('time', %s::interval),"
        " create_default_indexes => false)",
        [_MOVING, timedelta(days=options.chunk_days)],
    )
    moved = 0
    if progress:
        progress(moved, total)
    for partition in await list_partitions(conn):
        cur = await conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                sql.Identifier(_MOVING), columns, columns, sql.Identifier(partition)
            )
        )
        moved += cur.rowcount
        if progress:
            progress(moved, total)
    copied = await _count(conn, _MOVING)
    if not moved == copied == total:
        raise RuntimeError(
            f"moving readings: {total} rows in reading, {moved} copied, {copied} in the"
            " hypertable; nothing was changed"
        )
    await conn.execute("DROP TABLE reading")
    await conn.execute(sql.SQL("ALTER TABLE {} RENAME TO reading").format(sql.Identifier(_MOVING)))
    for shape, name in (await _index_names(conn, "reading")).items():
        if shape in indexes and indexes[shape] != name:
            await conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(indexes[shape])
                )
            )
    await conn.execute("ANALYZE reading")
    return moved


async def configure(conn: Conn, options: TimescaleOptions) -> None:
    """Set the hypertable's chunk span, compression and compression policy as `options` say."""
    await conn.execute(
        "SELECT set_chunk_time_interval('reading', %s::interval)",
        [timedelta(days=options.chunk_days)],
    )
    cur = await conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = 'reading'"
    )
    row = await cur.fetchone()
    if not (row and row[0]):
        await conn.execute(
            sql.SQL(
                "ALTER TABLE reading SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = {}, timescaledb.compress_orderby = {})"
            ).format(sql.Literal(", ".join(SEGMENT_BY)), sql.Literal(ORDER_BY))
        )
    compress_after = timedelta(days=options.compress_after_days)
    layout = await reading_layout(conn)
    if layout.compress_after != compress_after:
        if layout.compress_after is not None:
            await conn.execute("SELECT remove_compression_policy('reading')")
        await conn.execute(
            "SELECT add_compression_policy('reading', %s::interval)", [compress_after]
        )
    # ALTER DATABASE takes no bound values; the name is quoted as an identifier.
    cur = await conn.execute("SELECT current_database()")
    row = await cur.fetchone()
    assert row is not None
    try:
        async with conn.transaction():
            await conn.execute(
                sql.SQL(
                    "ALTER DATABASE {} SET"
                    " timescaledb.max_tuples_decompressed_per_dml_transaction = 0"
                ).format(sql.Identifier(row[0]))
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning(
            "a late batch whose revisions decompress over 100,000 compressed readings will be"
            " refused: %s (the database's owner can run ALTER DATABASE %s SET"
            " timescaledb.max_tuples_decompressed_per_dml_transaction = 0)",
            exc,
            row[0],
        )


async def _count(conn: Conn, table: str) -> int:
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _columns(conn: Conn, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [row[0] for row in await cur.fetchall()]


async def _index_names(conn: Conn, table: str) -> dict[str, str]:
    """The table's indexes by shape (uniqueness, method, columns, predicate): name."""
    cur = await conn.execute(
        "SELECT x.indisunique::text || regexp_replace(pg_get_indexdef(x.indexrelid), '^.*? USING ',"
        " ' '), i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = %s::regclass",
        [table],
    )
    return {shape: name for shape, name in await cur.fetchall()}
