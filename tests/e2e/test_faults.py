"""Faults survived in the middle of HJ 212 ingest, bounded (bench/faults.py runs them for longer).

A fleet of data loggers that re-send what was not acknowledged uploads to a real `envlink worker`
process; the worker is SIGKILLed and started again, or its private PostgreSQL is stopped and
started again. Every reading the platform acknowledged is stored, nothing is stored twice, and
once the loggers have re-sent the rest every reading is stored.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.faults import kill_worker, restart_database

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
