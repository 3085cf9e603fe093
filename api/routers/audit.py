"""`GET /v1/audit`: who changed what through the API, for admins and the joint office."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import ConnDep, KeyDep
from api.errors import error_responses
from api.output import ZoneDep, in_zone
from api.pagination import decode_cursor, encode_cursor
from core.errors import Forbidden, InvalidInput
from core.timeutil import as_aware
from schemas.common import ErrorOut, Instant, Page, Text
from schemas.keys import AuditAction, AuditEntryOut
from store.audit import AuditEntry, list_audit
from store.keys import ApiKey

router = APIRouter(prefix="/v1", tags=["audit"], responses=error_responses(401, 422, 503))


async def auditor(key: KeyDep) -> ApiKey:
    """Keys that may read the audit log."""
    if not {"admin", "joint_office"} & set(key.roles):
        raise Forbidden(
            f"the audit log needs the admin or joint_office role; the key has {key.roles}"
        )
    return key


def _entry_out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut.model_validate(
        {
            "id": entry.id,
            "at": entry.at,
            "key_id": entry.key_id,
            "agency": entry.agency,
            "action": entry.action,
            "target": entry.target,
            "before": entry.before,
            "after": entry.after,
        }
    )


@router.get(
    "/audit",
    responses={
        **error_responses(400),
        403: {"model": ErrorOut, "description": "Neither admin nor joint_office"},
    },
)
async def audit(
    conn: ConnDep,
    key: Annotated[ApiKey, Depends(auditor)],
    zone: ZoneDep,
    action: AuditAction | None = None,
    agency: Annotated[Text | None, Query(description="Changes made by this agency's keys")] = None,
    target: Annotated[
        Text | None,
        Query(description="What was changed: `key:7`, or a kind alone (`key`, `rule`, …)"),
    ] = None,
    start: Instant | None = None,
    end: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Text | None = None,
) -> Page[AuditEntryOut]:
    """Changes newest first: pushed readings, acknowledgements, silences, maintenance, rules,
    subscriptions and keys, each with its key, agency and time, and before/after for changes.

    Times without an offset are Asia/Shanghai; [start, end) is half-open."""
    if start is not None and end is not None and as_aware(end) <= as_aware(start):
        raise InvalidInput("end: must be after start")
    before = decode_cursor(cursor, keys={"id": int})["id"] if cursor else None
    rows = await list_audit(
        conn,
        action=action,
        agency=agency,
        target=target,
        start=as_aware(start) if start else None,
        end=as_aware(end) if end else None,
        before_id=before,
        limit=limit + 1,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": rows[-1].id})
    page = Page[AuditEntryOut](items=[_entry_out(row) for row in rows], next_cursor=next_cursor)
    return in_zone(page, zone)
