"""The application factory. The pool opens in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from psycopg_pool import AsyncConnectionPool

from api.errors import install_error_handlers
from api.routers import (
    alerts,
    catalogue,
    health,
    ingest,
    notifications,
    quality,
    readings,
    rules,
    sources,
)
from core.errors import SettingsError
from core.settings import Settings
from ingest.pipeline import Pipeline
from store.pool import open_pool


def create_app(settings: Settings, *, pool: AsyncConnectionPool | None = None) -> FastAPI:
    """Build the API. With `pool`, the caller owns it; otherwise the app opens and closes one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if pool is not None:
            yield
            return
        if settings.database_url is None:
            raise SettingsError("ENVLINK_DATABASE_URL must be resolved before the API starts")
        opened = await open_pool(
            settings.database_url, min_size=settings.pool_min_size, max_size=settings.pool_max_size
        )
        _attach(app, opened, settings)
        try:
            yield
        finally:
            await opened.close()

    # /docs and /redoc load their scripts from EnvLink itself (a pinned package), never from a
    # CDN: agency networks are often cut off from the internet.
    app = FastAPIOffline(
        title="EnvLink",
        version="0.1.0",
        summary="Shared air and water monitoring of Guangzhou and Dongguan",
        lifespan=lifespan,
        static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )
    app.state.settings = settings
    if pool is not None:
        _attach(app, pool, settings)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(catalogue.router)
    app.include_router(readings.router)
    app.include_router(ingest.router)
    app.include_router(sources.router)
    app.include_router(quality.router)
    # Before alerts: /v1/alerts/stream must not be taken for /v1/alerts/{alert_id}.
    app.include_router(notifications.router)
    app.include_router(alerts.router)
    app.include_router(rules.router)
    return app


def _attach(app: FastAPI, pool: AsyncConnectionPool, settings: Settings) -> None:
    """Give the routers the pool and the ingest pipeline (pushed readings go through it)."""
    app.state.pool = pool
    app.state.pipeline = Pipeline(pool, earliest=settings.earliest_reading_date)
