"""`envlink demo` from nothing: embedded database, catalogue, simulator, API with a printed key."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from schemas.catalogue import load_catalogue
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.slow

DEADLINE_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_env(tmp_path: Path) -> tuple[int, dict[str, str]]:
    """A demo's environment: its own data folder and free API and HJ 212 ports, no database
    URL (the embedded server); and its API port."""
    api_port = _free_port()
    env = {
        **os.environ,
        "ENVLINK_DATA_DIR": str(tmp_path / "envlink"),
        "ENVLINK_CONFIG_DIR": str(CONFIG_DIR),
        "ENVLINK_API_PORT": str(api_port),
        "ENVLINK_HJ212_PORT": str(_free_port()),
        "ENVLINK_DATABASE_URL": "",
    }
    return api_port, env


def test_demo_serves_latest_for_every_station_parameter(tmp_path: Path) -> None:
    api_port, env = demo_env(tmp_path)
    catalogue = load_catalogue(CONFIG_DIR)
    expected = {(code, p) for code, links in catalogue.station_parameters.items() for p in links}
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "envlink.cli", "demo"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        keys: dict[str, str] = {}
        output = []
        while len(keys) < 3 and time.monotonic() - started < DEADLINE_S:
            line = demo.stdout.readline()
            assert line, "demo exited early:\n" + "".join(output)
            output.append(line)
            if found := re.fullmatch(r"  (\w+) \(([a-z_, ]+)\): (elk_\S+)\n", line):
                keys[found[1]] = found[3]
        assert sorted(keys) == ["dg_eeb", "gz_eeb", "joint_office"]
        assert f"EnvLink demo: http://127.0.0.1:{api_port}/docs\n" in output
        key = keys["dg_eeb"]
        # The README's push example, as written, with the demo's dg_eeb key and this port.
        readme = (ROOT / "README.md").read_text()
        [push] = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "-X POST" in b]
        pushed = subprocess.run(
            ["bash", "-c", push.replace("127.0.0.1:8000", f"127.0.0.1:{api_port}")],
            env={**env, "KEY": key}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        answer = json.loads(pushed.stdout)
        assert (answer["received"], answer["summary"]["accepted"]) == (1, 1), answer
        # Keep reading the demo's output so a chatty log can never fill the pipe and stall it.
        threading.Thread(target=output.extend, args=(demo.stdout,), daemon=True).start()
        seen: set[tuple[str, str]] = set()
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=5) as client:
            while time.monotonic() - started < DEADLINE_S:
                try:
                    response = client.get("/v1/latest", headers={"X-API-Key": key})
                except httpx.TransportError:
                    time.sleep(0.2)
                    continue
                assert response.status_code == 200, response.text
                seen = {(i["station"], i["parameter"]) for i in response.json()["items"]}
                if seen == expected:
                    break
                time.sleep(0.5)
        elapsed = time.monotonic() - started
        assert seen == expected, f"missing after {elapsed:.0f} s: {sorted(expected - seen)[:10]}"
        assert elapsed < DEADLINE_S
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    assert demo.returncode in (0, 130)
    assert not (tmp_path / "envlink" / "pg" / "postmaster.pid").exists()
