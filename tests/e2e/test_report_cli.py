"""`envlink report` as a user runs it: the month's bulletin written as JSON, a zip of CSV tables
and the HTML page, with the figures GET /v1/reports/bulletin gives; a bad month refused at once."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.e2e.test_export_cli import _envlink
from tests.integration.test_bulletin import TABLES, _seed

pytestmark = pytest.mark.slow


async def test_report_writes_the_bulletin_files(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    await _seed(db)
    out = tmp_path / "bulletins" / "2026"
    written = await _envlink(database_url, "report", "--month", "2026-11", "--out", str(out))
    assert written.returncode == 0, written.stderr
    names = ["envlink-bulletin-2026-11.json", "envlink-bulletin-2026-11.zip",
             "envlink-bulletin-2026-11.html"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert written.stdout.decode().splitlines() == [str(out / name) for name in names]
    bulletin = json.loads((out / names[0]).read_text(encoding="utf-8"))
    summary = [(r["unit"], r["good_day_share"], r["composite_index"]) for r in bulletin["summary"]]
    assert summary == [("guangzhou", 100.0, 2.46), ("dongguan", 82.8, 3.39), ("region", 91.4, 2.92)]
    assert zipfile.ZipFile(out / names[1]).namelist() == TABLES
    page = (out / names[2]).read_text(encoding="utf-8")
    assert page.startswith('<!DOCTYPE html>\n<html class="zh" lang="zh-CN">')
    assert '<svg id="aqi-calendar-dongguan"' in page


async def test_a_bad_month_is_refused_before_anything_is_written(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    refused = await _envlink(database_url, "report", "--month", "2026-13", "--out", str(out))
    assert refused.returncode == 2
    assert refused.stderr.decode() == "envlink: month: '2026-13': month 13 is not 1..12\n"
    assert not out.exists()
    missing = await _envlink(database_url, "report", "--out", str(out))
    assert missing.returncode == 2
    assert "the following arguments are required: --month" in missing.stderr.decode()
