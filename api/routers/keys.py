"""API keys over the API: any key reads its own (GET /v1/me); admins create, list, revoke.

The joint office's admins manage every agency's keys; an admin of a city agency manages its own
agency's keys only, and only the joint office's admins grant the `joint_office` role. A revoked
key stops working at once in every API process: the revocation's NOTIFY clears each process's
key cache, and this process's own cache is cleared before the answer is sent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from api.deps import ConnDep, DatabaseDep, KeyDep, SettingsDep, require_role
from api.errors import error_responses
from api.output import ZoneDep, in_zone
from api.pagination import decode_cursor, encode_cursor
from api.params import PathId
from core.errors import AgencyNotFound, Forbidden, InvalidInput
from core.timeutil import as_aware, rfc3339, utcnow
from schemas.common import ErrorOut, Page, Text
from schemas.keys import KeyCreatedOut, KeyIn, KeyOut, MeOut
from store.audit import record_audit
from store.keys import ApiKey, create_key, get_key, list_keys, revoke_key

router = APIRouter(prefix="/v1", tags=["keys"], responses=error_responses(401, 422, 503))

JOINT_OFFICE = "joint_office"  # the agency whose admins manage every agency's keys

AdminKey = Annotated[ApiKey, Depends(require_role("admin"))]


def key_out(key: ApiKey) -> KeyOut:
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at <= utcnow():
        state = "expired"
    else:
        state = "active"
    return KeyOut.model_validate(
        {
            "id": key.id,
            "prefix": key.prefix,
            "agency": key.agency,
            "roles": key.roles,
            "label": key.label,
            "state": state,
            "created_at": key.created_at,
            "expires_at": key.expires_at,
            "revoked_at": key.revoked_at,
            "last_used_at": key.last_used_at,
            "rate_limit": key.rate_limit,
        }
    )


def audited(key: ApiKey) -> dict[str, object]:
    """A key as the audit log keeps it (UTC times)."""
    return key_out(key).model_dump(mode="json")


def _check_manages(admin: ApiKey, agency: str) -> None:
    if admin.agency not in (JOINT_OFFICE, agency):
        raise Forbidden(
            f"an admin key of {admin.agency} manages {admin.agency}'s keys only, not {agency}'s"
            f" (the joint office's admins manage every agency's keys)"
        )


_MANAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    403: {"model": ErrorOut, "description": "No admin role, or another agency's key"},
}


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_MANAGE_RESPONSES,
        400: {"model": ErrorOut, "description": "Unknown agency, or an expiry already passed"},
    },
)
async def add_key(conn: ConnDep, admin: AdminKey, zone: ZoneDep, body: KeyIn) -> KeyCreatedOut:
    """Create a key; the answer holds the key itself, shown this once (only its hash is kept)."""
    _check_manages(admin, body.agency)
    if "joint_office" in body.roles and admin.agency != JOINT_OFFICE:
        raise Forbidden("only the joint office's admins grant the 'joint_office' role")
    expires_at = as_aware(body.expires_at) if body.expires_at else None
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput(f"expires_at: {rfc3339(expires_at)} has passed")
    async with conn.transaction():
        try:
            key, plain = await create_key(
                conn, agency=body.agency, roles=list(body.roles), label=body.label,
                expires_at=expires_at, rate_limit=body.rate_limit,
            )  # fmt: skip
        except AgencyNotFound:
            raise InvalidInput(
                f"agency: no agency with code {body.agency!r} (gz_eeb, dg_eeb, joint_office)"
            ) from None
        await record_audit(
            conn, key_id=admin.id, agency=admin.agency, action="key.create",
            target=f"key:{key.id}", after=audited(key),
        )  # fmt: skip
    created = KeyCreatedOut.model_validate({**key_out(key).model_dump(), "key": plain})
    return in_zone(created, zone)


@router.get("/keys", responses={**_MANAGE_RESPONSES, **error_responses(400)})
async def keys(
    conn: ConnDep,
    admin: AdminKey,
    zone: ZoneDep,
    agency: Annotated[Text | None, Query(description="Only this agency's keys")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Text | None = None,
) -> Page[KeyOut]:
    """Keys by id, never the keys themselves: every agency's for the joint office, else your own."""
    if agency is not None:
        _check_manages(admin, agency)
    elif admin.agency != JOINT_OFFICE:
        agency = admin.agency
    after = decode_cursor(cursor, keys={"id": int})["id"] if cursor else 0
    rows = await list_keys(conn, agency=agency, after_id=after, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": rows[-1].id})
    return in_zone(Page[KeyOut](items=[key_out(k) for k in rows], next_cursor=next_cursor), zone)


@router.delete("/keys/{key_id}", responses={**_MANAGE_RESPONSES, **error_responses(404)})
async def revoke(
    conn: ConnDep, database: DatabaseDep, admin: AdminKey, zone: ZoneDep, key_id: PathId
) -> KeyOut:
    """Revoke a key: it stops working at once, in every API process. Revoking twice is a no-op."""
    async with conn.transaction():
        before = await get_key(conn, key_id)
        _check_manages(admin, before.agency)
        after = await revoke_key(conn, key_id)
        if before.revoked_at is None:
            await record_audit(
                conn, key_id=admin.id, agency=admin.agency, action="key.revoke",
                target=f"key:{key_id}", before=audited(before), after=audited(after),
            )  # fmt: skip
    # The NOTIFY reaches this process's cache too, but only after the answer may have gone out.
    database.keys.clear()
    return in_zone(key_out(after), zone)


@router.get("/me")
async def me(key: KeyDep, settings: SettingsDep, zone: ZoneDep) -> MeOut:
    """The caller's key: its agency, roles, rate limit and expiry (what a client may offer)."""
    rate_limit = None
    if settings.rate_limits == "on":
        rate_limit = key.rate_limit or settings.rate_limit_per_minute
    out = MeOut(
        key_id=key.id, prefix=key.prefix, agency=key.agency, agency_city=key.agency_city,
        roles=key.roles, label=key.label, expires_at=key.expires_at, rate_limit=rate_limit,
    )  # fmt: skip
    return in_zone(out, zone)
