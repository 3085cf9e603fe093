"""Wiring the stages into processes: database resolution, the worker, the API server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from ingest.jobs import SimulatorJob, create_partitions_ahead
from ingest.pipeline import Pipeline
from schemas.catalogue import load_catalogue
from store.catalogue import SeedReport, seed_catalogue
from store.embedded import EmbeddedServer, start_embedded
from store.migrate import Migration, migrate
from store.pool import connect, open_pool

log = logging.getLogger(__name__)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database URL to use: ENVLINK_DATABASE_URL, or an embedded server for the duration."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    server: EmbeddedServer = start_embedded(settings.data_dir)
    try:
        yield server.url
    finally:
        server.stop()


async def run_migrations(url: str) -> list[Migration]:
    conn = await connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def run_seed(url: str, settings: Settings) -> SeedReport:
    """Load config/ into the database (idempotent)."""
    catalogue = load_catalogue(settings.config_dir)
    conn = await connect(url, autocommit=False)
    try:
        async with conn.transaction():
            return await seed_catalogue(conn, catalogue)
    finally:
        await conn.close()


@dataclass
class Worker:
    """Ingest and (later) alert jobs under one APScheduler in this process."""

    pool: AsyncConnectionPool
    settings: Settings
    simulate: bool

    async def start(self) -> None:
        self.pipeline = Pipeline(self.pool, earliest=self.settings.earliest_reading_date)
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        await create_partitions_ahead(self.pool)
        self.scheduler.add_job(
            create_partitions_ahead, "interval", hours=6, args=[self.pool], id="partitions"
        )
        if self.simulate:
            job = SimulatorJob(self.pipeline, interval_s=self.settings.simulator_interval_s)
            await job.tick()
            self.scheduler.add_job(
                job.tick,
                "interval",
                seconds=self.settings.simulator_interval_s,
                id="simulator",
                coalesce=True,
                max_instances=1,
            )
        self.scheduler.start()
        log.info("worker started (simulator %s)", "on" if self.simulate else "off")

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)


async def serve(
    url: str, settings: Settings, *, api: bool, worker: bool, simulate: bool = False
) -> None:
    """Run the API, the worker, or both in this process until interrupted."""
    pool = await open_pool(url, min_size=settings.pool_min_size, max_size=settings.pool_max_size)
    running_worker = Worker(pool, settings, simulate=simulate) if worker else None
    try:
        if running_worker:
            await running_worker.start()
        if api:
            app = create_app(settings.model_copy(update={"database_url": url}), pool=pool)
            config = uvicorn.Config(
                app, host=settings.api_host, port=settings.api_port, log_level="warning"
            )
            server = uvicorn.Server(config)
            log.info("API on http://%s:%d (docs at /docs)", settings.api_host, settings.api_port)
            await server.serve()
        else:
            await asyncio.Event().wait()
    finally:
        if running_worker:
            await running_worker.stop()
        await pool.close()
