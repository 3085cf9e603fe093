"""Readings: the idempotent bulk write path (DESIGN §9) and the queries the API serves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import psycopg
from psycopg.rows import dict_row

from schemas.common import QC
from store.pool import Conn

# Rows are sent in chunks: a chunk that meets an existing key falls back to the merge path,
# and once one has, the rest of the call goes straight there (a replay rarely stops half-way).
CHUNK = 50_000
_COLUMNS = ("station_id", "parameter_id", "period_s", "time", "value", "qc")
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

    The caller owns the transaction and must have created the partitions the rows fall in.
    """
    result = WriteResult(total=len(rows))
    tail = (source_id, received_at)
    merging = False
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        if not merging:
            try:
                async with conn.transaction():
                    await _copy_fresh(conn, chunk, tail)
                continue
            except psycopg.errors.UniqueViolation:
                merging = True
        await _merge(conn, chunk, start, source_id, received_at, result)
    return result


async def _copy_fresh(conn: Conn, rows: Sequence[ReadingRow], tail: tuple[int, datetime]) -> None:
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY reading (station_id, parameter_id, period_s, time, value, qc, source_id,"
            " received_at) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(_COPY_TYPES)
        for row in rows:
            await copy.write_row((*row, *tail))


_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS reading_stage (
    seq int NOT NULL, station_id int NOT NULL, parameter_id smallint NOT NULL,
    period_s int NOT NULL, time timestamptz NOT NULL, value double precision, qc smallint NOT NULL
) ON COMMIT DELETE ROWS
"""
# Statement 1 takes the keys nobody has yet. ON CONFLICT DO NOTHING waits for a concurrent
# writer of the same key, so a key is "fresh" for exactly one transaction.
_INSERT_FRESH = """
WITH fresh AS (
    INSERT INTO reading (station_id, parameter_id, period_s, time, value, qc, source_id,
                         received_at)
    SELECT station_id, parameter_id, period_s, time, value, qc, %(source)s, %(now)s
    FROM reading_stage
    ON CONFLICT (station_id, parameter_id, period_s, time) DO NOTHING
    RETURNING station_id, parameter_id, period_s, time
)
DELETE FROM reading_stage s USING fresh f
WHERE s.station_id = f.station_id AND s.parameter_id = f.parameter_id
  AND s.period_s = f.period_s AND s.time = f.time
RETURNING s.seq
"""
# Statement 2 revises the keys whose value or QC changed. The UPDATE re-checks the old value, so
# if another transaction revised the row meanwhile this one skips it and the loop retries it:
# each replaced value lands in reading_revision exactly once, and duplicates never lock a row.
_REVISE = """
WITH changed AS (
    SELECT s.seq, s.station_id, s.parameter_id, s.period_s, s.time, s.value, s.qc,
           r.value AS old_value, r.qc AS old_qc, r.source_id AS old_source,
           r.received_at AS old_received_at
    FROM reading_stage s
    JOIN reading r ON r.station_id = s.station_id AND r.parameter_id = s.parameter_id
                  AND r.period_s = s.period_s AND r.time = s.time
    WHERE r.value IS DISTINCT FROM s.value OR r.qc <> s.qc
), revised AS (
    UPDATE reading r SET value = c.value, qc = c.qc, source_id = %(source)s, received_at = %(now)s
    FROM changed c
    WHERE r.station_id = c.station_id AND r.parameter_id = c.parameter_id
      AND r.period_s = c.period_s AND r.time = c.time
      AND r.value IS NOT DISTINCT FROM c.old_value AND r.qc = c.old_qc
    RETURNING c.seq, c.station_id, c.parameter_id, c.period_s, c.time, c.old_value, c.old_qc,
              c.old_source, c.old_received_at
), kept AS (
    INSERT INTO reading_revision (station_id, parameter_id, period_s, time, value, qc, source_id,
                                  received_at, replaced_at, replaced_by)
    SELECT station_id, parameter_id, period_s, time, old_value, old_qc, old_source,
           old_received_at, %(now)s, %(source)s
    FROM revised
)
SELECT (SELECT count(*) FROM changed), array(SELECT seq FROM revised)
"""


async def _merge(
    conn: Conn,
    rows: Sequence[ReadingRow],
    offset: int,
    source_id: int,
    received_at: datetime,
    result: WriteResult,
) -> None:
    await conn.execute(_STAGE)
    params = {"source": source_id, "now": received_at}
    # A key repeated within the rows is applied in order, one round per occurrence, so the
    # later value revises the earlier one exactly as if they had come in two batches.
    for round_rows in _rounds(rows, offset):
        await conn.execute("TRUNCATE reading_stage")
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY reading_stage (seq, station_id, parameter_id, period_s, time, value, qc)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", *_COPY_TYPES[:6]])
                for seq, row in round_rows:
                    await copy.write_row((seq, *row))
            await cur.execute(_INSERT_FRESH.encode(), params)
            fresh = {seq for (seq,) in await cur.fetchall()}
            pending = {seq for seq, _ in round_rows} - fresh
            while True:
                await cur.execute(_REVISE.encode(), params)
                answer = await cur.fetchone()
                assert answer is not None
                changed, revised = answer
                result.revisions.update(revised)
                if changed == len(revised):
                    break
                await cur.execute("DELETE FROM reading_stage WHERE seq = ANY(%s)", [list(revised)])
        result.duplicates.update(pending - result.revisions)


def _rounds(rows: Sequence[ReadingRow], offset: int) -> list[list[tuple[int, ReadingRow]]]:
    rounds: list[list[tuple[int, ReadingRow]]] = [[]]
    seen: dict[tuple[int, int, int, datetime], int] = {}
    for index, row in enumerate(rows):
        key = (row.station_id, row.parameter_id, row.period_s, row.time)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        if occurrence == len(rounds):
            rounds.append([])
        rounds[occurrence].append((offset + index, row))
    return rounds


@dataclass(frozen=True, slots=True)
class StoredReading:
    time: datetime
    period_s: int
    value: float | None
    unit: str
    qc: QC


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
) -> list[StoredReading]:
    """Readings of one series in [start, end), by (time, period_s), after a keyset position."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT r.time, r.period_s, r.value, p.unit, r.qc FROM reading r"
            " JOIN parameter p ON p.id = r.parameter_id"
            " WHERE r.station_id = %(station)s AND r.parameter_id = %(parameter)s"
            " AND (%(start)s::timestamptz IS NULL OR r.time >= %(start)s)"
            " AND (%(end)s::timestamptz IS NULL OR r.time < %(end)s)"
            " AND (%(period)s::int IS NULL OR r.period_s = %(period)s)"
            " AND (%(after_time)s::timestamptz IS NULL"
            "      OR (r.time, r.period_s) > (%(after_time)s, %(after_period)s))"
            " ORDER BY r.time, r.period_s LIMIT %(limit)s",
            {
                "station": station_id,
                "parameter": parameter_id,
                "start": start,
                "end": end,
                "period": period_s,
                "after_time": after[0] if after else None,
                "after_period": after[1] if after else None,
                "limit": limit,
            },
        )
        rows = await cur.fetchall()
    return [StoredReading(**{**row, "qc": QC.from_code(row["qc"])}) for row in rows]


@dataclass(frozen=True, slots=True)
class LatestReading:
    station: str
    parameter: str
    time: datetime
    period_s: int
    value: float | None
    unit: str
    qc: QC
    age_s: int


# For each station × parameter, the newest reading of each averaging period is one short
# backward index scan (partitions are visited newest first); the newest by period end wins.
_LATEST = """
SELECT s.code AS station, p.code AS parameter, last.time, last.period_s, last.value, p.unit,
       last.qc,
       floor(extract(epoch FROM now() - (last.time + make_interval(secs => last.period_s))))::int
           AS age_s
FROM station s
JOIN station_parameter sp ON sp.station_id = s.id
JOIN parameter p ON p.id = sp.parameter_id
CROSS JOIN LATERAL (
    SELECT r.time, r.period_s, r.value, r.qc
    FROM unnest(ARRAY[0, 60, 3600, 86400]) AS period(s)
    CROSS JOIN LATERAL (
        SELECT time, period_s, value, qc FROM reading
        WHERE station_id = s.id AND parameter_id = p.id AND period_s = period.s
        ORDER BY time DESC LIMIT 1
    ) r
    ORDER BY r.time + make_interval(secs => r.period_s) DESC, r.period_s
    LIMIT 1
) last
WHERE (%(city)s::text IS NULL OR s.city = %(city)s)
  AND (%(area)s::text IS NULL OR s.area = %(area)s)
  AND (%(medium)s::text IS NULL OR s.medium = %(medium)s)
ORDER BY s.code, p.code
"""


async def latest_readings(
    conn: Conn, *, city: str | None, area: str | None, medium: str | None
) -> list[LatestReading]:
    """The latest reading (by period end) of every station × parameter that has one."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LATEST.encode(), {"city": city, "area": area, "medium": medium})
        rows = await cur.fetchall()
    return [LatestReading(**{**row, "qc": QC.from_code(row["qc"])}) for row in rows]


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
