"""The application factory. The pool opens in the lifespan, never at import."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from psycopg_pool import AsyncConnectionPool
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

from api.deps import KEY_SCHEMES, ApiDatabase
from api.errors import install_error_handlers
from api.metrics import ApiMetrics
from api.middleware import RateLimitHeaders, RequestIdsAndMetrics
from api.ratelimit import RateLimits
from api.routers import (
    alerts,
    audit,
    catalogue,
    episodes,
    export,
    health,
    ingest,
    keys,
    limits,
    notifications,
    quality,
    readings,
    reports,
    rules,
    situation,
    sources,
)
from api.stream import AlertFeed
from core.errors import SettingsError
from core.settings import Settings
from ingest.pipeline import Pipeline
from schemas.common import ErrorOut
from store.catalogue import CatalogueCache
from store.listen import Listener
from store.pool import open_pool

GZIP_MINIMUM_BYTES = 1024
WEB_DIR = Path(__file__).parent / "web"  # the screen: plain HTML, CSS and JavaScript modules


async def end_streams(app: FastAPI) -> None:
    """The server is stopping: end the app's open alert streams now.

    An SSE stream never ends by itself, and uvicorn ends the app's lifespan only after every open
    response has (or its graceful shutdown ran out and it cancelled them, a traceback each); a
    server calls this as it begins to stop (envlink.runtime.ApiServer), so each stream ends
    cleanly at once and its EventSource resumes from its Last-Event-ID when the API is back.
    Streams opened after this end as they start. Idempotent; the lifespan's end does it too.
    """
    feed: AlertFeed = app.state.feed
    await feed.stop()


def create_app(
    settings: Settings,
    *,
    pool: AsyncConnectionPool | None = None,
    listener: Listener | None = None,
    catalogue_cache: CatalogueCache | None = None,
) -> FastAPI:
    """Build the API. A pool or listener given is the caller's; what is not given the app opens.

    The app opens them in its lifespan, so an app served without one (httpx's ASGITransport)
    works on the given pool alone: no key cache, no fast answer while the database is away.
    `catalogue_cache` is the process's catalogue cache, listening already; without one the app
    keeps its own on its pool, listening on its listener.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as opened:
            if pool is None:
                if settings.database_url is None:
                    raise SettingsError(
                        "ENVLINK_DATABASE_URL must be resolved before the API starts"
                    )
                own_pool = await open_pool(
                    settings.database_url,
                    name="api",
                    min_size=settings.api_pool_min_size,
                    max_size=settings.api_pool_max_size,
                    timeout_s=settings.pool_timeout_s,
                )
                opened.push_async_callback(own_pool.close)
                _attach(app, own_pool, settings, listener, catalogue_cache)
            if listener is None:
                database: ApiDatabase = app.state.database
                url = settings.database_url or database.pool.conninfo
                if not isinstance(url, str):
                    raise SettingsError("the API needs a database URL to listen on")
                own_listener = Listener(url, name="api")
                database.listen(own_listener)
                if catalogue_cache is None:
                    app.state.catalogue.listen(own_listener)
                await own_listener.start()
                opened.push_async_callback(own_listener.stop)
            app.state.feed.reopen()
            opened.push_async_callback(app.state.feed.stop)
            opened.callback(app.state.metrics.close)
            yield

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
    app.state.metrics = ApiMetrics()
    if pool is not None:
        _attach(app, pool, settings, listener, catalogue_cache)
    install_error_handlers(app)
    app.add_middleware(RateLimitHeaders)
    # Compressed where the client accepts it; answers under 1 KB gain nothing. Starlette never
    # compresses text/event-stream, so the alert stream's events are not held back. Level 6
    # (zlib's default), not Starlette's 9: as small within a few percent, several times faster
    # (a streamed export is compressed as fast as it is read).
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=6)
    _outermost(app)
    app.include_router(health.router)
    # The signed bulletin link: its signature is its authority, so no key and no key's limit.
    app.include_router(reports.signed_router)
    # Every other operation needs a key, and every key has a rate limit. Notifications come
    # before alerts: /v1/alerts/stream must not be taken for /v1/alerts/{alert_id}.
    keyed_routers = (
        catalogue.router,
        readings.router,
        export.router,
        ingest.router,
        sources.router,
        quality.router,
        limits.router,
        notifications.router,
        alerts.router,
        rules.router,
        keys.router,
        audit.router,
        situation.router,
        reports.router,
        episodes.router,
    )
    for keyed in keyed_routers:
        app.include_router(keyed, responses=RATE_LIMITED)
    _document_keys(app, keyed_routers)
    _serve_screen(app, settings.map_tile_url)
    return app


RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorOut,
        "description": "rate_limited: the key's requests a minute are used up, or too many bad"
        " keys came from the client's address",
        "headers": {
            name: {"description": description, "schema": {"type": "integer"}}
            for name, description in (
                ("Retry-After", "Seconds until a request will be let through"),
                ("RateLimit-Limit", "The key's requests a minute"),
                ("RateLimit-Remaining", "Requests left now (0)"),
                ("RateLimit-Reset", "Seconds until a request will be let through"),
            )
        },
    }
}


# What an operation's object holds before its security, in the order FastAPI writes them.
_OPERATION_HEAD = {"tags", "summary", "description", "operationId", "deprecated"}


def _document_keys(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Declare the API key (BEARER, API_KEY_HEADER) on every operation of the keyed routers, as
    FastAPI writes a security dependency's, with no dependency for requests to solve."""
    keyed = {
        (route.path, method.lower())
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    if (path, method) in keyed:
                        operations[method] = _with_key(operation)
            schema.setdefault("components", {})["securitySchemes"] = KEY_SCHEMES
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _with_key(operation: dict[str, Any]) -> dict[str, Any]:
    head = [(k, v) for k, v in operation.items() if k in _OPERATION_HEAD]
    rest = [(k, v) for k, v in operation.items() if k not in _OPERATION_HEAD]
    security: list[dict[str, list[str]]] = [{name: []} for name in KEY_SCHEMES]
    return dict([*head, ("security", security), *rest])


def _serve_screen(app: FastAPI, tile_url: str | None) -> None:
    """The agencies' screen at `/`, its files under `/web/`; it talks to the API like any client.
    A tile server, if the site has one, is named to the page in a meta element."""
    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    if tile_url is not None:
        meta = f'<meta name="envlink-map-tiles" content="{html.escape(tile_url)}">'
        page = page.replace("</head>", f"{meta}\n</head>", 1)

    @app.get("/", include_in_schema=False)
    async def screen() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")


def _outermost(app: FastAPI) -> None:
    """Put request ids and metrics outside even Starlette's error handling, so that an answer
    of 500 also carries its X-Request-ID and is counted, and the error's log line names the
    request. (add_middleware puts middleware inside it; FastAPIOffline cannot be subclassed.)
    """
    build = app.build_middleware_stack

    def build_with_ours() -> ASGIApp:
        return RequestIdsAndMetrics(build())

    app.build_middleware_stack = build_with_ours  # type: ignore[method-assign]


def _attach(
    app: FastAPI,
    pool: AsyncConnectionPool,
    settings: Settings,
    listener: Listener | None,
    cache: CatalogueCache | None,
) -> None:
    """Give the routers the pool, the catalogue and the ingest pipeline (pushed readings)."""
    app.state.database = ApiDatabase(
        pool,
        timeout_s=settings.pool_timeout_s,
        rate_limits=RateLimits(settings) if settings.rate_limits == "on" else None,
    )
    if listener is not None:
        app.state.database.listen(listener)
    app.state.feed = AlertFeed(app.state.database)
    if cache is None:
        cache = CatalogueCache(pool)
        if listener is not None:
            cache.listen(listener)
    app.state.catalogue = cache
    app.state.pipeline = Pipeline(pool, earliest=settings.earliest_reading_date, catalogue=cache)
