"""The joint rules: read by every key, changed only by the joint office, every change versioned."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import ConnDep, KeyDep, require_role
from api.errors import error_responses
from api.links import link, linked
from api.output import ZoneDep, in_zone
from api.params import RuleId
from core.errors import InvalidInput
from core.timeutil import utcnow
from schemas.common import ErrorOut, Page
from schemas.rules import RuleOut, RuleUpdate
from store.audit import record_audit
from store.keys import ApiKey
from store.rules import StoredRule, check_rule, current_rules, get_rule, rule_versions, write_rule

_FIRST = "$response.body#/items/0/id"
router = APIRouter(prefix="/v1", tags=["rules"], responses=error_responses(401, 422, 503))


def _rule_out(rule: StoredRule) -> RuleOut:
    return RuleOut(
        id=rule.id,
        version=rule.version,
        changed_via=rule.changed_via,
        changed_by=rule.changed_by,
        changed_at=rule.changed_at,
        comment=rule.comment,
        definition=rule.definition,
    )


@router.get(
    "/rules",
    responses=linked(
        200,
        rule=link("get", "/v1/rules/{rule_id}", "The first rule", {"rule_id": _FIRST}),
        versions=link("get", "/v1/rules/{rule_id}/versions", "Its versions", {"rule_id": _FIRST}),
    ),
)
async def rules(conn: ConnDep, key: KeyDep, zone: ZoneDep) -> Page[RuleOut]:
    """Every rule of the joint rule set in its version in force, by id."""
    page = Page[RuleOut](items=[_rule_out(rule) for rule in await current_rules(conn)])
    return in_zone(page, zone)


@router.get(
    "/rules/{rule_id}",
    responses={
        **error_responses(404),
        **linked(
            200,
            change=link(
                "put",
                "/v1/rules/{rule_id}",
                "A new version of the rule, its definition as it is",
                {"rule_id": "$response.body#/id"},
                request_body="$response.body#",
            ),
        ),
    },
)
async def rule(conn: ConnDep, key: KeyDep, zone: ZoneDep, rule_id: RuleId) -> RuleOut:
    """One rule in its version in force."""
    return in_zone(_rule_out(await get_rule(conn, rule_id)), zone)


@router.get("/rules/{rule_id}/versions", responses=error_responses(404))
async def versions(conn: ConnDep, key: KeyDep, zone: ZoneDep, rule_id: RuleId) -> Page[RuleOut]:
    """Every version of a rule, oldest first: who changed it, when, through what and why."""
    found = await rule_versions(conn, rule_id)
    if not found:
        await get_rule(conn, rule_id)  # raises NotFound
    return in_zone(Page[RuleOut](items=[_rule_out(version) for version in found]), zone)


@router.put(
    "/rules/{rule_id}",
    responses={
        400: {"model": ErrorOut, "description": "The definition names unknown codes or units"},
        403: {"model": ErrorOut, "description": "The key lacks the joint_office role"},
        422: {"model": ErrorOut, "description": "The definition is not a valid rule"},
    },
)
async def put_rule(
    conn: ConnDep,
    key: Annotated[ApiKey, Depends(require_role("joint_office"))],
    zone: ZoneDep,
    rule_id: RuleId,
    body: RuleUpdate,
) -> RuleOut:
    """Make a new version of a rule (or create it); an identical definition adds no version.

    The change is recorded with the key's agency and id and the time; `envlink seed` never
    overwrites a rule changed here.
    """
    if body.definition.id != rule_id:
        raise InvalidInput(
            f"the definition's id {body.definition.id!r} differs from the path's {rule_id!r}"
        )
    async with conn.transaction():
        await check_rule(conn, body.definition)
        before = await current_rules(conn, rule_id=rule_id)
        stored, changed = await write_rule(
            conn,
            body.definition,
            via="api",
            by=f"{key.agency}:key{key.id}",
            at=utcnow(),
            comment=body.comment,
        )
        if changed:
            await record_audit(
                conn, key_id=key.id, agency=key.agency, action="rule.change",
                target=f"rule:{rule_id}",
                before=_rule_out(before[0]).model_dump(mode="json") if before else None,
                after=_rule_out(stored).model_dump(mode="json"),
            )  # fmt: skip
    return in_zone(_rule_out(stored), zone)
