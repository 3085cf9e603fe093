"""`envlink backfill`: an HTTP pull feed's range fetched and stored again, watermarks untouched."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from psycopg_pool import AsyncConnectionPool

from envlink import cli
from ingest.pipeline import Pipeline
from ingest.sources.http_pull import HttpPullJob
from tests.integration.test_http_pull import (
    HOUR,
    NOW,
    UpstreamServer,
    _expected,
    _feed,
    _stored,
    _watermark,
    server,  # noqa: F401 (the fake upstream, a fixture)
)


async def test_a_range_is_stored_once_and_again_as_duplicates_watermarks_untouched(
    db: AsyncConnectionPool,
    server: UpstreamServer,  # noqa: F811
) -> None:
    feed = _feed(server.url, max_window_s=6 * 3600)
    job = HttpPullJob(Pipeline(db, earliest=date(2000, 1, 1), clock=lambda: NOW), db, feed)
    await job.start()
    try:
        seen: list[tuple[int, int]] = []
        report = await job.backfill(
            NOW - 10 * HOUR, NOW, progress=lambda done, total: seen.append((done, total))
        )
        again = await job.backfill(NOW - 10 * HOUR, NOW)
    finally:
        await job.stop()
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert [(w.series, w.start, w.end) for w in report.windows] == [
        ("sensor 101", NOW - 10 * HOUR, NOW - 4 * HOUR),
        ("sensor 101", NOW - 4 * HOUR, NOW),
        ("sensor 102", NOW - 10 * HOUR, NOW - 4 * HOUR),
        ("sensor 102", NOW - 4 * HOUR, NOW),
    ]
    pm25, no2 = _expected([NOW - n * HOUR for n in range(9, -1, -1)])
    assert await _stored(db, "pm25") == pm25
    assert await _stored(db, "no2") == no2
    assert (report.total("accepted"), report.total("duplicate")) == (20, 0)
    assert (again.total("accepted"), again.total("duplicate")) == (0, 20)
    # The scheduled pulls go on from where they were: a backfill moves no watermark.
    assert await _watermark(db, "http:openaq-test") == {}


def test_backfill_names_the_pull_feeds_for_a_source_that_is_not_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = tmp_path / "sources.yaml"
    feed = _feed("http://127.0.0.1:1").model_dump(mode="json", exclude_defaults=True)
    sources.write_text(yaml.safe_dump({"http_feeds": [feed]}))
    monkeypatch.setenv("ENVLINK_SOURCES_FILE", str(sources))
    monkeypatch.setenv("ENVLINK_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    argv = ["backfill", "--source", "hj212", "--from", "2026-11-26T00:00", "--to", "2026-11-27"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"envlink: --source hj212: no HTTP pull feed of that code in {sources} (there:"
        " openaq-test). Backfill re-runs pull feeds; HJ 212 stations are asked with --station"
        " CODE, MQTT and CSV sources resend or re-drop\n"
    )
