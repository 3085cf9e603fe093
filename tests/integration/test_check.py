"""`envlink check` against real databases: a healthy one, and each kind of problem it reports."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from core.settings import Settings
from core.timeutil import utcnow
from envlink import cli
from envlink.check import Finding, check, liveness
from schemas.catalogue import load_catalogue
from schemas.notifications import SubscriptionIn
from schemas.rules import load_rules
from store.catalogue import seed_catalogue
from store.migrate import available_migrations, migrate
from store.pool import redact
from store.rules import seed_rules
from store.subscriptions import create_subscription
from tests.conftest import CONFIG_DIR

LATEST = available_migrations()[-1].version


def by_name(findings: list[Finding]) -> dict[str, tuple[bool, str]]:
    return {f.what: (f.ok, f.detail) for f in findings}


async def test_a_healthy_database_is_all_ok_and_a_failing_source_is_a_problem(
    db: AsyncConnectionPool, database_url: str, settings: Settings, timescaledb: bool
) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO source (code, kind, last_success_at, last_error_at, last_error) VALUES"
            " ('hj212', 'hj212', '2026-11-26T04:00:00Z', NULL, NULL),"
            " ('openaq', 'http_pull', '2026-11-26T03:00:00Z', '2026-11-26T04:00:00Z', 'HTTP 503')"
        )
    found = by_name(await check(database_url, settings))
    assert list(found) == [
        "settings",
        "database",
        "migrations",
        "timescaledb",
        "catalogue stations",
        "catalogue rules",
        "signing key",
        "source hj212",
        "source openaq",
    ]
    assert found["database"][0] is True
    assert found["database"][1].startswith(redact(database_url) + " (PostgreSQL ")
    assert found["migrations"] == (
        True,
        f"{len(available_migrations())} applied, latest {LATEST:04d}",
    )
    assert found["timescaledb"][0] is True
    assert found["timescaledb"][1].startswith(
        "reading: hypertable" if timescaledb else "reading: monthly partitions"
    )
    assert found["catalogue stations"] == (True, "every station measures at least one parameter")
    assert found["catalogue rules"] == (True, "0 rules, every reference known")
    assert found["signing key"] == (True, "not set; no bulletin subscription sends links")
    assert found["source hj212"] == (True, "last success 2026-11-26T12:00:00+08:00")
    assert found["source openaq"] == (
        False,
        "failing since 2026-11-26T12:00:00+08:00 (last success 2026-11-26T11:00:00+08:00):"
        " HTTP 503",
    )


async def test_catalogue_problems_are_named(new_database: Callable[[], str]) -> None:
    url = new_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        async with conn.transaction():
            await seed_catalogue(conn, load_catalogue(CONFIG_DIR))
            await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=datetime.now(UTC))
        await conn.execute(
            "DELETE FROM station_parameter WHERE station_id IN"
            " (SELECT id FROM station WHERE code IN ('gz-a-huangpu', 'dg-w-humen'))"
        )
        cur = await conn.execute(
            "SELECT rule_id FROM rule_version WHERE definition ? 'parameter'"
            " AND definition->>'parameter' IS NOT NULL ORDER BY rule_id LIMIT 1"
        )
        row = await cur.fetchone()
        assert row is not None
        await conn.execute(
            "UPDATE rule_version SET definition = jsonb_set(definition, '{parameter}', '\"pm26\"')"
            " WHERE rule_id = %s",
            [row[0]],
        )
    found = by_name(await check(url, Settings(database_url=url, config_dir=CONFIG_DIR)))
    assert found["catalogue stations"] == (
        False,
        "without parameters: dg-w-humen, gz-a-huangpu"
        " (envlink seed after fixing config/stations.yaml)",
    )
    assert found["catalogue rules"] == (False, f"rule {row[0]}: unknown parameter 'pm26'")


async def test_missing_migrations_stop_the_check_there(new_database: Callable[[], str]) -> None:
    url = new_database()
    findings = await check(url, Settings(database_url=url, config_dir=CONFIG_DIR))
    assert [f.what for f in findings] == ["settings", "database", "migrations"]
    assert findings[-1].ok is False
    assert findings[-1].detail.endswith("; run envlink migrate")


async def test_required_timescaledb_without_a_hypertable_is_a_problem(
    db: AsyncConnectionPool, database_url: str, timescaledb: bool
) -> None:
    if timescaledb:
        pytest.skip("this database keeps readings in a hypertable")
    settings = Settings(database_url=database_url, config_dir=CONFIG_DIR, timescaledb="required")
    found = by_name(await check(database_url, settings))
    assert found["timescaledb"] == (
        False,
        "reading: monthly partitions (plain PostgreSQL), but ENVLINK_TIMESCALEDB=required"
        " (envlink migrate --to-timescaledb moves it)",
    )


async def test_an_unreachable_database_is_the_last_finding() -> None:
    url = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"
    findings = await check(url, Settings(database_url=url, config_dir=CONFIG_DIR))
    assert [(f.what, f.ok) for f in findings] == [("settings", True), ("database", False)]
    assert "cannot connect to PostgreSQL at" in findings[1].detail


def test_liveness_reads_the_heartbeat_age(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    assert liveness(heartbeat, max_age_s=30) == Finding(
        "liveness", False, f"no heartbeat at {heartbeat}: no worker has run here"
    )
    heartbeat.touch()
    beat = heartbeat.stat().st_mtime
    assert liveness(heartbeat, max_age_s=30, clock=lambda: beat + 12) == Finding(
        "liveness", True, "heartbeat 12 s old"
    )
    assert liveness(heartbeat, max_age_s=30, clock=lambda: beat + 45) == Finding(
        "liveness", False, f"heartbeat 45 s old at {heartbeat} (at most 30 s)"
    )


def test_check_liveness_exits_1_without_a_fresh_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    heartbeat = tmp_path / "beat"
    monkeypatch.setenv("ENVLINK_HEARTBEAT_FILE", str(heartbeat))
    assert cli.main(["check", "--liveness"]) == 1
    heartbeat.touch()
    old = time.time() - 60
    os.utime(heartbeat, (old, old))
    assert cli.main(["check", "--liveness", "--max-age", "90"]) == 0
    assert cli.main(["check", "--liveness"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("liveness               PROBLEM  heartbeat 60 s old at ")
    assert lines[-1] == "1 problem"


async def test_bulletin_links_without_a_signing_key_are_a_problem(
    db: AsyncConnectionPool, database_url: str, settings: Settings
) -> None:
    # E-mail attaches the bulletin: no key needed. A disabled subscription sends nothing.
    await _subscribe(db, "gz-bulletin-mail", "email", "office@example.cn")
    await _subscribe(db, "gz-bulletin-off", "dingtalk", "http://127.0.0.1:9/ding", enabled=False)
    unsigned = settings.model_copy(update={"signing_key": None})
    assert by_name(await check(database_url, unsigned))["signing key"] == (
        True,
        "not set; no bulletin subscription sends links",
    )
    await _subscribe(db, "gz-bulletin-hook", "webhook", "http://127.0.0.1:9/hook")
    await _subscribe(db, "gz-bulletin-robot", "wecom", "http://127.0.0.1:9/robot")
    assert by_name(await check(database_url, unsigned))["signing key"] == (
        False,
        "ENVLINK_SIGNING_KEY is not set, but bulletin subscriptions gz-bulletin-hook,"
        " gz-bulletin-robot send the bulletin as a signed link (webhook, WeCom, DingTalk): their"
        " deliveries fail. Set it (the same value on the worker and the API), or send them by"
        " e-mail",
    )
    signed = settings.model_copy(update={"signing_key": SecretStr("check-signing-key-0123")})
    assert by_name(await check(database_url, signed))["signing key"] == (
        True,
        "set: bulletin links are signed",
    )


async def _subscribe(
    db: AsyncConnectionPool, code: str, channel: str, target: str, *, enabled: bool = True
) -> None:
    spec = SubscriptionIn(
        code=code, channel=channel, target=target, kind="bulletin", enabled=enabled
    )
    async with db.connection() as conn, conn.transaction():
        await create_subscription(conn, agency="gz_eeb", spec=spec, via="api", at=utcnow())
