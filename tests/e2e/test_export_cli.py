"""`envlink export` as a user runs it: a file (or standard output) with the same bytes as
GET /v1/export, a progress bar on standard error, and nothing written when the request is bad."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.slow

DAY = datetime(2026, 11, 1, tzinfo=CST)


async def _envlink(database_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envlink.cli", *args,
        env={**os.environ, "ENVLINK_DATABASE_URL": database_url,
             "ENVLINK_CONFIG_DIR": str(CONFIG_DIR)},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out, err)


async def _readings(pool: AsyncConnectionPool) -> None:
    items = [
        ReadingIn(station="gz-a-huangpu", parameter="pm25", time=DAY + timedelta(hours=h),
                  value=12.5 + h, unit="ug/m3", period_s=3600, qc=QC.VALID)
        for h in range(3)
    ] + [
        ReadingIn(station="dg-w-humen", parameter="do", time=DAY, value=2.675, unit="mg/L",
                  qc=QC.MAINTENANCE),
    ]  # fmt: skip
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: datetime.now(UTC))
    batch: list[ReadingIn | Rejection] = list(items)
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(items), result.rejections


async def test_export_to_a_file_and_to_standard_output(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    await _readings(db)
    target = tmp_path / "november.csv"
    written = await _envlink(
        database_url, "export", "--start", "2026-11-01", "--end", "2026-12-01", "-o", str(target)
    )
    assert written.returncode == 0, written.stderr
    assert target.read_bytes().decode("utf-8") == (
        "\ufeffstation,parameter,time,period_s,value,unit,qc\n"
        "dg-w-humen,do,2026-11-01T00:00:00+08:00,0,2.68,mg/L,maintenance\n"
        "gz-a-huangpu,pm25,2026-11-01T00:00:00+08:00,3600,12,ug/m3,valid\n"
        "gz-a-huangpu,pm25,2026-11-01T01:00:00+08:00,3600,14,ug/m3,valid\n"
        "gz-a-huangpu,pm25,2026-11-01T02:00:00+08:00,3600,14,ug/m3,valid\n"
    )
    assert os.listdir(tmp_path) == ["november.csv"]
    progress = written.stderr.decode().split("\r")
    assert progress[-1].startswith("exporting [##############################] 100% 4/4 rows")
    assert progress[-1].endswith(f" s\nexported 4 rows to {target}\n")

    printed = await _envlink(
        database_url, "export", "--start", "2026-11-01T01:00", "--end", "2026-11-01T02:00",
        "--format", "ndjson", "--tz", "UTC", "--station", "gz-a-huangpu",
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.decode() == (
        '{"station":"gz-a-huangpu","parameter":"pm25","time":"2026-10-31T17:00:00Z",'
        '"period_s":3600,"period_end":"2026-10-31T18:00:00Z","value":14,"unit":"ug/m3",'
        '"qc":"valid"}\n'
    )


async def test_a_bad_export_says_why_and_writes_nothing(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "too-long.csv"
    refused = await _envlink(
        database_url, "export", "--start", "2025-01-01", "--end", "2026-06-01", "-o", str(target)
    )
    assert refused.returncode == 2
    assert refused.stderr.decode() == (
        "envlink: end: an export spans at most 366 days (ENVLINK_EXPORT_MAX_DAYS), this one 516;"
        " split it into several\n"
    )
    assert os.listdir(tmp_path) == []
