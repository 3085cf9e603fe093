"""The demo's keys: one per agency, kept (mode 0600) and reused; enough for the README."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from envlink.demo import DEMO_ROLES, KEYS_FILE, demo_keys
from schemas.catalogue import load_catalogue
from store.keys import authenticate, revoke_key
from tests.conftest import CONFIG_DIR, ROOT


async def test_demo_keys_are_kept_and_reused_while_live(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    first = await demo_keys(database_url, tmp_path)
    assert [(k.agency, k.roles, k.created) for k in first] == [
        ("gz_eeb", ["admin", "reader", "responder", "writer"], True),
        ("dg_eeb", ["admin", "reader", "responder", "writer"], True),
        ("joint_office", ["admin", "joint_office", "reader", "responder", "writer"], True),
    ]
    kept = tmp_path / KEYS_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert json.loads(kept.read_text()) == {k.agency: k.key for k in first}
    again = await demo_keys(database_url, tmp_path)
    assert [(k.key, k.created) for k in again] == [(k.key, False) for k in first]
    async with db.connection() as conn:
        dg = await authenticate(conn, first[1].key)
        assert dg is not None
        await revoke_key(conn, dg.id)
    kept.chmod(0o644)
    third = await demo_keys(database_url, tmp_path)
    assert [k.created for k in third] == [False, True, False]
    assert third[1].key != first[1].key
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert json.loads(kept.read_text())["dg_eeb"] == third[1].key


def test_the_readme_examples_need_only_what_the_demo_keys_hold() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "KEY=elk_…   # the dg_eeb key the demo printed" in readme
    [push] = [block for block in re.findall(r"```sh\n(.*?)```", readme, re.S) if "-X POST" in block]
    assert "/v1/readings" in push and "$KEY" in push
    stations = {station.code: station for station in load_catalogue(CONFIG_DIR).stations}
    pushed = set(re.findall(r'"station": "([a-z0-9-]+)"', push))
    # The push example's stations belong to dg_eeb, whose demo key may write.
    assert {stations[code].agency for code in pushed} == {"dg_eeb"}
    assert "writer" in DEMO_ROLES["dg_eeb"]
