"""HTTP JSON pull: OpenAQ-v3-style feeds and generic JSON feeds, windowed by a watermark.

Each series (an OpenAQ sensor, or a generic feed as a whole) has a watermark W in the source's
`watermark` document, e.g. {"sensor 123": "2026-11-26T10:00:00Z"}: every reading whose window
time is at or before W has been fetched and stored. A run asks for the windows (W, horizon] in
steps of `max_window_s` and keeps exactly the items whose time falls in the window, so windows
neither overlap nor leave gaps; the request itself reaches one second past the window's end, so
whether the upstream treats its bounds as inclusive or exclusive cannot lose an item at a
boundary. OpenAQ filters a measurement by its period end (`period.datetimeTo`), so that is the
window time there; the horizon is min(now - settle_s, the sensor's latest period end from
/v3/locations/{id}/latest), so a window never claims a span the upstream has not published yet.

The watermark advances in the same transaction as the window's readings (the pipeline's `then`),
so a window is either stored and behind the watermark or neither: a crash or a failed write never
leaves a stored window to be fetched again, nor a watermark past a window that was not stored.
Errors (after retries with exponential backoff and jitter on timeouts, connection errors and
5xx; none on 4xx) are logged and recorded on the source, and that series' watermark stays where
it was; a window that cannot be stored is recorded too, and fails the run. An item that cannot
be mapped or that the pipeline rejects is quarantined as the measurement's JSON as received.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from psycopg_pool import AsyncConnectionPool

from core.errors import InvalidInput
from core.retry import Backoff, retry
from core.timeutil import PERIODS_S, parse_time, utcnow
from ingest.pipeline import Pipeline, SourceRef
from ingest.received import ReceivedJson, json_text, parse_json, quarantine_as_received
from ingest.sources.base import SourceHealth
from ingest.sources.mqtt import finite_number, reading_from_json
from schemas.common import QC
from schemas.readings import IntakeResult, ReadingIn, Rejection
from schemas.sources import JsonFeed, OpenAqFeed, OpenAqSensor
from store.pool import Conn
from store.sources import advance_watermark, source_watermark

log = logging.getLogger(__name__)

# How far past a window's end a request reaches, so an inclusive-or-exclusive upper bound at the
# upstream cannot hide an item that sits exactly on the end; the extra items are left to the next
# window.
REQUEST_OVERLAP = timedelta(seconds=1)
_MISSING = object()


class PullError(Exception):
    """A request failed; `retryable` for timeouts, connection errors and 5xx."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Transient(Exception):
    """One request failed in a way the next may not: a timeout, a connection error, a 5xx."""


@dataclass(frozen=True)
class Window:
    """One fetched and stored window of a series, with what the pipeline did with its items."""

    series: str
    start: datetime
    end: datetime
    summary: dict[str, int]


@dataclass
class PullReport:
    """What one run of a feed did: the windows it stored and the errors it met."""

    feed: str
    windows: list[Window] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def total(self, outcome: str) -> int:
        """How many items of all windows had this outcome."""
        return sum(window.summary[outcome] for window in self.windows)


# A window's items, with each item's JSON as received.
WindowFetch = Callable[
    [datetime, datetime], Awaitable[tuple[list[ReadingIn | Rejection], ReceivedJson]]
]


@dataclass
class _WatermarkStep:
    """Moves a series' watermark to a window's end, in the transaction storing the window."""

    source_id: int
    series: str
    end: datetime
    moved_to: datetime | None = None

    async def __call__(self, conn: Conn, result: IntakeResult) -> None:
        self.moved_to = await advance_watermark(
            conn, source_id=self.source_id, key=self.series, at=self.end
        )


def dig(document: object, path: str) -> object:
    """The value at a dotted path (`a.b.0.c`; "" is the document), or _MISSING."""
    if path == "":
        return document
    node = document
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            index = int(part)
            node = node[index] if -len(node) <= index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with Z, whole seconds, as query strings carry it."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def openaq_item(result: object, sensor: OpenAqSensor) -> tuple[datetime | None, ReadingIn | str]:
    """An OpenAQ v3 measurement as (its period end, the reading or why it is not one)."""
    if not isinstance(result, dict):
        return None, "a measurement must be a JSON object"
    start_text = dig(result, "period.datetimeFrom.utc")
    end_text = dig(result, "period.datetimeTo.utc")
    if not isinstance(start_text, str) or not isinstance(end_text, str):
        return None, "period.datetimeFrom.utc / period.datetimeTo.utc missing"
    try:
        start = parse_time(start_text, field="period.datetimeFrom.utc")
        end = parse_time(end_text, field="period.datetimeTo.utc")
    except InvalidInput as exc:
        return None, str(exc)
    seconds = (end - start).total_seconds()
    if seconds not in PERIODS_S:
        label = dig(result, "period.label")
        return end, (
            f"period {label if isinstance(label, str) else ''!s} of {seconds:g} s is not one"
            " EnvLink stores (0, 60, 3600, 86400 s)"
        )
    units = dig(result, "parameter.units")
    if not isinstance(units, str):
        return end, "parameter.units missing"
    value = result.get("value", _MISSING)
    if value is _MISSING:
        return end, "value missing"
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        return end, f"value must be a number or null, not {value!r}"
    number = finite_number(value)
    if isinstance(number, str):
        return end, number
    flagged = dig(result, "flagInfo.hasFlags") is True
    return end, ReadingIn(
        station=sensor.station,
        parameter=sensor.parameter,
        time=start,
        value=number,
        unit=units,
        period_s=int(seconds),
        # OpenAQ flags mark a measurement its provider or OpenAQ doubts.
        qc=QC.SUSPECT if flagged else QC.VALID,
    )


def json_feed_item(item: object, feed: JsonFeed) -> tuple[datetime | None, ReadingIn | str]:
    """A generic feed's item as (its time, the reading or why it is not one)."""
    mapping = feed.mapping
    time = dig(item, mapping.time)
    if time is _MISSING:
        return None, f"no time at {mapping.time!r}"
    moment = _feed_time(time, feed.time_format)
    if isinstance(moment, str):
        return None, moment

    named: dict[str, object] = {}
    for name, path, constant, translate in (
        ("station", mapping.station, feed.station, feed.station_map),
        ("parameter", mapping.parameter, feed.parameter, feed.parameter_map),
        ("unit", mapping.unit, feed.unit, {}),
    ):
        found = constant if path is None else dig(item, path)
        if found is _MISSING or found is None:
            return moment, f"no {name} at {path!r}"
        if isinstance(found, str | int) and not isinstance(found, bool):
            found = translate.get(str(found), str(found))
        named[name] = found
    value = dig(item, mapping.value)
    if value is _MISSING:
        return moment, f"no value at {mapping.value!r}"
    period = feed.period_s if mapping.period_s is None else dig(item, mapping.period_s)
    reading: dict[str, object] = {
        "time": moment.isoformat(),
        "parameter": named["parameter"],
        "value": value,
        "unit": named["unit"],
        "period_s": feed.period_s if period is _MISSING else period,
    }
    if mapping.flag is not None and (flag := dig(item, mapping.flag)) is not _MISSING:
        reading["flag"] = flag
    station = named["station"]
    if not isinstance(station, str):
        return moment, f"station must be a string, not {station!r}"
    return moment, reading_from_json(reading, station=station)


def _feed_time(value: object, time_format: str) -> datetime | str:
    if time_format == "iso":
        if not isinstance(value, str):
            return f"time must be an RFC 3339 string, not {value!r}"
        try:
            return parse_time(value)
        except InvalidInput as exc:
            return str(exc)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"time must be a Unix time number, not {value!r}"
    try:
        return datetime.fromtimestamp(value / 1000 if time_format == "epoch_ms" else value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"time {value!r} is out of range"


class HttpPullJob:
    """Pulls one configured feed; `run` is what the scheduler calls every `interval_s`."""

    def __init__(
        self,
        pipeline: Pipeline,
        pool: AsyncConnectionPool,
        feed: OpenAqFeed | JsonFeed,
        *,
        clock: Callable[[], datetime] = utcnow,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._pool = pool
        self.feed = feed
        self.ref = SourceRef(code=f"http:{feed.code}", kind="http")
        self.interval_s = feed.interval_s
        self._clock = clock
        headers = {"Accept": "application/json", **feed.headers}
        if feed.api_key_env is not None:
            key = (os.environ if environ is None else environ).get(feed.api_key_env)
            if key:
                headers["X-API-Key"] = key
            else:
                log.warning(
                    "%s: %s is not set; pulling without an API key", feed.code, feed.api_key_env
                )
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(feed.timeout_s), headers=headers, follow_redirects=True
        )
        self._lock = asyncio.Lock()
        self._running = False
        self._problem: tuple[str, datetime] | None = None
        self._counters = {"runs": 0, "windows": 0, "requests": 0, "errors": 0}

    async def start(self) -> None:
        """The HTTP client is made with the job; nothing else to prepare."""
        self._running = True

    async def stop(self) -> None:
        """Close the HTTP connections."""
        self._running = False
        await self._client.aclose()

    def health(self) -> SourceHealth:
        problem, at = self._problem or (None, None)
        return SourceHealth(self.ref.code, self._running, problem, at, dict(self._counters))

    async def run(self) -> PullReport:
        """Fetch and store every window due for every series of the feed."""
        async with self._lock:  # a slow run and the next tick must not fetch the same window
            report = PullReport(self.feed.code)
            try:
                await self._run(report)
            finally:
                self._counters["runs"] += 1
                self._counters["windows"] += len(report.windows)
                self._counters["requests"] += report.requests
                self._counters["errors"] += len(report.errors)
            return report

    async def _run(self, report: PullReport) -> None:
        source_id = await self._pipeline.source_id(self.ref)
        async with self._pool.connection() as conn:
            marks = await source_watermark(conn, source_id=source_id)
        now = self._clock().astimezone(UTC).replace(microsecond=0)
        horizon = now - timedelta(seconds=self.feed.settle_s)
        if isinstance(self.feed, OpenAqFeed):
            latest = await self._openaq_latest(report)
            for sensor in self.feed.sensors:
                upstream = latest.get(sensor.sensor)
                await self._catch_up(
                    report,
                    f"sensor {sensor.sensor}",
                    marks,
                    now,
                    horizon if upstream is None else min(horizon, upstream),
                    self._openaq_fetcher(sensor, report),
                )
        else:
            await self._catch_up(
                report, "feed", marks, now, horizon, self._json_fetcher(self.feed, report)
            )
        if report.windows:
            log.info(
                "%s: %d windows, %d accepted, %d duplicate, %d rejected%s",
                self.ref.code,
                len(report.windows),
                report.total("accepted"),
                report.total("duplicate"),
                report.total("rejected"),
                f", {len(report.errors)} errors" if report.errors else "",
            )

    async def _catch_up(
        self,
        report: PullReport,
        series: str,
        marks: dict[str, Any],
        now: datetime,
        horizon: datetime,
        fetch: WindowFetch,
    ) -> None:
        mark = marks.get(series)
        start = now - timedelta(seconds=self.feed.lookback_s)
        if mark is not None:
            try:
                start = parse_time(str(mark), field=f"watermark {series!r}")
            except InvalidInput as exc:
                # Guessing a start could skip or repeat windows: leave it to an operator.
                await self._fail(report, f"{exc}; fix or delete it in source.watermark")
                return
        step = timedelta(seconds=self.feed.max_window_s)
        for _ in range(self.feed.max_windows_per_run):
            if start >= horizon:
                return
            end = min(start + step, horizon)
            try:
                items, received = await fetch(start, end)
            except PullError as exc:
                await self._fail(report, f"{series}: {exc}")
                return
            quarantine_as_received(items, received)
            advance = _WatermarkStep(await self._pipeline.source_id(self.ref), series, end)
            try:
                result = await self._pipeline.ingest(
                    items, source=self.ref, raw=received, then=advance
                )
            except Exception as exc:
                # Nothing of the window is stored and its watermark stays: the next run fetches
                # it again. The run still fails, so the scheduler's job status shows it too.
                await self._record_unstored(
                    f"feed {self.feed.code}, {series}: window ({iso_utc(start)}, {iso_utc(end)}]"
                    f" not stored ({type(exc).__name__}: {exc}); the next run fetches it again"
                )
                raise
            report.windows.append(Window(series, start, end, result.summary))
            # Another worker may have moved it further meanwhile: continue from there.
            assert advance.moved_to is not None, "the pipeline committed without its `then`"
            start = advance.moved_to
        log.info("%s: %s is still behind; the next run continues", self.ref.code, series)

    async def backfill(
        self,
        start: datetime,
        end: datetime,
        *,
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> PullReport:
        """Fetch and store (start, end] again for every series of the feed; watermarks stay.

        For a range the feed corrected or EnvLink missed: what is stored already comes back as
        duplicates, a changed value as a revision. Windows of at most max_window_s, each stored
        as it comes; `progress(done, total)` hears of each. A PullError stops it (what was
        stored stays: running it again repeats nothing).
        """
        async with self._lock:
            report = PullReport(self.feed.code)
            step = timedelta(seconds=self.feed.max_window_s)
            windows = []
            while start < end:
                windows.append((start, min(start + step, end)))
                start = windows[-1][1]
            fetchers = self._fetchers(report)
            total, done = len(fetchers) * len(windows), 0
            progress(done, total)
            for series, fetch in fetchers:
                for window_start, window_end in windows:
                    items, received = await fetch(window_start, window_end)
                    quarantine_as_received(items, received)
                    result = await self._pipeline.ingest(items, source=self.ref, raw=received)
                    report.windows.append(Window(series, window_start, window_end, result.summary))
                    done += 1
                    progress(done, total)
            return report

    def _fetchers(self, report: PullReport) -> list[tuple[str, WindowFetch]]:
        """Each series of the feed, named as its watermark is, with what fetches its windows."""
        if isinstance(self.feed, OpenAqFeed):
            return [
                (f"sensor {sensor.sensor}", self._openaq_fetcher(sensor, report))
                for sensor in self.feed.sensors
            ]
        return [("feed", self._json_fetcher(self.feed, report))]

    def _openaq_fetcher(self, sensor: OpenAqSensor, report: PullReport) -> WindowFetch:
        feed = self.feed
        assert isinstance(feed, OpenAqFeed)
        url = f"{feed.base_url.rstrip('/')}/v3/sensors/{sensor.sensor}/measurements"

        async def fetch(
            start: datetime, end: datetime
        ) -> tuple[list[ReadingIn | Rejection], ReceivedJson]:
            items: list[ReadingIn | Rejection] = []
            received = ReceivedJson()
            for page in range(1, feed.max_pages + 1):
                params = {
                    "datetime_from": iso_utc(start),
                    "datetime_to": iso_utc(end + REQUEST_OVERLAP),
                    "limit": feed.page_limit,
                    "page": page,
                }
                document, body = await self._get(url, params, report)
                results = dig(document, "results")
                if not isinstance(results, list):
                    raise PullError(f"GET {url}: the answer has no results list", retryable=False)
                kept: list[int] = []
                for position, result in enumerate(results):
                    moment, reading = openaq_item(result, sensor)
                    if moment is not None and not start < moment <= end:
                        continue  # another window's
                    kept.append(position)
                    items.append(
                        _rejection(f"OpenAQ sensor {sensor.sensor}", reading, sensor, result)
                        if isinstance(reading, str)
                        else reading
                    )
                received.add(body, kept, path=("results",))
                found = dig(document, "meta.found")
                last = len(results) < feed.page_limit or (
                    isinstance(found, int) and page * feed.page_limit >= found
                )
                if last:
                    return items, received
            raise PullError(
                f"GET {url}: more than {feed.max_pages} pages of {feed.page_limit} in"
                f" ({iso_utc(start)}, {iso_utc(end)}]; lower max_window_s or raise max_pages",
                retryable=False,
            )

        return fetch

    def _json_fetcher(self, feed: JsonFeed, report: PullReport) -> WindowFetch:
        path = tuple(feed.mapping.items.split(".")) if feed.mapping.items else ()

        async def fetch(
            start: datetime, end: datetime
        ) -> tuple[list[ReadingIn | Rejection], ReceivedJson]:
            items: list[ReadingIn | Rejection] = []
            received = ReceivedJson()
            for page in range(1, feed.max_pages + 1):
                params: dict[str, str | int] = {
                    feed.from_param: iso_utc(start),
                    feed.to_param: iso_utc(end + REQUEST_OVERLAP),
                }
                if feed.page_param is not None:
                    params[feed.page_param] = page
                if feed.page_size_param is not None:
                    params[feed.page_size_param] = feed.page_size
                document, body = await self._get(feed.url, params, report)
                found = dig(document, feed.mapping.items)
                if not isinstance(found, list):
                    raise PullError(
                        f"GET {feed.url}: no list at {feed.mapping.items!r}", retryable=False
                    )
                kept: list[int] = []
                for position, raw in enumerate(found):
                    moment, reading = json_feed_item(raw, feed)
                    if moment is not None and not start < moment <= end:
                        continue
                    kept.append(position)
                    items.append(
                        _rejection(f"feed {feed.code}", reading, None, raw)
                        if isinstance(reading, str)
                        else reading
                    )
                received.add(body, kept, path=path)
                if feed.page_param is None or len(found) < feed.page_size:
                    return items, received
            raise PullError(
                f"GET {feed.url}: more than {feed.max_pages} pages; lower max_window_s",
                retryable=False,
            )

        return fetch

    async def _openaq_latest(self, report: PullReport) -> dict[int, datetime]:
        """Each sensor's latest period end, from the locations' /latest (freshness)."""
        feed = self.feed
        assert isinstance(feed, OpenAqFeed)
        latest: dict[int, datetime] = {}
        wanted = {s.sensor for s in feed.sensors}
        for location in sorted({s.location for s in feed.sensors if s.location is not None}):
            url = f"{feed.base_url.rstrip('/')}/v3/locations/{location}/latest"
            try:
                document, _ = await self._get(url, {"limit": 1000}, report)
            except PullError as exc:
                # Without freshness the window simply ends at now - settle_s.
                await self._fail(report, f"location {location} latest: {exc}")
                continue
            results = dig(document, "results")
            for result in results if isinstance(results, list) else []:
                sensor = dig(result, "sensorsId")
                moment = dig(result, "datetime.utc")
                if sensor in wanted and isinstance(moment, str) and isinstance(sensor, int):
                    try:
                        latest[sensor] = parse_time(moment).astimezone(UTC)
                    except InvalidInput:
                        continue
        return latest

    async def _get(
        self, url: str, params: dict[str, Any], report: PullReport
    ) -> tuple[object, bytes]:
        """The answer's JSON document and its body as received."""
        attempts = self.feed.retries + 1
        tried = 0

        async def attempt() -> tuple[object, bytes]:
            nonlocal tried
            tried += 1
            report.requests += 1
            try:
                response = await self._client.get(url, params=params)
            except httpx.TimeoutException:
                raise _Transient(f"timed out after {self.feed.timeout_s:g} s") from None
            except httpx.TransportError as exc:
                raise _Transient(f"connection failed: {exc!r}") from None
            if response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise PullError(
                    f"GET {url}: HTTP {response.status_code}: {response.text[:300]}",
                    retryable=False,
                )
            try:
                return parse_json(response.content), response.content
            except orjson.JSONDecodeError as exc:
                raise PullError(f"GET {url}: not JSON: {exc}", retryable=False) from None

        async def failed(exc: Exception, delay: float) -> None:
            log.warning(
                "%s: GET %s: %s; retry %d of %d in %.2f s",
                self.ref.code,
                url,
                exc,
                tried,
                self.feed.retries,
                delay,
            )

        try:
            return await retry(
                attempt,
                attempts=attempts,
                backoff=Backoff(self.feed.backoff_s, self.feed.backoff_max_s),
                retryable=lambda exc: isinstance(exc, _Transient),
                failed=failed,
            )
        except _Transient as exc:
            raise PullError(f"GET {url}: {exc} ({attempts} attempts)", retryable=True) from None

    async def _fail(self, report: PullReport, problem: str) -> None:
        report.errors.append(problem)
        log.warning("%s: %s", self.ref.code, problem)
        await self._record(problem)

    async def _record_unstored(self, problem: str) -> None:
        log.error("%s: %s", self.ref.code, problem)
        await self._record(problem)

    async def _record(self, problem: str) -> None:
        at = self._clock()
        self._problem = problem, at
        await self._pipeline.record_error(self.ref, problem, at=at)


def _rejection(where: str, reason: str, sensor: OpenAqSensor | None, raw: object) -> Rejection:
    station = sensor.station if sensor else None
    parameter = sensor.parameter if sensor else None
    return Rejection(0, f"{where}: {reason}", station, parameter, json_text(raw))
