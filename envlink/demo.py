"""The demo's API keys: one per agency, kept in the data directory and reused at every start.

The README's examples use them: the city agencies' keys push readings for their own stations,
acknowledge alerts and manage keys and subscriptions; the joint office's also changes the rules.
The file (mode 0600) holds the plain keys, so it is for a demo on one's own machine only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response

from api.routers.keys import audited
from ingest.sources.story import STORY_LEAD_S, Story
from schemas.common import City
from schemas.notifications import Filters, SubscriptionIn
from store.audit import record_audit
from store.keys import authenticate, create_key
from store.pool import Conn, connect
from store.readings import newest_reading_end
from store.subscriptions import create_subscription, list_subscriptions, replace_subscription

KEYS_FILE = "demo-keys.json"
CITY_ROLES = ["admin", "reader", "responder", "writer"]
DEMO_ROLES: dict[str, list[str]] = {
    "gz_eeb": CITY_ROLES,
    "dg_eeb": CITY_ROLES,
    "joint_office": sorted([*CITY_ROLES, "joint_office"]),
}


@dataclass(frozen=True)
class DemoKey:
    agency: str
    roles: list[str]
    key: str
    created: bool  # False: reused from the keys file


def _kept(path: Path) -> dict[str, str]:
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in kept.items() if isinstance(v, str)} if isinstance(kept, dict) else {}


def _keep(path: Path, keys: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(keys, file, indent=2)
    path.chmod(0o600)  # a file that existed keeps its old mode through os.open


async def _live_or_new(conn: Conn, agency: str, roles: list[str], plain: str | None) -> DemoKey:
    if plain is not None:
        key = await authenticate(conn, plain)
        if key is not None and key.agency == agency and key.roles == roles:
            return DemoKey(agency, roles, plain, created=False)
    async with conn.transaction():
        key, plain = await create_key(conn, agency=agency, roles=roles, label="demo")
        await record_audit(
            conn, key_id=None, agency=None, action="key.create", target=f"key:{key.id}",
            after=audited(key),
        )  # fmt: skip
    return DemoKey(agency, roles, plain, created=True)


async def demo_keys(url: str, data_dir: Path) -> list[DemoKey]:
    """The demo's key of every agency: those kept in `data_dir` while live, new ones otherwise."""
    path = data_dir / KEYS_FILE
    kept = _kept(path)
    conn = await connect(url)
    try:
        keys = [
            await _live_or_new(conn, agency, roles, kept.get(agency))
            for agency, roles in DEMO_ROLES.items()
        ]
    finally:
        await conn.close()
    _keep(path, {key.agency: key.key for key in keys})
    return keys


STORY_FILE = "demo-story.json"


def story_anchors(data_dir: Path, now: datetime, last_sent: datetime | None) -> list[datetime]:
    """The anchors of the demo's stories, oldest first, kept in the data directory.

    The first start anchors the story (to the minute); a restart plays the same one, so it
    re-sends duplicates. A restart after a pause longer than the story's lead (nothing sent
    since `last_sent`, the newest reading's end) begins a new story at its start, so the demo
    shows it again within minutes; the earlier anchors are kept for what they sent.
    """
    path = data_dir / STORY_FILE
    try:
        kept = json.loads(path.read_text())
        anchors = [datetime.fromisoformat(a).astimezone(UTC) for a in kept.get("earlier", [])]
        anchors.append(datetime.fromisoformat(kept["anchor"]).astimezone(UTC))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        anchors = []
    start = now.astimezone(UTC).replace(second=0, microsecond=0)
    paused = last_sent is None or last_sent <= start - timedelta(seconds=STORY_LEAD_S)
    if anchors and (not paused or start <= anchors[-1]):
        return anchors
    anchors.append(start)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"anchor": start.isoformat(), "earlier": [a.isoformat() for a in anchors[:-1]]}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return anchors


async def demo_story(url: str, data_dir: Path, now: datetime) -> Story:
    """The demo's story: continued, or begun anew after a pause (story_anchors)."""
    conn = await connect(url)
    try:
        last_sent = await newest_reading_end(conn)
    finally:
        await conn.close()
    *earlier, anchor = story_anchors(data_dir, now, last_sent)
    return Story(anchor, earlier=earlier)


# Where the demo's own subscriptions deliver: a webhook receiver served by the demo's API, which
# prints each notification's headline on the console and appends it to INBOX_FILE. So a
# newcomer sees notifications go out without any outside service (the seeded subscriptions of
# config/subscriptions.yaml point at example hosts and are disabled).
INBOX_PATH = "/demo/inbox"
INBOX_FILE = "demo-inbox.jsonl"
INBOX_LOG = logging.getLogger("envlink.demo.inbox")


def inbox_router(data_dir: Path) -> APIRouter:
    """The demo's webhook receiver (not part of the API: it is served by the demo only)."""
    router = APIRouter(include_in_schema=False)
    path = data_dir / INBOX_FILE

    @router.post(INBOX_PATH, status_code=204)
    async def receive(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            agency = body["notification"]["agency"]["code"]
            headlines = [event["headline"]["en"] for event in body["events"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(
                400, f"body: expected a notification's webhook JSON ({type(exc).__name__})"
            ) from None
        for line in headlines:
            INBOX_LOG.info("notification to %s: %s", agency, line)
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(body, ensure_ascii=False) + "\n")
        return Response(status_code=204)

    return router


# Each city's bureau hears of its own city's alerts (a pre-alert belongs to the downstream
# station's city: Dongguan's incident reaches Guangzhou that way); the joint office of all.
INBOX_CITIES: dict[str, City | None] = {
    "gz_eeb": "guangzhou",
    "dg_eeb": "dongguan",
    "joint_office": None,
}


def inbox_subscription(agency: str, api_url: str) -> SubscriptionIn:
    """An agency's demo subscription: warnings and worse, to the demo's inbox, soon, one
    message per rule and city at a time."""
    city = INBOX_CITIES.get(agency)
    return SubscriptionIn(
        code=f"demo-inbox-{agency.replace('_', '-')}",
        channel="webhook",
        target=f"{api_url}{INBOX_PATH}",
        language="both",
        filters=Filters(min_severity="warning", cities=[city] if city else None),
        group_by=["rule", "city"],
        group_wait_s=10,
        group_interval_s=60,
    )


async def demo_subscriptions(url: str, api_url: str) -> list[str]:
    """Create (or point at this start's port) each agency's inbox subscription; their codes.

    Made through the API's path (changed_via 'api'), so `envlink seed` leaves them alone.
    """
    conn = await connect(url)
    try:
        async with conn.transaction():
            existing = {row.code: row for row in await list_subscriptions(conn)}
            at = datetime.now(UTC)
            for agency in DEMO_ROLES:
                spec = inbox_subscription(agency, api_url)
                row = existing.get(spec.code)
                if row is None:
                    await create_subscription(conn, agency=agency, spec=spec, via="api", at=at)
                else:
                    await replace_subscription(conn, row.id, spec=spec, via="api", at=at)
        return [inbox_subscription(agency, api_url).code for agency in DEMO_ROLES]
    finally:
        await conn.close()
