"""The `envlink` command as a user runs it: migrate, seed, keys; and bad settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import CONFIG_DIR, ROOT


def _envlink(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envlink.cli", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def cli_env(new_database: Callable[[], str]) -> dict[str, str]:
    return {"ENVLINK_DATABASE_URL": new_database(), "ENVLINK_CONFIG_DIR": str(CONFIG_DIR)}


def test_migrate_seed_and_keys(cli_env: dict[str, str]) -> None:
    first = _envlink("migrate", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("migrations: ")
    again = _envlink("migrate", env=cli_env)
    assert again.stdout == "migrations: 0 applied\n"

    seeded = _envlink("seed", env=cli_env)
    assert seeded.returncode == 0, seeded.stderr
    assert "station: 20 inserted, 0 updated, 0 unchanged" in seeded.stdout.splitlines()
    reseeded = _envlink("seed", env=cli_env)
    assert "station: 0 inserted, 0 updated, 20 unchanged" in reseeded.stdout.splitlines()

    created = _envlink(
        "keys", "create", "--agency", "dg_eeb", "--role", "reader", "--role", "writer",
        "--expires-in-days", "30", env=cli_env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    assert key.startswith("elk_") and len(key) > 40
    with psycopg.connect(cli_env["ENVLINK_DATABASE_URL"]) as conn:
        stored = conn.execute("SELECT api_key::text, roles FROM api_key").fetchall()
    assert len(stored) == 1
    assert key not in stored[0][0]
    assert stored[0][1] == ["reader", "writer"]

    listed = _envlink("keys", "list", env=cli_env)
    assert listed.stdout.split("\t")[2:5] == ["dg_eeb", "reader,writer", "active"]
    revoked = _envlink("keys", "revoke", "1", env=cli_env)
    assert revoked.returncode == 0
    assert "\trevoked\t" in _envlink("keys", "list", env=cli_env).stdout


def test_keys_create_names_an_unknown_agency(cli_env: dict[str, str]) -> None:
    _envlink("migrate", env=cli_env)
    result = _envlink("keys", "create", "--agency", "sz_eeb", "--role", "reader", env=cli_env)
    assert result.returncode == 2
    assert result.stderr == "envlink: no agency with code 'sz_eeb' (run `envlink seed` first?)\n"
    assert result.stdout == ""


def test_bad_role_is_refused_by_the_parser(cli_env: dict[str, str]) -> None:
    result = _envlink("keys", "create", "--agency", "gz_eeb", "--role", "king", env=cli_env)
    assert result.returncode == 2
    assert "argument --role: invalid choice: 'king'" in result.stderr


def test_bad_settings_stop_start_up_with_the_variable_named() -> None:
    result = _envlink("migrate", env={"ENVLINK_API_PORT": "70000"})
    assert result.returncode == 2
    assert result.stderr == (
        "envlink: invalid settings: ENVLINK_API_PORT='70000': "
        "Input should be less than or equal to 65535\n"
    )


def test_unreachable_database_is_a_clear_error() -> None:
    result = _envlink(
        "migrate", env={"ENVLINK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    )
    assert result.returncode == 2
    assert result.stderr.startswith("envlink: cannot connect to PostgreSQL at ")
    assert "port=1" in result.stderr


@pytest.mark.parametrize("command", ["api", "serve", "demo"])
def test_an_api_port_in_use_stops_start_up_naming_the_setting(
    cli_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_env | {"ENVLINK_API_PORT": str(port), "ENVLINK_DATA_DIR": str(tmp_path / "data")}
        result = _envlink(command, env=env)
    assert result.returncode == 2
    assert result.stderr == (
        f"envlink: cannot serve the API on 127.0.0.1:{port}: Address already in use; set"
        " ENVLINK_API_PORT to a free port (or ENVLINK_API_HOST to an address of this machine)\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing was started, not even the demo's database
