"""What a round reads besides data: the process's catalogue snapshot and the rules in force.

The catalogue comes from the process's CatalogueCache (store/catalogue.py), which the alert loop
hands to each round. The rules in force are read every round; their parsed definitions are kept
by JSON text, so a rule changed through the API applies from the next round. Neither holds alert
state.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.rules import RuleDefinition
from store.catalogue import CatalogueSnapshot
from store.pool import Conn
from store.rules import active_rule_texts

# Parsed definitions kept at most (rule versions in force are far fewer).
MAX_DEFINITIONS = 10_000


@dataclass(frozen=True, slots=True)
class ActiveRule:
    """A rule's version in force, as the engine evaluates it."""

    id: str
    version: int
    definition: RuleDefinition


@dataclass(frozen=True)
class Catalogue:
    """The catalogue snapshot a round reads, with the enabled rules in force."""

    snapshot: CatalogueSnapshot
    rules: dict[str, ActiveRule]


_definitions: dict[str, RuleDefinition] = {}


async def load(conn: Conn, snapshot: CatalogueSnapshot) -> Catalogue:
    """The snapshot with the rules in force now."""
    if len(_definitions) > MAX_DEFINITIONS:
        _definitions.clear()
    rules = {}
    for text in await active_rule_texts(conn):
        definition = _definitions.get(text.definition)
        if definition is None:
            definition = RuleDefinition.model_validate_json(text.definition)
            _definitions[text.definition] = definition
        if definition.enabled:
            rules[text.id] = ActiveRule(text.id, text.version, definition)
    return Catalogue(snapshot, rules)
