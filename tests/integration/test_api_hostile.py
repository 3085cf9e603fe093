"""The HTTP API given hostile input on real PostgreSQL: a 4xx naming the field, never a 500.

Every path and query parameter of every operation is sent NUL, integers beyond 64 bits and
times no clock shows, read from the live OpenAPI document so that a new endpoint is covered too;
request bodies are sent NUL, lone surrogates, NaN, 1e400, 2^64 and absurd times field by field.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from api.params import BIGINT_MAX
from schemas.common import ISO_TIME_PROBLEM, ROLES
from schemas.rules import load_rules
from store.keys import create_key
from tests.conftest import CONFIG_DIR

# A valid value for each parameter an operation needs besides the one under test.
VALID = {
    "code": "gz-a-huangpu",
    "station": "gz-a-huangpu",
    "parameter": "pm25",
    "rule_id": "no2_1h",
    "alert_id": "1",
    "subscription_id": "1",
    "silence_id": "1",
    "key_id": "1",
    "scope": "region",
    "start": "2026-11-01T00:00:00+08:00",
    "end": "2026-11-02T00:00:00+08:00",
    "month": "2026-11",
    "version": "1",
    "expires": "1",
    "sig": "0" * 64,
}
ABSURD_DAYS = {
    "0001-01-01": "must be in the years 1900-2199",
    "9999-12-31": "must be in the years 1900-2199",
    "1e308": ISO_TIME_PROBLEM,
    "a\x00b": ISO_TIME_PROBLEM,
}
TEXT_HOSTILE = "a\x00b"
TEXT_PROBLEM = "must not contain NUL (U+0000), found at character 2"
BEYOND_64_BITS = ("18446744073709551616", "-562209561034676500716060672")
ABSURD_TIMES = {
    "0001-01-01T00:00:00+14:00": "must be in the years 1900-2199",
    "9999-12-31T23:59:59-23:59": "must be in the years 1900-2199",
}
NOT_TIMES = {
    "2026-01-01T00:00:00+25:00": "Input should be a valid datetime or date, unexpected extra"
    " characters at the end of the input",
    "0000-01-01T00:00:00": "must be in the years 1900-2199",
    "1e308": "must be an ISO 8601 date or time, such as 2026-03-01T08:00:00+08:00",
    "0.5": "must be an ISO 8601 date or time, such as 2026-03-01T08:00:00+08:00",
}


@pytest.fixture
async def headers(db: AsyncConnectionPool) -> dict[str, str]:
    """A key that holds every role, so that no answer is a 403 before the input is read."""
    async with db.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=list(ROLES))
    return {"Authorization": f"Bearer {plain}"}


def _problems(response: httpx.Response) -> list[str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["message"]).split("; ")


def _scalar(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of a parameter that may be null: its non-null variant."""
    variants = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    return variants[0] if len(variants) == 1 else {}


def _hostile_cases(spec: dict[str, Any]) -> list[tuple[str, str, str, str, str, list[str]]]:
    """(method, path template, parameter, hostile value, problem, required query) per input."""
    cases = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            required = [
                p["name"]
                for p in operation.get("parameters", [])
                if p["in"] == "query" and p.get("required")
            ]
            for parameter in operation.get("parameters", []):
                if parameter["in"] not in ("path", "query"):
                    continue
                name, schema = parameter["name"], _scalar(parameter["schema"])
                place = f"path.{name}" if parameter["in"] == "path" else name
                values: dict[str, str] = {}
                if schema.get("type") == "string" and "enum" not in schema:
                    if schema.get("format") == "date-time":
                        values.update(ABSURD_TIMES)
                        values.update(NOT_TIMES)
                    elif schema.get("format") == "date":
                        values.update(ABSURD_DAYS)
                    else:
                        values[TEXT_HOSTILE] = TEXT_PROBLEM
                elif schema.get("type") == "integer":
                    values[BEYOND_64_BITS[0]] = (
                        f"Input should be less than or equal to {schema['maximum']}"
                    )
                    values[BEYOND_64_BITS[1]] = (
                        f"Input should be greater than or equal to {schema['minimum']}"
                    )
                for value, problem in values.items():
                    cases.append((method.upper(), path, place, value, problem, required))
    return cases


async def test_every_path_and_query_parameter_refuses_hostile_values_by_name(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    spec = (await client.get("/openapi.json")).json()
    cases = _hostile_cases(spec)
    answered: list[tuple[str, str, str, str, int]] = []
    for method, template, place, value, problem, required in cases:
        name = place.removeprefix("path.")
        path = template
        for key, default in VALID.items():
            path = path.replace("{" + key + "}", quote(value if key == name else default, safe=""))
        query = {other: VALID[other] for other in required}
        if not place.startswith("path."):
            query[name] = value
        response = await client.request(method, path, params=query, headers=headers)
        answered.append((method, template, place, value, response.status_code))
        assert response.status_code == 422, (method, template, place, value, response.text)
        # A request without its body also names the body's fields; the one under test is named
        # exactly once, with its problem.
        found = [p for p in _problems(response) if p.startswith(f"{place}: ")]
        assert found == [f"{place}: {problem}"], (method, template, value, response.text)
    # The sweep covers the parameters of the issue, and every operation's ids.
    swept = {(m, t, p) for m, t, p, _, _ in answered}
    assert {
        ("GET", "/v1/alerts/{alert_id}", "path.alert_id"),
        ("GET", "/v1/notifications", "alert"),
        ("GET", "/v1/notifications", "agency"),
        ("POST", "/v1/alerts/{alert_id}/ack", "path.alert_id"),
        ("DELETE", "/v1/subscriptions/{subscription_id}", "path.subscription_id"),
        ("DELETE", "/v1/silences/{silence_id}", "path.silence_id"),
        ("GET", "/v1/readings", "start"),
        ("GET", "/v1/alerts", "since"),
        ("PUT", "/v1/rules/{rule_id}", "path.rule_id"),
    } <= swept


async def test_the_fuzzers_500s_are_422s_naming_the_field(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/alerts/18446744073709551615", headers=headers)
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": {
                "code": "invalid_request",
                "message": f"path.alert_id: Input should be less than or equal to {BIGINT_MAX}",
            }
        },
    )
    response = await client.get(
        "/v1/notifications?alert=-562209561034676500716060672&agency=dg_eeb", headers=headers
    )
    assert (response.status_code, _problems(response)) == (
        422,
        ["alert: Input should be greater than or equal to 1"],
    )
    response = await client.post(
        "/v1/alerts/1/ack",
        content=b'{"comment": "seen\\u0000"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (response.status_code, _problems(response)) == (
        422,
        ["comment: must not contain NUL (U+0000), found at character 5"],
    )


@pytest.mark.parametrize(
    "cursor",
    [
        '{"id": "x"}',
        '{"id": null}',
        '{"id": true}',
        '{"id": 18446744073709551616}',
        '{"id": 1.5}',
        '{"id": 1, "more": 2}',
        "[1]",
    ],
)
async def test_a_cursor_not_issued_by_the_api_is_400(
    client: httpx.AsyncClient, headers: dict[str, str], cursor: str
) -> None:
    forged = base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
    for path in ("/v1/alerts", "/v1/notifications"):
        response = await client.get(path, params={"cursor": forged}, headers=headers)
        assert (response.status_code, response.json()) == (
            400,
            {"error": {"code": "invalid_input", "message": "cursor: not a cursor this API issued"}},
        )


def _rule_body(**level: Any) -> dict[str, Any]:
    rule = next(r for r in load_rules(CONFIG_DIR / "thresholds.yaml").rules if r.id == "no2_1h")
    definition = rule.model_dump(mode="json")
    definition["ladders"][0]["levels"][0].update(level)
    return {"definition": definition, "comment": "hostile"}


def _staleness_body(max_interval_s: object) -> dict[str, Any]:
    rules = load_rules(CONFIG_DIR / "thresholds.yaml").rules
    rule = next(r for r in rules if r.staleness is not None)
    definition = rule.model_dump(mode="json")
    definition["staleness"]["max_interval_s"] = max_interval_s
    return {"definition": definition}


def _raw(body: dict[str, Any], token: str, replacement: str) -> bytes:
    """The body as JSON with one quoted token replaced by raw JSON text (NaN, 1e400, escapes)."""
    text = json.dumps(body)
    assert text.count(json.dumps(token)) == 1
    return text.replace(json.dumps(token), replacement).encode()


MAINTENANCE = {
    "starts_at": "2026-11-26T08:00:00+08:00",
    "ends_at": "2026-11-26T10:00:00+08:00",
    "reason": "pump",
}
SILENCE = {"stations": ["gz-a-huangpu"], "ends_at": "2026-12-26T10:00:00+08:00", "comment": "x"}
SUBSCRIPTION = {"code": "hostile", "channel": "webhook", "target": "https://example.org/hook"}


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        (
            "POST",
            "/v1/alerts/1/ack",
            b'{"comment": "\\ud800"}',
            "comment: must not contain U+D800 (a lone surrogate), found at character 1",
        ),
        (
            "POST",
            "/v1/stations/gz-a-huangpu/maintenance",
            _raw(MAINTENANCE, "pump", '"pu\\u0000mp"'),
            "reason: must not contain NUL (U+0000), found at character 3",
        ),
        (
            "POST",
            "/v1/stations/gz-a-huangpu/maintenance",
            _raw(MAINTENANCE, "2026-11-26T08:00:00+08:00", '"0001-01-01T00:00:00+14:00"'),
            "starts_at: must be in the years 1900-2199",
        ),
        (
            "POST",
            "/v1/stations/gz-a-huangpu/maintenance",
            _raw(MAINTENANCE, "2026-11-26T10:00:00+08:00", '"9999-12-31T23:59:59-23:59"'),
            "ends_at: must be in the years 1900-2199",
        ),
        (
            "POST",
            "/v1/silences",
            _raw(SILENCE, "gz-a-huangpu", '"gz\\u0000"'),
            "stations.0: must not contain NUL (U+0000), found at character 3",
        ),
        (
            "POST",
            "/v1/silences",
            _raw(SILENCE, "2026-12-26T10:00:00+08:00", '"9999-12-31T23:59:59"'),
            "ends_at: must be in the years 1900-2199",
        ),
        (
            "POST",
            "/v1/subscriptions",
            _raw(SUBSCRIPTION, "https://example.org/hook", '"https://example.org/\\u0000"'),
            "target: must not contain NUL (U+0000), found at character 21",
        ),
        (
            "POST",
            "/v1/subscriptions",
            json.dumps({**SUBSCRIPTION, "group_wait_s": 2**64}).encode(),
            "group_wait_s: Input should be less than or equal to 86400",
        ),
        (
            "PUT",
            "/v1/rules/no2_1h",
            _raw(_rule_body(basis="NaN here"), "NaN here", '"\\ud83d"'),
            "definition.ladders.0.levels.0.basis: must not contain U+D83D (a lone surrogate),"
            " found at character 1",
        ),
        (
            "PUT",
            "/v1/rules/no2_1h",
            _raw(_rule_body(trigger="t"), "t", "NaN"),
            "definition.ladders.0.levels.0.trigger: Input should be a finite number",
        ),
        (
            "PUT",
            "/v1/rules/no2_1h",
            _raw(_rule_body(clear="c"), "c", "-1e400"),
            "definition.ladders.0.levels.0.clear: Input should be a finite number",
        ),
        (
            "PUT",
            "/v1/rules/staleness",
            json.dumps(_staleness_body(2**64)).encode(),
            "definition.staleness.max_interval_s: Input should be less than or equal to 31622400",
        ),
    ],
)
async def test_hostile_body_fields_are_422_naming_the_field(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    db: AsyncConnectionPool,
    method: str,
    path: str,
    body: bytes,
    problem: str,
) -> None:
    headers = {**headers, "Content-Type": "application/json"}
    response = await client.request(method, path, content=body, headers=headers)
    assert (response.status_code, _problems(response)) == (422, [problem])
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM maintenance_window), (SELECT count(*) FROM silence),"
            " (SELECT count(*) FROM subscription), (SELECT count(*) FROM rule_version),"
            " (SELECT count(*) FROM alert_ack)"
        )
        assert await cur.fetchall() == [(0, 0, 0, 0, 0)]


async def test_a_body_that_is_not_utf8_is_400(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/silences",
        content=b'{"stations": ["gz\xff"], "ends_at": "2026-12-26T10:00:00", "comment": "x"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert _problems(response) == ["There was an error parsing the body"]


@pytest.mark.parametrize("last_event_id", ["²", "١٢", "9" * 30, "-1", "1e3"])
async def test_a_last_event_id_that_is_no_event_id_is_400(
    client: httpx.AsyncClient, headers: dict[str, str], last_event_id: str
) -> None:
    sent = last_event_id.encode()
    response = await client.get("/v1/alerts/stream", headers={**headers, "Last-Event-ID": sent})
    assert response.status_code == 400
    # HTTP header values arrive as Latin-1.
    received = sent.decode("latin-1")
    assert _problems(response) == [f"Last-Event-ID {received!r} is not an alert event id"]
