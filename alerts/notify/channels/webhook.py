"""Signed webhook: a JSON (or CAP 1.2 XML) POST to a subscriber's URL.

Every request carries:

- `Idempotency-Key: <notification id>` — the same on every re-send of the notification;
- `X-EnvLink-Timestamp: <unix seconds>` — when this attempt was signed;
- `X-EnvLink-Signature: sha256=<hex>` — when the target has a secret: the lowercase hex
  HMAC-SHA256, keyed with the UTF-8 secret, of the bytes `<timestamp>.<body>` (the timestamp
  header's digits, one ASCII dot, then the raw request body exactly as received).

A receiver verifies by recomputing the HMAC over the raw body with the shared secret, comparing
in constant time, and rejecting timestamps more than a few minutes from its clock (replays);
`verify_signature` below does exactly that. It then deduplicates on `Idempotency-Key`: delivery
is at least once.

The JSON body (`Content-Type: application/json`) is `notification_body(notification)`: the
notification (id, kind, language, agency), then per event the alert (state, severity, value,
unit, threshold, times, links), the event (transition), the station, the parameter and the rule
with the standard it cites. With format `cap` the body is the CAP 1.2 document of the alert
(`Content-Type: application/cap+xml`); a notification covering several alerts is sent as one
request per alert, keyed `<notification id>/<alert id>`, in order, stopping at the first that is
not accepted (a retry re-sends the accepted ones under the same keys).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import orjson

from alerts.notify.bulletin import BulletinMessage, webhook_body
from alerts.notify.channels.base import (
    ChannelTarget,
    DeliveryResult,
    TargetFormat,
    http_result,
    post,
)
from alerts.notify.channels.cap import CAP_CONTENT_TYPE, render_cap
from alerts.notify.message import (
    AlertEvent,
    AlertSnapshot,
    Notification,
    NotificationEvent,
    ParameterInfo,
    StationInfo,
)
from alerts.notify.render import headline, languages
from core.errors import InvalidInput
from core.timeutil import rfc3339

IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMESTAMP_HEADER = "X-EnvLink-Timestamp"
SIGNATURE_HEADER = "X-EnvLink-Signature"
SIGNATURE_TOLERANCE_S = 300.0


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The signature header value: sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + body)>."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """A receiver's check: right secret, untouched body, timestamp within the tolerance."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    """POSTs notifications to webhook URLs, signed when the target has a secret."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        cap_sender: str,
        clock: Callable[[], float] = time.time,
        force_format: TargetFormat | None = None,
        name: str = "webhook",
    ) -> None:
        self.name = name
        self._client = client
        self._cap_sender = cap_sender
        self._clock = clock
        # Set for the "cap" channel: the body is CAP whatever the target says.
        self._format = force_format

    async def send(self, notification: Notification, target: ChannelTarget) -> DeliveryResult:
        """POST the notification once (once per alert in CAP format)."""
        body_format = self._format or target.format
        if body_format == "json":
            body = orjson.dumps(notification_body(notification))
            return await self._post(target, body, "application/json", notification.id)
        result = DeliveryResult("failed", error="no alert to send")
        several = len(notification.alerts) > 1
        for alert in notification.alerts:
            events = [i.event for i in notification.events if i.alert.id == alert.id and i.event]
            try:
                body = render_cap(
                    alert, events, sender=self._cap_sender, language=notification.language
                )
            except InvalidInput as exc:
                return DeliveryResult("failed", error=f"cannot render CAP: {exc}")
            key = f"{notification.id}/{alert.id}" if several else notification.id
            result = await self._post(target, body, f"{CAP_CONTENT_TYPE}; charset=utf-8", key)
            if not result.ok:
                return result
        return result

    async def send_bulletin(
        self, bulletin: BulletinMessage, target: ChannelTarget
    ) -> DeliveryResult:
        """POST the bulletin's signed links once, as JSON (CAP has no place for a bulletin)."""
        body = orjson.dumps(webhook_body(bulletin))
        return await self._post(target, body, "application/json", bulletin.id)

    async def _post(
        self, target: ChannelTarget, body: bytes, content_type: str, key: str
    ) -> DeliveryResult:
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": content_type,
            IDEMPOTENCY_HEADER: key,
            TIMESTAMP_HEADER: timestamp,
        }
        if target.secret:
            headers[SIGNATURE_HEADER] = sign(target.secret, timestamp, body)
        response = await post(self._client, target.address, content=body, headers=headers)
        if isinstance(response, DeliveryResult):
            return response
        return http_result(response)


def notification_body(notification: Notification) -> dict[str, Any]:
    """The webhook's JSON document of a notification (times RFC 3339, +08:00)."""
    return {
        "notification": {
            "id": notification.id,
            "kind": notification.kind,
            "language": notification.language,
            "severity": notification.severity,
            "created_at": rfc3339(notification.created_at),
            "agency": {
                "code": notification.agency.code,
                "name": notification.agency.name,
                "name_zh": notification.agency.name_zh,
                "city": notification.agency.city,
            },
        },
        "events": [_event_body(item, notification) for item in notification.events],
    }


def _event_body(item: NotificationEvent, notification: Notification) -> dict[str, Any]:
    alert = item.alert
    return {
        "headline": {lang: headline(item, notification, lang) for lang in languages("both")},
        "alert": _alert_body(alert),
        "event": _transition_body(item.event),
        "station": _station_body(alert.station),
        "source_station": _station_body(alert.source_station) if alert.source_station else None,
        "parameter": _parameter_body(alert.parameter),
        "rule": {
            "id": alert.rule.id,
            "version": alert.rule.version,
            "name": alert.rule.name,
            "name_zh": alert.rule.name_zh,
            "standard": alert.rule.standard,
        },
        "links": {"alert": alert.links.alert_url, "cap": alert.links.cap_url},
    }


def _alert_body(alert: AlertSnapshot) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "state": alert.state,
        "severity": alert.severity,
        "value": alert.value,
        "unit": alert.unit,
        "threshold": alert.threshold,
        "trigger_time": _time(alert.trigger_time),
        "opened_at": _time(alert.opened_at),
        "fired_at": _time(alert.fired_at),
        "resolved_at": _time(alert.resolved_at),
        "retracted_at": _time(alert.retracted_at),
        "eta": _time(alert.eta),
    }


def _transition_body(event: AlertEvent | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {
        "id": event.id,
        "kind": event.kind,
        "state": event.state,
        "severity": event.severity,
        "value": event.value,
        "at": rfc3339(event.at),
    }


def _station_body(station: StationInfo) -> dict[str, Any]:
    return {
        "code": station.code,
        "name": station.name,
        "name_zh": station.name_zh,
        "city": station.city,
        "area": station.area,
        "medium": station.medium,
        "lat": station.lat,
        "lon": station.lon,
    }


def _parameter_body(parameter: ParameterInfo | None) -> dict[str, Any] | None:
    if parameter is None:
        return None
    return {
        "code": parameter.code,
        "name": parameter.name,
        "name_zh": parameter.name_zh,
        "unit": parameter.unit,
    }


def _time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None
