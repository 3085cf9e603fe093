"""Waking the dispatchers: a NOTIFY on the outbox channel."""

from __future__ import annotations

from store.coordination import OUTBOX_CHANNEL
from store.pool import Conn


async def notify_outbox(conn: Conn) -> None:
    """Wake the dispatchers; delivered when the transaction commits."""
    await conn.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])
