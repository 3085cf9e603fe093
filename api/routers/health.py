"""Liveness, readiness and metrics, without a key (probes and Prometheus do not hold keys)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from api.deps import ConnDep, RequestConnectionDep
from api.metrics import ApiMetrics
from core.errors import MigrationsPending
from schemas.common import ErrorOut
from store.metrics import database_counts
from store.migrate import pending_migrations
from store.pool import ping

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


class Readiness(BaseModel):
    status: str
    database: str
    migrations: str


@router.get(
    "/healthz",
    responses={
        503: {
            "model": ErrorOut,
            "description": "database_unavailable, or overloaded (no connection came in time)",
        }
    },
)
async def healthz(conn: ConnDep) -> Health:
    """The process is up and the database answers."""
    await ping(conn)
    return Health(status="ok", database="ok")


@router.get(
    "/readyz",
    responses={
        503: {
            "model": ErrorOut,
            "description": "database_unavailable, overloaded, or migrations_pending (the"
            " database lacks migrations this version ships: run `envlink migrate`)",
        }
    },
)
async def readyz(conn: ConnDep) -> Readiness:
    """Ready to serve: the database answers and has every migration this version ships."""
    pending = await pending_migrations(conn)
    if pending:
        raise MigrationsPending(
            f"the database lacks migrations {', '.join(pending)}: run `envlink migrate`"
        )
    return Readiness(status="ready", database="ok", migrations="current")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {}},
            "description": "Prometheus text format, metrics named envlink_*",
        },
        503: {"model": ErrorOut, "description": "database_unavailable, or overloaded"},
    },
)
async def metrics(request: Request, held: RequestConnectionDep) -> Response:
    """Prometheus metrics: requests, latency, pool, readings, alert transitions, outbox depth.

    While the database is known to be away, the counts kept there are left out and
    `envlink_database_up` is 0; the process's own metrics are still there.
    """
    api_metrics: ApiMetrics = request.app.state.metrics
    database = held.database
    away = database.listener is not None and database.listener.down
    counts = None if away else await database_counts(await held.get())
    api_metrics.observe_pool(database.pool)
    return Response(api_metrics.render(counts), media_type=CONTENT_TYPE_LATEST)
