"""Channels and advisory-lock keys: all in store/coordination.py, none shared by two purposes."""

from __future__ import annotations

import ast

import pytest

from store.coordination import (
    CHANNELS,
    LOCKS,
    ROLLUP_LOCK_TAG,
    rollup_lock_key,
)
from tests.conftest import ROOT

PACKAGES = ("core", "schemas", "store", "ingest", "alerts", "api", "envlink")


def test_channels_are_distinct_lower_case_identifiers() -> None:
    assert len(set(CHANNELS)) == len(CHANNELS) == 6
    for channel in CHANNELS:
        assert channel.isidentifier() and channel == channel.lower() and len(channel) <= 63


def test_lock_keys_are_distinct_and_stay_out_of_the_rollup_key_space() -> None:
    assert len(set(LOCKS)) == len(LOCKS) == 4
    assert all(0 < key < 2**32 for key in LOCKS)  # high half zero
    keys = {rollup_lock_key(s, p) for s in (1, 2, 70_000) for p in (1, 2, 32_767)}
    assert all(key >> 32 == ROLLUP_LOCK_TAG for key in keys)
    assert not keys & set(LOCKS)
    assert rollup_lock_key(3, 5) == (0x524F4C4C << 32) | (3 << 16) | 5


@pytest.mark.parametrize(
    ("station_id", "parameter_id"), [(1, 1), (65_535, 32_767), (65_536 + 7, 9)]
)
def test_a_rollup_key_fits_a_bigint(station_id: int, parameter_id: int) -> None:
    assert 0 < rollup_lock_key(station_id, parameter_id) < 2**63


def _constants_outside_coordination() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "store" / "coordination.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                for target in targets:
                    name = target.id if isinstance(target, ast.Name) else ""
                    if name.endswith(("_CHANNEL", "_LOCK", "_LOCK_TAG")):
                        found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_no_other_module_defines_a_channel_or_a_lock_key() -> None:
    assert _constants_outside_coordination() == []
