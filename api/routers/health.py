"""Liveness and readiness, without a key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ConnDep
from schemas.common import ErrorOut
from store.pool import ping

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


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
