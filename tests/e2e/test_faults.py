"""Faults survived in the middle of HJ 212 ingest and of notifying, bounded (bench/faults.py runs
them for longer).

A fleet of data loggers that re-send what was not acknowledged uploads to a real `envlink worker`
process; the worker is SIGKILLed and started again, or its private PostgreSQL is stopped and
started again. Every reading the platform acknowledged is stored, nothing is stored twice, and
once the loggers have re-sent the rest every reading is stored.

When the loggers send NO2 far above its limit, alerts fire and the worker notifies a webhook
receiver on loopback (an HTTP server in this process that counts what it gets per idempotency
key): the receiver is down for 30 s while they fire, or the database stops while deliveries are
under way. Each notification arrives once, none twice and none lost.

Under mixed load (200 stations uploading, 64 clients reading the API served as docker-compose.yml
serves it, alerts firing and notifying) for 60 s, no request fails, nothing is logged as an
error and no process's memory after warm-up moves by more than 20 % to the end.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.faults import (
    growth,
    kill_worker,
    mixed_load,
    restart_database,
    restart_database_dispatching,
    webhook_down,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the embedded server's socket path must stay short.
    folder = Path(tempfile.mkdtemp(prefix="envlink-faults-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_a_worker_killed_mid_ingest_loses_and_duplicates_nothing(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    # A database of its own: the fleet's 50 stations must not join the session's catalogue.
    counts = await kill_worker(new_database(), stations=50, seconds=10, log_dir=tmp_path)
    assert counts.resent > 0  # the kill cut some packets off before their answer
    assert (counts.lost, counts.duplicates, counts.unacknowledged) == (0, 0, 0)
    assert counts.stored == counts.acknowledged == counts.sent > 0


async def test_a_database_restarted_mid_ingest_loses_and_duplicates_nothing(
    short_dir: Path,
) -> None:
    counts = await restart_database(
        short_dir / "db", stations=50, seconds=12, down_s=4, log_dir=short_dir
    )
    assert (counts.lost, counts.duplicates, counts.unacknowledged) == (0, 0, 0)
    assert counts.stored == counts.acknowledged == counts.sent > 0
    assert counts.resumed_s < 3.0


async def test_a_webhook_receiver_down_30_s_while_alerts_fire_gets_each_notification_once(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    # Ten stations fire one NO2 alert each, one after another over the first 20 s of the outage.
    deliveries = await webhook_down(
        new_database(), stations=10, down_s=30, log_dir=tmp_path, retry_max_s=4
    )
    print(deliveries.line())
    assert deliveries.sent == deliveries.made_during_fault == 10
    assert deliveries.attempts_failed >= 10  # each was refused at least once while it was down
    assert (deliveries.delivered, deliveries.duplicates, deliveries.lost) == (10, 0, 0)
    assert (deliveries.unknown, deliveries.dead_lettered) == (0, 0)
    # Retries wait at most 4 s (and up to 1 s for a connection to be refused).
    assert deliveries.last_first_delivery_s < 6.0


async def test_a_database_restarted_mid_dispatch_delivers_each_notification_once(
    short_dir: Path,
) -> None:
    counts, deliveries = await restart_database_dispatching(
        short_dir / "db", stations=20, seconds=12, down_s=4, log_dir=short_dir
    )
    print(f"{counts.line()}\n{deliveries.line()}")
    assert (counts.lost, counts.duplicates, counts.unacknowledged) == (0, 0, 0)
    assert deliveries.sent == 20
    # A delivery was being answered when the database stopped: its outcome waited for the return.
    assert deliveries.attempts_during_fault >= 1
    assert (deliveries.delivered, deliveries.duplicates, deliveries.lost) == (20, 0, 0)
    assert (deliveries.unknown, deliveries.dead_lettered) == (0, 0)
    # Readings sent during the outage are stored when the stations resend them (after 5 s); their
    # alerts are notified at once, not after another wait as long as the outage.
    assert deliveries.last_first_delivery_s < 10.0


@pytest.mark.alone
async def test_mixed_load_for_60_s_fails_no_request_and_holds_every_process_s_memory(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    mixed = await mixed_load(
        new_database(), stations=200, seconds=60, connections=64, log_dir=tmp_path
    )
    print("\n".join(mixed.lines()))
    counts = mixed.ingest
    assert (counts.lost, counts.duplicates, counts.unacknowledged) == (0, 0, 0)
    assert counts.stored == counts.acknowledged == counts.sent > 0
    assert set(mixed.api_answers) == {200}  # not one 503, 5xx or connection failure
    assert mixed.api_answers[200] > 500
    # Every tenth station sends NO2 above its limit: twenty alerts, each delivered once.
    assert mixed.alerts == mixed.notifications == mixed.deliveries == 20
    assert mixed.delivered_twice == 0
    assert mixed.errors == {"worker": [], "api": []}
    # The worker, the API's supervisor and the processes it started (two serve).
    assert {"worker", "api", "api 1", "api 2"} <= set(mixed.rss_mb)
    for name, (start, end) in mixed.rss_mb.items():
        assert abs(growth(start, end)) <= 0.2, f"{name}: {start:.0f} -> {end:.0f} MB"
