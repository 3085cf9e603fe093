"""`GET /v1/episodes`: the regional air episodes the regional-episode rules found."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ConnDep, KeyDep
from api.errors import error_responses
from api.output import ZoneDep, in_zone
from api.pagination import decode_cursor, encode_cursor
from core.errors import InvalidInput
from core.timeutil import cst_day_start
from schemas.common import City, Day, ErrorOut, Page, Text
from schemas.episodes import EpisodeOut
from store.episodes import EpisodeRow, list_episodes

router = APIRouter(prefix="/v1", tags=["episodes"], responses=error_responses(401, 422, 503))


def episode_out(row: EpisodeRow) -> EpisodeOut:
    """A stored episode as the API shows it."""
    return EpisodeOut.model_validate(row, from_attributes=True)


def _day_start(day: date | None) -> datetime | None:
    return None if day is None else cst_day_start(day)


@router.get(
    "/episodes",
    responses={
        400: {
            "model": ErrorOut,
            "description": "end not after start; a cursor this API did not issue",
        },
        422: {"model": ErrorOut, "description": "A bad date, city or limit"},
    },
)
async def episodes(
    conn: ConnDep,
    key: KeyDep,
    zone: ZoneDep,
    start: Annotated[
        Day | None, Query(description="Episodes going on at or after this day (Asia/Shanghai)")
    ] = None,
    end: Annotated[Day | None, Query(description="... and before this day: [start, end)")] = None,
    city: Annotated[City | None, Query(description="Episodes that take in this city")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Text | None = None,
) -> Page[EpisodeOut]:
    """Regional air episodes (docs/evaluation.md §7), the latest start first, each with the alert
    that announced it. An episode overlapping [start, end) is listed, one still going on too."""
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"end: {end} must be after start {start}")
    before = None
    if cursor:
        position = decode_cursor(cursor, keys={"start": str, "id": int})
        try:
            after = datetime.fromisoformat(position["start"])
        except ValueError:
            raise InvalidInput("cursor: not a cursor this API issued") from None
        if after.utcoffset() is None:
            raise InvalidInput("cursor: not a cursor this API issued")
        before = (after, int(position["id"]))
    rows = await list_episodes(
        conn,
        start=_day_start(start),
        end=_day_start(end),
        city=city,
        before=before,
        limit=limit + 1,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"start": rows[-1].start.isoformat(), "id": rows[-1].id})
    page = Page[EpisodeOut](items=[episode_out(row) for row in rows], next_cursor=next_cursor)
    return in_zone(page, zone)
