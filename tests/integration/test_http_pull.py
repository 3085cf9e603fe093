"""HTTP pull against a real local HTTP server: paging, watermarks across restarts, retries."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import parse_time
from ingest import pipeline as pipeline_module
from ingest.pipeline import Pipeline
from ingest.sources import http_pull
from ingest.sources.http_pull import HttpPullJob, PullReport
from schemas.sources import JsonFeed, JsonMapping, OpenAqFeed, OpenAqSensor
from store.intake import rejected_readings
from store.sources import merge_watermark, source_statuses, source_watermark

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
PM25, NO2 = 101, 102  # upstream sensor ids at location 10


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _pm25(end: datetime) -> float:
    hours = (end - NOW) / HOUR
    return round(30 + 8 * math.sin(hours / 5), 2)


def _no2_ppb(end: datetime) -> float:
    hours = (end - NOW) / HOUR
    return round(12 + 3 * math.cos(hours / 7), 2)


@dataclass
class Upstream:
    """What the fake OpenAQ-style service holds, serves, and was asked."""

    published_until: datetime = NOW
    exclusive_bounds: bool = False
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # path -> what the next requests to it get: an HTTP status, "slow" (answer too late), or
    # a JSON body to answer 200 with exactly as written.
    script: dict[str, list[int | str | bytes]] = field(default_factory=dict)
    buoy_records: list[dict[str, Any]] = field(default_factory=list)
    # (sensor, period end) -> fields that replace the measurement's own.
    altered: dict[tuple[int, datetime], dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ends(self) -> list[datetime]:
        """Hourly measurements with period ends from NOW - 48 h, as far as published."""
        first = NOW - 48 * HOUR
        count = int((self.published_until - first) / HOUR) + 1
        return [first + n * HOUR for n in range(max(count, 0))]

    def measurement(self, sensor: int, end: datetime) -> dict[str, Any]:
        value, units, name = (
            (_pm25(end), "µg/m³", "pm25") if sensor == PM25 else (_no2_ppb(end), "ppb", "no2")
        )
        start = end - HOUR
        measurement = {
            "value": value,
            "flagInfo": {"hasFlags": False},
            "parameter": {"id": sensor, "name": name, "units": units, "displayName": None},
            "period": {
                "label": "raw",
                "interval": "01:00:00",
                "datetimeFrom": {"utc": _z(start), "local": start.isoformat()},
                "datetimeTo": {"utc": _z(end), "local": end.isoformat()},
            },
        }
        return measurement | self.altered.get((sensor, end), {})

    def measured(self, path: str) -> list[dict[str, str]]:
        return [params for asked, params in self.requests if asked == path]


class Handler(BaseHTTPRequestHandler):
    server: UpstreamServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        upstream = self.server.upstream
        url = urlsplit(self.path)
        params = {key: values[0] for key, values in parse_qs(url.query).items()}
        with upstream.lock:
            upstream.requests.append((url.path, params))
            queue = upstream.script.get(url.path, [])
            behaviour = queue.pop(0) if queue else None
        if behaviour == "slow":
            time.sleep(3.0)  # the client's timeout (2 s) has passed by now
        elif isinstance(behaviour, int):
            self._send(behaviour, {"detail": f"scripted {behaviour}"})
            return
        elif isinstance(behaviour, bytes):
            self._send(200, behaviour)
            return
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["v3", "sensors"] and parts[3:] == ["measurements"]:
            self._measurements(int(parts[2]), params)
        elif parts[:2] == ["v3", "locations"] and parts[3:] == ["latest"]:
            self._latest()
        elif url.path == "/buoys":
            self._buoys(params)
        else:
            self._send(404, {"detail": "Not Found"})

    def _measurements(self, sensor: int, params: dict[str, str]) -> None:
        upstream = self.server.upstream
        low, high = parse_time(params["datetime_from"]), parse_time(params["datetime_to"])
        # Like OpenAQ: filtered on the period end, both bounds inclusive, ordered by time.
        if upstream.exclusive_bounds:
            rows = [upstream.measurement(sensor, e) for e in upstream.ends() if low < e < high]
        else:
            rows = [upstream.measurement(sensor, e) for e in upstream.ends() if low <= e <= high]
        limit, page = int(params["limit"]), int(params["page"])
        self._send(
            200,
            {
                "meta": {"name": "openaq-api", "page": page, "limit": limit, "found": len(rows)},
                "results": rows[(page - 1) * limit : page * limit],
            },
        )

    def _latest(self) -> None:
        last = self.server.upstream.ends()[-1]
        results = [
            {
                "datetime": {"utc": _z(last), "local": last.isoformat()},
                "value": 1.0,
                "coordinates": {"latitude": 23.1, "longitude": 113.4},
                "sensorsId": sensor,
                "locationsId": 10,
            }
            for sensor in (PM25, NO2)
        ]
        self._send(200, {"meta": {"found": 2}, "results": results})

    def _buoys(self, params: dict[str, str]) -> None:
        low, high = parse_time(params["start"]), parse_time(params["end"])
        records = [
            r
            for r in self.server.upstream.buoy_records
            if low <= datetime.fromtimestamp(r["ts"] / 1000, tz=UTC) <= high
        ]
        size, page = int(params["size"]), int(params["page"])
        self._send(200, {"data": {"records": records[(page - 1) * size : page * size]}})

    def _send(self, status: int, body: object) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a "slow" answer meets a client that has hung up: expected

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.upstream = Upstream()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[UpstreamServer]:
    httpd = UpstreamServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _feed(base_url: str, **overrides: Any) -> OpenAqFeed:
    fields: dict[str, Any] = {
        "code": "openaq-test",
        "kind": "openaq_v3",
        "base_url": base_url,
        "page_limit": 10,
        "lookback_s": 30 * 3600,
        "max_window_s": 24 * 3600,
        # Well above an answer's time on a loaded machine: a test that counts requests must
        # not see a retry (0.3 s was exceeded once while other suites ran beside this one).
        "timeout_s": 2.0,
        "retries": 2,
        "backoff_s": 0.01,
        "sensors": [
            OpenAqSensor(sensor=PM25, location=10, station="gz-a-huangpu", parameter="pm25"),
            OpenAqSensor(sensor=NO2, location=10, station="gz-a-huangpu", parameter="no2"),
        ],
    }
    return OpenAqFeed.model_validate(fields | overrides)


async def _run(pool: AsyncConnectionPool, feed: OpenAqFeed | JsonFeed, at: datetime) -> PullReport:
    """One run of a fresh job object, as after a restart."""
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: at)
    job = HttpPullJob(pipeline, pool, feed, clock=lambda: at)
    await job.start()
    try:
        return await job.run()
    finally:
        await job.stop()


async def _stored(pool: AsyncConnectionPool, parameter: str) -> list[tuple[datetime, float, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.time, r.value, r.period_s FROM reading r"
            " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
            " WHERE s.code = 'gz-a-huangpu' AND p.code = %s ORDER BY r.time",
            [parameter],
        )
        return await cur.fetchall()


async def _watermark(pool: AsyncConnectionPool, code: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM source WHERE code = %s", [code])
        row = await cur.fetchone()
        assert row is not None
        return await source_watermark(conn, source_id=row[0])


def _expected(ends: list[datetime]) -> tuple[list[Any], list[Any]]:
    pm25 = [(e - HOUR, _pm25(e), 3600) for e in ends]
    no2 = [(e - HOUR, pytest.approx(_no2_ppb(e) * 1.88), 3600) for e in ends]
    return pm25, no2


PM25_PATH, NO2_PATH = f"/v3/sensors/{PM25}/measurements", f"/v3/sensors/{NO2}/measurements"


async def test_windows_are_paged_through_and_every_measurement_stored(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    report = await _run(db, _feed(server.url), NOW)

    ends = [NOW - n * HOUR for n in range(29, -1, -1)]  # (NOW - 30 h, NOW]
    pm25, no2 = _expected(ends)
    assert await _stored(db, "pm25") == pm25
    assert await _stored(db, "no2") == no2
    assert [(w.series, w.start, w.end, w.summary["accepted"]) for w in report.windows] == [
        ("sensor 101", NOW - 30 * HOUR, NOW - 6 * HOUR, 24),
        ("sensor 101", NOW - 6 * HOUR, NOW, 6),
        ("sensor 102", NOW - 30 * HOUR, NOW - 6 * HOUR, 24),
        ("sensor 102", NOW - 6 * HOUR, NOW, 6),
    ]
    # Server bounds are inclusive and the request reaches 1 s further: 25 results, 3 pages of
    # 10; then 7 results, one page. The client keeps exactly (start, end].
    asked = server.upstream.measured(PM25_PATH)
    assert [(p["datetime_from"], p["datetime_to"], p["page"]) for p in asked] == [
        ("2026-11-25T06:00:00Z", "2026-11-26T06:00:01Z", "1"),
        ("2026-11-25T06:00:00Z", "2026-11-26T06:00:01Z", "2"),
        ("2026-11-25T06:00:00Z", "2026-11-26T06:00:01Z", "3"),
        ("2026-11-26T06:00:00Z", "2026-11-26T12:00:01Z", "1"),
    ]
    assert {p["limit"] for p in asked} == {"10"}
    assert server.upstream.measured("/v3/locations/10/latest") == [{"limit": "1000"}]
    assert report.requests == 1 + 4 + 4
    assert report.errors == []
    assert await _watermark(db, "http:openaq-test") == {
        "sensor 101": "2026-11-26T12:00:00Z",
        "sensor 102": "2026-11-26T12:00:00Z",
    }
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.code, status.kind, status.accepted, status.duplicate, status.rejected) == (
        "http:openaq-test",
        "http",
        60,
        0,
        0,
    )
    assert status.last_error is None


@pytest.mark.parametrize("exclusive", [False, True], ids=["inclusive-bounds", "exclusive-bounds"])
async def test_a_restart_after_an_outage_recovers_every_window_and_repeats_none(
    db: AsyncConnectionPool, server: UpstreamServer, exclusive: bool
) -> None:
    feed = _feed(server.url, lookback_s=6 * 3600, max_window_s=6 * 3600)
    upstream = server.upstream
    upstream.exclusive_bounds = exclusive
    first_until = NOW - 20 * HOUR
    upstream.published_until = first_until
    first = await _run(db, feed, first_until)
    assert [w.summary["accepted"] for w in first.windows] == [6, 6]

    # 20 hours later, after an outage; the upstream itself has only published until NOW - 2 h,
    # so the window stops at its latest measurement rather than at the clock.
    upstream.published_until = NOW - 2 * HOUR
    upstream.requests.clear()
    second = await _run(db, feed, NOW)
    assert [(w.series, w.start, w.end) for w in second.windows if w.series == "sensor 101"] == [
        ("sensor 101", first_until, first_until + 6 * HOUR),
        ("sensor 101", first_until + 6 * HOUR, first_until + 12 * HOUR),
        ("sensor 101", first_until + 12 * HOUR, NOW - 2 * HOUR),
    ]
    assert upstream.measured(PM25_PATH)[0]["datetime_from"] == _z(first_until)
    assert second.total("accepted") == 2 * 18
    assert second.total("duplicate") == 0

    upstream.published_until = NOW
    third = await _run(db, feed, NOW + 10 * timedelta(minutes=1))
    assert [(w.start, w.end, w.summary["accepted"]) for w in third.windows] == [
        (NOW - 2 * HOUR, NOW, 2),
        (NOW - 2 * HOUR, NOW, 2),
    ]
    asked = len(upstream.requests)
    fourth = await _run(db, feed, NOW + 20 * timedelta(minutes=1))
    assert fourth.windows == []  # nothing new upstream: not even a request for measurements
    assert [path for path, _ in upstream.requests[asked:]] == ["/v3/locations/10/latest"]

    ends = [first_until - n * HOUR for n in range(5, -1, -1)] + [
        first_until + n * HOUR for n in range(1, 21)
    ]
    pm25, no2 = _expected(ends)
    assert await _stored(db, "pm25") == pm25
    assert await _stored(db, "no2") == no2
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.accepted, status.duplicate, status.revised, status.rejected) == (52, 0, 0, 0)


async def test_a_failed_watermark_write_stores_nothing_of_the_window_and_the_next_run_does(
    db: AsyncConnectionPool, server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = _feed(server.url, lookback_s=6 * 3600)

    async def broken(conn: object, **_: object) -> datetime:
        raise ConnectionError("the connection dropped while moving the watermark")

    # A crash at the last moment of the window's transaction, after its readings were written.
    monkeypatch.setattr(http_pull, "advance_watermark", broken)
    with pytest.raises(ConnectionError, match="while moving the watermark"):
        await _run(db, feed, NOW)
    monkeypatch.undo()
    assert await _stored(db, "pm25") == []
    assert await _watermark(db, "http:openaq-test") == {}
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.accepted, status.duplicate, status.revised, status.rejected) == (0, 0, 0, 0)

    again = await _run(db, feed, NOW)
    window = ("2026-11-26T06:00:00Z", "2026-11-26T12:00:01Z", "1")
    asked = server.upstream.measured(PM25_PATH)
    assert [(p["datetime_from"], p["datetime_to"], p["page"]) for p in asked] == [window, window]
    assert [(w.series, w.start, w.end, w.summary) for w in again.windows] == [
        (series, NOW - 6 * HOUR, NOW, {"accepted": 6, "duplicate": 0, "revised": 0, "rejected": 0})
        for series in ("sensor 101", "sensor 102")
    ]
    pm25, no2 = _expected([NOW - n * HOUR for n in range(5, -1, -1)])
    assert await _stored(db, "pm25") == pm25
    assert await _stored(db, "no2") == no2
    assert await _watermark(db, "http:openaq-test") == {
        "sensor 101": "2026-11-26T12:00:00Z",
        "sensor 102": "2026-11-26T12:00:00Z",
    }
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.accepted, status.duplicate, status.revised, status.rejected) == (12, 0, 0, 0)


async def test_a_window_that_cannot_be_stored_is_recorded_on_the_source_and_fails_the_run(
    db: AsyncConnectionPool, server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(conn: object, **_: object) -> datetime:
        raise ConnectionError("the connection dropped while moving the watermark")

    monkeypatch.setattr(http_pull, "advance_watermark", broken)
    with pytest.raises(ConnectionError, match="while moving the watermark"):
        await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert status.last_error == (
        "feed openaq-test, sensor 101: window (2026-11-26T06:00:00Z, 2026-11-26T12:00:00Z] not"
        " stored (ConnectionError: the connection dropped while moving the watermark); the next"
        " run fetches it again"
    )
    assert status.last_error_at == NOW
    assert server.upstream.measured(NO2_PATH) == []  # the run stopped at the failed window


async def test_a_window_failure_that_cannot_be_recorded_still_fails_the_run_with_its_own_error(
    db: AsyncConnectionPool, server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(conn: object, **_: object) -> datetime:
        raise ConnectionError("the connection dropped while moving the watermark")

    async def unrecordable(conn: object, **_: object) -> None:
        raise OSError("the database is gone too")

    monkeypatch.setattr(http_pull, "advance_watermark", broken)
    monkeypatch.setattr(pipeline_module, "record_source_error", unrecordable)
    with pytest.raises(ConnectionError, match="while moving the watermark"):
        await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert (status.last_error, status.last_error_at) == (None, None)


async def test_a_measurement_the_pipeline_rejects_is_quarantined_as_received(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    upstream = server.upstream
    upstream.altered[(PM25, NOW - HOUR)] = {"value": -5}
    upstream.altered[(NO2, NOW)] = {"parameter": {"id": NO2, "name": "no2", "units": "furlongs"}}
    report = await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    assert [w.summary["rejected"] for w in report.windows] == [1, 1]
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    # The server writes its answer with json.dumps, which writes each element as it does alone.
    sent = [
        json.dumps(upstream.measurement(PM25, NOW - HOUR), ensure_ascii=False),
        json.dumps(upstream.measurement(NO2, NOW), ensure_ascii=False),
    ]
    assert [(q.parameter_code, q.reason, q.payload) for q in quarantined] == [
        (
            "pm25",
            "pm25: value -5 ug/m3 is outside the physically possible range [0, 2000]",
            sent[0],
        ),
        ("no2", "unit 'furlongs' cannot be converted to ug/m3 for no2", sent[1]),
    ]
    assert '"units": "µg/m³"' in sent[0]  # as sent, not as EnvLink re-serialises it
    assert len(await _stored(db, "pm25")) == 5


async def test_a_measurement_that_cannot_be_mapped_is_quarantined_as_received(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    upstream = server.upstream
    # Written by hand: spacing, 1e1 and the \u escapes would all change if re-serialised.
    bad = (
        r'{ "period" : {"datetimeFrom": {"utc":"not a time"}, "datetimeTo":{"utc" :'
        r' "2026-11-26T12:00:00Z"}} ,"value":1e1, "parameter": {"units": "\u00b5g/m\u00b3"} }'
    )
    good = json.dumps(upstream.measurement(PM25, NOW), ensure_ascii=False)
    page = f'{{"meta": {{"found": 2}}, "results": [\n  {bad} ,\n\t{good}\n]}}'
    upstream.script[PM25_PATH] = [page.encode()]
    report = await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    assert [(w.series, w.summary["accepted"], w.summary["rejected"]) for w in report.windows] == [
        ("sensor 101", 1, 1),
        ("sensor 102", 6, 0),
    ]
    async with db.connection() as conn:
        quarantined = await rejected_readings(conn)
    assert [(q.station_code, q.parameter_code, q.reason, q.payload) for q in quarantined] == [
        (
            "gz-a-huangpu",
            "pm25",
            "OpenAQ sensor 101: period.datetimeFrom.utc: 'not a time' is not an ISO 8601 /"
            " RFC 3339 time",
            bad,
        )
    ]
    assert await _stored(db, "pm25") == [(NOW - HOUR, _pm25(NOW), 3600)]


async def test_timeouts_and_5xx_are_retried_until_the_answer_comes(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    server.upstream.script[PM25_PATH] = ["slow", 503]
    report = await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    assert len(server.upstream.measured(PM25_PATH)) == 3  # timed out, 503, answered
    assert report.errors == []
    assert [w.summary["accepted"] for w in report.windows] == [6, 6]
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert status.last_error is None
    assert status.accepted == 12


async def test_a_4xx_is_not_retried_is_recorded_and_leaves_that_watermark(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    feed = _feed(server.url, lookback_s=6 * 3600)
    server.upstream.script[NO2_PATH] = [404]
    report = await _run(db, feed, NOW)
    assert len(server.upstream.measured(NO2_PATH)) == 1
    message = f'sensor 102: GET {server.url}{NO2_PATH}: HTTP 404: {{"detail": "scripted 404"}}'
    assert report.errors == [message]
    assert [w.series for w in report.windows] == ["sensor 101"]
    async with db.connection() as conn:
        [status] = await source_statuses(conn)
    assert status.last_error == message
    assert status.last_error_at == NOW
    assert await _watermark(db, "http:openaq-test") == {"sensor 101": "2026-11-26T12:00:00Z"}

    later = await _run(db, feed, NOW)  # the next run fetches what the failed one could not
    assert [(w.series, w.start, w.summary["accepted"]) for w in later.windows] == [
        ("sensor 102", NOW - 6 * HOUR, 6)
    ]
    assert len(await _stored(db, "no2")) == 6


async def test_a_fetch_error_that_cannot_be_recorded_leaves_the_run_going(
    db: AsyncConnectionPool,
    server: UpstreamServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def unrecordable(conn: object, **_: object) -> None:
        raise OSError("the database is gone")

    monkeypatch.setattr(pipeline_module, "record_source_error", unrecordable)
    server.upstream.script[NO2_PATH] = [404]
    report = await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    message = f'sensor 102: GET {server.url}{NO2_PATH}: HTTP 404: {{"detail": "scripted 404"}}'
    assert report.errors == [message]
    assert [w.series for w in report.windows] == ["sensor 101"]
    assert [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()] == [
        "http:openaq-test: could not record the error for /v1/sources:"
        " OSError('the database is gone')"
    ]


async def test_5xx_and_refused_connections_give_up_after_the_retries(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    server.upstream.script[PM25_PATH] = [503, 502, 500]
    report = await _run(db, _feed(server.url, lookback_s=6 * 3600), NOW)
    assert len(server.upstream.measured(PM25_PATH)) == 3
    assert report.errors == [f"sensor 101: GET {server.url}{PM25_PATH}: HTTP 500 (3 attempts)"]
    assert await _watermark(db, "http:openaq-test") == {"sensor 102": "2026-11-26T12:00:00Z"}

    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = await _run(db, _feed(f"http://127.0.0.1:{closed}", code="nobody"), NOW)
    assert refused.windows == []
    assert refused.requests == 3 * 3  # latest, then each sensor: 3 attempts apiece
    assert all("connection failed" in e and e.endswith("(3 attempts)") for e in refused.errors)
    assert [e.split(":")[0] for e in refused.errors] == [
        "location 10 latest",
        "sensor 101",
        "sensor 102",
    ]


async def test_a_generic_json_feed_is_mapped_paged_and_its_bad_items_quarantined(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    hours = [NOW - n * HOUR for n in range(6, -1, -1)]
    records: list[dict[str, Any]] = []
    for n, at in enumerate(hours):
        ts = int(at.timestamp() * 1000)
        records.append(
            {
                "ts": ts,
                "site": "DG-B07",
                "kind": "dissolved_oxygen",
                "v": {"x": 6 + n / 10, "u": "mg/l"},
            }
        )
        records.append(
            {"ts": ts, "site": "DG-B07", "kind": "temperature", "v": {"x": 24 + n, "u": "℃"}}
        )
    records.append(
        {
            "ts": int(NOW.timestamp() * 1000),
            "site": "DG-X",
            "kind": "temperature",
            "v": {"x": 1, "u": "℃"},
        }
    )
    records.append(
        {
            "ts": int(NOW.timestamp() * 1000),
            "site": "DG-B07",
            "kind": "temperature",
            "v": {"u": "℃"},
        }
    )
    server.upstream.buoy_records = records
    feed = JsonFeed(
        code="buoys",
        kind="json",
        url=f"{server.url}/buoys",
        from_param="start",
        to_param="end",
        time_format="epoch_ms",
        page_param="page",
        page_size_param="size",
        page_size=4,
        lookback_s=6 * 3600,
        retries=0,
        mapping=JsonMapping(
            items="data.records",
            time="ts",
            value="v.x",
            unit="v.u",
            station="site",
            parameter="kind",
        ),
        period_s=3600,
        station_map={"DG-B07": "dg-w-humen"},
        parameter_map={"dissolved_oxygen": "do", "temperature": "water_temp"},
    )
    report = await _run(db, feed, NOW)
    # The window (NOW - 6 h, NOW] holds 6 hours of both parameters and the 2 bad items; the
    # server's inclusive bound also returns NOW - 6 h, which the client leaves to the window before.
    assert [w.summary for w in report.windows] == [
        {"accepted": 12, "duplicate": 0, "revised": 0, "rejected": 2}
    ]
    assert [p["page"] for _, p in server.upstream.requests] == ["1", "2", "3", "4", "5"]
    assert {(p["start"], p["end"], p["size"]) for _, p in server.upstream.requests} == {
        ("2026-11-26T06:00:00Z", "2026-11-26T12:00:01Z", "4")
    }
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT p.code, r.time, r.value, r.period_s FROM reading r"
            " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
            " WHERE s.code = 'dg-w-humen' ORDER BY p.code, r.time"
        )
        stored = await cur.fetchall()
        quarantined = await rejected_readings(conn)
    assert stored == [
        ("do", at, pytest.approx(6 + n / 10), 3600) for n, at in enumerate(hours) if n
    ] + [("water_temp", at, 24.0 + n, 3600) for n, at in enumerate(hours) if n]
    # Both the feed's own rejection and the pipeline's are quarantined as the record was sent.
    assert sorted((q.reason, q.payload) for q in quarantined) == [
        ("feed buoys: no value at 'v.x'", json.dumps(records[-1], ensure_ascii=False)),
        ("unknown station 'DG-X'", json.dumps(records[-2], ensure_ascii=False)),
    ]
    assert await _watermark(db, "http:buoys") == {"feed": "2026-11-26T12:00:00Z"}


async def test_a_corrupt_watermark_stops_that_series_with_a_clear_error(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    feed = _feed(server.url, lookback_s=6 * 3600)
    await _run(db, _feed(server.url, lookback_s=3600), NOW - HOUR)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT id FROM source WHERE code = 'http:openaq-test'")
        row = await cur.fetchone()
        assert row is not None
        await merge_watermark(conn, source_id=row[0], values={"sensor 101": "yesterday"})
    report = await _run(db, feed, NOW)
    assert report.errors == [
        "watermark 'sensor 101': 'yesterday' is not an ISO 8601 / RFC 3339 time;"
        " fix or delete it in source.watermark"
    ]
    assert [(w.series, w.start, w.end) for w in report.windows] == [("sensor 102", NOW - HOUR, NOW)]
    assert len(await _stored(db, "pm25")) == 1


async def test_hostile_records_are_rejected_alone_and_quarantined_byte_for_byte(
    db: AsyncConnectionPool, server: UpstreamServer
) -> None:
    ts = b"%d" % int((NOW - HOUR).timestamp() * 1000)

    def record(**fields: bytes) -> bytes:
        raw = {"ts": ts, "site": b'"DG-B07"', "kind": b'"dissolved_oxygen"', "x": b"6.5"}
        raw |= {"u": b'"mg/l"', **fields}
        return b"{" + b", ".join(b'"%s": %s' % (k.encode(), v) for k, v in raw.items()) + b"}"

    # (record, why it is rejected, or None when it is stored)
    records: list[tuple[bytes, str | None]] = [
        (record(), None),
        (record(site=rb'"DG-B07\u0000"'), "unknown station 'DG-B07\\x00'"),
        (record(kind=b'"temperature\xff"'), "unknown parameter 'temperature\\udcff'"),
        (record(u=rb'"mg/l\ud800"'), "unit 'mg/l\\ud800' cannot be converted to mg/L for do"),
        (record(x=b"1e400"), "feed buoys: value inf is not a finite number"),
        (
            record(x=b"18446744073709551616"),
            "do: value 1.84467e+19 mg/L is outside the physically possible range [0, 25]",
        ),
        (
            record(x=b"9" * 400),
            "feed buoys: value is an integer of 400 digits, beyond double precision",
        ),
        (
            record(ts=b"18446744073709551616"),
            "feed buoys: time 18446744073709551616 is out of range",
        ),
        (record(ts=b"NaN"), "feed buoys: time nan is out of range"),
        (record(ts=b"%d" % int(NOW.timestamp() * 1000), x=b"-0"), None),
    ]
    page = b'{"data": {"records": [\n' + b",\n".join(r for r, _ in records) + b"\n]}}"
    server.upstream.script["/buoys"] = [page]
    feed = JsonFeed(
        code="buoys",
        kind="json",
        url=f"{server.url}/buoys",
        from_param="start",
        to_param="end",
        time_format="epoch_ms",
        lookback_s=6 * 3600,
        retries=0,
        mapping=JsonMapping(
            items="data.records", time="ts", value="x", unit="u", station="site", parameter="kind"
        ),
        period_s=3600,
        station_map={"DG-B07": "dg-w-humen"},
        parameter_map={"dissolved_oxygen": "do"},
    )
    report = await _run(db, feed, NOW)
    assert (report.errors, [w.summary for w in report.windows]) == (
        [],
        [{"accepted": 2, "duplicate": 0, "revised": 0, "rejected": 8}],
    )
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT p.code, r.time, r.value FROM reading r JOIN station s ON s.id = r.station_id"
            " JOIN parameter p ON p.id = r.parameter_id WHERE s.code = 'dg-w-humen' ORDER BY r.time"
        )
        stored = await cur.fetchall()
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    assert stored == [("do", NOW - HOUR, 6.5), ("do", NOW, 0.0)]
    assert str(stored[1][2]) == "0.0"  # -0 is stored without its sign
    assert [(q.reason, q.payload.encode("utf-8", "surrogateescape")) for q in quarantined] == [
        (reason, r) for r, reason in records if reason is not None
    ]
    assert await _watermark(db, "http:buoys") == {"feed": "2026-11-26T12:00:00Z"}
