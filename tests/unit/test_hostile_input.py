"""Hostile input without a database: the quarantine's escaping, the shared input types, parsing.

Hostile means NUL characters, lone surrogates, bytes that are not UTF-8, integers beyond 64
bits, NaN and infinities, and times no clock shows. The doors' own tests (push API, MQTT, CSV,
HTTP pull, HJ 212) send them over real sockets into PostgreSQL.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from api.app import create_app
from api.params import BIGINT_MAX
from core.errors import InvalidInput
from core.settings import Settings
from core.timeutil import parse_time
from ingest.received import element_texts, parse_json, received_text
from schemas.common import ISO_TIME_PROBLEM, Day, Finite, Flag, Instant, Text, Whole
from store.intake import escape_text, storable, unescape_text

# Characters that exercise every rule of the escaping, and ordinary ones around them.
TRICKY = ["\\", "x", "0", "u", "d", "f", "\x00", "\udcff", "\udc80", "\ud800", "\udc7f", "中", "😀"]


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a\x00b", "a\\x00b"),
        ("byte \udcff", "byte \\xff"),
        ("\udc80\udcfe", "\\x80\\xfe"),
        ("lone \ud800 and \udc7f", "lone \\ud800 and \\udc7f"),
        ("\\x00 typed, \x00 sent", "\\\\x00 typed, \\x00 sent"),
        ("温度 \\ \x00", "温度 \\\\ \\x00"),
    ],
)
def test_escaping_examples(text: str, escaped: str) -> None:
    assert not storable(text)
    assert escape_text(text) == escaped
    assert unescape_text(escaped) == text


def test_every_short_string_of_tricky_characters_round_trips() -> None:
    checked = 0
    for length in range(5):
        for chars in itertools.product(TRICKY, repeat=length):
            text = "".join(chars)
            escaped = escape_text(text)
            assert storable(escaped), text
            assert unescape_text(escaped) == text, text
            checked += 1
    assert checked == sum(len(TRICKY) ** n for n in range(5))


def test_every_pair_of_bytes_round_trips_through_received_text() -> None:
    for first, second in itertools.product(range(256), repeat=2):
        data = bytes([first, second, 0x5C, first])
        escaped = escape_text(received_text(data))
        assert storable(escaped)
        assert unescape_text(escaped).encode("utf-8", "surrogateescape") == data


def test_random_documents_round_trip() -> None:
    chosen = random.Random(212)
    for _ in range(2000):
        data = chosen.randbytes(chosen.randrange(64))
        text = received_text(data)
        assert unescape_text(escape_text(text)).encode("utf-8", "surrogateescape") == data


def test_ordinary_text_is_storable_as_it_is() -> None:
    for text in ['{"unit": "µg/m³", "note": "\\u00b5"}', "##0101QN=1;CP=&&&&", "未检出", ""]:
        assert storable(text)


def test_received_text_keeps_every_byte_and_is_bounded() -> None:
    assert received_text("温度 ok".encode()) == "温度 ok"
    assert received_text(b"a\x00b\xff") == "a\x00b\udcff"
    assert len(received_text(b"x" * 100_000)) == 65_536


def test_parse_json_reads_what_orjson_refuses_so_one_item_fails_alone() -> None:
    document = b'[1, "a\\u0000b", "\\ud800", "z\xff", 1e400, NaN, -Infinity, 18446744073709551616]'
    parsed = parse_json(document)
    assert isinstance(parsed, list)
    assert parsed[:4] == [1, "a\x00b", "\ud800", "z\udcff"]
    assert parsed[4] == math.inf and math.isnan(parsed[5]) and parsed[6] == -math.inf
    assert parsed[7] == 2**64
    assert element_texts(document) == [
        "1",
        '"a\\u0000b"',
        '"\\ud800"',
        '"z\udcff"',
        "1e400",
        "NaN",
        "-Infinity",
        "18446744073709551616",
    ]
    with pytest.raises(orjson.JSONDecodeError):
        parse_json(b'{"a": 1')
    with pytest.raises(orjson.JSONDecodeError):
        parse_json(b"[" * 100_000)


class Shapes(BaseModel):
    text: Text | None = None
    texts: list[Text] | None = None
    number: Finite = 0.0
    count: Whole = 0
    flag: Flag = False
    at: Instant | None = None
    day: Day | None = None


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        ({"text": "a\x00b"}, ("text",), "must not contain NUL (U+0000), found at character 2"),
        (
            {"texts": ["ok", "x\ud800"]},
            ("texts", 1),
            "must not contain U+D800 (a lone surrogate), found at character 2",
        ),
        (
            {"text": "pm25\udcff"},
            ("text",),
            "must not contain U+DCFF (a lone surrogate, or the byte 0xFF that is not UTF-8),"
            " found at character 5",
        ),
        ({"number": math.nan}, ("number",), "Input should be a finite number"),
        ({"number": "-inf"}, ("number",), "Input should be a valid number"),
        ({"number": True}, ("number",), "Input should be a valid number"),
        ({"count": False}, ("count",), "Input should be a valid integer"),
        ({"count": "1"}, ("count",), "Input should be a valid integer"),
        ({"flag": 1}, ("flag",), "Input should be a valid boolean"),
        ({"flag": "yes"}, ("flag",), "Input should be a valid boolean"),
        ({"at": 1700000000}, ("at",), ISO_TIME_PROBLEM),
        ({"at": "0.5"}, ("at",), ISO_TIME_PROBLEM),
        ({"at": "0001-01-01T00:00:00+14:00"}, ("at",), "must be in the years 1900-2199"),
        ({"at": "9999-12-31T23:59:59-23:59"}, ("at",), "must be in the years 1900-2199"),
        ({"day": "1899-12-31"}, ("day",), "must be in the years 1900-2199"),
    ],
)
def test_shared_types_name_the_field_and_the_problem(
    fields: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Shapes.model_validate(fields)
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(loc, message)]


def test_shared_types_let_ordinary_values_through() -> None:
    shapes = Shapes.model_validate(
        {
            "text": "温度 µg/m³",
            "number": -0.0,
            "at": "1900-01-01T00:00:00+14:00",
            "day": "2199-12-31",
        }
    )
    assert (shapes.text, shapes.number, shapes.day) == (
        "温度 µg/m³",
        0.0,
        datetime(2199, 12, 31).date(),
    )
    assert shapes.at == datetime(1899, 12, 31, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "0001-01-01T00:00:00+14:00",
            "time: '0001-01-01T00:00:00+14:00' is outside the years 1900-2199",
        ),
        ("9999-12-31T23:59:59", "time: '9999-12-31T23:59:59' is outside the years 1900-2199"),
        ("0000-01-01T00:00:00", "time: '0000-01-01T00:00:00' is not an ISO 8601 / RFC 3339 time"),
        (
            "2026-01-01T00:00:00+25:00",
            "time: '2026-01-01T00:00:00+25:00' is not an ISO 8601 / RFC 3339 time",
        ),
        (
            "2026-11-26T12:00\x00",
            "time: '2026-11-26T12:00\\x00' is not an ISO 8601 / RFC 3339 time",
        ),
    ],
)
def test_text_times_outside_what_a_clock_shows_are_named(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_time(text)
    assert str(caught.value) == message


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target: dict[str, Any] = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return target
    return schema


def _leaves(
    schema: dict[str, Any], spec: dict[str, Any], place: str
) -> list[tuple[str, dict[str, Any]]]:
    """Every string and integer schema under `schema`, with where it is."""
    schema = _resolve(schema, spec)
    found: list[tuple[str, dict[str, Any]]] = []
    for variant in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        found += _leaves(variant, spec, place)
    for name, child in schema.get("properties", {}).items():
        found += _leaves(child, spec, f"{place}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _leaves(schema[key], spec, f"{place}[]")
    if schema.get("type") in ("string", "integer"):
        found.append((place, schema))
    return found


def _unguarded(place: str, schema: dict[str, Any]) -> str | None:
    if "enum" in schema or "const" in schema:
        return None
    if schema["type"] == "integer":
        low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
        if low is None or high is None or low < -BIGINT_MAX - 1 or high > BIGINT_MAX:
            return f"{place}: an integer without 64-bit bounds ({low}, {high})"
        return None
    if schema.get("format") in ("date-time", "date"):
        return None
    pattern = schema.get("pattern")
    if pattern is None or re.search(pattern, "a\x00"):
        return f"{place}: a string that may hold NUL (pattern {pattern!r})"
    return None


def test_every_path_query_and_body_input_of_the_api_is_guarded() -> None:
    spec = create_app(Settings(database_url="postgresql://unused/unused")).openapi()
    walked: dict[str, str | None] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            leaves = []
            for parameter in operation.get("parameters", []):
                # HTTP itself refuses NUL in header values (h11 and httptools reject the request).
                if parameter["in"] in ("path", "query"):
                    leaves += _leaves(parameter["schema"], spec, parameter["name"])
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                leaves += _leaves(body["schema"], spec, "body")
            for place, leaf in leaves:
                walked[f"{where} {place}"] = _unguarded(f"{where} {place}", leaf)
    assert [problem for problem in walked.values() if problem] == []
    # The walk reaches into bodies, lists and nested models, not just the parameters.
    assert {
        "GET /v1/alerts/{alert_id} alert_id",
        "GET /v1/notifications alert",
        "POST /v1/alerts/{alert_id}/ack body.comment",
        "POST /v1/readings body.readings[].station",
        "POST /v1/silences body.stations[]",
        "PUT /v1/subscriptions/{subscription_id} body.escalation.target",
        "PUT /v1/rules/{rule_id} body.definition.ladders[].levels[].basis",
        "PUT /v1/rules/{rule_id} body.definition.staleness.max_interval_s",
    } <= walked.keys()
