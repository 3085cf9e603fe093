"""Readings: the idempotent bulk write path (docs/conventions.md §2) and the API's queries."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row

from schemas.common import QC, QC_BY_CODE
from store.arrays import (
    PG_EPOCH,
    PG_EPOCH_UNIX_US,
    Float8Array,
    Int2Array,
    Int4Array,
    TimeColumns,
    TimestamptzArray,
    fetch_records,
    micros,
    unix_time,
)
from store.coordination import READINGS_CHANNEL
from store.pool import Conn, alone

# Rows are sent in chunks: a chunk that meets an existing key falls back to the merge path,
# and once one has, the rest of the call goes straight there (a replay rarely stops half-way).
CHUNK = 50_000
# Within a chunk rows go to the server in key order: arrival order interleaves many series,
# sorted keys let consecutive index insertions (fresh path) and lookups (merge) fall on the same
# B-tree pages, a third to a half less server time in bench/ingest.py. They are encoded a block
# at a time, so the server takes one block while Python encodes the next. Below _FEW rows (an
# HJ 212 frame, say) numpy's set-up costs more than psycopg formatting row by row, and they are
# sorted in Python (_KEY). Key order also means two transactions with keys in common (a device
# re-sending a packet while its first send is still being stored) take their locks in the same
# order and wait for each other rather than deadlock. Across the chunks of one batch (over
# CHUNK rows: bulk imports) the order is the batch's; a deadlock there fails that batch alone,
# and its source sends it again.
_KEY = itemgetter(0, 1, 2, 3)
# Up to this many new readings go in one statement (store_new_readings); more by COPY, which
# costs the server less a row.
STORE_NEW_MAX = 5_000
_BLOCK = 8_192
_FEW = 100
_COPY_TYPES = ["int4", "int2", "int4", "timestamptz", "float8", "int2", "int2", "timestamptz"]


class ReadingRow(NamedTuple):
    """One checked reading ready to store (ids resolved, unit canonical, QC as its code)."""

    station_id: int
    parameter_id: int
    period_s: int
    time: datetime
    value: float | None
    qc: int


@dataclass
class WriteResult:
    """Positions (in the rows given) that were duplicates or revisions; the rest were accepted."""

    total: int
    duplicates: set[int] = field(default_factory=set)
    revisions: set[int] = field(default_factory=set)

    @property
    def accepted(self) -> int:
        return self.total - len(self.duplicates) - len(self.revisions)


async def write_readings(
    conn: Conn, rows: Sequence[ReadingRow], *, source_id: int, received_at: datetime
) -> WriteResult:
    """Store rows idempotently: fresh rows by COPY, the rest by one merge (duplicates, revisions).

    reading_latest is kept up to date with them. The caller owns the transaction (so the two
    commit together) and must have created the partitions the rows fall in.
    """
    result = WriteResult(total=len(rows))
    # Per chunk, each series' newest stored row: what reading_latest may have to take.
    newest: list[_Columns] = []
    merging = False
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        if not merging:
            try:
                async with conn.transaction():
                    newest.append(await _copy_fresh(conn, chunk, source_id, received_at))
                continue
            except psycopg.errors.UniqueViolation:
                merging = True
        newest.append(await _merge(conn, chunk, start, source_id, received_at, result))
    await _keep_latest(conn, _newest_of_all(newest))
    return result


# reading_latest keeps each series' newest row. ON CONFLICT waits for a concurrent writer of
# the same series and then judges its committed row: whichever commits last, the newest time
# stays. A revision of the current time (value or QC changed) replaces it; an older time never
# does. Rows go in sorted by series, so concurrent writers lock the rows of reading_latest in
# the same order and never deadlock on them.
_NEWER = """
ON CONFLICT (station_id, parameter_id, period_s) DO UPDATE
SET time = EXCLUDED.time, value = EXCLUDED.value, qc = EXCLUDED.qc
WHERE EXCLUDED.time > l.time
   OR (EXCLUDED.time = l.time AND (EXCLUDED.value, EXCLUDED.qc) IS DISTINCT FROM (l.value, l.qc))
"""
# The usual intake, new readings and nothing else, in one statement: the readings, each
# series' newest of them into reading_latest (_NEWER), the rollups' queue with the readings'
# values and its NOTIFY (as store.rollups.mark_dirty queues new readings), and the source's
# counters. Rows are locked in the order write_readings and its caller lock them (readings,
# reading_latest, the source's row), or an intake beside a merging one of the same series
# deadlocks: the order is set by what reads what, for PostgreSQL runs WITH statements that
# nothing reads last to first. reading_latest takes the stored rows (a sort: every reading is
# written before its first row); the source's row, which the main statement reads, waits for
# reading_latest's count; the queue, which locks nothing, goes last.
_STORE_NEW = f"""
WITH new AS (
    SELECT * FROM unnest(%(station)s::int4[], %(parameter)s::int2[], %(period)s::int4[],
                         %(time)s::timestamptz[], %(value)s::float8[], %(qc)s::int2[])
        AS new (station_id, parameter_id, period_s, time, value, qc)
), stored AS (
    INSERT INTO reading (station_id, parameter_id, period_s, time, value, qc, source_id,
                         received_at)
    SELECT *, %(source)s::int2, %(now)s FROM new
    RETURNING station_id, parameter_id, period_s, time, value, qc
), latest AS (
    INSERT INTO reading_latest AS l (station_id, parameter_id, period_s, time, value, qc)
    SELECT DISTINCT ON (station_id, parameter_id, period_s) * FROM stored
    ORDER BY station_id, parameter_id, period_s, time DESC
    {_NEWER}
    RETURNING 1
), counted AS (
    UPDATE source SET accepted = accepted + %(accepted)s, last_success_at = %(now)s
    WHERE id = %(source)s AND (SELECT count(*) FROM latest) >= 0
    RETURNING 1
), queued AS (
    INSERT INTO series_dirty (station_id, parameter_id, period_s, time, value, qc)
    SELECT * FROM new
)
SELECT pg_notify('{READINGS_CHANNEL}', '') FROM (SELECT count(*) FROM counted) AS done
"""


async def store_new_readings(
    conn: Conn, rows: Sequence[ReadingRow], *, source_id: int, received_at: datetime
) -> WriteResult:
    """Store an intake of rows none of which is stored yet, with everything that goes with
    them (reading_latest, the rollups' queue and its NOTIFY, the source's counters, as
    ingest.pipeline's full path writes them), in one statement and so in one round trip and a
    transaction of its own: the connection must not be in one.

    A key already stored, or twice in `rows`, fails it with UniqueViolation and nothing is
    written; write_readings sorts such rows out. The caller must have created the partitions
    the rows fall in.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("store_new_readings commits on its own: call it outside a transaction")
    columns = _Columns.of(rows)
    rows_in_order = columns.take(_key_order(columns))
    # Set back however the statement ends, for a pool hands its connections out again as they
    # came back; unless the connection is closed or still busy (a cancelled statement), which
    # the pool discards, and where setting it would raise over the statement's own exception.
    await conn.set_autocommit(True)
    try:
        await conn.execute(
            _STORE_NEW.encode(),
            {
                "station": Int4Array.of(rows_in_order.station_id),
                "parameter": Int2Array.of(rows_in_order.parameter_id),
                "period": Int4Array.of(rows_in_order.period_s),
                "time": TimestamptzArray.of(rows_in_order.time),
                "value": Float8Array.of(rows_in_order.value, rows_in_order.missing),
                "qc": Int2Array.of(rows_in_order.qc),
                "source": source_id,
                "now": received_at,
                "accepted": len(rows),
            },
        )
    finally:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(False)
    return WriteResult(total=len(rows))


# PostgreSQL's binary COPY: a signature, then per row a field count and (length, big-endian
# value) per field, length -1 for NULL; timestamptz is microseconds since 2000-01-01 UTC.
# Encoding whole columns with numpy costs a fraction of formatting row by row.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = b"\xff\xff"
_MICROSECOND = timedelta(microseconds=1)
_PG_EPOCH_S = int(PG_EPOCH.timestamp())

# A field of a binary COPY row: its big-endian numpy type and a column, or one value for all.
_Field = tuple[str, npt.NDArray[Any] | int]


@dataclass(frozen=True, slots=True)
class _Columns:
    """Rows as numpy columns of their COPY types (time in microseconds since PG_EPOCH)."""

    station_id: npt.NDArray[np.int32]
    parameter_id: npt.NDArray[np.int16]
    period_s: npt.NDArray[np.int32]
    time: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    missing: npt.NDArray[np.bool_]
    qc: npt.NDArray[np.int16]

    @classmethod
    def of(cls, rows: Sequence[ReadingRow]) -> _Columns:
        values = np.array([row.value for row in rows], dtype=np.float64)
        missing = np.zeros(len(rows), dtype=np.bool_)
        # numpy turns None into NaN: only those positions need a look at the Python value.
        candidates = np.flatnonzero(np.isnan(values))
        missing[candidates] = [rows[i].value is None for i in candidates.tolist()]
        return cls(
            station_id=np.array([row.station_id for row in rows], dtype=np.int32),
            parameter_id=np.array([row.parameter_id for row in rows], dtype=np.int16),
            period_s=np.array([row.period_s for row in rows], dtype=np.int32),
            time=np.array(micros([row.time for row in rows]), dtype=np.int64),
            value=values,
            missing=missing,
            qc=np.array([row.qc for row in rows], dtype=np.int16),
        )

    @classmethod
    def concat(cls, parts: Sequence[_Columns]) -> _Columns:
        names = [column.name for column in fields(cls)]
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in names))

    def __len__(self) -> int:
        return len(self.station_id)

    def take(self, index: slice | npt.NDArray[np.intp]) -> _Columns:
        return _Columns(
            self.station_id[index],
            self.parameter_id[index],
            self.period_s[index],
            self.time[index],
            self.value[index],
            self.missing[index],
            self.qc[index],
        )

    def fields(self) -> list[_Field]:
        """The six columns as binary COPY fields, in ReadingRow order."""
        return [
            (">i4", self.station_id),
            (">i2", self.parameter_id),
            (">i4", self.period_s),
            (">i8", self.time),
            (">f8", self.value),
            (">i2", self.qc),
        ]


def _tuples(fields: Sequence[_Field], missing: npt.NDArray[np.bool_], nullable: int) -> bytes:
    """Binary COPY rows of `fields`; field number `nullable` is NULL where `missing`."""
    if not missing.any():
        return _records(fields, len(missing), None, None)
    present = ~missing
    return _records(fields, int(present.sum()), present, None) + _records(
        fields, int(missing.sum()), missing, nullable
    )


def _records(
    fields: Sequence[_Field], count: int, where: npt.NDArray[np.bool_] | None, null: int | None
) -> bytes:
    layout = [("count", ">i2")]
    for number, (kind, _) in enumerate(fields):
        layout.append((f"length{number}", ">i4"))
        if number != null:
            layout.append((f"field{number}", kind))
    template = np.zeros((), dtype=layout)
    template["count"] = len(fields)
    for number, (kind, data) in enumerate(fields):
        template[f"length{number}"] = -1 if number == null else np.dtype(kind).itemsize
        if number != null and not isinstance(data, np.ndarray):
            template[f"field{number}"] = data
    records = np.full(count, template)
    for number, (_, data) in enumerate(fields):
        if number != null and isinstance(data, np.ndarray):
            records[f"field{number}"] = data if where is None else data[where]
    return records.tobytes()


async def _copy_fresh(
    conn: Conn, rows: Sequence[ReadingRow], source_id: int, received_at: datetime
) -> _Columns:
    """COPY rows none of which is stored yet; each series' newest row."""
    tail: list[_Field] = [(">i2", source_id), (">i8", micros([received_at])[0])]
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY reading (station_id, parameter_id, period_s, time, value, qc, source_id,"
            " received_at) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        if len(rows) < _FEW:
            copy.set_types(_COPY_TYPES)
            try:
                for row in sorted(rows, key=_KEY):
                    await copy.write_row((*row, source_id, received_at))
            except TypeError:
                micros([row.time for row in rows])  # names a time without an offset
                raise
            return _newest_rows(_Columns.of(rows))
        columns = _Columns.of(rows)
        order = _key_order(columns)
        await copy.write(_SIGNATURE)
        for start in range(0, len(rows), _BLOCK):
            block = columns.take(order[start : start + _BLOCK])
            await copy.write(_tuples([*block.fields(), *tail], block.missing, 4))
        await copy.write(_TRAILER)
    return _newest_rows(columns, order)


async def copy_new_readings(
    conn: Conn,
    *,
    station_id: npt.NDArray[np.int32],
    parameter_id: npt.NDArray[np.int16],
    period_s: int,
    time_s: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    qc: npt.NDArray[np.int16],
    source_id: int,
    received_at: datetime,
) -> int:
    """COPY readings none of which is stored yet, given as columns (times in seconds since
    the epoch, NaN for no value) in key order; the rows written.

    For bulk loads of a past that holds nothing yet: a stored key aborts the COPY (unique
    violation), and reading_latest is the caller's (keep_latest). The caller owns the
    transaction and must have created the partitions the rows fall in.
    """
    columns = _Columns(
        station_id=station_id.astype(np.int32),
        parameter_id=parameter_id.astype(np.int16),
        period_s=np.full(len(station_id), period_s, dtype=np.int32),
        time=(time_s.astype(np.int64) - _PG_EPOCH_S) * 1_000_000,
        value=value.astype(np.float64),
        missing=np.isnan(value),
        qc=qc.astype(np.int16),
    )
    tail: list[_Field] = [(">i2", source_id), (">i8", micros([received_at])[0])]
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY reading (station_id, parameter_id, period_s, time, value, qc, source_id,"
            " received_at) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        await copy.write(_SIGNATURE)
        for start in range(0, len(columns), _BLOCK):
            block = columns.take(slice(start, start + _BLOCK))
            await copy.write(_tuples([*block.fields(), *tail], block.missing, 4))
        await copy.write(_TRAILER)
    return len(columns)


_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS reading_stage (
    seq int NOT NULL, station_id int NOT NULL, parameter_id smallint NOT NULL,
    period_s int NOT NULL, time timestamptz NOT NULL, value double precision, qc smallint NOT NULL
) ON COMMIT DELETE ROWS
"""
# One statement sorts the staged keys (unique within a round) against `reading`. Exact
# duplicates are only read, never written or locked; so is the same value re-sent as `valid`
# after EnvLink's QC re-flagged it `suspect` (the audited re-flag stands against a replay).
# A key absent from the statement's snapshot is inserted with ON CONFLICT DO NOTHING, which
# waits for a concurrent writer of the same key, so a key is fresh for exactly one
# transaction. A changed key is updated only if the row still holds the value the snapshot saw
# (re-checked on the newest version), so each replaced value lands in reading_revision exactly
# once. Keys that lost either race are returned to be sorted again on a new snapshot. The time
# bounds let the planner skip partitions the round misses.
_MERGE = """
WITH pending AS (
    SELECT s.seq, s.station_id, s.parameter_id, s.period_s, s.time, s.value, s.qc,
           r.qc IS NOT NULL AS present, r.value AS old_value, r.qc AS old_qc,
           r.source_id AS old_source, r.received_at AS old_received_at
    FROM reading_stage s
    LEFT JOIN reading r
      ON r.station_id = s.station_id AND r.parameter_id = s.parameter_id
     AND r.period_s = s.period_s AND r.time = s.time
     AND r.time BETWEEN %(first)s AND %(last)s
    WHERE r.qc IS NULL OR r.value IS DISTINCT FROM s.value
       OR (r.qc <> s.qc AND NOT (r.qc = %(suspect)s AND s.qc = %(valid)s))
), fresh AS (
    INSERT INTO reading (station_id, parameter_id, period_s, time, value, qc, source_id,
                         received_at)
    SELECT station_id, parameter_id, period_s, time, value, qc, %(source)s, %(now)s
    FROM pending WHERE NOT present
    ON CONFLICT (station_id, parameter_id, period_s, time) DO NOTHING
    RETURNING station_id, parameter_id, period_s, time
), revised AS (
    UPDATE reading r SET value = p.value, qc = p.qc, source_id = %(source)s, received_at = %(now)s
    FROM pending p
    WHERE p.present AND r.station_id = p.station_id AND r.parameter_id = p.parameter_id
      AND r.period_s = p.period_s AND r.time = p.time AND r.time BETWEEN %(first)s AND %(last)s
      AND r.value IS NOT DISTINCT FROM p.old_value AND r.qc = p.old_qc
    RETURNING p.seq, p.station_id, p.parameter_id, p.period_s, p.time, p.old_value, p.old_qc,
              p.old_source, p.old_received_at
), kept AS (
    INSERT INTO reading_revision (station_id, parameter_id, period_s, time, value, qc, source_id,
                                  received_at, replaced_at, replaced_by)
    SELECT station_id, parameter_id, period_s, time, old_value, old_qc, old_source,
           old_received_at, %(now)s, %(source)s
    FROM revised
)
SELECT array(SELECT seq FROM pending WHERE NOT present) AS absent,
       array(SELECT p.seq FROM pending p
             JOIN fresh f ON f.station_id = p.station_id AND f.parameter_id = p.parameter_id
                         AND f.period_s = p.period_s AND f.time = p.time) AS inserted,
       array(SELECT seq FROM pending WHERE present) AS changed,
       array(SELECT seq FROM revised) AS revised
"""
# The merge probes staged keys one by one through the primary key, so its cost follows the
# batch, not the size of `reading`. Left alone, the planner (no statistics on a fresh stage)
# picks merge joins that read whole partitions in key order, or memoizes lookups of keys that
# never repeat, and JIT-compiles for longer than the statement runs. These are set for the
# merge only (SET LOCAL) and restored after it; the materialized CTE reads the old values
# before set_config changes them.
_PROBING_PLANS = """
WITH saved AS MATERIALIZED (
    SELECT current_setting('enable_mergejoin') AS mergejoin,
           current_setting('enable_memoize') AS memoize, current_setting('jit') AS jit
)
SELECT saved.mergejoin, saved.memoize, saved.jit, set_config('enable_mergejoin', 'off', true),
       set_config('enable_memoize', 'off', true), set_config('jit', 'off', true)
FROM saved
"""
_RESTORE_PLANS = """
SELECT set_config('enable_mergejoin', %s, true), set_config('enable_memoize', %s, true),
       set_config('jit', %s, true)
"""


@asynccontextmanager
async def _probing_plans(conn: Conn) -> AsyncIterator[None]:
    cur = await conn.execute(_PROBING_PLANS.encode())
    saved = await cur.fetchone()
    assert saved is not None
    try:
        yield
    finally:
        # After an error the transaction is dead and its settings die with it.
        if conn.info.transaction_status == TransactionStatus.INTRANS:
            await conn.execute(_RESTORE_PLANS.encode(), saved[:3])


async def _merge(
    conn: Conn,
    rows: Sequence[ReadingRow],
    offset: int,
    source_id: int,
    received_at: datetime,
    result: WriteResult,
) -> _Columns:
    """Merge rows into `reading`; each series' newest row that was stored."""
    columns = _Columns.of(rows)
    order = _key_order(columns)
    duplicates: set[int] = set()
    await conn.execute(_STAGE)
    async with _probing_plans(conn), conn.cursor() as cur:
        for positions in _rounds(columns, order):
            staged = columns.take(positions)
            seqs = (positions + offset).astype(np.int32)
            await cur.execute("TRUNCATE reading_stage")
            async with cur.copy(
                "COPY reading_stage (seq, station_id, parameter_id, period_s, time, value, qc)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                await copy.write(_SIGNATURE)
                for start in range(0, len(staged), _BLOCK):
                    block = staged.take(slice(start, start + _BLOCK))
                    fields = [(">i4", seqs[start : start + _BLOCK]), *block.fields()]
                    await copy.write(_tuples(fields, block.missing, 5))
                await copy.write(_TRAILER)
            params = {
                "source": source_id,
                "now": received_at,
                "first": PG_EPOCH + int(staged.time.min()) * _MICROSECOND,
                "last": PG_EPOCH + int(staged.time.max()) * _MICROSECOND,
                "suspect": QC.SUSPECT.code,
                "valid": QC.VALID.code,
            }
            pending = set(seqs.tolist())
            while pending:
                await cur.execute(_MERGE.encode(), params)
                answer = await cur.fetchone()
                assert answer is not None
                absent, inserted, changed, revised = (set(found) for found in answer)
                result.revisions |= revised
                duplicates |= pending - absent - changed
                pending = (absent - inserted) | (changed - revised)
                if pending:
                    await cur.execute(
                        "DELETE FROM reading_stage WHERE seq <> ALL(%s)", [sorted(pending)]
                    )
    result.duplicates |= duplicates
    stored = np.ones(len(rows), dtype=np.bool_)
    stored[np.fromiter(duplicates, dtype=np.intp, count=len(duplicates)) - offset] = False
    return _newest_rows(columns, order, stored)


def _rounds(columns: _Columns, order: npt.NDArray[np.intp]) -> list[npt.NDArray[np.intp]]:
    """Positions by round: each key's first occurrence, then its second, ...; in key order.

    A key repeated within the rows is applied in order, one round per occurrence, so the
    later value revises the earlier one exactly as if they had come in two batches. `order`
    is the rows' _key_order.
    """
    repeat = np.ones(max(len(columns) - 1, 0), dtype=np.bool_)
    for key in (columns.station_id, columns.parameter_id, columns.period_s, columns.time):
        ordered = key[order]
        repeat &= ordered[1:] == ordered[:-1]
    if not repeat.any():
        return [order]
    index = np.arange(len(columns))
    group_start = np.maximum.accumulate(np.where(np.concatenate(([False], repeat)), 0, index))
    occurrence = index - group_start
    return [order[occurrence == n] for n in range(int(occurrence.max()) + 1)]


def _key_order(columns: _Columns) -> npt.NDArray[np.intp]:
    """Positions sorted by key, a key's occurrences in their order (lexsort is stable)."""
    return np.lexsort((columns.time, columns.period_s, columns.parameter_id, columns.station_id))


def _newest(
    columns: _Columns, order: npt.NDArray[np.intp], stored: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.intp]:
    """Per series, the position of its newest row (of a repeated key, the last occurrence).

    `order` is the rows' _key_order; with `stored`, only the rows it marks count. The positions
    come in key order.
    """
    if stored is not None:
        order = order[stored[order]]
    if not len(order):
        return order
    last = np.zeros(len(order), dtype=np.bool_)
    last[-1] = True
    for key in (columns.station_id, columns.parameter_id, columns.period_s):
        ordered = key[order]
        last[:-1] |= ordered[1:] != ordered[:-1]
    return order[last]


def _newest_rows(
    columns: _Columns,
    order: npt.NDArray[np.intp] | None = None,
    stored: npt.NDArray[np.bool_] | None = None,
) -> _Columns:
    """Each series' newest stored row of a chunk, with its _key_order if known and its stored
    rows (all if None), in key order."""
    return columns.take(_newest(columns, _key_order(columns) if order is None else order, stored))


def _newest_of_all(chunks: Sequence[_Columns]) -> _Columns:
    """Each series' newest stored row over all chunks' newest rows, in key order."""
    if not chunks:
        return _Columns.of([])
    if len(chunks) == 1:
        return chunks[0]
    # A key stored by two chunks: the later one's row is what `reading` holds, and lexsort,
    # stable, puts it last.
    columns = _Columns.concat(chunks)
    return columns.take(_newest(columns, _key_order(columns)))


# Each series' newest row as stored, in key order (_NEWER).
_KEEP_LATEST = (
    """
INSERT INTO reading_latest AS l (station_id, parameter_id, period_s, time, value, qc)
SELECT * FROM unnest(%(station)s::int4[], %(parameter)s::int2[], %(period)s::int4[],
                     %(time)s::timestamptz[], %(value)s::float8[], %(qc)s::int2[])
ORDER BY 1, 2, 3
"""
    + _NEWER
)


async def keep_latest(conn: Conn, rows: Sequence[ReadingRow]) -> None:
    """Bring reading_latest up to `rows`, each series' newest row as stored."""
    await _keep_latest(conn, _Columns.of(rows))


async def _keep_latest(conn: Conn, rows: _Columns) -> None:
    if not len(rows):
        return
    await conn.execute(
        _KEEP_LATEST.encode(),
        {
            "station": Int4Array.of(rows.station_id),
            "parameter": Int2Array.of(rows.parameter_id),
            "period": Int4Array.of(rows.period_s),
            "time": TimestamptzArray.of(rows.time),
            "value": Float8Array.of(rows.value, rows.missing),
            "qc": Int2Array.of(rows.qc),
        },
    )


# A stored reading of one series as a page holds it: time, period_s, value, QC code.
PageRow = tuple[datetime, int, float | None, int]

# The bounds are written so that a generic plan (a statement prepared after a few runs) still
# prunes partitions and scans one index range: "(%(start)s IS NULL OR r.time >= %(start)s)" read
# every partition of the series, and "(%(period)s IS NULL OR r.period_s = %(period)s)" every
# period's rows of the range, a year of hourly means reading the real-time data of the same
# months too (31 ms against 3).
_PAGE_OF = (
    b"SELECT r.time, r.period_s, r.value, r.qc FROM reading r"
    b" WHERE r.station_id = %(station)s AND r.parameter_id = %(parameter)s"
)
_PAGE_RANGE = (
    b" AND r.time >= coalesce(%(start)s::timestamptz, '-infinity')"
    b" AND r.time < coalesce(%(end)s::timestamptz, 'infinity')"
)
_PAGE_AFTER = b" AND (r.time, r.period_s) > (%(after_time)s, %(after_period)s)"
_PAGE_ORDER = b" ORDER BY r.time, r.period_s LIMIT %(limit)s"


def _page(*, period: bool, after: bool) -> bytes:
    return (
        _PAGE_OF
        + (b" AND r.period_s = %(period)s" if period else b"")
        + _PAGE_RANGE
        + (_PAGE_AFTER if after else b"")
        + _PAGE_ORDER
    )


# A page's statement by (one period, after a keyset position): every period's rows or one
# period's (the primary key's order: the range in time order), from the range's start or after
# a position. A first page has no position to compare every row with (for a day of raw
# readings, 6 % of the server's time).
_READINGS_PAGES = {
    (period, after): _page(period=period, after=after)
    for period in (False, True)
    for after in (False, True)
}


def _records_of(page: bytes, *, periods: bool) -> bytes:
    """`page`'s rows as one bytea of fixed-width binary records (time, value, QC code, and the
    period where a page holds every period), in the page's order (nothing joins or sorts them
    again after the subquery's ORDER BY). numpy reads it whole: no Python object per reading.
    The server builds it in two thirds of the time an array per column takes (each array
    element is sent with its own length). A missing value is NaN, which no stored value is
    (ingest refuses NaN, and the API writes either as null)."""
    period = b" || int4send(p.period_s)" if periods else b""
    return (
        b"SELECT string_agg(timestamptz_send(p.time) || float8send(coalesce(p.value, 'NaN'))"
        b" || int2send(p.qc)" + period + b", '') FROM (" + page + b") p"
    )


_READINGS_PAGE_RECORDS = {
    (period, after): _records_of(page, periods=not period)
    for (period, after), page in _READINGS_PAGES.items()
}
_PAGE_RECORD = np.dtype([("time", ">i8"), ("value", ">f8"), ("qc", ">i2"), ("period_s", ">i4")])
_PERIOD_PAGE_RECORD = np.dtype([("time", ">i8"), ("value", ">f8"), ("qc", ">i2")])


@dataclass(frozen=True, slots=True)
class ReadingColumns(TimeColumns):
    """A page of one series' readings, column by column, in (time, period_s) order.

    A page may hold 10,001 readings: numpy columns, no Python object per reading.
    """

    time_us: npt.NDArray[np.int64]  # microseconds since 1970-01-01 UTC
    period_s: npt.NDArray[np.int32]
    value: npt.NDArray[np.float64]  # NaN where missing
    qc: npt.NDArray[np.int16]

    def rows(self) -> list[PageRow]:
        """The readings as rows (time aware in UTC; None for a missing value)."""
        times = [unix_time(t) for t in self.time_us.tolist()]
        values = [None if math.isnan(value) else value for value in self.value.tolist()]
        return list(zip(times, self.period_s.tolist(), values, self.qc.tolist(), strict=True))


async def readings_page(
    conn: Conn,
    *,
    station_id: int,
    parameter_id: int,
    start: datetime | None,
    end: datetime | None,
    period_s: int | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> ReadingColumns:
    """Readings of one series in [start, end), by (time, period_s), after a keyset position."""
    params = {
        "station": station_id,
        "parameter": parameter_id,
        "start": start,
        "end": end,
        "period": period_s,
        "after_time": after[0] if after else None,
        "after_period": after[1] if after else None,
        "limit": limit,
    }
    statement = _READINGS_PAGE_RECORDS[period_s is not None, after is not None]
    layout = _PAGE_RECORD if period_s is None else _PERIOD_PAGE_RECORD
    records = await fetch_records(conn, statement, params, layout)
    return ReadingColumns(
        records["time"].astype(np.int64) + PG_EPOCH_UNIX_US,
        (
            records["period_s"].astype(np.int32)
            if period_s is None
            else np.full(len(records), period_s, dtype=np.int32)
        ),
        records["value"].astype(np.float64),
        records["qc"].astype(np.int16),
    )


class LatestReading(NamedTuple):
    """One series' latest reading. A tuple: /v1/latest builds thousands per request, and a
    frozen dataclass's constructor cost more than the query's own rows."""

    station_id: int
    parameter_id: int
    station: str
    parameter: str
    time: datetime
    period_s: int
    value: float | None
    unit: str
    decimals: int | None
    qc: QC
    age_s: int


# reading_latest holds the newest reading of each period of each series; of those, the newest
# by period end wins (an instant before a period of the same end).
_LATEST = """
SELECT DISTINCT ON (s.code, p.code)
       l.station_id, l.parameter_id, s.code AS station, p.code AS parameter, l.time, l.period_s,
       l.value, p.unit, p.decimals, l.qc,
       floor(extract(epoch FROM coalesce(%(now)s::timestamptz, now())
                                - (l.time + make_interval(secs => l.period_s))))::int AS age_s
FROM reading_latest l
JOIN station_parameter sp ON sp.station_id = l.station_id AND sp.parameter_id = l.parameter_id
JOIN station s ON s.id = l.station_id
JOIN parameter p ON p.id = l.parameter_id
WHERE (%(city)s::text IS NULL OR s.city = %(city)s)
  AND (%(area)s::text IS NULL OR s.area = %(area)s)
  AND (%(medium)s::text IS NULL OR s.medium = %(medium)s)
  AND (%(stations)s::int[] IS NULL OR l.station_id = ANY(%(stations)s))
ORDER BY s.code, p.code, l.time + make_interval(secs => l.period_s) DESC, l.period_s
"""


async def latest_readings(
    conn: Conn,
    *,
    city: str | None,
    area: str | None,
    medium: str | None,
    station_ids: Sequence[int] | None = None,
    now: datetime | None = None,
) -> list[LatestReading]:
    """The latest reading (by period end) of every station × parameter that has one, with its
    age at `now` (the transaction's start if None)."""
    params = {
        "city": city,
        "area": area,
        "medium": medium,
        "stations": list(station_ids) if station_ids is not None else None,
        "now": now,
    }
    # Binary results: times and numbers read without parsing text.
    async with alone(conn), conn.cursor(binary=True) as cur:
        await cur.execute(_LATEST.encode(), params)
        rows = await cur.fetchall()
    qc_of = QC_BY_CODE
    return [
        LatestReading(sid, pid, station, parameter, t, p, v, unit, places, qc_of[qc], age)
        for sid, pid, station, parameter, t, p, v, unit, places, qc, age in rows
    ]


@dataclass(frozen=True, slots=True)
class TrendPoints:
    """A series' points in its trend window: period ends (epoch seconds) and values."""

    station_id: int
    parameter_id: int
    noise: float | None
    ends: list[float]
    values: list[float]


# Per series and slot of the window (newest - (k + 1) step, newest - k step], the newest valid
# value of one period: one short backward index probe each, so a series reporting every few
# seconds costs as little as an hourly one. Only valid and below-detection values say where a
# series is going (docs/conventions.md §4). The constant bounds (the oldest window's start, the
# newest reading) let the planner keep only the partitions they span: without them each probe
# ran through every partition of `reading`, and planning that took as long as the probes
# (4.1 + 5.7 ms of the server's time for an area's 106 series, 50 M readings).
_TREND_POINTS = """
SELECT w.station_id, w.parameter_id, p.noise,
       coalesce(array_agg(extract(epoch FROM r.time)::float8 + w.period_s ORDER BY r.time)
                FILTER (WHERE r.time IS NOT NULL), '{}') AS ends,
       coalesce(array_agg(r.value ORDER BY r.time) FILTER (WHERE r.time IS NOT NULL), '{}')
           AS values
FROM unnest(%(station)s::int[], %(parameter)s::int2[], %(period)s::int[],
            %(newest)s::timestamptz[]) AS w(station_id, parameter_id, period_s, newest)
JOIN parameter p ON p.id = w.parameter_id
CROSS JOIN generate_series(0, %(slots)s - 1) AS slot(k)
LEFT JOIN LATERAL (
    SELECT time, value FROM reading
    WHERE station_id = w.station_id AND parameter_id = w.parameter_id AND period_s = w.period_s
      AND time <= w.newest - make_interval(secs => slot.k * %(step)s)
      AND time > w.newest - make_interval(secs => (slot.k + 1) * %(step)s)
      AND time > %(earliest)s AND time <= %(latest)s
      AND qc = ANY(%(qc)s) AND value IS NOT NULL
    ORDER BY time DESC LIMIT 1
) r ON true
GROUP BY w.station_id, w.parameter_id, p.noise
"""


async def trend_points(
    conn: Conn,
    series: Sequence[tuple[int, int, int, datetime]],
    *,
    window_s: float,
    step_s: float,
) -> list[TrendPoints]:
    """For each (station id, parameter id, period_s, newest time), the newest valid value of that
    period in each `step_s` of (newest - window_s, newest] (so at most window_s / step_s points),
    oldest first, and the parameter's noise."""
    if not series:
        return []
    newest = [s[3] for s in series]
    slots = math.ceil(window_s / step_s)
    async with conn.cursor(row_factory=class_row(TrendPoints), binary=True) as cur:
        await cur.execute(
            _TREND_POINTS.encode(),
            {
                "station": Int4Array.of(np.array([s[0] for s in series], dtype=np.int32)),
                "parameter": Int2Array.of(np.array([s[1] for s in series], dtype=np.int16)),
                "period": Int4Array.of(np.array([s[2] for s in series], dtype=np.int32)),
                "newest": TimestamptzArray.of(np.array(micros(newest), dtype=np.int64)),
                "earliest": min(newest) - timedelta(seconds=slots * step_s),
                "latest": max(newest),
                "slots": slots,
                "step": step_s,
                "qc": [QC.VALID.code, QC.BELOW_DETECTION.code],
            },
        )
        return await cur.fetchall()


async def revisions_of(
    conn: Conn, *, station_id: int, parameter_id: int, period_s: int, time: datetime
) -> list[tuple[float | None, QC]]:
    """The values a key held before its revisions, oldest first."""
    cur = await conn.execute(
        "SELECT value, qc FROM reading_revision WHERE station_id = %s AND parameter_id = %s"
        " AND period_s = %s AND time = %s ORDER BY id",
        [station_id, parameter_id, period_s, time],
    )
    return [(value, QC.from_code(qc)) for value, qc in await cur.fetchall()]


# reading_latest holds each series' newest hourly reading: no scan of `reading` at all.
_LAST_HOURS = """
SELECT station_id, max(time) FROM reading_latest
WHERE period_s = 3600 AND time >= %(since)s
GROUP BY station_id
"""


async def last_hourly(conn: Conn, *, since: datetime) -> dict[int, datetime]:
    """Per station, the start of its newest hourly reading since `since` (none: not listed)."""
    cur = await conn.execute(_LAST_HOURS.encode(), {"since": since})
    return {station_id: time for station_id, time in await cur.fetchall()}


_NEWEST_END = "SELECT max(time + period_s * interval '1 second') FROM reading_latest"


async def newest_reading_end(conn: Conn) -> datetime | None:
    """The end of the newest reading stored (None: none is)."""
    cur = await conn.execute(_NEWEST_END.encode())
    row = await cur.fetchone()
    return None if row is None else row[0]
