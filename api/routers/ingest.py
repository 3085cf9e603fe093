"""`POST /v1/readings`: batch push for the partner city's systems (writer role).

Each item is validated on its own: a malformed item is a per-item rejection and never fails the
request. Malformed items and items the pipeline rejects are quarantined as the client sent them
(their text cut out of the body). Ownership is all or nothing: if any item names a station
of another agency, the whole request is refused with 403 and nothing of it is stored, because a
partner system that mixes up station codes should hear about it before any of its data lands.
Limits are checked before the body is parsed: Content-Length when sent, bytes counted while
reading otherwise.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request

from api.deps import PipelineDep, require_role
from api.errors import error_responses
from core.errors import Forbidden, InvalidInput, PayloadTooLarge
from ingest.flags import qc_of_flag
from ingest.pipeline import SourceRef
from ingest.received import ReceivedJson, json_text, parse_json, quarantine_as_received
from schemas.common import ErrorOut
from schemas.push import (
    MAX_BODY_BYTES,
    MAX_READINGS,
    PushItemResult,
    PushResult,
    PushSummary,
    push_body_schema,
    validate_item,
)
from schemas.readings import IntakeResult, ReadingIn, Rejection
from store.audit import record_audit
from store.catalogue import CatalogueSnapshot
from store.keys import ApiKey
from store.pool import Conn

router = APIRouter(prefix="/v1", tags=["ingest"], responses=error_responses(401, 422, 503))

_BODY_SCHEMA = {k: v for k, v in push_body_schema().items() if k != "$schema"}


@router.post(
    "/readings",
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Readings to store (schemas/json/readings-push.schema.json)",
            "content": {"application/json": {"schema": _BODY_SCHEMA}},
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON or has no readings array"},
        401: {"model": ErrorOut, "description": "No valid API key"},
        403: {
            "model": ErrorOut,
            "description": "The key lacks the writer role, or an item names another agency's "
            "station (the whole request is refused; nothing is stored)",
        },
        413: {"model": ErrorOut, "description": "Over 10,000 readings or 5 MiB"},
    },
)
async def push_readings(
    request: Request,
    pipeline: PipelineDep,
    key: Annotated[ApiKey, Depends(require_role("writer"))],
) -> PushResult:
    """Store pushed readings; a result per item in input order (re-sent items are duplicates)."""
    body = await _body(request)
    raw_items = _readings(body)
    catalogue = await pipeline.catalogue()
    _check_ownership(raw_items, catalogue, agency=key.agency)
    items: list[ReadingIn | Rejection] = [
        _reading_or_rejection(index, raw) for index, raw in enumerate(raw_items)
    ]
    received = ReceivedJson()
    received.add(body, range(len(items)), path=("readings",))
    quarantine_as_received(items, received)
    source = SourceRef(f"push:{key.agency}", "push")

    async def audit(conn: Conn, result: IntakeResult) -> None:
        stations = sorted({item.station for item in items if isinstance(item, ReadingIn)})
        after = {"received": len(items), **result.summary, "stations": stations}
        await record_audit(
            conn, key_id=key.id, agency=key.agency, action="readings.push",
            target=f"source:{source.code}", after=after,
        )  # fmt: skip

    result = await pipeline.ingest(items, source=source, raw=received, then=audit)
    reasons = {rejection.index: rejection.reason for rejection in result.rejections}
    return PushResult(
        received=len(items),
        summary=PushSummary(**result.summary),
        results=[
            PushItemResult(index=index, outcome=outcome, reason=reasons.get(index))
            for index, outcome in enumerate(result.outcomes)
        ],
    )


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(_too_many_bytes(f"{int(declared):,} bytes (Content-Length)"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(_too_many_bytes(f"more than {MAX_BODY_BYTES:,} bytes"))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_many_bytes(what: str) -> str:
    return (
        f"the request body is {what}; the limit is 5 MiB ({MAX_BODY_BYTES:,} bytes)"
        " per request: split the readings into several requests"
    )


def _readings(body: bytes) -> list[object]:
    if not body.strip():
        raise InvalidInput('the request body is empty; send {"readings": [...]} as JSON')
    try:
        document = parse_json(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("readings"), list):
        raise InvalidInput('the request body must be a JSON object {"readings": [...]}')
    unexpected = sorted(set(document) - {"readings"})
    if unexpected:
        raise InvalidInput(
            f"unexpected top-level field(s) {', '.join(unexpected)}; the body is"
            ' {"readings": [...]}'
        )
    readings: list[object] = document["readings"]
    if len(readings) > MAX_READINGS:
        raise PayloadTooLarge(
            f"the request has {len(readings):,} readings; the limit is {MAX_READINGS:,} per"
            " request: split the readings into several requests"
        )
    return readings


def _check_ownership(raw_items: list[object], catalogue: CatalogueSnapshot, *, agency: str) -> None:
    foreign: dict[str, str] = {}
    for raw in raw_items:
        code = raw.get("station") if isinstance(raw, dict) else None
        station = catalogue.stations.get(code) if isinstance(code, str) else None
        if station is not None and station.agency != agency:
            foreign[station.code] = station.agency
    if foreign:
        named = ", ".join(f"{code} ({owner})" for code, owner in sorted(foreign.items()))
        raise Forbidden(
            f"a key of {agency} may push readings only for {agency}'s stations, not {named};"
            " nothing from this request was stored"
        )


def _reading_or_rejection(index: int, raw: object) -> ReadingIn | Rejection:
    checked = validate_item(raw)
    if isinstance(checked, str):
        fields = raw if isinstance(raw, dict) else {}
        station, parameter = fields.get("station"), fields.get("parameter")
        return Rejection(
            index,
            checked,
            station if isinstance(station, str) else None,
            parameter if isinstance(parameter, str) else None,
            json_text(raw),
        )
    return ReadingIn(
        station=checked.station,
        parameter=checked.parameter,
        time=checked.time,
        value=checked.value,
        unit=checked.unit,
        period_s=checked.period_s,
        qc=qc_of_flag(checked.flag),
    )
