"""Alerts with their timelines, acknowledgements per agency, and station maintenance windows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from alerts.notify.channels.cap import CAP_CONTENT_TYPE
from alerts.notify.dispatcher import cap_document
from api.deps import (
    CatalogueDep,
    ConnDep,
    KeyDep,
    RequestConnectionDep,
    SettingsDep,
    require_role,
)
from api.errors import error_responses
from api.links import link, linked
from api.output import ZoneDep, in_zone
from api.pagination import decode_cursor, encode_cursor
from api.params import PathId, StationCode
from api.routers.notifications import deliveries_of
from core.errors import Forbidden
from core.rounding import round_value
from core.timeutil import as_aware, utcnow
from schemas.alerts import (
    AckIn,
    AckOut,
    AckResult,
    AlertDetailOut,
    AlertOut,
    AlertState,
    MaintenanceIn,
    MaintenanceOut,
)
from schemas.common import Area, City, ErrorOut, Instant, Page, Text
from schemas.notifications import AlertWithDeliveriesOut, Language
from schemas.rules import RuleKind
from store.alerts import (
    AlertListing,
    MaintenanceWindow,
    acknowledge,
    alert_acks,
    alert_events,
    create_maintenance_window,
    get_alert,
    list_alerts,
    maintenance_windows,
    station_owner,
)
from store.audit import record_audit
from store.keys import ApiKey
from store.pool import Conn

router = APIRouter(prefix="/v1", tags=["alerts"], responses=error_responses(401, 422, 503))


# Details that hold a value of the alert's parameter, besides `value` itself.
_VALUE_DETAILS = ("peak", "reading")


def _published(
    value: float | None, details: dict[str, Any], decimals: int | None
) -> tuple[float | None, dict[str, Any]]:
    """A value and its details' values at the parameter's published decimals."""
    shown = {
        name: round_value(entry, decimals)
        if name in _VALUE_DETAILS and isinstance(entry, float)
        else entry
        for name, entry in details.items()
    }
    return round_value(value, decimals), shown


def alert_out(row: AlertListing, decimals: Mapping[str, int | None]) -> AlertOut:
    """An alert as /v1/alerts shows it, values at their parameter's published decimals."""
    value, details = _published(row.value, row.details, decimals.get(row.parameter or ""))
    return AlertOut.model_validate(
        {
            "id": row.id,
            "rule_id": row.rule_id,
            "rule_version": row.rule_version,
            "kind": row.kind,
            "state": row.state,
            "severity": row.severity,
            "station": row.station,
            "city": row.station_city or row.city,
            "area": row.area,
            "parameter": row.parameter,
            "value": value,
            "opened_at": row.opened_at,
            "pending_since": row.pending_since,
            "fired_at": row.fired_at,
            "resolved_at": row.resolved_at,
            "retracted_at": row.retracted_at,
            "last_evaluated_at": row.last_evaluated_at,
            "trigger_time": row.trigger_time,
            "details": details,
            "addressed_to": row.addressed_to,
            "acknowledged_by": row.acknowledged_by,
            "source_alert_id": row.source_alert_id,
        }
    )


async def _detail(conn: Conn, alert_id: int, decimals: Mapping[str, int | None]) -> AlertDetailOut:
    alert = alert_out(await get_alert(conn, alert_id), decimals)
    events = await alert_events(conn, alert_id=alert_id, limit=10_000)
    acks = await alert_acks(conn, alert_id)
    places = decimals.get(alert.parameter or "")
    timeline = []
    for e in events:
        value, details = _published(e.value, e.details, places)
        timeline.append(
            {
                "id": e.id,
                "at": e.at,
                "kind": e.kind,
                "state": e.state,
                "severity": e.severity,
                "value": value,
                "details": details,
            }
        )
    return AlertDetailOut.model_validate(
        {
            **alert.model_dump(),
            "timeline": timeline,
            "acks": [
                AckOut(agency=a.agency, key_id=a.key_id, at=a.at, comment=a.comment) for a in acks
            ],
        }
    )


def _alert_links(alert_id: str) -> dict[int | str, dict[str, Any]]:
    """Links from an answer that names an alert (`alert_id`, a runtime expression) to it."""
    ids = {"alert_id": alert_id}
    return linked(
        200,
        alert=link("get", "/v1/alerts/{alert_id}", "The alert with its timeline", ids),
        cap=link("get", "/v1/alerts/{alert_id}.cap", "The alert as CAP 1.2", ids),
        ack=link("post", "/v1/alerts/{alert_id}/ack", "Acknowledge it", ids),
        notifications=link(
            "get", "/v1/notifications", "Notifications about it", {"alert": alert_id}
        ),
    )


@router.get(
    "/alerts",
    responses={**error_responses(400), **_alert_links("$response.body#/items/0/id")},
)
async def alerts(
    conn: ConnDep,
    held: RequestConnectionDep,
    catalogue: CatalogueDep,
    key: KeyDep,
    zone: ZoneDep,
    state: Annotated[list[AlertState] | None, Query(description="Repeat for several")] = None,
    area: Area | None = None,
    city: City | None = None,
    kind: RuleKind | None = None,
    station: Text | None = None,
    since: Annotated[
        Instant | None,
        Query(description="Alerts live at or after this time (open, or ended since)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Text | None = None,
) -> Page[AlertOut]:
    """Alerts of both cities, newest first; times without an offset are Asia/Shanghai."""
    before = decode_cursor(cursor, keys={"id": int})["id"] if cursor else None
    rows = await list_alerts(
        conn,
        states=state,
        kind=kind,
        station=station,
        city=city,
        area=area,
        since=as_aware(since) if since else None,
        before_id=before,
        limit=limit + 1,
    )
    await held.release()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": rows[-1].id})
    items = [alert_out(row, catalogue.decimals) for row in rows]
    return in_zone(Page[AlertOut](items=items, next_cursor=next_cursor), zone)


# Declared before /alerts/{alert_id}, which would otherwise take "42.cap" for an alert id.
@router.get(
    "/alerts/{alert_id}.cap",
    response_class=Response,
    responses={200: {"content": {CAP_CONTENT_TYPE: {}}}, **error_responses(404)},
)
async def alert_cap(
    conn: ConnDep,
    catalogue: CatalogueDep,
    key: KeyDep,
    settings: SettingsDep,
    alert_id: PathId,
    language: Language = "both",
) -> Response:
    """The alert's latest CAP 1.2 message (Alert, Update or Cancel) for emergency systems."""
    body = await cap_document(
        conn,
        alert_id,
        public_base_url=settings.public_base_url,
        centres=catalogue.city_centres,
        language=language,
    )
    return Response(body, media_type=f"{CAP_CONTENT_TYPE}; charset=utf-8")


@router.get(
    "/alerts/{alert_id}",
    responses={**error_responses(404), **_alert_links("$request.path.alert_id")},
)
async def alert(
    conn: ConnDep, catalogue: CatalogueDep, key: KeyDep, zone: ZoneDep, alert_id: PathId
) -> AlertWithDeliveriesOut:
    """One alert with its timeline (in order), its acknowledgements and its deliveries."""
    detail = await _detail(conn, alert_id, catalogue.decimals)
    found = AlertWithDeliveriesOut.model_validate(
        {**detail.model_dump(), "deliveries": await deliveries_of(conn, alert_id)}
    )
    return in_zone(found, zone)


@router.post(
    "/alerts/{alert_id}/ack",
    responses={
        **error_responses(400, 404),
        **_alert_links("$response.body#/alert/id"),
        403: {"model": ErrorOut, "description": "No responder role, or not addressed to you"},
    },
)
async def ack(
    conn: ConnDep,
    catalogue: CatalogueDep,
    key: Annotated[ApiKey, Depends(require_role("responder"))],
    zone: ZoneDep,
    alert_id: PathId,
    body: AckIn | None = None,
) -> AckResult:
    """Acknowledge an alert for the key's agency (once per agency; it stops repeats to it)."""
    comment = body.comment if body else None
    async with conn.transaction():
        created = await acknowledge(
            conn, alert_id=alert_id, agency=key.agency, key_id=key.id, at=utcnow(),
            comment=comment,
        )  # fmt: skip
        if created:
            await record_audit(
                conn, key_id=key.id, agency=key.agency, action="alert.ack",
                target=f"alert:{alert_id}", after={"agency": key.agency, "comment": comment},
            )  # fmt: skip
    detail = await _detail(conn, alert_id, catalogue.decimals)
    return in_zone(AckResult(created=created, alert=detail), zone)


def _window_out(window: MaintenanceWindow) -> MaintenanceOut:
    return MaintenanceOut(
        id=window.id,
        station=window.station,
        starts_at=window.starts_at,
        ends_at=window.ends_at,
        reason=window.reason,
        created_by=window.created_by,
        created_at=window.created_at,
    )


@router.post(
    "/stations/{code}/maintenance",
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(400, 404),
        **linked(
            201,
            windows=link(
                "get",
                "/v1/stations/{code}/maintenance",
                "The station's windows",
                {"code": "$request.path.code"},
            ),
        ),
        403: {"model": ErrorOut, "description": "Not a writer or admin of the owning agency"},
    },
)
async def create_maintenance(
    conn: ConnDep, key: KeyDep, zone: ZoneDep, code: StationCode, body: MaintenanceIn
) -> MaintenanceOut:
    """Plan maintenance at one of your agency's stations: its data inside raises no alert."""
    owner = await station_owner(conn, code)
    if not {"writer", "admin"} & set(key.roles):
        raise Forbidden(
            f"planning maintenance needs the writer or admin role; the key has {key.roles}"
        )
    if owner.agency != key.agency:
        raise Forbidden(f"station {code} belongs to {owner.agency}; your key is {key.agency}'s")
    async with conn.transaction():
        window = await create_maintenance_window(
            conn,
            station_id=owner.id,
            starts_at=as_aware(body.starts_at),
            ends_at=as_aware(body.ends_at),
            reason=body.reason,
            created_by=f"{key.agency}:key{key.id}",
            at=utcnow(),
        )
        await record_audit(
            conn, key_id=key.id, agency=key.agency, action="maintenance.create",
            target=f"maintenance:{window.id}", after=_window_out(window).model_dump(mode="json"),
        )  # fmt: skip
    return in_zone(_window_out(window), zone)


@router.get("/stations/{code}/maintenance", responses=error_responses(404))
async def list_maintenance(
    conn: ConnDep, key: KeyDep, zone: ZoneDep, code: StationCode
) -> Page[MaintenanceOut]:
    """A station's maintenance windows, by start."""
    owner = await station_owner(conn, code)
    windows = await maintenance_windows(conn, station_ids=[owner.id])
    return in_zone(Page[MaintenanceOut](items=[_window_out(w) for w in windows]), zone)
