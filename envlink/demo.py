"""The demo's API keys: one per agency, kept in the data directory and reused at every start.

The README's examples use them: the city agencies' keys push readings for their own stations,
acknowledge alerts and manage keys and subscriptions; the joint office's also changes the rules.
The file (mode 0600) holds the plain keys, so it is for a demo on one's own machine only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from api.routers.keys import audited
from store.audit import record_audit
from store.keys import authenticate, create_key
from store.pool import Conn, connect

KEYS_FILE = "demo-keys.json"
CITY_ROLES = ["admin", "reader", "responder", "writer"]
DEMO_ROLES: dict[str, list[str]] = {
    "gz_eeb": CITY_ROLES,
    "dg_eeb": CITY_ROLES,
    "joint_office": sorted([*CITY_ROLES, "joint_office"]),
}


@dataclass(frozen=True)
class DemoKey:
    agency: str
    roles: list[str]
    key: str
    created: bool  # False: reused from the keys file


def _kept(path: Path) -> dict[str, str]:
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in kept.items() if isinstance(v, str)} if isinstance(kept, dict) else {}


def _keep(path: Path, keys: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(keys, file, indent=2)
    path.chmod(0o600)  # a file that existed keeps its old mode through os.open


async def _live_or_new(conn: Conn, agency: str, roles: list[str], plain: str | None) -> DemoKey:
    if plain is not None:
        key = await authenticate(conn, plain)
        if key is not None and key.agency == agency and key.roles == roles:
            return DemoKey(agency, roles, plain, created=False)
    async with conn.transaction():
        key, plain = await create_key(conn, agency=agency, roles=roles, label="demo")
        await record_audit(
            conn, key_id=None, agency=None, action="key.create", target=f"key:{key.id}",
            after=audited(key),
        )  # fmt: skip
    return DemoKey(agency, roles, plain, created=True)


async def demo_keys(url: str, data_dir: Path) -> list[DemoKey]:
    """The demo's key of every agency: those kept in `data_dir` while live, new ones otherwise."""
    path = data_dir / KEYS_FILE
    kept = _kept(path)
    conn = await connect(url)
    try:
        keys = [
            await _live_or_new(conn, agency, roles, kept.get(agency))
            for agency, roles in DEMO_ROLES.items()
        ]
    finally:
        await conn.close()
    _keep(path, {key.agency: key.key for key in keys})
    return keys
