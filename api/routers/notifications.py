"""Notifications (the outbox and its deliveries), subscriptions, silences, the live alert stream.

Subscriptions are managed by their agency's admins; silences by its responders or admins, and
they mute messages to that agency only. Secrets are write-only and robot keys in target URLs are
shown as ***. GET /v1/alerts/stream is a Server-Sent Events stream of alert events as they are
committed (fanned out by the process's AlertFeed, api/stream.py); each event's SSE id is its
alert_event id, so a client reconnecting with Last-Event-ID resumes exactly after the last event
it received.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import timedelta, tzinfo
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import StreamingResponse

from alerts.notify.dispatcher import notification_key
from api.deps import ConnDep, KeyDep, SettingsDep, require_role, stream_key
from api.errors import error_responses
from api.links import link, linked
from api.output import ZoneDep, in_zone
from api.pagination import decode_cursor, encode_cursor
from api.params import BIGINT_MAX, PathId
from api.stream import AlertFeed, StreamEnded
from core.errors import Forbidden, InvalidInput
from core.signing import check_signing_key
from core.timeutil import as_aware, rfc3339, utcnow
from schemas.common import Area, City, ErrorOut, Page, Text
from schemas.keys import StreamTokenOut
from schemas.notifications import (
    AttemptOut,
    DeliveryOut,
    Escalation,
    EscalationOut,
    Filters,
    NotificationItemOut,
    NotificationOut,
    NotificationStatus,
    SilenceIn,
    SilenceOut,
    StreamEventOut,
    SubscriptionIn,
    SubscriptionOut,
)
from store.alerts import StreamEvent
from store.audit import record_audit
from store.keys import ApiKey, create_stream_token
from store.outbox import NotificationRow, attempts_of, list_notifications, notification_items
from store.pool import Conn, unreachable
from store.silences import SilenceRow, create_silence, expire_silence, get_silence, list_silences
from store.subscriptions import (
    SubscriptionRow,
    create_subscription,
    delete_subscription,
    get_subscription,
    list_subscriptions,
    replace_subscription,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["notifications"], responses=error_responses(401, 422, 503))

AdminKey = Annotated[ApiKey, Depends(require_role("admin"))]
# Comment lines keep proxies from closing an idle stream.
KEEPALIVE_S = 15.0
STREAM_TOKEN_LIFETIME = timedelta(minutes=10)
_NEW_SUB = {"subscription_id": "$response.body#/id"}
_NEW_SILENCE = {"silence_id": "$response.body#/id"}


async def responder_or_admin(key: KeyDep) -> ApiKey:
    """Keys that may silence their agency's messages."""
    if not {"responder", "admin"} & set(key.roles):
        raise Forbidden(f"silences need the responder or admin role; the key has {key.roles}")
    return key


SilencerKey = Annotated[ApiKey, Depends(responder_or_admin)]


def redact(target: str) -> str:
    """A target fit to show: the values of a URL's query (robot keys, tokens) as ***."""
    parts = urlsplit(target)
    if not parts.query:
        return target
    query = urlencode([(name, "***") for name, _ in parse_qsl(parts.query)], safe="*")
    return urlunsplit(parts._replace(query=query))


async def notification_outs(
    conn: Conn, rows: list[NotificationRow], *, with_attempts: bool
) -> list[Any]:
    """API models of notification rows with their items (and attempts)."""
    ids = [row.id for row in rows]
    items: dict[int, list[NotificationItemOut]] = defaultdict(list)
    for item in await notification_items(conn, ids):
        items[item.notification_id].append(
            NotificationItemOut(
                alert_id=item.alert_id,
                event_id=item.event_id,
                event_kind=item.event_kind,
                state=item.state,
                severity=item.severity,
            )
        )
    attempts: dict[int, list[AttemptOut]] = defaultdict(list)
    if with_attempts:
        for attempt in await attempts_of(conn, ids):
            attempts[attempt.notification_id].append(
                AttemptOut(
                    attempt=attempt.attempt,
                    started_at=attempt.started_at,
                    finished_at=attempt.finished_at,
                    status=attempt.status,
                    response_code=attempt.response_code,
                    error=attempt.error,
                    worker=attempt.worker,
                )
            )
    outs: list[Any] = []
    for row in rows:
        fields = {
            "id": row.id,
            "key": notification_key(row.id),
            "kind": row.kind,
            "status": row.status,
            "agency": row.agency,
            "subscription": row.subscription,
            "channel": row.channel,
            "target": redact(row.target),
            "language": row.language,
            "group_key": row.group_key,
            "created_at": row.created_at,
            "due_at": row.due_at if row.status == "pending" else None,
            "deadline_at": row.deadline_at,
            "sent_at": row.sent_at,
            "failed_at": row.failed_at,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "items": items.get(row.id, []),
        }
        if with_attempts:
            outs.append(DeliveryOut.model_validate({**fields, "attempt_log": attempts[row.id]}))
        else:
            outs.append(NotificationOut.model_validate(fields))
    return outs


async def deliveries_of(conn: Conn, alert_id: int) -> list[DeliveryOut]:
    """Every notification about an alert, oldest first, with its attempts."""
    rows = await list_notifications(conn, alert_id=alert_id, limit=10_000)
    outs: list[DeliveryOut] = await notification_outs(conn, rows[::-1], with_attempts=True)
    return outs


@router.get("/notifications", responses=error_responses(400))
async def notifications(
    conn: ConnDep,
    key: KeyDep,
    zone: ZoneDep,
    status: NotificationStatus | None = None,
    alert: Annotated[
        int | None,
        Query(ge=1, le=BIGINT_MAX, description="Only notifications covering this alert"),
    ] = None,
    agency: Annotated[Text | None, Query(description="Only those sent to this agency")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Text | None = None,
) -> Page[NotificationOut]:
    """Notifications newest first: `status=failed` lists the dead letters with their last error."""
    before = decode_cursor(cursor, keys={"id": int})["id"] if cursor else None
    rows = await list_notifications(
        conn, status=status, agency=agency, alert_id=alert, before_id=before, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": rows[-1].id})
    items = await notification_outs(conn, rows, with_attempts=False)
    return in_zone(Page[NotificationOut](items=items, next_cursor=next_cursor), zone)


def _audited(row: SubscriptionRow | SilenceRow | None) -> dict[str, Any] | None:
    """A subscription or silence as the audit log keeps it: no secrets, robot keys as ***."""
    if row is None:
        return None
    if isinstance(row, SilenceRow):
        return _silence_out(row).model_dump(mode="json")
    shown = _subscription_out(row).model_dump(mode="json")
    shown["target"] = redact(row.target)
    if shown["escalation"] is not None and row.escalation_target is not None:
        shown["escalation"]["target"] = redact(row.escalation_target)
    return shown


async def _audit(
    conn: Conn,
    key: ApiKey,
    action: str,
    target: str,
    *,
    before: SubscriptionRow | SilenceRow | None = None,
    after: SubscriptionRow | SilenceRow | None = None,
) -> None:
    await record_audit(
        conn, key_id=key.id, agency=key.agency, action=action, target=target,
        before=_audited(before), after=_audited(after),
    )  # fmt: skip


def _subscription_out(row: SubscriptionRow) -> SubscriptionOut:
    escalation = None
    if row.escalation_target is not None:
        escalation = EscalationOut(
            after_s=row.escalate_after_s or 0,
            channel=row.escalation_channel,
            target=row.escalation_target,
            has_secret=row.escalation_secret is not None,
        )
    return SubscriptionOut.model_validate(
        {
            "id": row.id,
            "code": row.code,
            "agency": row.agency,
            "enabled": row.enabled,
            "channel": row.channel,
            "target": row.target,
            "has_secret": row.secret is not None,
            "language": row.language,
            "kind": row.kind,
            "filters": Filters.model_validate(
                {
                    "areas": row.areas,
                    "cities": row.cities,
                    "stations": row.stations,
                    "kinds": row.kinds,
                    "rules": row.rules,
                    "min_severity": row.min_severity,
                }
            ),
            "group_by": row.group_by,
            "group_wait_s": row.group_wait_s,
            "group_wait_critical_s": row.group_wait_critical_s,
            "group_interval_s": row.group_interval_s,
            "repeat_interval_s": row.repeat_interval_s,
            "escalation": escalation,
            "changed_via": row.changed_via,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


async def _own_subscription(conn: Conn, key: ApiKey, subscription_id: int) -> SubscriptionRow:
    row = await get_subscription(conn, subscription_id)
    if row.agency != key.agency:
        raise Forbidden(
            f"subscription {subscription_id} belongs to {row.agency}; your key is {key.agency}'s"
        )
    return row


@router.get("/subscriptions", responses=error_responses(403))
async def subscriptions(conn: ConnDep, key: AdminKey, zone: ZoneDep) -> Page[SubscriptionOut]:
    """Your agency's subscriptions (secrets are never shown)."""
    rows = await list_subscriptions(conn, agency=key.agency)
    return in_zone(Page[SubscriptionOut](items=[_subscription_out(row) for row in rows]), zone)


@router.post(
    "/subscriptions",
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(400, 403),
        **linked(
            201,
            subscription=link("get", "/v1/subscriptions/{subscription_id}", "It", _NEW_SUB),
            change=link("put", "/v1/subscriptions/{subscription_id}", "Change it", _NEW_SUB),
            delete=link("delete", "/v1/subscriptions/{subscription_id}", "Delete it", _NEW_SUB),
        ),
    },
)
async def add_subscription(
    conn: ConnDep, key: AdminKey, zone: ZoneDep, settings: SettingsDep, body: SubscriptionIn
) -> SubscriptionOut:
    """Subscribe your agency to alerts or the monthly bulletin through a channel (a bulletin by
    webhook, WeCom or DingTalk needs ENVLINK_SIGNING_KEY: 400 otherwise)."""
    if body.enabled:
        check_signing_key(body.kind, body.channel, settings.signing_key is not None, code=body.code)
    async with conn.transaction():
        row = await create_subscription(conn, agency=key.agency, spec=body, via="api", at=utcnow())
        await _audit(conn, key, "subscription.create", f"subscription:{row.id}", after=row)
    return in_zone(_subscription_out(row), zone)


@router.get("/subscriptions/{subscription_id}", responses=error_responses(403, 404))
async def subscription(
    conn: ConnDep, key: AdminKey, zone: ZoneDep, subscription_id: PathId
) -> SubscriptionOut:
    """One of your agency's subscriptions."""
    return in_zone(_subscription_out(await _own_subscription(conn, key, subscription_id)), zone)


@router.put("/subscriptions/{subscription_id}", responses=error_responses(400, 403, 404))
async def change_subscription(
    conn: ConnDep,
    key: AdminKey,
    zone: ZoneDep,
    settings: SettingsDep,
    subscription_id: PathId,
    body: SubscriptionIn,
) -> SubscriptionOut:
    """Replace a subscription; a secret left out keeps the one stored (secrets are write-only)."""
    if body.enabled:
        check_signing_key(body.kind, body.channel, settings.signing_key is not None, code=body.code)
    async with conn.transaction():
        existing = await _own_subscription(conn, key, subscription_id)
        if body.secret is None and existing.secret is not None:
            body = body.model_copy(update={"secret": existing.secret})
        escalation = body.escalation
        if (
            escalation is not None
            and escalation.secret is None
            and existing.escalation_secret is not None
        ):
            kept = Escalation.model_validate(
                {**escalation.model_dump(), "secret": existing.escalation_secret}
            )
            body = body.model_copy(update={"escalation": kept})
        row = await replace_subscription(conn, subscription_id, spec=body, via="api", at=utcnow())
        await _audit(
            conn, key, "subscription.change", f"subscription:{row.id}", before=existing, after=row
        )
    return in_zone(_subscription_out(row), zone)


@router.delete("/subscriptions/{subscription_id}", responses=error_responses(403, 404))
async def remove_subscription(
    conn: ConnDep, key: AdminKey, subscription_id: PathId
) -> dict[str, int]:
    """Delete a subscription; its undelivered notifications are cancelled."""
    async with conn.transaction():
        existing = await _own_subscription(conn, key, subscription_id)
        cancelled = await delete_subscription(conn, subscription_id, at=utcnow())
        await _audit(
            conn, key, "subscription.delete", f"subscription:{subscription_id}", before=existing
        )
    return {"deleted": subscription_id, "cancelled_notifications": cancelled}


def _silence_out(row: SilenceRow) -> SilenceOut:
    return SilenceOut(
        id=row.id,
        agency=row.agency,
        rules=row.rules,
        stations=row.stations,
        areas=row.areas,
        severities=row.severities,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        created_at=row.created_at,
        expired_at=row.expired_at,
        active=row.in_force(utcnow()),
    )


@router.get("/silences", responses=error_responses(403))
async def silences(
    conn: ConnDep,
    key: SilencerKey,
    zone: ZoneDep,
    ended: Annotated[bool, Query(description="Include silences that have ended")] = False,
) -> Page[SilenceOut]:
    """Your agency's silences, by start: those in force or to come (and ended ones if asked)."""
    rows = await list_silences(conn, agency=key.agency, ending_after=None if ended else utcnow())
    return in_zone(Page[SilenceOut](items=[_silence_out(row) for row in rows]), zone)


@router.post(
    "/silences",
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(400, 403),
        **linked(
            201,
            silence=link("get", "/v1/silences/{silence_id}", "It", _NEW_SILENCE),
            end=link("delete", "/v1/silences/{silence_id}", "End it", _NEW_SILENCE),
        ),
    },
)
async def add_silence(
    conn: ConnDep, key: SilencerKey, zone: ZoneDep, body: SilenceIn
) -> SilenceOut:
    """Mute messages to your agency about matching alerts (the alerts themselves go on)."""
    now = utcnow()
    starts_at = as_aware(body.starts_at) if body.starts_at else now
    ends_at = as_aware(body.ends_at)
    if ends_at <= now:
        raise InvalidInput(f"ends_at {rfc3339(ends_at)} has passed: the silence would mute nothing")
    async with conn.transaction():
        row = await create_silence(
            conn,
            agency=key.agency,
            rules=body.rules,
            stations=body.stations,
            areas=body.areas,
            severities=body.severities,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=f"{key.agency}:key{key.id}",
            comment=body.comment,
            at=now,
        )
        await _audit(conn, key, "silence.create", f"silence:{row.id}", after=row)
    return in_zone(_silence_out(row), zone)


async def _own_silence(conn: Conn, key: ApiKey, silence_id: int) -> SilenceRow:
    row = await get_silence(conn, silence_id)
    if row.agency != key.agency:
        raise Forbidden(f"silence {silence_id} belongs to {row.agency}; your key is {key.agency}'s")
    return row


@router.get("/silences/{silence_id}", responses=error_responses(403, 404))
async def silence(conn: ConnDep, key: SilencerKey, zone: ZoneDep, silence_id: PathId) -> SilenceOut:
    """One of your agency's silences."""
    return in_zone(_silence_out(await _own_silence(conn, key, silence_id)), zone)


@router.delete("/silences/{silence_id}", responses=error_responses(403, 404))
async def end_silence(
    conn: ConnDep, key: SilencerKey, zone: ZoneDep, silence_id: PathId
) -> SilenceOut:
    """End a silence now; it is kept, with the time it was ended."""
    async with conn.transaction():
        existing = await _own_silence(conn, key, silence_id)
        row = await expire_silence(conn, silence_id, at=utcnow())
        await _audit(conn, key, "silence.end", f"silence:{silence_id}", before=existing, after=row)
    return in_zone(_silence_out(row), zone)


def _stream_out(event: StreamEvent) -> StreamEventOut:
    return StreamEventOut(
        id=event.id,
        alert_id=event.alert_id,
        at=event.at,
        kind=event.kind,
        state=event.state,
        severity=event.severity,
        value=event.value,
        rule_id=event.rule_id,
        alert_kind=event.alert_kind,
        station=event.station,
        city=event.city,
        area=event.area,
        parameter=event.parameter,
        details=event.details,
    )


async def get_feed(request: Request) -> AlertFeed:
    feed: AlertFeed = request.app.state.feed
    return feed


StreamKey = Annotated[ApiKey, Depends(stream_key)]


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        400: {"model": ErrorOut, "description": "Last-Event-ID is not an alert event id"},
        401: {"model": ErrorOut, "description": "No valid key or stream token"},
    },
)
async def alert_stream(
    feed: Annotated[AlertFeed, Depends(get_feed)],
    key: StreamKey,
    zone: ZoneDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    city: City | None = None,
    area: Area | None = None,
    station: Text | None = None,
) -> StreamingResponse:
    """Alert events as they happen (Server-Sent Events); reconnect with Last-Event-ID to resume.

    Without Last-Event-ID the stream starts with the next event. Each message is
    `id: <alert_event id>`, `event: alert_event`, `data: <JSON>`. Browsers, whose EventSource
    cannot send a key, pass `?token=` from POST /v1/stream-tokens instead. The stream ends when
    its key is revoked.
    """
    after: int | None = None
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        # str.isdigit() also holds for digits int() refuses (²) or reads as others (١٢).
        if not (text.isascii() and text.isdigit()) or int(text) > BIGINT_MAX:
            raise InvalidInput(f"Last-Event-ID {last_event_id!r} is not an alert event id")
        after = int(text)

    def wanted(event: StreamEvent) -> bool:
        return (
            (city is None or event.city == city)
            and (area is None or event.area == area)
            and (station is None or event.station == station)
        )

    return StreamingResponse(
        _events(feed, key.id, after, wanted, zone),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _message(event: StreamEvent, zone: tzinfo) -> bytes:
    data = orjson.dumps(in_zone(_stream_out(event), zone).model_dump(mode="json"))
    return b"id: %d\nevent: alert_event\ndata: %s\n\n" % (event.id, data)


async def _events(
    feed: AlertFeed,
    key_id: int,
    after: int | None,
    wanted: Callable[[StreamEvent], bool],
    zone: tzinfo,
) -> AsyncIterator[bytes]:
    """The SSE body: what was missed since `after` (if given), then the feed's events."""
    subscriber = feed.subscribe(key_id)
    try:
        yield b"retry: 2000\n\n"
        await subscriber.placed.wait()
        floor = subscriber.floor
        if after is not None and floor is not None:
            # Catch up to where the feed was when this stream joined, on a connection of its own.
            while after < floor:
                batch = [event for event in await feed.events_after(after) if event.id <= floor]
                if not batch:
                    break
                for event in batch:
                    after = event.id
                    if wanted(event):
                        yield _message(event, zone)
        while True:
            events = await subscriber.take(KEEPALIVE_S)
            if not events:
                yield b": keepalive\n\n"
            for event in events:
                if (after is None or event.id > after) and wanted(event):
                    yield _message(event, zone)
    except StreamEnded:
        return
    except Exception as exc:
        if not unreachable(exc):
            raise
        log.warning("alert stream ended, no database connection: %s", exc)
    finally:
        feed.unsubscribe(subscriber)


@router.post(
    "/stream-tokens",
    status_code=status.HTTP_201_CREATED,
    responses={401: {"model": ErrorOut, "description": "No valid API key"}},
)
async def stream_token(conn: ConnDep, key: KeyDep, zone: ZoneDep) -> StreamTokenOut:
    """A token for `GET /v1/alerts/stream?token=…`, for browsers (EventSource sends no headers).

    Valid 10 minutes (never past its key's expiry), reconnects included; it dies with its key.
    """
    expires_at = utcnow() + STREAM_TOKEN_LIFETIME
    if key.expires_at is not None:
        expires_at = min(expires_at, key.expires_at)
    async with conn.transaction():
        token = await create_stream_token(conn, key_id=key.id, expires_at=expires_at)
    return in_zone(StreamTokenOut(token=token, expires_at=expires_at), zone)
