"""Which loops a worker runs, by its settings (real PostgreSQL, no MQTT, no HJ 212 port)."""

from __future__ import annotations

import pytest
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from envlink.runtime import Worker
from store.listen import Listener


@pytest.mark.parametrize(
    ("alert_loop", "notify", "expected"),
    [
        (True, True, ["alerts", "notify-stage", "notify-dispatch"]),
        (False, True, ["notify-stage", "notify-dispatch"]),
        (True, False, ["alerts"]),
        (False, False, []),
    ],
)
async def test_the_worker_runs_the_loops_its_settings_ask_for(
    db: AsyncConnectionPool,
    listener: Listener,
    settings: Settings,
    alert_loop: bool,
    notify: bool,
    expected: list[str],
) -> None:
    configured = settings.model_copy(
        update={
            "hj212_enabled": False,
            "mqtt_host": None,
            "alert_loop_enabled": alert_loop,
            "notify_enabled": notify,
        }
    )
    worker = Worker(db, listener, configured, simulate=False)
    try:
        await worker.start()
        assert [task.get_name() for task in worker.tasks] == expected
        assert all(not task.done() for task in worker.tasks)
    finally:
        await worker.stop()
