"""Seeding config/thresholds.yaml: new rules inserted, file changes versioned, API changes kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg_pool import AsyncConnectionPool

from core.errors import ConfigError
from core.settings import Settings
from envlink.runtime import run_seed
from schemas.rules import RuleSet, load_rules
from store.migrate import migrate
from store.rules import current_rules, rule_versions, seed_rules, write_rule
from tests.conftest import CONFIG_DIR

AT = datetime(2026, 11, 20, tzinfo=UTC)
LATER = datetime(2026, 11, 21, tzinfo=UTC)


def _file_rules() -> RuleSet:
    return load_rules(CONFIG_DIR / "thresholds.yaml")


def _with_change(rules: RuleSet, rule_id: str, **changes: Any) -> RuleSet:
    raw = rules.model_dump(mode="json")
    for rule in raw["rules"]:
        if rule["id"] == rule_id:
            rule.update(changes)
    return RuleSet.model_validate(raw)


async def _seed(pool: AsyncConnectionPool, rules: RuleSet, at: datetime = AT) -> Any:
    async with pool.connection() as conn, conn.transaction():
        return await seed_rules(conn, rules, at=at)


async def test_seed_inserts_then_reports_unchanged(db: AsyncConnectionPool) -> None:
    first = await _seed(db, _file_rules())
    assert (len(first.inserted), first.updated, first.unchanged, first.kept) == (19, [], [], {})
    second = await _seed(db, _file_rules(), LATER)
    assert (second.inserted, second.updated, len(second.unchanged)) == ([], [], 19)
    assert second.lines() == [
        "rule: 0 inserted, 0 updated, 19 unchanged, 0 kept as changed through the API"
    ]
    async with db.connection() as conn:
        stored = await current_rules(conn)
    assert {(r.version, r.changed_via, r.changed_by, r.changed_at) for r in stored} == {
        (1, "config", "config:thresholds.yaml", AT)
    }
    assert [r.definition for r in stored] == sorted(_file_rules().rules, key=lambda r: r.id)


async def test_a_file_change_to_a_config_rule_is_a_new_version(db: AsyncConnectionPool) -> None:
    await _seed(db, _file_rules())
    changed = _with_change(_file_rules(), "do_low", for_s=900)
    report = await _seed(db, changed, LATER)
    assert (report.updated, len(report.unchanged)) == (["do_low"], 18)
    async with db.connection() as conn:
        versions = await rule_versions(conn, "do_low")
    assert [(v.version, v.definition.for_s, v.changed_at) for v in versions] == [
        (1, 0, AT),
        (2, 900, LATER),
    ]


async def test_a_rule_changed_through_the_api_is_never_overwritten(db: AsyncConnectionPool) -> None:
    await _seed(db, _file_rules())
    edited = _with_change(_file_rules(), "nh3n_high", for_s=1800).rules
    rule = next(r for r in edited if r.id == "nh3n_high")
    async with db.connection() as conn, conn.transaction():
        await write_rule(conn, rule, via="api", by="joint_office:key4", at=LATER, comment="slower")
    report = await _seed(db, _file_rules(), LATER)
    assert report.kept == {"nh3n_high": ["for_s: file 0, database 1800"]}
    assert report.lines() == [
        "rule: 0 inserted, 0 updated, 18 unchanged, 1 kept as changed through the API",
        "  rule nh3n_high was changed through the API and is kept; thresholds.yaml differs in:"
        " for_s: file 0, database 1800",
    ]
    async with db.connection() as conn:
        (kept,) = await current_rules(conn, rule_id="nh3n_high")
    assert (kept.version, kept.changed_via, kept.changed_by, kept.definition.for_s) == (
        2,
        "api",
        "joint_office:key4",
        1800,
    )


async def test_seed_refuses_rules_the_catalogue_cannot_resolve(db: AsyncConnectionPool) -> None:
    bad = _with_change(_file_rules(), "do_low", parameter="oxygen")
    with pytest.raises(ConfigError, match="rule do_low: unknown parameter 'oxygen'"):
        await _seed(db, bad)
    wrong_unit = _with_change(_file_rules(), "no2_1h", unit="mg/m3")
    with pytest.raises(
        ConfigError, match="no2 thresholds must be in its canonical unit 'ug/m3', not 'mg/m3'"
    ):
        await _seed(db, wrong_unit)
    async with db.connection() as conn:
        assert await current_rules(conn) == []


def test_load_rules_names_the_file_and_the_place(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "thresholds.yaml").read_text(encoding="utf-8"))
    raw["rules"][0]["ladders"][0]["levels"][0]["clear"] = 250
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value) == (
        f"{path}: rules.0: Value error, rule no2_1h: warning clear 250.0 must be at or below its"
        " trigger 200.0 (1 problem(s) in all)"
    )


async def test_run_seed_loads_catalogue_and_rules_into_a_fresh_database(new_database: Any) -> None:
    url: str = new_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
    catalogue, rules = await run_seed(url, Settings(database_url=url, config_dir=CONFIG_DIR))
    assert "station: 20 inserted, 0 updated, 0 unchanged" in catalogue.lines()
    assert rules.lines() == [
        "rule: 19 inserted, 0 updated, 0 unchanged, 0 kept as changed through the API"
    ]
    _, again = await run_seed(url, Settings(database_url=url, config_dir=CONFIG_DIR))
    assert again.lines() == [
        "rule: 0 inserted, 0 updated, 19 unchanged, 0 kept as changed through the API"
    ]
