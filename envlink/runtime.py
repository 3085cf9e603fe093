"""Wiring the stages into processes: database resolution, the worker, the API server."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import resource
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI
from psycopg_pool import AsyncConnectionPool
from uvicorn.supervisors import Multiprocess

from alerts.bulletin.monthly import BULLETIN_GRACE_S, bulletin_trigger, generate_monthly_bulletin
from alerts.loop import AlertLoop
from alerts.notify.channels import build_channels
from alerts.notify.channels.base import http_client
from alerts.notify.dispatcher import Dispatcher
from alerts.notify.stage import NotificationStage
from api.app import create_app, end_streams
from api.metrics import MULTIPROCESS_DIR
from core.errors import InvalidInput, SettingsError
from core.logging import quiet_accept_errors
from core.retry import Backoff
from core.settings import Settings
from core.signing import check_signing_key, missing_signing_key
from envlink.check import HEARTBEAT_S
from ingest.history import HistoryQc
from ingest.jobs import create_partitions_ahead, delete_old_raw_readings
from ingest.leader import ElectedScheduler, worker_name
from ingest.pipeline import Pipeline
from ingest.sources.base import Source, SourceHealth
from ingest.sources.csv_folder import CsvFolder
from ingest.sources.hj212.client import Hj212Fleet
from ingest.sources.hj212.server import Hj212Server
from ingest.sources.http_pull import HttpPullJob
from ingest.sources.mqtt import Broker, MqttPublisher, MqttSubscriber
from ingest.sources.simulator import SimulatorJob, simulated_history
from ingest.sources.story import Story
from schemas.catalogue import load_catalogue
from schemas.notifications import load_subscriptions
from schemas.rules import load_rules
from schemas.sources import load_sources
from store.catalogue import CatalogueCache, SeedReport, seed_catalogue
from store.listen import Listener
from store.migrate import Migration, migrate
from store.pool import connect, open_pool
from store.rules import RuleSeedReport, seed_rules
from store.subscriptions import (
    SubscriptionSeedReport,
    bulletin_link_subscriptions,
    seed_subscriptions,
)
from store.timescale import TimescaleOptions, reading_layout, require_hypertable

log = logging.getLogger(__name__)

# On SIGTERM, requests under way get this long to finish; open event streams are then closed.
GRACEFUL_SHUTDOWN_S = 5
# How long an API process may take to start (and to answer its supervisor) before it is restarted.
WORKER_START_S = 60
# How long a stopped source's run() may take to return before it is cancelled.
SOURCE_STOP_S = 5.0
# Descriptors kept for everything but HJ 212 connections (database pools and listener, API
# clients, files, the embedded server's pipes) when the cap is sized to the open-files limit.
OPEN_FILES_RESERVE = 256


def raise_open_files_limit() -> int:
    """Raise this process's open-files limit to its hard limit; the limit now in force.

    Each HJ 212 station holds a descriptor for as long as it is connected, and the soft limit
    (often 1024) is far below what a server facing thousands of stations needs.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def hj212_connection_cap(settings: Settings, open_files: int) -> int:
    """ENVLINK_HJ212_MAX_CONNECTIONS, else what the open-files limit leaves after the rest."""
    if settings.hj212_max_connections is not None:
        return settings.hj212_max_connections
    reserve = OPEN_FILES_RESERVE + settings.api_pool_max_size + settings.worker_pool_max_size
    return max(open_files - reserve, 1)


async def run_migrations(url: str, settings: Settings) -> tuple[list[Migration], str]:
    """Apply the migrations; those applied now and how `reading` is stored, in words."""
    conn = await connect(url)
    try:
        applied = await migrate(conn, timescaledb=TimescaleOptions.from_settings(settings))
        return applied, (await reading_layout(conn)).describe()
    finally:
        await conn.close()


async def check_timescaledb(url: str, settings: Settings) -> None:
    """Refuse to serve without a hypertable when ENVLINK_TIMESCALEDB=required."""
    if settings.timescaledb != "required":
        return
    conn = await connect(url)
    try:
        await require_hypertable(conn)
    finally:
        await conn.close()


async def run_seed(url: str, settings: Settings) -> tuple[SeedReport, RuleSeedReport]:
    """Load config/ into the database (idempotent); rules changed through the API are kept."""
    catalogue = load_catalogue(settings.config_dir)
    rule_set = load_rules(settings.config_dir / "thresholds.yaml")
    conn = await connect(url, autocommit=False)
    try:
        async with conn.transaction():
            report = await seed_catalogue(conn, catalogue)
            return report, await seed_rules(conn, rule_set, at=datetime.now(UTC))
    finally:
        await conn.close()


async def run_seed_subscriptions(url: str, settings: Settings) -> SubscriptionSeedReport:
    """Load config/subscriptions.yaml (after the catalogue); API-changed ones are kept.

    SettingsError for an enabled bulletin subscription by a link channel without a signing key.
    """
    subscriptions = load_subscriptions(settings.config_dir / "subscriptions.yaml")
    for spec in (s for s in subscriptions.subscriptions if s.enabled):
        try:
            check_signing_key(
                spec.kind, spec.channel, settings.signing_key is not None, code=spec.code
            )
        except InvalidInput as exc:
            raise SettingsError(f"subscriptions.yaml: {exc}") from None
    conn = await connect(url, autocommit=False)
    try:
        async with conn.transaction():
            return await seed_subscriptions(conn, subscriptions, at=datetime.now(UTC))
    finally:
        await conn.close()


@dataclass
class Worker:
    """Sources, the alert loop and notifications in this process; scheduled work while it leads."""

    pool: AsyncConnectionPool
    listener: Listener
    settings: Settings
    simulate: bool
    # The demo's scripted scenes, played by the simulator (none: everyday readings only).
    story: Story | None = None
    open_files: int = 1024  # the process's open-files limit, which sizes the HJ 212 cap
    name: str = field(default_factory=worker_name)  # as leader: host:pid
    # The process's catalogue, listening on `listener`; a worker given none makes it.
    catalogue: CatalogueCache | None = None
    tasks: list[asyncio.Task[object]] = field(default_factory=list, init=False)
    sources: list[Source] = field(default_factory=list, init=False)
    notify_client: httpx.AsyncClient | None = field(default=None, init=False)
    # The task of each source that runs until stopped, by source code.
    _runs: dict[str, asyncio.Task[object]] = field(default_factory=dict, init=False)

    async def start(self) -> None:
        if self.catalogue is None:
            self.catalogue = CatalogueCache(self.pool)
            self.catalogue.listen(self.listener)
        self.pipeline = Pipeline(
            self.pool, earliest=self.settings.earliest_reading_date, catalogue=self.catalogue
        )
        # Jobs run only on the worker elected to lead; the others stand by to take over.
        self.elected = ElectedScheduler(
            self.pool,
            owner=self.name,
            retry_s=self.settings.leader_retry_s,
            check_s=self.settings.leader_check_s,
        )
        self.scheduler = self.elected.scheduler
        await create_partitions_ahead(self.pool)
        await self._check_signing_key()
        self.scheduler.add_job(
            create_partitions_ahead, "interval", hours=6, args=[self.pool], id="partitions"
        )
        # The month before's joint bulletin, on the 1st at 09:00 Asia/Shanghai (a new version).
        self.scheduler.add_job(
            generate_monthly_bulletin,
            bulletin_trigger(),
            args=[self.pool],
            id="bulletin",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=BULLETIN_GRACE_S,
        )
        if self.settings.raw_retention_days is not None:
            self.scheduler.add_job(
                delete_old_raw_readings,
                "interval",
                hours=24,
                args=[self.pool],
                kwargs={"days": self.settings.raw_retention_days},
                id="raw_retention",
                coalesce=True,
                max_instances=1,
                next_run_time=datetime.now(UTC),
            )
        async for source in self._configured_sources():
            await self._start_source(source)
        if self.settings.alert_loop_enabled:
            # Every worker, leader or not, runs an alert loop unless told not to: they share the
            # dirty-window queue, and each judges the history of what it claims before its
            # rollups. A busy HJ 212 worker leaves this CPU-heavy work to other workers.
            alert_loop = AlertLoop(
                self.pool,
                catalogue=self.pipeline.catalogue_cache,
                sweep_s=self.settings.alert_sweep_s,
                water_min_samples=self.settings.water_daily_min_samples,
                judge=HistoryQc(self.pipeline).judge,
            )
            self.tasks.append(asyncio.create_task(alert_loop.run(self.listener), name="alerts"))
        if self.settings.notify_enabled:
            self._start_notifications()
        await self.elected.start()
        log.info(
            "worker %s started (simulator %s); its jobs run while it leads",
            self.name,
            "on" if self.simulate else "off",
        )

    async def _configured_sources(self) -> AsyncIterator[Source]:
        """The sources the settings ask for, in start order, each made once those before run.

        The simulator comes last: its devices dial the HJ 212 server's port (known once it
        listens), and its MQTT stations publish to the subscription.
        """
        settings = self.settings
        sources = load_sources(settings.sources_path, required=settings.sources_file is not None)
        hj212 = None
        if settings.hj212_enabled:
            hj212 = Hj212Server(
                self.pipeline,
                pool=self.pool,
                host=settings.hj212_host,
                port=settings.hj212_port,
                idle_timeout_s=settings.hj212_idle_timeout_s,
                max_connections=hj212_connection_cap(settings, self.open_files),
                batch_window_s=settings.hj212_batch_window_ms / 1000,
                listener=self.listener,
                worker=self.name,
            )
            yield hj212
        broker = Broker.from_settings(settings)
        subscriber = None
        if broker is not None:
            subscriber = MqttSubscriber(self.pipeline, broker, sources.mqtt)
            yield subscriber
        for feed in sources.http_feeds:
            if feed.enabled:
                yield HttpPullJob(self.pipeline, self.pool, feed)
        if settings.csv_dir is not None:
            yield CsvFolder(self.pipeline, settings.csv_dir, interval_s=settings.csv_poll_s)
        if self.simulate:
            fleet = None
            if hj212 is not None:
                # The simulated stations dial in like real ones (a wildcard address is local).
                host = settings.hj212_host
                host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
                history = functools.partial(simulated_history, story=self.story)
                fleet = Hj212Fleet(host, hj212.port, history=history)
            publisher = None
            if broker is not None and subscriber is not None and sources.mqtt.simulator_stations:
                publisher = MqttPublisher(
                    self.pipeline.catalogue_cache, broker, stations=sources.mqtt.simulator_stations
                )
                # A first-ever subscription only receives what is published after it exists.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await subscriber.connected.wait()
            yield SimulatorJob(
                self.pipeline,
                interval_s=settings.simulator_interval_s,
                mqtt=publisher,
                hj212=fleet,
                story=self.story,
            )

    async def _start_source(self, source: Source) -> None:
        """Start a source and run it: in a task of its own, or by the elected scheduler."""
        await source.start()
        self.sources.append(source)
        if source.interval_s is None:
            task = asyncio.create_task(source.run(), name=source.ref.code)
            self.tasks.append(task)
            self._runs[source.ref.code] = task
        else:
            self.scheduler.add_job(
                source.run,
                "interval",
                seconds=source.interval_s,
                id=source.ref.code,
                coalesce=True,
                max_instances=1,
                next_run_time=datetime.now(UTC),
            )

    def health(self) -> list[SourceHealth]:
        """Each started source's account of itself, in start order."""
        return [source.health() for source in self.sources]

    async def _check_signing_key(self) -> None:
        """One clear error at start when bulletin links cannot be signed (`envlink check` says
        the same). The worker still starts: alerts and e-mailed bulletins do not need the key,
        and a link delivery that cannot be made is dead-lettered saying why."""
        if self.settings.signing_key is not None:
            return
        async with self.pool.connection() as conn:
            problem = missing_signing_key(await bulletin_link_subscriptions(conn))
        if problem is not None:
            log.error("%s", problem)

    def _start_notifications(self) -> None:
        """Every worker runs a notification stage and a dispatcher; the database shares work."""
        settings = self.settings
        self.notify_client = http_client(settings.notify_http_timeout_s)
        stage = NotificationStage(
            self.pool, poll_s=settings.notify_poll_s, deadline_s=settings.notify_deadline_s
        )
        dispatcher = Dispatcher(
            self.pool,
            build_channels(settings, self.notify_client),
            public_base_url=settings.public_base_url,
            catalogue=self.pipeline.catalogue_cache,
            worker=self.name,
            concurrency=settings.notify_concurrency,
            lease_s=settings.notify_lease_s,
            backoff=Backoff(settings.notify_retry_base_s, settings.notify_retry_max_s),
            poll_s=settings.notify_poll_s,
            signing_key=settings.signing_key.get_secret_value() if settings.signing_key else None,
        )
        self.tasks.append(asyncio.create_task(stage.run(self.listener), name="notify-stage"))
        self.tasks.append(
            asyncio.create_task(dispatcher.run(self.listener), name="notify-dispatch")
        )

    async def stop(self) -> None:
        await self.elected.stop()
        # In reverse: the simulator stops feeding before the server and subscription it feeds.
        for source in reversed(self.sources):
            try:
                await source.stop()
                run = self._runs.get(source.ref.code)
                if run is not None:
                    await asyncio.wait([run], timeout=SOURCE_STOP_S)
            except Exception:
                log.exception("stopping source %s failed", source.ref.code)
        # A source's run() ends with its stop; the loops, and a source that did not, end here.
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.notify_client is not None:
            await self.notify_client.aclose()


async def keep_heartbeat(path: Path) -> None:
    """Touch `path` every HEARTBEAT_S while the event loop runs (`envlink check --liveness`).

    A file, not a row: a worker whose database is away is alive (its stations stay connected)
    and must not be restarted for it; one whose event loop is stuck is not.
    """
    try:
        while True:
            _touch(path)  # microseconds on a local disk: not worth a thread
            await asyncio.sleep(HEARTBEAT_S)
    except OSError as exc:
        log.warning("cannot keep the heartbeat at %s (ENVLINK_HEARTBEAT_FILE): %s", path, exc)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def tune_gc() -> None:
    """Collect garbage less often: a long-running service holds many long-lived objects.

    CPython's default (a young-generation pass every 700 allocations, a full pass soon after)
    makes full passes over the catalogue, pools and buffers many times a second under load,
    each pausing every connection the process serves. Objects made at start-up are frozen
    out of the collector altogether.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Allocations up to this come from the heap, and up to twice it free at the heap's top is kept.
LARGE_ALLOCATION = 16 << 20


def tune_malloc() -> bool:
    """Keep freed memory for the next large response rather than handing it back at once.

    A page of 10,000 readings is a megabyte of JSON, and writing and sending it allocates a few
    buffers that size. glibc serves each from a fresh mapping (above 128 KiB, by default) or
    returns the heap's top to the system as soon as it is freed, so every page touched its
    megabytes anew: a page fault per 4 KiB, a third of the CPU the page cost. Under glibc only;
    elsewhere nothing changes (False).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2 * LARGE_ALLOCATION)
    )


class ApiServer(uvicorn.Server):
    """uvicorn's server of the API, ending the API's open alert streams as it begins to stop.

    uvicorn lets open responses finish before the app's lifespan ends, and an alert stream never
    finishes by itself: without this, each open stream would hold the shutdown for the whole
    graceful period, then be cancelled with a traceback.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await end_streams(self.app)
        await super().shutdown(sockets)


async def serve(
    url: str,
    settings: Settings,
    *,
    api: bool,
    worker: bool,
    simulate: bool = False,
    api_socket: socket.socket | None = None,
    announce: str | None = None,
    story: Story | None = None,
    extra_routes: APIRouter | None = None,
) -> None:
    """Run the API, the worker, or both in this process until interrupted.

    `api_socket`, already listening, is where the API serves (else ENVLINK_API_HOST/PORT).
    `announce` is printed once the stop signals are handled, so a Ctrl-C that follows it always
    takes the clean shutdown.
    The API and the worker each get a pool of their own, so HJ 212 replies never wait behind
    API requests; both share the process's one listening connection.
    """
    # SIGTERM (docker stop) and SIGINT both end the process through the same clean shutdown,
    # even where the parent started it with SIGINT ignored (background jobs of a shell).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if announce is not None:
        print(announce, flush=True)
    quiet_accept_errors(loop)
    open_files = raise_open_files_limit()
    async with contextlib.AsyncExitStack() as opened:
        listener = Listener(url, name="api" if api and not worker else "worker")
        api_pool = worker_pool = None
        if api:
            api_pool = await open_pool(
                url,
                name="api",
                min_size=settings.api_pool_min_size,
                max_size=settings.api_pool_max_size,
                timeout_s=settings.pool_timeout_s,
            )
            opened.push_async_callback(api_pool.close)
        if worker:
            worker_pool = await open_pool(
                url,
                name="worker",
                min_size=settings.worker_pool_min_size,
                max_size=settings.worker_pool_max_size,
            )
            opened.push_async_callback(worker_pool.close)
            listener.add_reconnect_hook(worker_pool.check)
        # The process's one catalogue, read on the worker's pool when there is one, told of every
        # change on the listener; the API and the worker share it.
        read_on = worker_pool if worker_pool is not None else api_pool
        assert read_on is not None, "serve() runs the API, the worker or both"
        catalogue = CatalogueCache(read_on)
        catalogue.listen(listener)
        app = None
        if api_pool is not None:
            # Built before the listener starts, so it listens for revoked keys from the start.
            settings = settings.model_copy(update={"database_url": url})
            app = create_app(settings, pool=api_pool, listener=listener, catalogue_cache=catalogue)
            if extra_routes is not None:
                app.include_router(extra_routes)  # the demo's notification inbox
        await listener.start()
        opened.push_async_callback(listener.stop)
        tune_gc()
        tune_malloc()
        if worker_pool is not None:
            running_worker = Worker(
                worker_pool,
                listener,
                settings,
                simulate=simulate,
                story=story,
                open_files=open_files,
                catalogue=catalogue,
            )
            opened.push_async_callback(running_worker.stop)
            await running_worker.start()
            heartbeat = asyncio.create_task(keep_heartbeat(settings.heartbeat_path))
            opened.callback(heartbeat.cancel)
        if app is not None:
            config = uvicorn.Config(
                app,
                host=settings.api_host,
                port=settings.api_port,
                log_level="warning",
                log_config=None,  # uvicorn's lines through our handler: escaped like the rest
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            )
            server = ApiServer(config, app)
            log.info("API on http://%s:%d (docs at /docs)", settings.api_host, settings.api_port)
            await _serve_until_stopped(server, api_socket, stop)
        else:
            await stop.wait()


async def _serve_until_stopped(
    server: uvicorn.Server, api_socket: socket.socket | None, stop: asyncio.Event
) -> None:
    """Serve until a stop signal, including one that came during start-up.

    uvicorn takes SIGINT/SIGTERM over while it serves and hands them back after; one that
    arrived before (while the pools opened, the worker started) is in `stop`, and ends the
    server as soon as it starts.
    """
    serving = asyncio.create_task(
        server.serve(sockets=None if api_socket is None else [api_socket])
    )
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((serving, stopped), return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            server.should_exit = True
        await serving
    finally:
        stopped.cancel()


def serve_api_processes(
    url: str, settings: Settings, *, workers: int, api_socket: socket.socket
) -> int:
    """Serve the API from `workers` uvicorn processes until SIGINT or SIGTERM; 0 if all ended well.

    The processes share `api_socket`, already listening (the kernel spreads connections among
    them), and each has its own pool and listening connection. They find the database this process
    resolved through ENVLINK_DATABASE_URL.
    """
    os.environ["ENVLINK_DATABASE_URL"] = url
    # A fresh folder for the processes' metrics (api/metrics.py), set before they start: each
    # imports prometheus-client, which reads it then. Removed when they have all stopped.
    metrics_dir = tempfile.mkdtemp(prefix="envlink-metrics-")
    os.environ[MULTIPROCESS_DIR] = metrics_dir
    try:
        return _supervise(settings, workers, api_socket)
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(settings: Settings, workers: int, api_socket: socket.socket) -> int:
    config = uvicorn.Config(
        "envlink.asgi:create",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        log_level="warning",
        log_config=None,  # uvicorn's lines through our handler: escaped like the rest
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # uvicorn restarts a process that has not answered its supervisor within this long; on
        # a busy machine importing the app alone takes longer than uvicorn's 5 s, and a process
        # restarted before it is up never serves at all.
        timeout_worker_healthcheck=WORKER_START_S,
    )
    supervisor = Multiprocess(config, sockets=[api_socket])
    log.info(
        "API on http://%s:%d (docs at /docs), %d processes",
        settings.api_host,
        settings.api_port,
        workers,
    )
    supervisor.run()
    # uvicorn re-raises the stop signal once a process has shut down gracefully.
    clean = {0, -signal.SIGTERM, -signal.SIGINT}
    failed = [p.pid for p in supervisor.processes if p.exitcode not in clean]
    if failed:
        log.error("API processes %s ended with an error (see above)", failed)
    return 1 if failed else 0
