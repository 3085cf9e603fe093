"""`envlink check`: is this installation fit to run? And `--liveness`: is the worker alive?

Each check is a line: what was checked, `ok` or `PROBLEM`, and what was found. The command
exits 1 when any check found a problem, so it can gate a deployment or page an operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from core.signing import missing_signing_key
from core.timeutil import rfc3339
from store.catalogue import stations_without_parameters
from store.migrate import applied_versions, available_migrations
from store.pool import Conn, connect, redact
from store.rules import catalogue_codes, current_rules
from store.sources import SourceStatus, source_statuses
from store.subscriptions import bulletin_link_subscriptions
from store.timescale import reading_layout

# A worker touches its heartbeat this often; `--liveness` allows a few missed beats.
HEARTBEAT_S = 5.0
LIVENESS_MAX_AGE_S = 30.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report."""

    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.what:<22} {'ok' if self.ok else 'PROBLEM':<8} {self.detail}"


async def check(url: str, settings: Settings) -> list[Finding]:
    """Every check in order; after a database that cannot be reached, nothing else is tried."""
    findings = [settings_finding(settings)]
    try:
        conn = await connect(url)
    except Exception as exc:
        return [*findings, Finding("database", False, str(exc))]
    try:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        version = row[0] if row else "?"
        findings.append(Finding("database", True, f"{redact(url)} (PostgreSQL {version})"))
        findings.append(await migrations_finding(conn))
        if not findings[-1].ok:
            return findings  # the rest reads tables a missing migration may not have made
        findings.append(await timescaledb_finding(conn, settings))
        findings += await catalogue_findings(conn)
        findings.append(await signing_key_finding(conn, settings))
        findings += [source_finding(status) for status in await source_statuses(conn)]
    finally:
        await conn.close()
    return findings


def settings_finding(settings: Settings) -> Finding:
    """Settings are valid once loaded (a bad one stops the command before); what they say."""
    database = "external" if settings.database_url else f"embedded in {settings.data_dir}"
    return Finding(
        "settings",
        True,
        f"database {database}, TimescaleDB {settings.timescaledb},"
        f" public URL {settings.public_base_url}",
    )


async def migrations_finding(conn: Conn) -> Finding:
    available = [m.version for m in available_migrations()]
    try:
        applied = await applied_versions(conn)
    except Exception as exc:
        return Finding("migrations", False, f"none applied ({exc}); run envlink migrate")
    missing = sorted(set(available) - set(applied))
    if missing:
        names = ", ".join(f"{v:04d}" for v in missing)
        return Finding("migrations", False, f"{names} not applied; run envlink migrate")
    return Finding("migrations", True, f"{len(applied)} applied, latest {applied[-1]:04d}")


async def timescaledb_finding(conn: Conn, settings: Settings) -> Finding:
    layout = await reading_layout(conn)
    if settings.timescaledb == "required" and not layout.hypertable:
        return Finding(
            "timescaledb",
            False,
            f"{layout.describe()}, but ENVLINK_TIMESCALEDB=required"
            " (envlink migrate --to-timescaledb moves it)",
        )
    return Finding("timescaledb", True, layout.describe())


async def catalogue_findings(conn: Conn) -> list[Finding]:
    """Stations that measure nothing; rules that name what the catalogue does not have."""
    idle = await stations_without_parameters(conn)
    stations = Finding(
        "catalogue stations",
        not idle,
        f"without parameters: {', '.join(idle)} (envlink seed after fixing config/stations.yaml)"
        if idle
        else "every station measures at least one parameter",
    )
    units, codes = await catalogue_codes(conn)
    rules = await current_rules(conn)
    problems = [
        problem
        for rule in rules
        for problem in rule.definition.catalogue_problems(parameter_units=units, stations=codes)
    ]
    return [
        stations,
        Finding(
            "catalogue rules",
            not problems,
            "; ".join(problems) if problems else f"{len(rules)} rules, every reference known",
        ),
    ]


async def signing_key_finding(conn: Conn, settings: Settings) -> Finding:
    """A bulletin subscription that sends links needs ENVLINK_SIGNING_KEY to sign them."""
    if settings.signing_key is not None:
        return Finding("signing key", True, "set: bulletin links are signed")
    problem = missing_signing_key(await bulletin_link_subscriptions(conn))
    if problem is not None:
        return Finding("signing key", False, problem)
    return Finding("signing key", True, "not set; no bulletin subscription sends links")


def source_finding(status: SourceStatus) -> Finding:
    """A source is a problem while its last error is newer than its last success."""
    what = f"source {status.code}"
    success = rfc3339(status.last_success_at) if status.last_success_at else "never"
    failing = status.last_error_at is not None and (
        status.last_success_at is None or status.last_error_at > status.last_success_at
    )
    if failing:
        assert status.last_error_at is not None
        return Finding(
            what,
            False,
            f"failing since {rfc3339(status.last_error_at)} (last success {success}):"
            f" {status.last_error}",
        )
    return Finding(what, True, f"last success {success}")


def liveness(path: Path, *, max_age_s: float, clock: Callable[[], float] = time.time) -> Finding:
    """Whether a worker touched its heartbeat file within `max_age_s` seconds."""
    try:
        age = clock() - path.stat().st_mtime
    except FileNotFoundError:
        return Finding("liveness", False, f"no heartbeat at {path}: no worker has run here")
    if age > max_age_s:
        return Finding(
            "liveness", False, f"heartbeat {age:.0f} s old at {path} (at most {max_age_s:g} s)"
        )
    return Finding("liveness", True, f"heartbeat {age:.0f} s old")
