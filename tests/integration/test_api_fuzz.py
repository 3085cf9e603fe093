"""schemathesis against the live API: no server error, every answer as documented.

One bounded, deterministic pass of schemathesis (`st run`, pinned in the `test` extra) over the
OpenAPI document of a real uvicorn server on a loopback port: its examples, coverage, fuzzing
and stateful phases, every check. The database holds the catalogue, the joint rules, readings,
alerts (one resolved, one firing), a subscription and a silence, so that the links of the
document (a station's code, an alert's id, a rule's id) lead the stateful phase to real items.
The endless alert stream is left out: it never ends, so no answer could be checked.

Where the checks are tuned, the reason is a rule the schema cannot state (see FUZZ_CONFIG).
A failure prints schemathesis's report: each problem with a curl command that reproduces it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from api.app import create_app
from core.settings import Settings
from core.timeutil import utcnow
from schemas.common import ROLES
from schemas.rules import load_rules
from store.keys import create_key
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR
from tests.integration.test_api_pool import served
from tests.integration.test_engine import HOUR, T0, Feed, _air, _rule, _rules

# What the run changes in the settings: anything that would refuse the fuzzer for its pace
# rather than for its input (it sends hundreds of requests a second with one key), and a signing
# key, so that the keyless signed bulletin link checks what it is given (the fuzzer cannot guess
# a signature: it gets 403 bad_signature, or 422 for a malformed parameter).
FUZZ_SETTINGS: dict[str, Any] = {
    "rate_limits": "off",
    "signing_key": SecretStr("fuzz-signing-key-0123456789"),
}

# The longest the pass may take before the test gives up on it, short of pytest's own limit:
# it costs about 45 s of CPU in all (schemathesis and the server), which a busy two-core
# machine stretches to a few minutes.
RUN_LIMIT_S = 270

# schemathesis.toml of the run. Fixed seed and deterministic generation: the same cases every
# run. Two keys: KEY holds every role (gz_eeb), so that answers are about the input and not a
# missing role; REVOKER (a dg_eeb admin) is the only one that revokes keys, so that the run
# cannot revoke KEY under itself.
FUZZ_CONFIG = """
seed = 20261203
workers = 1
# The years pattern on date-time text makes generation filter much; it still finds cases.
suppress-health-check = ["too_slow", "filter_too_much"]
headers = {{ Authorization = "Bearer {key}" }}

[generation]
deterministic = true
max-examples = {max_examples}
database = "none"

[phases.stateful]
max-steps = 6

[checks]
enabled = true
# Accepted: 400 is a documented refusal of a request that matches the schema but cannot be
# right for a reason the schema cannot state (a cursor the API did not issue, an end before its
# start, a time already past); 404 names nothing stored. A 422 on such a request is a failure:
# the schema let through what the API refuses.
positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
# Needs a second user of the same rights; the roles' tests cover who may see what.
object_level_authorization.enabled = false

[[operations]]
include-path = "/v1/alerts/stream"
enabled = false

[[operations]]
include-name = "DELETE /v1/keys/{{key_id}}"
headers = {{ Authorization = "Bearer {revoker}" }}

# Rules across fields that the schema cannot state (each says so in its description), refused
# as 422 invalid_request: /v1/aqi takes exactly one of station or city, /v1/situation one of
# area, city or station; a silence needs a matcher; a subscription's target must suit its
# channel; a rule's ladders, statistic and kind must agree.
[[operations]]
include-path-regex = "^/v1/(aqi|situation|silences|subscriptions|rules/)"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "422"
]

# schemathesis 4.32.5's stateful phase reads the GeoJSON answer's coordinates, a JSON Schema
# 2020-12 tuple (prefixItems), as a draft-4 `items` array and stops on a "Schema Error"; the
# answer is checked against RFC 7946 in tests/integration/test_maps.py.
[[operations]]
include-name = "GET /v1/stations"
checks.response_schema_conformance.enabled = false

# Pushed readings are judged one by one: an item the body schema refuses is a per-item
# rejection in a 200, by design, so that it never costs the rest of the batch.
[[operations]]
include-name = "POST /v1/readings"
checks.negative_data_rejection.enabled = false
"""
# Cases per operation in the fuzzing phase: with the coverage phase's own (about 2,000 in
# all) the pass stays near 3,000 requests.
MAX_EXAMPLES = 6


async def _seed(db: AsyncConnectionPool) -> tuple[str, str]:
    """Rules, readings and alerts as the engine makes them; the run's two keys."""
    async with db.connection() as conn, conn.transaction():
        await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=T0)
    await _rules(db, _rule("no2_instant", scope={"medium": "air"}))
    feed = Feed(db)
    await feed.send(
        _air(250, T0),
        _air(260, T0, station="dg-a-humen"),
        _air(30, T0, parameter="pm25", period_s=3600),
        at=T0,
    )
    await feed.send(_air(150, T0 + HOUR), at=T0 + HOUR)
    async with db.connection() as conn:
        _, key = await create_key(conn, agency="gz_eeb", roles=list(ROLES), label="fuzz")
        _, revoker = await create_key(conn, agency="dg_eeb", roles=["admin"], label="revoker")
    return key, revoker


async def _seed_through_api(base: str, key: str) -> None:
    """A subscription and a silence, so that their ids exist."""
    headers = {"Authorization": f"Bearer {key}"}
    ends_at = (utcnow() + timedelta(days=30)).isoformat()
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        created = [
            await client.post(
                "/v1/subscriptions",
                json={"code": "fuzz-hook", "channel": "webhook", "target": "http://127.0.0.1:9/"},
            ),
            await client.post(
                "/v1/silences",
                json={"stations": ["gz-a-huangpu"], "ends_at": ends_at, "comment": "fuzz"},
            ),
        ]
    assert [response.status_code for response in created] == [201, 201], [
        response.text for response in created
    ]


async def _schemathesis(base: str, config: str, folder: Path) -> tuple[int, str, dict[str, Any]]:
    """Run `st run` on the server's document; its exit code, its output and its JSON report."""
    (folder / "schemathesis.toml").write_text(config)
    st = Path(sys.executable).with_name("st")
    process = await asyncio.create_subprocess_exec(
        st, "--config-file", str(folder / "schemathesis.toml"), "run", f"{base}/openapi.json",
        "--no-color", "--report", "json", "--report-json-path", str(folder / "report.json"),
        cwd=folder,  # its .hypothesis and caches stay in the test's folder
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), RUN_LIMIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    report = json.loads((folder / "report.json").read_text())
    return process.returncode, out.decode(errors="replace"), report


# slow: a minute of a real process whatever the kind of PostgreSQL, so CI runs it once.
@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_nothing_undocumented(
    db: AsyncConnectionPool, settings: Settings, tmp_path: Path
) -> None:
    key, revoker = await _seed(db)
    app = create_app(settings.model_copy(update=FUZZ_SETTINGS))
    config = FUZZ_CONFIG.format(key=key, revoker=revoker, max_examples=MAX_EXAMPLES)
    async with served(app) as base:
        await _seed_through_api(base, key)
        started = time.monotonic()
        status, output, report = await _schemathesis(base, config, tmp_path)
        took = time.monotonic() - started
    print(output[-3000:])
    print(f"schemathesis: {report['test_cases']['generated']} test cases in {took:.0f} s")
    assert (status, report["failures"], report["errors"]) == (0, [], []), output
    assert report["stop_reason"] == "completed"
    operations = report["operations"]
    # Every operation but the stream, each tested.
    assert operations["selected"] == operations["total"] - 1 == operations["tested"]
    assert {name: phase["status"] for name, phase in report["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
