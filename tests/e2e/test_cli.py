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

pytestmark = pytest.mark.slow


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


def test_migrate_seed_and_keys(cli_env: dict[str, str], timescaledb: bool) -> None:
    first = _envlink("migrate", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("migrations: ")
    again = _envlink("migrate", env=cli_env)
    applied, layout = again.stdout.splitlines()
    assert applied == "migrations: 0 applied"
    if timescaledb:
        assert layout.startswith("reading: hypertable (TimescaleDB 2.")
        assert layout.endswith("; chunks of 7 days, compressed after 30 days)")
    else:
        assert layout == "reading: monthly partitions (plain PostgreSQL)"

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
    assert listed.stdout.split("\t")[2:6] == ["dg_eeb", "reader,writer", "active", "default rate"]
    limited = _envlink(
        "keys", "create", "--agency", "gz_eeb", "--role", "reader", "--rate-limit", "120",
        env=cli_env,
    )  # fmt: skip
    assert limited.stdout.splitlines()[0].endswith(": roles reader, 120 requests a minute")
    listed = _envlink("keys", "list", env=cli_env).stdout.splitlines()
    assert listed[1].split("\t")[2:6] == ["gz_eeb", "reader", "active", "120/min"]
    revoked = _envlink("keys", "revoke", "1", env=cli_env)
    assert revoked.returncode == 0
    assert "\trevoked\t" in _envlink("keys", "list", env=cli_env).stdout.splitlines()[0]
    with psycopg.connect(cli_env["ENVLINK_DATABASE_URL"]) as conn:
        audit = conn.execute(
            "SELECT key_id, agency, action, target, before->>'state', after->>'state'"
            " FROM audit_log ORDER BY id"
        ).fetchall()
    assert audit == [
        (None, None, "key.create", "key:1", None, "active"),
        (None, None, "key.create", "key:2", None, "active"),
        (None, None, "key.revoke", "key:1", "active", "revoked"),
    ]


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


def _with_readings(url: str, rows: int) -> None:
    """Readings straight into a plain-layout `reading`: `rows` hourly ones from May 2026."""
    with psycopg.connect(url, autocommit=True) as conn:
        for month in range(5, 9):
            conn.execute(
                f"CREATE TABLE reading_p2026{month:02d} PARTITION OF reading"
                f" FOR VALUES FROM ('2026-{month:02d}-01') TO ('2026-{month + 1:02d}-01')"
            )
        conn.execute(
            "INSERT INTO reading SELECT 1, 1, 3600, '2026-05-01'::timestamptz"
            " + n * interval '1 hour', n, 0, 1, now() FROM generate_series(0, %s - 1) n",
            [rows],
        )


def test_migrate_to_timescaledb_moves_readings_with_a_progress_bar(
    timescaledb_database: Callable[[], str],
) -> None:
    env = {"ENVLINK_DATABASE_URL": timescaledb_database(), "ENVLINK_CONFIG_DIR": str(CONFIG_DIR)}
    plain = _envlink("migrate", env={**env, "ENVLINK_TIMESCALEDB": "off"})
    assert plain.stdout.splitlines()[-1] == "reading: monthly partitions (plain PostgreSQL)"
    _with_readings(env["ENVLINK_DATABASE_URL"], 2000)

    # Left alone by a plain migrate, refused under required.
    auto = _envlink("migrate", env=env)
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.splitlines()[-1].startswith("reading: monthly partitions (plain ")
    assert "`envlink migrate --to-timescaledb` moves them" in auto.stderr
    required = _envlink("migrate", env={**env, "ENVLINK_TIMESCALEDB": "required"})
    assert required.returncode == 2
    assert required.stderr == (
        "envlink: ENVLINK_TIMESCALEDB=required, but reading holds rows in monthly partitions;"
        " `envlink migrate --to-timescaledb` moves them onto a TimescaleDB hypertable\n"
    )

    moved = _envlink("migrate", "--to-timescaledb", env=env)
    assert moved.returncode == 0, moved.stderr
    applied, report, layout = moved.stdout.splitlines()
    assert (applied, report) == (
        "migrations: 0 applied",
        "moved 2,000 readings onto a TimescaleDB hypertable (counts checked)",
    )
    assert layout.endswith("; chunks of 7 days, compressed after 30 days)")
    # One redraw before the copy and one per partition (May: 744 rows, June: 720, July: 536,
    # August: none), each after a carriage return (a newline to a text-mode reader).
    bar = [line for line in moved.stderr.splitlines() if line.startswith("moving readings [")]
    assert [line.split("] ")[1].split(" rows")[0] for line in bar] == [
        "  0% 0/2,000",
        " 37% 744/2,000",
        " 73% 1,464/2,000",
        "100% 2,000/2,000",
        "100% 2,000/2,000",
    ]
    assert moved.stderr.endswith(" s\n")
    with psycopg.connect(env["ENVLINK_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*), sum(value) FROM reading").fetchone() == (
            2000,
            sum(range(2000)),
        )
    again = _envlink("migrate", "--to-timescaledb", env=env)
    assert again.stdout.splitlines()[1] == (
        "reading is a TimescaleDB hypertable already: nothing to move"
    )


def test_migrate_to_timescaledb_refuses_a_server_without_it(
    plain_database: Callable[[], str],
) -> None:
    env = {"ENVLINK_DATABASE_URL": plain_database(), "ENVLINK_CONFIG_DIR": str(CONFIG_DIR)}
    refused = _envlink("migrate", "--to-timescaledb", env=env)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        "envlink: this PostgreSQL server does not offer TimescaleDB (it must be installed and in"
        " shared_preload_libraries); nothing was changed\n"
    )
    with psycopg.connect(env["ENVLINK_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT to_regclass('schema_migration')").fetchone() == (None,)
    off = _envlink("migrate", "--to-timescaledb", env={**env, "ENVLINK_TIMESCALEDB": "off"})
    assert (off.returncode, off.stderr) == (
        2,
        "envlink: ENVLINK_TIMESCALEDB=off: unset it (auto) or set it to required to move onto"
        " TimescaleDB; nothing was changed\n",
    )


def test_required_timescaledb_refuses_to_start_without_it(
    plain_database: Callable[[], str],
) -> None:
    env = {"ENVLINK_DATABASE_URL": plain_database(), "ENVLINK_CONFIG_DIR": str(CONFIG_DIR)}
    migrated = _envlink("migrate", env=env)
    assert migrated.stdout.splitlines()[-1] == "reading: monthly partitions (plain PostgreSQL)"
    required = {**env, "ENVLINK_TIMESCALEDB": "required"}
    refused = _envlink("migrate", env=required)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        "envlink: ENVLINK_TIMESCALEDB=required, but this PostgreSQL server does not offer"
        " TimescaleDB (it must be installed and in shared_preload_libraries); use a server that"
        " preloads it, or set ENVLINK_TIMESCALEDB=auto\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = _envlink("api", env={**required, "ENVLINK_API_PORT": str(port)})
    assert (api.returncode, api.stderr.splitlines()[-1]) == (
        2,
        "envlink: ENVLINK_TIMESCALEDB=required, but readings are not in a TimescaleDB"
        " hypertable: run `envlink migrate` (a new database, on a server that preloads"
        " TimescaleDB) or `envlink migrate --to-timescaledb` (one that holds readings)",
    )
