"""Liveness and readiness, without a key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import PoolDep
from store.pool import ping

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/healthz")
async def healthz(pool: PoolDep) -> Health:
    """The process is up and the database answers."""
    async with pool.connection() as conn:
        await ping(conn)
    return Health(status="ok", database="ok")
