"""The ingest pipeline: unit conversion, rejections with reasons, counts that add up."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import overload

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST
from ingest import pipeline as pipeline_module
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.simulator import SimulatorJob
from schemas.common import QC
from schemas.readings import IntakeResult, ReadingIn, Rejection, SourceReading
from store.intake import rejected_readings
from store.partitions import create_partitions, month_of
from store.pool import Conn
from store.readings import ReadingRow, store_new_readings, write_readings
from store.sources import ensure_source, record_intake, source_statuses
from tests.conftest import wait_until_blocked

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
PUSH = SourceRef(code="push:test", kind="push")


def _pipeline(pool: AsyncConnectionPool) -> Pipeline:
    return Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)


def _reading(**fields: object) -> ReadingIn:
    base: dict[str, object] = {
        "station": "gz-a-huangpu",
        "parameter": "pm25",
        "time": datetime(2026, 11, 26, 10, tzinfo=CST),
        "value": 35.0,
        "unit": "ug/m3",
        "period_s": 3600,
    }
    return ReadingIn.model_validate(base | fields)


async def _stored(pool: AsyncConnectionPool) -> list[tuple[str, str, int, datetime, float, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT s.code, p.code, r.period_s, r.time, r.value, r.qc FROM reading r"
            " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
            " ORDER BY s.code, p.code, r.time"
        )
        return await cur.fetchall()


def _typed(reading: ReadingIn) -> SourceReading:
    """The same reading as a source that types its own fields (HJ 212) hands it over."""
    return SourceReading(**reading.model_dump())


@pytest.mark.parametrize("typed", [False, True], ids=["ReadingIn", "SourceReading"])
async def test_bad_items_are_quarantined_good_ones_kept(
    db: AsyncConnectionPool, typed: bool
) -> None:
    readings: list[ReadingIn | Rejection] = [
        _reading(),
        _reading(station="gz-a-nowhere"),
        _reading(parameter="radon"),
        _reading(parameter="salinity"),
        _reading(time=NOW + timedelta(days=1, minutes=1), period_s=0),
        _reading(time=datetime(1999, 12, 31, tzinfo=CST)),
        _reading(unit="furlongs"),
        _reading(value=-4.0),
        Rejection(
            0,
            "time: 'soon' is not an ISO 8601 / RFC 3339 time",
            "gz-a-huangpu",
            "pm25",
            '{"time": "soon"}',
        ),
        _reading(time=datetime(2026, 11, 26, 11, tzinfo=CST), value=36.0),
        # The same series and unit again: what was worked out for them once still holds.
        _reading(station="gz-a-nowhere", value=1.0),
        _reading(unit="furlongs", value=None, time=datetime(2026, 11, 26, 9, tzinfo=CST)),
        _reading(unit="furlongs", value=2.0),
        _reading(unit="mg/m3", value=2.0001),
        _reading(unit="mg/m3", value=0.03, time=datetime(2026, 11, 26, 12, tzinfo=CST)),
        _reading(value=float("inf"), time=datetime(2026, 11, 26, 13, tzinfo=CST)),
        _reading(value=float("nan"), time=datetime(2026, 11, 26, 14, tzinfo=CST)),
        _reading(value=2000.0, time=datetime(2026, 11, 26, 15, tzinfo=CST)),
        _reading(time=NOW + timedelta(days=1), period_s=0),
    ]
    items: list[ReadingIn | SourceReading | Rejection] = [
        _typed(item) if typed and isinstance(item, ReadingIn) else item for item in readings
    ]
    result = await _pipeline(db).ingest(items, source=PUSH)
    assert result.outcomes == (
        ["accepted"] + ["rejected"] * 8 + ["accepted"]
        + ["rejected", "accepted", "rejected", "rejected", "accepted", "rejected", "rejected"]
        + ["accepted"] * 2
    )  # fmt: skip
    assert [(r.index, r.reason) for r in result.rejections] == [
        (1, "unknown station 'gz-a-nowhere'"),
        (2, "unknown parameter 'radon'"),
        (3, "station gz-a-huangpu does not measure salinity"),
        (4, "time 2026-11-27T04:01:00+00:00 is more than a day in the future"),
        (5, "time 1999-12-31T00:00:00+08:00 is before the earliest accepted date 2000-01-01"),
        (6, "unit 'furlongs' cannot be converted to ug/m3 for pm25"),
        (7, "pm25: value -4 ug/m3 is outside the physically possible range [0, 2000]"),
        (8, "time: 'soon' is not an ISO 8601 / RFC 3339 time"),
        (10, "unknown station 'gz-a-nowhere'"),
        (12, "unit 'furlongs' cannot be converted to ug/m3 for pm25"),
        (13, "pm25: value 2000.1 ug/m3 is outside the physically possible range [0, 2000]"),
        (15, "pm25: value inf is not a finite number"),
        (16, "pm25: value nan is not a finite number"),
    ]
    async with db.connection() as conn:
        quarantined = await rejected_readings(conn)
        statuses = await source_statuses(conn)
    assert len(quarantined) == 13
    assert quarantined[5].payload == '{"time": "soon"}'
    assert [(q.station_code, q.parameter_code) for q in reversed(quarantined)] == [
        ("gz-a-nowhere", "pm25"),
        ("gz-a-huangpu", "radon"),
        ("gz-a-huangpu", "salinity"),
        *[("gz-a-huangpu", "pm25")] * 5,
        ("gz-a-nowhere", "pm25"),
        *[("gz-a-huangpu", "pm25")] * 4,
    ]
    assert '"station": "gz-a-nowhere"' in quarantined[-1].payload
    assert [(s.code, s.accepted, s.duplicate, s.revised, s.rejected) for s in statuses] == [
        ("push:test", 6, 0, 0, 13)
    ]
    stored = [(time.astimezone(CST).isoformat(), v) for _, _, _, time, v, _ in await _stored(db)]
    assert stored == [
        ("2026-11-26T09:00:00+08:00", None),
        ("2026-11-26T10:00:00+08:00", 35.0),
        ("2026-11-26T11:00:00+08:00", 36.0),
        ("2026-11-26T12:00:00+08:00", 30.0),
        ("2026-11-26T15:00:00+08:00", 2000.0),
        ("2026-11-27T12:00:00+08:00", 35.0),
    ]


class Received(Sequence[str | None]):
    """Texts as a source received them, noting which ones the pipeline looked up."""

    def __init__(self, texts: list[str | None]) -> None:
        self.texts = texts
        self.asked: list[int] = []

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> str | None: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str | None]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str | None] | None:
        assert isinstance(index, int)
        self.asked.append(index)
        return self.texts[index]


async def _quarantined(pool: AsyncConnectionPool) -> list[tuple[str, str]]:
    """Reason and payload of every quarantined item, oldest first."""
    async with pool.connection() as conn:
        rows = await rejected_readings(conn)
    return [(r.reason, r.payload) for r in reversed(rows)]


async def test_rejected_items_are_quarantined_as_received_else_as_json(
    db: AsyncConnectionPool,
) -> None:
    items: list[ReadingIn | Rejection] = [
        _reading(),
        _reading(station="gz-a-nowhere"),
        _reading(unit="furlongs"),
        Rejection(0, "value: missing", "gz-a-huangpu", "pm25", '{"parameter":"pm25"}'),
        _reading(time=datetime(2026, 11, 26, 11, tzinfo=CST)),
    ]
    received = Received(
        [
            '{"time":"10:00"}',
            '{"station": "gz-a-nowhere"}',
            None,  # this source could not say
            '{"parameter":"pm25" }',
            '{"time":"11:00"}',
        ]
    )
    result = await _pipeline(db).ingest(items, source=PUSH, raw=received)
    assert result.outcomes == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    assert received.asked == [1, 2]  # only rejected readings are looked up
    fallback = json.dumps(
        {
            "station": "gz-a-huangpu",
            "parameter": "pm25",
            "time": "2026-11-26T10:00:00+08:00",
            "value": 35.0,
            "unit": "furlongs",
            "period_s": 3600,
            "qc": "valid",
        }
    )
    quarantined = await _quarantined(db)
    assert quarantined == [
        ("unknown station 'gz-a-nowhere'", '{"station": "gz-a-nowhere"}'),
        ("unit 'furlongs' cannot be converted to ug/m3 for pm25", fallback),
        ("value: missing", '{"parameter":"pm25"}'),  # a source's Rejection keeps its payload
    ]

    # Without raw texts (HJ 212's readings, the simulator) every reading falls back to JSON.
    await _pipeline(db).ingest([_reading(unit="furlongs")], source=PUSH)
    assert (await _quarantined(db))[-1] == (
        "unit 'furlongs' cannot be converted to ug/m3 for pm25",
        fallback,
    )
    await _pipeline(db).ingest([_typed(_reading(unit="furlongs"))], source=PUSH)
    assert (await _quarantined(db))[-1] == (
        "unit 'furlongs' cannot be converted to ug/m3 for pm25",
        fallback,
    )


async def test_raw_texts_must_match_the_items_one_to_one(db: AsyncConnectionPool) -> None:
    with pytest.raises(ValueError) as caught:
        await _pipeline(db).ingest([_reading(), _reading()], source=PUSH, raw=["{}"])
    assert str(caught.value) == "raw has 1 texts for 2 items; pass one per item"
    assert await _stored(db) == []


async def test_then_runs_in_the_batch_transaction_and_its_failure_stores_nothing(
    db: AsyncConnectionPool,
) -> None:
    seen: list[tuple[int, int]] = []

    async def then(conn: Conn, result: IntakeResult) -> None:
        # The batch's writes are visible here and not yet to anyone else: not committed.
        cur = await conn.execute("SELECT count(*) FROM reading")
        inside = await cur.fetchone()
        async with db.connection() as other:
            cur = await other.execute("SELECT count(*) FROM reading")
            outside = await cur.fetchone()
        assert inside is not None and outside is not None
        seen.append((inside[0], outside[0]))

    items: list[ReadingIn | Rejection] = [_reading(), _reading(station="gz-a-nowhere")]
    result = await _pipeline(db).ingest(items, source=PUSH, then=then)
    assert result.outcomes == ["accepted", "rejected"]
    assert seen == [(1, 0)]
    assert len(await _stored(db)) == 1

    async def failing(conn: Conn, result: IntakeResult) -> None:
        raise ConnectionError("lost the connection")

    later = [_reading(time=datetime(2026, 11, 26, 11, tzinfo=CST)), _reading(unit="furlongs")]
    with pytest.raises(ConnectionError, match="lost the connection"):
        await _pipeline(db).ingest(later, source=PUSH, then=failing)
    assert len(await _stored(db)) == 1
    assert [reason for reason, _ in await _quarantined(db)] == ["unknown station 'gz-a-nowhere'"]
    async with db.connection() as conn:
        statuses = await source_statuses(conn)
    assert [(s.accepted, s.rejected) for s in statuses] == [(1, 1)]


async def test_units_are_converted_to_canonical(db: AsyncConnectionPool) -> None:
    at = datetime(2026, 11, 26, 9, tzinfo=CST)
    items: list[ReadingIn | Rejection] = [
        _reading(station="dg-a-shilong", parameter="so2", value=10.0, unit="ppb", time=at),
        _reading(station="dg-a-shilong", parameter="co", value=1.0, unit="ppm", time=at),
        _reading(station="dg-a-shilong", parameter="pm25", value=0.035, unit="mg/m³", time=at),
        _reading(station="dg-a-shilong", parameter="no2", value=20.0, unit="μg/m3", time=at),
        _reading(station="dg-a-shilong", parameter="pressure", value=101.3, unit="kPa", time=at),
        _reading(station="gz-w-dadun", parameter="nh3n", value=250.0, unit="µg/L", time=at),
        _reading(station="gz-a-panyu", parameter="pm25", value=1.0, unit="ppb", time=at),
    ]
    result = await _pipeline(db).ingest(items, source=PUSH)
    assert result.summary == {"accepted": 6, "duplicate": 0, "revised": 0, "rejected": 1}
    assert result.rejections[0].reason == (
        "ppb is only accepted for the gases SO2, NO2, O3 and CO, not pm25"
    )
    values = {(s, p): round(v, 6) for s, p, _, _, v, _ in await _stored(db)}
    assert values == {
        ("dg-a-shilong", "so2"): 26.2,
        ("dg-a-shilong", "co"): 1.145,
        ("dg-a-shilong", "pm25"): 35.0,
        ("dg-a-shilong", "no2"): 20.0,
        ("dg-a-shilong", "pressure"): 1013.0,
        ("gz-w-dadun", "nh3n"): 0.25,
    }


async def test_period_times_are_floored_and_counts_add_up(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    off_boundary = datetime(2026, 11, 26, 9, 0, 1, tzinfo=CST)
    first = await pipeline.ingest([_reading(time=off_boundary)], source=PUSH)
    again = await pipeline.ingest(
        [_reading(time=off_boundary), _reading(time=off_boundary, value=40.0, qc=QC.MAINTENANCE)],
        source=PUSH,
    )
    assert first.outcomes == ["accepted"]
    assert again.outcomes == ["duplicate", "revised"]
    assert [(t, v, qc) for *_, t, v, qc in await _stored(db)] == [
        (datetime(2026, 11, 26, 1, tzinfo=UTC), 40.0, QC.MAINTENANCE.code)
    ]


async def test_simulator_covers_every_station_parameter(db: AsyncConnectionPool) -> None:
    pipeline = _pipeline(db)
    job = SimulatorJob(pipeline, interval_s=10, history_hours=2, clock=lambda: NOW)
    first = await job.run()
    again = await job.run()
    catalogue = await pipeline.catalogue()
    pairs = len(catalogue.station_parameters)
    assert first.summary == {"accepted": pairs * 3, "duplicate": 0, "revised": 0, "rejected": 0}
    assert again.summary == {"accepted": 0, "duplicate": pairs, "revised": 0, "rejected": 0}
    stored = await _stored(db)
    assert len({(s, p) for s, p, *_ in stored}) == pairs
    assert {period for _, _, period, *_ in stored} == {0, 3600}


async def test_a_source_error_is_recorded_on_the_row_its_intakes_count_on(
    db: AsyncConnectionPool,
) -> None:
    pipeline = _pipeline(db)
    await pipeline.ingest([_reading()], source=PUSH)
    await pipeline.record_error(PUSH, "x" * 2500, at=NOW - timedelta(minutes=1))
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.code, status.accepted, status.last_success_at) == ("push:test", 1, NOW)
    assert (status.last_error, status.last_error_at) == ("x" * 2000, NOW - timedelta(minutes=1))


async def test_recording_a_source_error_gives_up_after_its_time_bound(
    db: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def stuck(conn: Conn, **_: object) -> None:
        await asyncio.Event().wait()  # as a write waiting for a database that never answers

    monkeypatch.setattr(pipeline_module, "record_source_error", stuck)
    monkeypatch.setattr(pipeline_module, "ERROR_RECORD_TIMEOUT_S", 0.2)
    started = time.monotonic()
    await _pipeline(db).record_error(PUSH, "the feed is down")
    assert 0.2 <= time.monotonic() - started < 1.0
    assert [r.getMessage() for r in caplog.records if r.name == "ingest.pipeline"] == [
        "push:test: could not record the error for /v1/sources: TimeoutError()"
    ]
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.last_error, status.last_error_at) == (None, None)


async def _written(pool: AsyncConnectionPool) -> dict[str, list[tuple[object, ...]]]:
    """What an intake leaves in each table it writes (ids and times as stored)."""
    queries = {
        "reading": "SELECT station_id, parameter_id, period_s, time, value, qc, received_at"
        " FROM reading ORDER BY 1, 2, 3, 4",
        "reading_latest": "SELECT * FROM reading_latest ORDER BY 1, 2, 3",
        "series_dirty": "SELECT station_id, parameter_id, period_s, time, value, qc"
        " FROM series_dirty ORDER BY 1, 2, 3, 4",
        "source": "SELECT code, accepted, duplicate, revised, rejected, last_success_at"
        " FROM source",
    }
    async with pool.connection() as conn:
        return {
            table: await (await conn.execute(query.encode())).fetchall()
            for table, query in queries.items()
        }


def _new_batch() -> list[ReadingIn | Rejection]:
    """Three series, one of them at three times (the newest first), one reading without a value."""
    at = datetime(2026, 11, 26, 10, tzinfo=CST)
    return [
        _reading(time=at + timedelta(hours=2), value=38.0),
        _reading(time=at, value=35.0),
        _reading(time=at + timedelta(hours=1), value=36.0),
        _reading(parameter="pm10", time=at, value=None, qc=QC.FAULT),
        _reading(station="gz-w-xintang", parameter="do", time=at, value=6.5, unit="mg/L"),
    ]


async def test_new_readings_go_in_one_round_trip_and_write_what_the_full_path_writes(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    async def nothing_more(conn: Conn, result: IntakeResult) -> None:
        pass

    # One connection, so that the one traced is the one the pipeline takes.
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as one:
        pipeline = _pipeline(one)
        # A `then` makes the pipeline take its full path: a transaction, COPY, and a statement
        # for each table.
        result = await pipeline.ingest(_new_batch(), source=PUSH, then=nothing_more)
        assert result.summary == {"accepted": 5, "duplicate": 0, "revised": 0, "rejected": 0}
        by_full_path = await _written(one)
        assert [len(rows) for rows in by_full_path.values()] == [5, 3, 5, 1]
        async with one.connection() as conn:
            await conn.execute("TRUNCATE reading, reading_latest, series_dirty")
            await conn.execute("UPDATE source SET accepted = 0, last_success_at = NULL")

        trace = tmp_path / "trace"
        with trace.open("w") as out:
            async with one.connection() as conn:
                conn.pgconn.trace(out.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            result = await pipeline.ingest(_new_batch(), source=PUSH)
            async with one.connection() as conn:
                conn.pgconn.untrace()
        assert result.summary == {"accepted": 5, "duplicate": 0, "revised": 0, "rejected": 0}
        # The server's messages (the statement's text runs over several lines of the trace).
        answers = [
            line.split("\t")[2] for line in trace.read_text().splitlines() if line[:2] == "B\t"
        ]
        assert answers.count("ReadyForQuery") == 1
        assert await _written(one) == by_full_path


async def test_a_batch_with_a_stored_key_or_a_key_twice_takes_the_merge(
    db: AsyncConnectionPool,
) -> None:
    pipeline = _pipeline(db)
    at = datetime(2026, 11, 26, 10, tzinfo=CST)
    assert (await pipeline.ingest([_reading(time=at)], source=PUSH)).outcomes == ["accepted"]
    later = at + timedelta(hours=1)
    again = await pipeline.ingest(
        [_reading(time=later), _reading(time=at), _reading(time=at, value=30.0)], source=PUSH
    )
    assert again.outcomes == ["accepted", "duplicate", "revised"]
    twice = await pipeline.ingest(
        [
            _reading(time=later + timedelta(hours=1)),
            *[_reading(time=later + timedelta(hours=2))] * 2,
        ],
        source=PUSH,
    )
    assert twice.outcomes == ["accepted", "accepted", "duplicate"]
    assert [(t.astimezone(CST).hour, v) for *_, t, v, _ in await _stored(db)] == [
        (10, 30.0), (11, 35.0), (12, 35.0), (13, 35.0)
    ]  # fmt: skip
    written = await _written(db)
    assert written["source"][0][1:5] == (4, 2, 1, 0)
    assert [row[3:5] for row in written["reading_latest"]] == [(later + timedelta(hours=2), 35.0)]


async def test_new_readings_whose_connection_is_lost_raise_the_loss_itself(
    db: AsyncConnectionPool, database_url: str
) -> None:
    # The statement waits on a key another transaction is inserting; its connection is then
    # ended. What the caller gets is the lost connection, not an error from setting the
    # connection back out of autocommit (which, over a cancellation, kept a source's task from
    # stopping).
    row = ReadingRow(1, 1, 3600, NOW, 1.0, QC.VALID.code)
    async with db.connection() as conn:
        await create_partitions(conn, {month_of(NOW)})
    async with (
        await psycopg.AsyncConnection.connect(database_url) as holder,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin,
        await psycopg.AsyncConnection.connect(database_url) as writer,
    ):
        await holder.execute(
            "INSERT INTO reading (station_id, parameter_id, period_s, time, value, qc, source_id,"
            " received_at) VALUES (1, 1, 3600, %s, 1.0, 0, 1, %s)",
            [NOW, NOW],
        )
        storing = asyncio.create_task(
            store_new_readings(writer, [row], source_id=1, received_at=NOW)
        )
        pid = writer.info.backend_pid
        await wait_until_blocked(db, pid)
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.errors.AdminShutdown):
            await storing
        assert writer.closed


async def test_an_intake_beside_a_merge_of_the_same_series_waits_for_it_without_deadlock(
    db: AsyncConnectionPool, database_url: str
) -> None:
    # A merge (write_readings, then the source's counters, in one transaction) holds the
    # series' row of reading_latest until it commits. A one-statement intake of a newer reading
    # of the same series from the same source waits for that row; it must not hold the source's
    # row meanwhile, which the merge updates next (a deadlock, one of the two refused).
    older = ReadingRow(1, 1, 3600, NOW, 1.0, QC.VALID.code)
    newer = ReadingRow(1, 1, 3600, NOW + timedelta(hours=1), 2.0, QC.VALID.code)
    async with db.connection() as conn:
        await create_partitions(conn, {month_of(NOW)})
        source_id = await ensure_source(conn, code=PUSH.code, kind=PUSH.kind)
    async with (
        await psycopg.AsyncConnection.connect(database_url) as merger,
        await psycopg.AsyncConnection.connect(database_url) as writer,
    ):
        async with merger.transaction():
            await write_readings(merger, [older], source_id=source_id, received_at=NOW)
            storing = asyncio.create_task(
                store_new_readings(writer, [newer], source_id=source_id, received_at=NOW)
            )
            await wait_until_blocked(db, writer.info.backend_pid)
            await record_intake(
                merger, source_id=source_id, at=NOW, accepted=1, duplicate=0, revised=0,
                rejected=0,
            )  # fmt: skip
        await storing
    assert [(t, v) for *_, t, v, _ in await _stored(db)] == [(older.time, 1.0), (newer.time, 2.0)]
    written = await _written(db)
    assert [row[3:5] for row in written["reading_latest"]] == [(newer.time, 2.0)]
    assert written["source"][0][1:5] == (2, 0, 0, 0)
