"""`envlink demo --history Nd` from nothing: last month's air report has real figures at once,
and no alert speaks of the loaded past."""

from __future__ import annotations

import calendar
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.timeutil import CST
from ingest.sources.story import BACKFILL_S, SCENES
from tests.conftest import ROOT
from tests.e2e.test_demo import demo_env

pytestmark = pytest.mark.slow

DEADLINE_S = 180
STORY_STATIONS = {code for scene in SCENES if scene.backfill for code in scene.stations}


def _last_month(today: date) -> str:
    previous = today.replace(day=1) - timedelta(days=1)
    return f"{previous.year:04d}-{previous.month:02d}"


def test_a_refused_history_stops_the_demo_before_it_starts(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "envlink.cli", "demo", "--history", "40"],
        env={**os.environ, "ENVLINK_DATA_DIR": str(tmp_path)}, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "argument --history: expected a number of days" in refused.stderr
    assert "such as 400d, not '40'" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # no database was started


def test_last_months_air_report_has_figures_and_no_alert_is_about_the_past(
    tmp_path: Path,
) -> None:
    api_port, env = demo_env(tmp_path)
    started_at = datetime.now(CST)
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "envlink.cli", "demo", "--history", "40d"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        key, loaded, output = None, None, []
        while key is None and time.monotonic() - started < DEADLINE_S:
            line = demo.stdout.readline()
            assert line, "demo exited early:\n" + "".join(output)
            output.append(line)
            if found := re.match(r"history \S+ to \S+: (\d+) days loaded", line):
                loaded = int(found[1])
            if found := re.fullmatch(r"  joint_office \([a-z_, ]+\): (elk_\S+)\n", line):
                key = found[1]
        assert key is not None, "".join(output)
        # 40 whole days, and today's if an hour of it is over.
        assert loaded == (40 if started_at.hour == 0 else 41), "".join(output)
        threading.Thread(target=output.extend, args=(demo.stdout,), daemon=True).start()
        month = _last_month(started_at.date())
        days = calendar.monthrange(int(month[:4]), int(month[5:]))[1]
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            response = client.get(
                "/v1/reports/air",
                params={"scope": "city", "code": "guangzhou", "period": month},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["valid_days"] == days
            assert sum(report["category_days"].values()) == days
            assert 0 < report["good_day_share"] <= 100
            for pollutant in ("so2", "no2", "co", "o3", "pm10", "pm25"):
                assert report["pollutants"][pollutant]["valid_days"] == days
                assert report["pollutants"][pollutant]["value"] > 0
            assert report["composite_index"]["value"] > 0
            # The live simulator runs meanwhile; whatever it raised is about today (a day's
            # statistic is dated at its start) or the hour in progress, not the loaded past.
            live_from = min(
                started_at.replace(hour=0, minute=0, second=0, microsecond=0),
                started_at - timedelta(hours=1),
            )
            time.sleep(5)
            alerts = client.get("/v1/alerts", headers=headers)
            assert alerts.status_code == 200, alerts.text
            # The story's scenes under way at the start are backfilled minute by minute over
            # the last hours: their stations' alerts, and the pre-alerts their breaches raise
            # downstream, may date from then.
            story_from = started_at - timedelta(seconds=BACKFILL_S)
            past = [
                a
                for a in alerts.json()["items"]
                if a["trigger_time"] is not None
                and datetime.fromisoformat(a["trigger_time"]) < live_from
                and not (
                    (a["station"] in STORY_STATIONS or a["rule_id"] == "river_propagation")
                    and datetime.fromisoformat(a["trigger_time"]) >= story_from
                )
            ]
            assert past == []
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    assert demo.returncode in (0, 130)
