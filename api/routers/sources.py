"""`GET /v1/sources`: ingest health per source, and the scheduler's leader and jobs."""

from __future__ import annotations

import math
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ConnDep, KeyDep
from api.errors import error_responses
from api.output import ZoneDep, in_zone
from core.timeutil import utcnow
from schemas.common import Page
from store.scheduler import WORKER_SCHEDULER, current_leader, job_statuses
from store.sources import source_statuses

router = APIRouter(prefix="/v1", tags=["sources"], responses=error_responses(401, 422, 503))


class SourceOut(BaseModel):
    code: str = Field(description="e.g. hj212, mqtt, http:<feed>, push:<agency>, qc")
    kind: str
    last_success_at: datetime | None
    lag_s: int | None = Field(description="Seconds since the last successful intake")
    accepted: int
    duplicate: int
    revised: int = Field(description="For the `qc` source: readings it re-flagged as suspect")
    rejected: int
    last_error: str | None
    last_error_at: datetime | None


class LeaderOut(BaseModel):
    owner: str = Field(description="The leading worker, as host:pid")
    elected_at: datetime


class JobOut(BaseModel):
    id: str
    owner: str | None = Field(description="The worker that scheduled or last ran the job")
    runs: int
    failures: int
    last_run_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    next_run_at: datetime | None


class SchedulerOut(BaseModel):
    leader: LeaderOut | None = Field(
        description="The worker whose scheduler is active; null while none leads"
    )
    jobs: list[JobOut]


class SourcesPage(Page[SourceOut]):
    scheduler: SchedulerOut


@router.get("/sources")
async def sources(conn: ConnDep, key: KeyDep, zone: ZoneDep) -> SourcesPage:
    """Ingest health: per source its last success, lag, counts and last error; the scheduler."""
    now = utcnow()
    items = [
        SourceOut(
            code=s.code,
            kind=s.kind,
            last_success_at=s.last_success_at,
            lag_s=(
                max(0, math.floor((now - s.last_success_at).total_seconds()))
                if s.last_success_at is not None
                else None
            ),
            accepted=s.accepted,
            duplicate=s.duplicate,
            revised=s.revised,
            rejected=s.rejected,
            last_error=s.last_error,
            last_error_at=s.last_error_at,
        )
        for s in await source_statuses(conn)
    ]
    leader = await current_leader(conn, name=WORKER_SCHEDULER)
    jobs = [
        JobOut(
            id=j.job_id,
            owner=j.owner,
            runs=j.runs,
            failures=j.failures,
            last_run_at=j.last_run_at,
            last_success_at=j.last_success_at,
            last_error=j.last_error,
            last_error_at=j.last_error_at,
            next_run_at=j.next_run_at,
        )
        for j in await job_statuses(conn)
    ]
    page = SourcesPage(
        items=items,
        scheduler=SchedulerOut(
            leader=LeaderOut(owner=leader.owner, elected_at=leader.elected_at)
            if leader is not None
            else None,
            jobs=jobs,
        ),
    )
    return in_zone(page, zone)
