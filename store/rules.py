"""Rules, versioned and audited: seeding from config/thresholds.yaml, reading, API changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from core.errors import ConfigError, InvalidInput, NotFound
from schemas.rules import RuleDefinition, RuleSet, definition_differences
from store.pool import Conn

SEED_AUTHOR = "config:thresholds.yaml"


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule's version in force, with who made it and through what."""

    id: str
    version: int
    changed_via: str
    changed_by: str
    changed_at: datetime
    comment: str | None
    definition: RuleDefinition


@dataclass
class RuleSeedReport:
    """What seeding did per rule; `kept` holds API-changed rules with how the file differs."""

    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)
    not_in_file: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"rule: {len(self.inserted)} inserted, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.kept)} kept as changed through the API"
        ]
        for rule_id, differences in self.kept.items():
            if differences:
                lines.append(
                    f"  rule {rule_id} was changed through the API and is kept; "
                    f"thresholds.yaml differs in: {'; '.join(differences)}"
                )
            else:
                lines.append(f"  rule {rule_id} was changed through the API; the file agrees")
        if self.not_in_file:
            lines.append(
                f"  in the database but not in thresholds.yaml: {', '.join(self.not_in_file)}"
            )
        return lines


_CURRENT = """
SELECT r.id, r.current_version AS version, r.changed_via, v.changed_by, v.changed_at, v.comment,
       v.definition
FROM rule r JOIN rule_version v ON v.rule_id = r.id AND v.version = r.current_version
WHERE (%(id)s::text IS NULL OR r.id = %(id)s)
ORDER BY r.id
"""


async def current_rules(conn: Conn, *, rule_id: str | None = None) -> list[StoredRule]:
    """The version in force of every rule (or of one), by id."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CURRENT.encode(), {"id": rule_id})
        rows = await cur.fetchall()
    return [
        StoredRule(**{**row, "definition": RuleDefinition.model_validate(row["definition"])})
        for row in rows
    ]


async def get_rule(conn: Conn, rule_id: str) -> StoredRule:
    """One rule's version in force, or NotFound."""
    found = await current_rules(conn, rule_id=rule_id)
    if not found:
        raise NotFound(f"no rule with id {rule_id!r}")
    return found[0]


_VERSIONS = """
SELECT v.rule_id AS id, v.version, r.changed_via, v.changed_by, v.changed_at, v.comment,
       v.definition
FROM rule_version v JOIN rule r ON r.id = v.rule_id
WHERE v.rule_id = %(id)s ORDER BY v.version
"""


async def rule_versions(conn: Conn, rule_id: str) -> list[StoredRule]:
    """Every version of a rule, oldest first (changed_via is the rule's current one)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_VERSIONS.encode(), {"id": rule_id})
        rows = await cur.fetchall()
    return [
        StoredRule(**{**row, "definition": RuleDefinition.model_validate(row["definition"])})
        for row in rows
    ]


_INSERT_RULE = """
INSERT INTO rule (id, current_version, changed_via) VALUES (%(id)s, 1, %(via)s)
"""
_INSERT_VERSION = """
INSERT INTO rule_version (rule_id, version, definition, changed_by, changed_at, comment)
VALUES (%(id)s, %(version)s, %(definition)s, %(by)s, %(at)s, %(comment)s)
"""
# The row lock makes concurrent writers of one rule take turns, so versions never collide.
_LOCK_RULE = "SELECT current_version, changed_via FROM rule WHERE id = %(id)s FOR UPDATE"
_BUMP_RULE = """
UPDATE rule SET current_version = %(version)s, changed_via = %(via)s WHERE id = %(id)s
"""


async def write_rule(
    conn: Conn,
    definition: RuleDefinition,
    *,
    via: str,
    by: str,
    at: datetime,
    comment: str | None = None,
) -> tuple[StoredRule, bool]:
    """Make `definition` the rule's version in force; returns it and whether a version was added.

    An unchanged definition adds no version. The caller owns the transaction.
    """
    cur = await conn.execute(_LOCK_RULE.encode(), {"id": definition.id})
    row = await cur.fetchone()
    dumped = definition.model_dump(mode="json")
    params: dict[str, Any] = {
        "id": definition.id,
        "definition": Jsonb(dumped),
        "by": by,
        "at": at,
        "comment": comment,
        "via": via,
    }
    if row is None:
        await conn.execute(_INSERT_RULE.encode(), params)
        await conn.execute(_INSERT_VERSION.encode(), {**params, "version": 1})
        return await get_rule(conn, definition.id), True
    current = await get_rule(conn, definition.id)
    if current.definition.model_dump(mode="json") == dumped:
        return current, False
    version = int(row[0]) + 1
    await conn.execute(_INSERT_VERSION.encode(), {**params, "version": version})
    await conn.execute(_BUMP_RULE.encode(), {**params, "version": version})
    return await get_rule(conn, definition.id), True


_PARAMETER_UNITS = "SELECT code, unit FROM parameter"
_STATION_CODES = "SELECT code FROM station"


async def catalogue_codes(conn: Conn) -> tuple[dict[str, str], set[str]]:
    """Parameter code -> canonical unit, and the station codes: what rules may refer to."""
    cur = await conn.execute(_PARAMETER_UNITS)
    units = {code: unit for code, unit in await cur.fetchall()}
    cur = await conn.execute(_STATION_CODES)
    stations = {code for (code,) in await cur.fetchall()}
    return units, stations


async def check_rule(conn: Conn, definition: RuleDefinition) -> None:
    """InvalidInput naming every reference the catalogue (or the rule set) cannot resolve."""
    units, stations = await catalogue_codes(conn)
    problems = definition.catalogue_problems(parameter_units=units, stations=stations)
    if definition.propagation is not None:
        known = {rule.id for rule in await current_rules(conn)}
        unknown = sorted(set(definition.propagation.from_rules) - known - {definition.id})
        if unknown:
            problems.append(f"rule {definition.id}: propagates unknown rules {', '.join(unknown)}")
    if problems:
        raise InvalidInput("; ".join(problems))


async def seed_rules(conn: Conn, rule_set: RuleSet, *, at: datetime) -> RuleSeedReport:
    """Insert new rules, version file changes, and never overwrite a rule changed via the API."""
    units, stations = await catalogue_codes(conn)
    problems = [
        problem
        for rule in rule_set.rules
        for problem in rule.catalogue_problems(parameter_units=units, stations=stations)
    ]
    if problems:
        raise ConfigError("thresholds.yaml: " + "; ".join(problems))
    report = RuleSeedReport()
    stored = {rule.id: rule for rule in await current_rules(conn)}
    for rule in rule_set.rules:
        existing = stored.get(rule.id)
        if existing is not None and existing.changed_via == "api":
            report.kept[rule.id] = definition_differences(rule, existing.definition)
            continue
        _, added = await write_rule(conn, rule, via="config", by=SEED_AUTHOR, at=at)
        if existing is None:
            report.inserted.append(rule.id)
        elif added:
            report.updated.append(rule.id)
        else:
            report.unchanged.append(rule.id)
    report.not_in_file = sorted(set(stored) - {rule.id for rule in rule_set.rules})
    return report


@dataclass(frozen=True, slots=True)
class RuleText:
    """A rule's version in force with its definition as JSON text (parsed by the caller)."""

    id: str
    version: int
    definition: str


async def active_rule_texts(conn: Conn) -> list[RuleText]:
    """Every rule's version in force, definitions unparsed (the engine caches them by text)."""
    async with conn.cursor(row_factory=class_row(RuleText)) as cur:
        await cur.execute(
            "SELECT r.id, r.current_version AS version, v.definition::text AS definition"
            " FROM rule r JOIN rule_version v ON v.rule_id = r.id AND v.version = r.current_version"
            " ORDER BY r.id"
        )
        return await cur.fetchall()
