"""The layout stays honest: imports run one way and SQL lives only in store/."""

from __future__ import annotations

import ast
import re

import pytest

from tests.conftest import ROOT

# Each package may import only the packages listed (its own included).
ALLOWED = {
    "core": {"core"},
    "schemas": {"core", "schemas"},
    "store": {"core", "schemas", "store"},
    "ingest": {"core", "schemas", "store", "ingest"},
    "alerts": {"core", "schemas", "store", "alerts"},
    "api": {"core", "schemas", "store", "ingest", "alerts", "api"},
    "envlink": {"core", "schemas", "store", "ingest", "alerts", "api", "envlink"},
}
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b")
# Pure rooms (docs/architecture.md): no database, nothing asynchronous, and only these of our
# modules (and what they hold) imported. The kinds may name store's row types, never call it.
PURE = {
    "alerts/assessment": {
        "core", "schemas", "alerts.standards", "alerts.windows", "alerts.assessment",
    },
    "alerts/engine/kinds": {
        "core", "schemas", "store.alerts", "store.catalogue", "alerts.assessment",
        "alerts.standards", "alerts.windows", "alerts.rules", "alerts.propagation",
        "alerts.engine.jobs", "alerts.engine.kinds",
        # The period evaluation is pure too; the regional episode kind judges by its rule.
        "alerts.evaluation",
    },
}  # fmt: skip


def _modules(package: str) -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def _imports(tree: ast.Module) -> list[str]:
    """Every absolute module a parsed file imports."""
    targets = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.append(node.module)
    return targets


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    wrong = []
    for name, tree in _modules(package):
        for target in _imports(tree):
            top = target.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[package]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


@pytest.mark.parametrize("room", sorted(PURE))
def test_pure_rooms_read_no_database(room: str) -> None:
    allowed = PURE[room]
    wrong = []
    for name, tree in _modules(room):
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef | ast.Await):
                wrong.append(f"{name}:{node.lineno} is asynchronous")
        for target in _imports(tree):
            ours = target.split(".")[0] in ALLOWED
            if ours and not any(target == a or target.startswith(a + ".") for a in allowed):
                wrong.append(f"{name} imports {target}")
    assert wrong == []


@pytest.mark.parametrize("package", sorted(set(ALLOWED) - {"store"}))
def test_sql_lives_only_in_store(package: str) -> None:
    found = []
    for name, tree in _modules(package):
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and SQL.search(node.value):
                found.append(f"{name}:{node.lineno}")
    assert found == []


def test_evaluation_is_pure() -> None:
    """alerts/evaluation works on arrays: no database, no API, no psycopg (docs/architecture.md)."""
    forbidden = {"store", "schemas", "ingest", "api", "envlink", "psycopg", "psycopg_pool"}
    modules = _modules("alerts/evaluation")
    wrong = [
        f"{name} imports {target}"
        for name, tree in modules
        for target in _imports(tree)
        if target.split(".")[0] in forbidden
    ]
    assert wrong == []
    assert "alerts/evaluation/air.py" in {name for name, _ in modules}
