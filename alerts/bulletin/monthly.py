"""The worker's monthly bulletin: on the 1st at 09:00 Asia/Shanghai, the month before, assembled
and stored as its next version (generating it again keeps the earlier versions), and in the same
transaction one delivery per bulletin subscription put in the outbox, which the dispatchers send
like alert notifications (retries, once per subscription and version)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from psycopg_pool import AsyncConnectionPool

from alerts.bulletin.assemble import assemble_bulletin
from alerts.bulletin.page import render_html
from alerts.bulletin.tables import bulletin_zip
from alerts.evaluation.periods import Period, month
from core.timeutil import CST, utcnow
from store.bulletins import StoredBulletin, queue_bulletin_deliveries, store_bulletin
from store.outbox import notify_outbox

log = logging.getLogger(__name__)

# When the worker generates the month before: the 1st, 09:00 Asia/Shanghai.
BULLETIN_DAY, BULLETIN_HOUR = 1, 9
# A worker that was down at 09:00 still generates it within the day.
BULLETIN_GRACE_S = 15 * 3600
# How long the dispatchers keep trying to deliver a bulletin before dead-lettering it.
BULLETIN_DELIVERY_DEADLINE = timedelta(days=3)


def bulletin_trigger() -> CronTrigger:
    """The 1st of every month at 09:00 Asia/Shanghai."""
    return CronTrigger(day=BULLETIN_DAY, hour=BULLETIN_HOUR, minute=0, timezone=CST)


def previous_month(now: datetime) -> Period:
    """The calendar month before the one `now` falls in (Asia/Shanghai)."""
    first = now.astimezone(CST).date().replace(day=1)
    last = first - timedelta(days=1)
    return month(last.year, last.month)


async def generate_monthly_bulletin(
    pool: AsyncConnectionPool, *, now: datetime | None = None
) -> StoredBulletin:
    """The month before `now` (default: now): assembled, rendered, stored as a new version."""
    at = now or utcnow()
    period = previous_month(at)
    async with pool.connection() as conn:
        found = await assemble_bulletin(conn, period, now=at)
        async with conn.transaction():
            stored = await store_bulletin(
                conn,
                month=period.start,
                generated_at=at,
                body=found.model_dump_json(),
                html=render_html(found),
                csv_zip=bulletin_zip(found),
            )
            queued = await queue_bulletin_deliveries(
                conn, stored, at=at, deadline_at=at + BULLETIN_DELIVERY_DEADLINE
            )
            await notify_outbox(conn)
    log.info(
        "bulletin %s stored as version %d; %d deliveries queued",
        period.label,
        stored.version,
        len(queued),
    )
    return stored
