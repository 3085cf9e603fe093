"""The dispatcher: claim due notifications from the outbox, send each once, record the attempt.

Several dispatchers (one per worker) share the outbox. A claim (FOR UPDATE SKIP LOCKED) takes a
due notification for one attempt under a lease: its `due_at` moves past the lease and it gets a
token, so no other dispatcher takes it while the attempt runs, and only the token's holder
records the outcome. A dispatcher that dies mid-attempt leaves the claim to expire; the next
claim records the lost attempt as 'interrupted' and sends again under the same idempotency key
(the notification id), so receivers deduplicate: delivery is at least once, never twice past
the key.

Outcomes (channels/base.py classifies them): `sent` ends it; `failed` dead-letters at once
(retrying cannot help); `retry` schedules the next attempt after an exponential backoff with
jitter (or the receiver's Retry-After, if longer), until the notification's deadline: the last
attempt is made at the deadline, and if that one fails too it is dead-lettered. Every attempt is
a row of delivery_attempt (time, status, response code, error).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from alerts.notify.bulletin import BulletinLinks, BulletinMessage
from alerts.notify.channels.base import Channel, ChannelTarget, DeliveryResult, clip
from alerts.notify.channels.cap import cap_sender, render_cap
from alerts.notify.message import (
    AgencyInfo,
    AlertEvent,
    AlertSnapshot,
    Notification,
    NotificationEvent,
    ParameterInfo,
    RuleInfo,
    StationInfo,
    alert_links,
)
from core.errors import InvalidInput, NotFound
from core.retry import RESTART, Backoff, keep_running, log_failure
from core.signing import BULLETIN_LINK_TTL, bulletin_link
from core.timeutil import CST, utcnow
from schemas.alerts import AlertEventKind, AlertState
from schemas.notifications import Language, NotificationKind
from schemas.rules import RuleDefinition, RuleKind, Severity
from store.alerts import AlertFacts, alert_events, alert_facts
from store.bulletins import BulletinFiles, delivered_bulletins
from store.catalogue import AgencyRow, CatalogueCache, CatalogueSnapshot
from store.coordination import OUTBOX_CHANNEL
from store.listen import Listener, Wakeup
from store.outbox import (
    ClaimedNotification,
    ItemPayload,
    claim_notifications,
    next_due,
    notification_items,
    record_attempt,
)
from store.pool import Conn, transient

log = logging.getLogger(__name__)

# A failed delivery's next attempt (ENVLINK_NOTIFY_RETRY_BASE_S / _MAX_S set the worker's).
REDELIVERY = Backoff(base_s=5.0, max_s=300.0)
# Writing an attempt's outcome again while the database cannot be reached: soon after it returns.
RECORD_RETRY = Backoff(base_s=0.25, max_s=2.0)

# Subscription channel -> the channel (channels.build_channels) that delivers it.
CHANNEL_FOR: dict[str, str] = {
    "webhook": "webhook",
    "webhook_cap": "cap",
    "wecom": "wecom",
    "dingtalk": "dingtalk",
    "email": "email",
}
CITY_NAMES: dict[str, tuple[str, str]] = {
    "guangzhou": ("Guangzhou (city-wide)", "广州市（全市）"),
    "dongguan": ("Dongguan (city-wide)", "东莞市（全市）"),
}
REGION_NAMES = ("Guangzhou–Dongguan (region)", "广州—东莞（区域）")


# What the dispatcher sends: an alert notification or a bulletin version.
Message = Notification | BulletinMessage
# Why a bulletin cannot go out by a link channel on a server without a signing key.
NO_SIGNING_KEY = (
    "a bulletin sent by {channel} needs a signed link: set ENVLINK_SIGNING_KEY on the worker"
    " and the API (the same value)"
)


def bulletin_message(
    claimed: ClaimedNotification,
    files: BulletinFiles,
    *,
    public_base_url: str,
    signing_key: str | None,
) -> BulletinMessage:
    """The bulletin a claimed notification delivers; e-mail attaches it, others link to it.

    ValueError (the message cannot be made) for a link channel without a signing key.
    """
    month = f"{files.month:%Y-%m}"
    links = None
    if claimed.channel != "email":
        if signing_key is None:
            raise ValueError(NO_SIGNING_KEY.format(channel=claimed.channel))
        # The links expire 30 days after the message was made, the same on every re-send.
        expires_at = claimed.created_at + BULLETIN_LINK_TTL
        link = {
            f: bulletin_link(
                public_base_url,
                signing_key,
                month=month,
                version=files.version,
                file_format=f,
                expires_at=expires_at,
            )
            for f in ("html", "csv")
        }
        links = BulletinLinks(link["html"], link["csv"], expires_at)
    return BulletinMessage(
        id=notification_key(claimed.id),
        month=month,
        version=files.version,
        language=claimed.language,
        created_at=claimed.created_at,
        html=files.html,
        csv_zip=files.csv_zip,
        links=links,
    )


def notification_key(notification_id: int) -> str:
    """The idempotency key of a notification: the same on every attempt and re-send."""
    return f"ntf-{notification_id}"


@dataclass(frozen=True, slots=True)
class Attempted:
    """What one attempt did: the notification, its attempt number, the outcome and new status."""

    notification_id: int
    attempt: int
    result: DeliveryResult
    status: str
    due_at: datetime | None
    recorded: bool


def next_step(
    result: DeliveryResult,
    *,
    attempt: int,
    now: datetime,
    deadline_at: datetime,
    backoff: Backoff,
    jitter: float,
) -> tuple[str, datetime | None, str | None]:
    """The notification's status after an attempt, when to try again, and the error to keep."""
    if result.status == "sent":
        return "sent", None, result.error
    if result.status == "failed":
        return "failed", None, result.error
    if now >= deadline_at:
        error = f"dead-lettered at its deadline after {attempt} attempts; last: {result.error}"
        return "failed", None, clip(error)
    wait = backoff.delay_s(attempt, jitter)
    if result.retry_after_s is not None:
        wait = max(wait, min(result.retry_after_s, backoff.max_s))
    return "pending", min(now + timedelta(seconds=wait), deadline_at), result.error


def alert_snapshot(
    facts: AlertFacts,
    *,
    public_base_url: str,
    centres: Mapping[str, tuple[float, float]],
    state: str | None = None,
    severity: str | None = None,
    value: float | None = None,
    frozen: ItemPayload | None = None,
) -> AlertSnapshot:
    """An alert as a message shows it: names, threshold, links; state as `frozen` holds it."""
    definition = facts.definition
    names = definition.get("name", {})
    details = facts.details
    severity = frozen.severity if frozen else (severity or facts.severity)
    levels = _levels(definition, facts.trigger_time)
    parameter = None
    if facts.parameter is not None:
        parameter = ParameterInfo(**facts.parameter)
    eta = details.get("expected_at")
    return AlertSnapshot(
        id=facts.id,
        kind=cast(RuleKind, facts.kind),
        state=cast(AlertState, frozen.state if frozen else (state or facts.state)),
        severity=cast(Severity, severity),
        rule=RuleInfo(
            facts.rule_id,
            facts.rule_version,
            str(names.get("en", facts.rule_id)),
            str(names.get("zh", facts.rule_id)),
            details.get("standard") or levels[0],
            below=definition.get("direction") == "below",
        ),
        station=_station(facts, centres),
        parameter=parameter,
        value=frozen.value if frozen else (value if value is not None else facts.value),
        unit=parameter.unit if parameter else definition.get("unit"),
        threshold=levels[1].get(severity),
        opened_at=facts.opened_at,
        links=alert_links(public_base_url, facts.id),
        fired_at=frozen.fired_at if frozen else facts.fired_at,
        resolved_at=frozen.resolved_at if frozen else facts.resolved_at,
        retracted_at=frozen.retracted_at if frozen else facts.retracted_at,
        trigger_time=facts.trigger_time,
        source_station=StationInfo(**facts.source_station) if facts.source_station else None,
        eta=datetime.fromisoformat(eta) if isinstance(eta, str) else None,
    )


def _station(facts: AlertFacts, centres: Mapping[str, tuple[float, float]]) -> StationInfo:
    if facts.station is not None:
        return StationInfo(**facts.station)
    if facts.city is None:
        # A regional alert (an episode in both cities) is placed between the cities' centres.
        at = list(centres.values()) or [(23.0, 113.5)]
        lat, lon = sum(p[0] for p in at) / len(at), sum(p[1] for p in at) / len(at)
        name, name_zh = REGION_NAMES
        return StationInfo("region", name, name_zh, "region", "region-wide", "air", lat, lon)
    # A city-wide alert (the city's mean AQI) is placed at the centre of the city's stations.
    city = facts.city
    lat, lon = centres.get(city, (23.0, 113.5))
    name, name_zh = CITY_NAMES.get(city, (city, city))
    return StationInfo(city, name, name_zh, city, "city-wide", "air", lat, lon)


def _levels(
    definition: dict[str, Any], trigger_time: datetime | None
) -> tuple[str | None, dict[str, float]]:
    """The standard and the triggers by severity of the ladder in force at the data time."""
    try:
        rule = RuleDefinition.model_validate(definition)
    except ValidationError:
        return None, {}
    day = (trigger_time or utcnow()).astimezone(CST).date()
    ladder = rule.ladder_for(day)
    if ladder is None:
        return None, {}
    return ladder.standard, {level.severity: level.trigger for level in ladder.levels}


def build_notification(
    claimed: ClaimedNotification,
    items: Sequence[ItemPayload],
    facts: Mapping[int, AlertFacts],
    agency: AgencyRow,
    *,
    public_base_url: str,
    centres: Mapping[str, tuple[float, float]],
) -> Notification:
    """The message of a claimed notification, from its frozen items."""
    events = []
    for item in items:
        snapshot = alert_snapshot(
            facts[item.alert_id], public_base_url=public_base_url, centres=centres, frozen=item
        )
        event = None
        if item.event_id is not None and item.event_at is not None:
            event = AlertEvent(
                item.event_id,
                item.alert_id,
                item.event_at,
                cast(AlertEventKind, item.event_kind),
                cast(AlertState, item.event_state),
                cast(Severity, item.event_severity),
                item.event_value,
            )
        events.append(NotificationEvent(snapshot, event))
    return Notification(
        id=notification_key(claimed.id),
        kind=cast(NotificationKind, claimed.kind),
        language=cast(Language, claimed.language),
        agency=AgencyInfo(agency.code, agency.name, agency.name_zh, agency.city),
        events=tuple(events),
        created_at=claimed.created_at,
    )


class Dispatcher:
    """Delivers the outbox through the channels; one per worker, any number per database."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        channels: Mapping[str, Channel],
        *,
        public_base_url: str,
        catalogue: CatalogueCache | None = None,
        worker: str = "dispatcher",
        concurrency: int = 8,
        lease_s: float = 60.0,
        backoff: Backoff | None = None,
        poll_s: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        signing_key: str | None = None,
    ) -> None:
        self._pool = pool
        # Signs the links of bulletins sent by webhook, WeCom and DingTalk (ENVLINK_SIGNING_KEY).
        self._signing_key = signing_key
        # The process's catalogue (agencies, city centres); a dispatcher given none keeps its own.
        self._catalogue = catalogue or CatalogueCache(pool)
        self._channels = dict(channels)
        self._base_url = public_base_url
        self.worker = worker
        self._concurrency = concurrency
        self._lease_s = lease_s
        # An attempt must end well inside its lease, or a second dispatcher could take the
        # notification while the first is still sending it.
        self._attempt_limit_s = lease_s * 0.8
        self._backoff = backoff or REDELIVERY
        self._poll_s = poll_s
        self._clock = clock
        self._jitter = jitter
        self._inflight: set[asyncio.Task[Attempted]] = set()
        self.listening = asyncio.Event()

    async def dispatch_once(self, limit: int | None = None) -> list[Attempted]:
        """Claim up to `limit` due notifications, send them concurrently, record each attempt."""
        ready = await self._claim(limit or self._concurrency)
        return list(await asyncio.gather(*(self._deliver(c, n) for c, n in ready)))

    async def drain(self) -> list[Attempted]:
        """Attempt every notification due now (each once); what was attempted."""
        done: list[Attempted] = []
        while True:
            batch = await self.dispatch_once()
            done += batch
            if len(batch) < self._concurrency:
                return done

    async def run(self, listener: Listener) -> None:
        """Deliver until cancelled, woken through `listener`; a failed round backs off."""
        wakeup = Wakeup()
        with listener.subscribed(OUTBOX_CHANNEL, wakeup):
            await listener.listening(OUTBOX_CHANNEL)
            self.listening.set()
            try:
                await keep_running(
                    lambda: self._deliver_when_woken(wakeup),
                    backoff=RESTART,
                    failed=log_failure(log, "dispatcher"),
                    sleep=wakeup.reconnect,
                )
            finally:
                self.listening.clear()
                # Attempts under way finish and are recorded; only a hard stop leaves a claim.
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=self._attempt_limit_s)

    async def _deliver_when_woken(self, wakeup: Wakeup) -> None:
        while True:
            free = self._concurrency - len(self._inflight)
            ready = await self._claim(free) if free > 0 else []
            for claimed, notification in ready:
                task = asyncio.create_task(self._deliver(claimed, notification))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                task.add_done_callback(lambda _: wakeup.ring())
            if free > 0 and len(ready) == free:
                continue  # more may be due
            wait = self._poll_s
            async with self._pool.connection() as conn:
                due = await next_due(conn)
            if due is not None:
                wait = min(wait, (due - self._clock()).total_seconds())
            await wakeup.wait(max(wait, 0.01))

    async def _claim(self, limit: int) -> list[tuple[ClaimedNotification, Message | str]]:
        """Claim due notifications and build their messages (or say why one cannot be built).

        One transaction: when the database goes away before the messages are built, the claims
        are undone with it, instead of holding the notifications back until their leases expire.
        """
        now = self._clock()
        catalogue = await self._catalogue.get()
        async with self._pool.connection() as conn, conn.transaction():
            claimed = await claim_notifications(
                conn, now=now, limit=limit, lease_s=self._lease_s, worker=self.worker
            )
            if not claimed:
                return []
            return await self._build(conn, catalogue, claimed)

    async def _build(
        self, conn: Conn, catalogue: CatalogueSnapshot, claimed: list[ClaimedNotification]
    ) -> list[tuple[ClaimedNotification, Message | str]]:
        items: dict[int, list[ItemPayload]] = defaultdict(list)
        for item in await notification_items(conn, [c.id for c in claimed]):
            items[item.notification_id].append(item)
        facts = {
            f.id: f
            for f in await alert_facts(conn, {i.alert_id for v in items.values() for i in v})
        }
        bulletins = await delivered_bulletins(conn, [c.id for c in claimed if c.kind == "bulletin"])
        ready: list[tuple[ClaimedNotification, Message | str]] = []
        for entry in claimed:
            try:
                if entry.kind == "bulletin":
                    ready.append((entry, self._bulletin(entry, bulletins.get(entry.id))))
                    continue
                notification: Message | str = build_notification(
                    entry,
                    items[entry.id],
                    facts,
                    catalogue.agencies[entry.agency_id],
                    public_base_url=self._base_url,
                    centres=catalogue.city_centres,
                )
            except Exception as exc:  # a message that cannot be made is dead-lettered, not lost
                log.exception("cannot build notification %d", entry.id)
                notification = f"cannot build the message: {type(exc).__name__}: {exc}"
            ready.append((entry, notification))
        return ready

    def _bulletin(self, entry: ClaimedNotification, files: BulletinFiles | None) -> Message | str:
        if files is None:
            return "cannot build the message: its bulletin version is no longer stored"
        try:
            return bulletin_message(
                entry, files, public_base_url=self._base_url, signing_key=self._signing_key
            )
        except ValueError as exc:
            log.error("notification %d: %s", entry.id, exc)
            return f"cannot build the message: {exc}"

    async def _deliver(
        self, claimed: ClaimedNotification, notification: Message | str
    ) -> Attempted:
        started = self._clock()
        result = await self._send(claimed, notification)
        finished = self._clock()
        status, due_at, error = next_step(
            result,
            attempt=claimed.attempts,
            now=finished,
            deadline_at=claimed.deadline_at,
            backoff=self._backoff,
            jitter=self._jitter(),
        )
        recorded = await self._record(
            claimed,
            started_at=started,
            finished_at=finished,
            outcome=result.status,
            response_code=result.response_code,
            error=error if result.status != "sent" else result.error,
            status=status,
            due_at=due_at,
        )
        if not recorded:
            log.warning(
                "notification %d: the claim expired during the attempt; outcome kept as an attempt",
                claimed.id,
            )
        elif status == "failed":
            log.warning("notification %d dead-lettered: %s", claimed.id, error)
        return Attempted(claimed.id, claimed.attempts, result, status, due_at, recorded)

    async def _record(self, claimed: ClaimedNotification, **attempt: Any) -> bool:
        """Record an attempt's outcome, waiting for the database while it cannot be reached.

        A delivery that reached its receiver while the database was away must not be sent again
        when it returns: the outcome is kept here, under the claim, until it can be written.
        Only an outage longer than the lease lets a dispatcher claim the notification again
        meanwhile (a second delivery under the same idempotency key).
        """
        failures = 0
        while True:
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await record_attempt(
                        conn,
                        notification_id=claimed.id,
                        token=claimed.claim_token,
                        attempt=claimed.attempts,
                        worker=self.worker,
                        **attempt,
                    )
            except Exception as exc:
                if not transient(exc):
                    raise
                failures += 1
                delay = RECORD_RETRY.delay_s(failures)
                log.warning(
                    "notification %d: cannot record attempt %d (%s: %s); trying again in %.1f s",
                    claimed.id,
                    claimed.attempts,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _send(
        self, claimed: ClaimedNotification, notification: Message | str
    ) -> DeliveryResult:
        if isinstance(notification, str):
            return DeliveryResult("failed", error=clip(notification))
        channel = self._channels.get(CHANNEL_FOR.get(claimed.channel, claimed.channel))
        if channel is None:
            problem = f"channel {claimed.channel} is not configured on this worker"
            if claimed.channel == "email":
                problem += " (set ENVLINK_SMTP_HOST)"
            return DeliveryResult("failed", error=problem)
        target = ChannelTarget(
            claimed.target,
            claimed.secret,
            "cap" if claimed.channel == "webhook_cap" else "json",
        )
        try:
            async with asyncio.timeout(self._attempt_limit_s):
                if isinstance(notification, BulletinMessage):
                    return await channel.send_bulletin(notification, target)
                return await channel.send(notification, target)
        except TimeoutError:
            return DeliveryResult(
                "retry", error=f"the attempt took longer than {self._attempt_limit_s:g} s"
            )
        except Exception as exc:  # a channel must not raise; if one does, try again later
            log.exception("channel %s raised on notification %d", claimed.channel, claimed.id)
            return DeliveryResult("retry", error=clip(f"{type(exc).__name__}: {exc}"))


async def cap_document(
    conn: Conn,
    alert_id: int,
    *,
    public_base_url: str,
    centres: Mapping[str, tuple[float, float]],
    language: Language = "both",
) -> bytes:
    """The CAP 1.2 document of an alert's latest message; NotFound if it never fired.

    `centres` places a city-wide alert (CatalogueSnapshot.city_centres).
    """
    found = await alert_facts(conn, [alert_id])
    if not found:
        raise NotFound(f"no alert with id {alert_id}")
    snapshot = alert_snapshot(found[0], public_base_url=public_base_url, centres=centres)
    events = [
        AlertEvent(
            e.id,
            e.alert_id,
            e.at,
            cast(AlertEventKind, e.kind),
            cast(AlertState, e.state),
            cast(Severity, e.severity),
            e.value,
        )
        for e in await alert_events(conn, alert_id=alert_id, limit=10_000)
    ]
    try:
        return render_cap(snapshot, events, sender=cap_sender(public_base_url), language=language)
    except InvalidInput as exc:
        raise NotFound(f"alert {alert_id} has no CAP message: {exc}") from None
