"""Ingest's scheduled jobs: thin wrappers that call a stage, log, and record status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from core.timeutil import utcnow
from ingest.pipeline import IngestCatalogue, Pipeline, SourceRef
from ingest.sources.hj212.client import Hj212Fleet
from ingest.sources.mqtt import MqttPublisher
from ingest.sources.simulator import hourly_history, simulate
from schemas.readings import IntakeResult, ReadingIn
from store.partitions import create_partitions, month_of

log = logging.getLogger(__name__)
SIMULATOR = SourceRef(code="simulator", kind="simulator")


class SimulatorJob:
    """Each tick: a real-time reading for every station × parameter, through the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        interval_s: float,
        history_hours: int = 24,
        clock: Callable[[], datetime] = utcnow,
        mqtt: MqttPublisher | None = None,
        hj212: Hj212Fleet | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._mqtt = mqtt
        self._hj212 = hj212
        self._interval_s = interval_s
        self._history_hours = history_hours
        self._clock = clock
        self._started = False

    async def tick(self) -> IntakeResult:
        """Deliver one round of readings (and, on the first tick, the recent hourly history)."""
        catalogue = await self._pipeline.catalogue()
        now = self._clock()
        # Ticks are aligned to the interval so a tick repeated after a restart is a duplicate.
        step = max(int(self._interval_s), 1)
        at = datetime.fromtimestamp(int(now.timestamp()) // step * step, tz=UTC)
        readings = simulate(catalogue, at)
        if self._mqtt is not None:
            # Some stations report as MQTT sensors; they come back in through the subscriber.
            readings = await self._mqtt.divert(readings)
        if not self._started and self._history_hours:
            readings += hourly_history(catalogue, now, hours=self._history_hours)
        if self._hj212 is not None:
            # Each station uploads over its own HJ 212 connection, as in production. Parameters
            # without an HJ 212 code (hj212: null in parameters.yaml, e.g. salinity) cannot
            # travel over HJ 212: they come back here and go through the pipeline directly.
            readings = await self._hj212.deliver(catalogue, readings)
        result = await self._pipeline.ingest(readings, source=SIMULATOR)
        self._started = True
        log.debug("simulator: %s", result.summary)
        return result


def simulated_history(
    catalogue: IngestCatalogue, station: str, period_s: int, begin: datetime, end: datetime
) -> list[ReadingIn]:
    """A simulated station's stored period data from `begin` to `end` (HJ 212 requests)."""
    readings: list[ReadingIn] = []
    at, step = begin, timedelta(seconds=period_s)
    while at <= end and period_s:
        readings += simulate(catalogue, at, period_s=period_s, stations=[station])
        at += step
    return readings


async def create_partitions_ahead(pool: AsyncConnectionPool, *, months: int = 2) -> list[str]:
    """Make sure the partitions for this month and the next `months` exist."""
    now = utcnow()
    wanted = {month_of(now + timedelta(days=31 * n)) for n in range(months + 1)}
    async with pool.connection() as conn, conn.transaction():
        created = await create_partitions(conn, wanted)
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created
