"""docker-compose.yml and the Dockerfile stay consistent with the code (no Docker needed)."""

from __future__ import annotations

import re
import tomllib

import yaml

from envlink.cli import _parser
from tests.conftest import ROOT


def test_compose_runs_envlink_commands_against_the_database() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "api", "ingest", "worker"}
    # The TimescaleDB release and PostgreSQL major CI tests; EnvLink refuses to run without it.
    assert services["db"]["image"] == "timescale/timescaledb:2.28.3-pg15"
    assert services["migrate"]["environment"]["ENVLINK_TIMESCALEDB"] == "required"
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("api", "ingest", "worker"):
        service = services[name]
        assert service["command"][0] in commands
        assert service["environment"]["ENVLINK_DATABASE_URL"].startswith("postgresql://envlink:")
        assert "@db:5432/envlink" in service["environment"]["ENVLINK_DATABASE_URL"]
        assert service["depends_on"]["db"] == {"condition": "service_healthy"}
        assert service["environment"]["ENVLINK_TIMESCALEDB"] == "required"
    assert services["migrate"]["entrypoint"][-1] == "envlink migrate && envlink seed"
    # The process answering the stations leaves QC, rollups and alerts to the other workers.
    assert services["ingest"]["environment"]["ENVLINK_ALERT_LOOP_ENABLED"] == "false"
    assert services["ingest"]["ports"] == ["9212:9212"]
    assert services["worker"]["environment"]["ENVLINK_HJ212_ENABLED"] == "false"
    assert "ENVLINK_ALERT_LOOP_ENABLED" not in services["worker"]["environment"]


def test_dockerfile_copies_every_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert copied - {"config"} == packages
