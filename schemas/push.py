"""The contract of `POST /v1/readings`: the body partners push, and the per-item answer.

The body is not validated as a whole: each item is checked on its own (`validate_item`) so one
bad item is a per-item rejection, never a failed request. `push_body_schema()` is the published
JSON Schema (schemas/json/readings-push.schema.json and the OpenAPI request body); regenerate the
file with `python -m schemas.push > schemas/json/readings-push.schema.json`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from core.timeutil import parse_time
from schemas.common import TEXT_PATTERN, Text, first_unstorable
from schemas.readings import Outcome

MAX_READINGS = 10_000
MAX_BODY_BYTES = 5 * 1024 * 1024

# HJ 212-2017 data flags; they map to QC states exactly as on the HJ 212 path.
DeviceFlag = Literal["N", "F", "M", "S", "D", "C", "T", "B"]
QcName = Literal[
    "valid",
    "suspect",
    "invalid",
    "below_detection",
    "maintenance",
    "calibration",
    "manual",
    "stopped",
    "fault",
    "over_range",
    "comm_fault",
]
Flag = Literal[DeviceFlag, QcName]
DEVICE_FLAGS: tuple[str, ...] = get_args(DeviceFlag)
QC_NAMES: tuple[str, ...] = get_args(QcName)

_TIME_HELP = (
    "RFC 3339 / ISO 8601 time, e.g. 2026-11-20T08:00:00+08:00; without an offset it is "
    "Asia/Shanghai. The sampling instant (period_s 0) or the START of the averaging period."
)
_FLAG_HELP = (
    "Quality of the value: an HJ 212-2017 data flag (N normal, F stopped, M maintenance, "
    "S manual, D fault, C calibration, T over range, B communication fault) or an EnvLink QC "
    "state. Absent or null means N (valid)."
)


def _time_text(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 time string, not {type(value).__name__}")
    return parse_time(value)


PushTime = Annotated[
    datetime,
    BeforeValidator(_time_text),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN, "description": _TIME_HELP},
        mode="validation",
    ),
]


class PushReading(BaseModel):
    """One reading as a partner system pushes it."""

    model_config = ConfigDict(extra="forbid", strict=True, title="PushReading")

    station: Text = Field(min_length=1, description="Station code, e.g. gz-w-dadun")
    parameter: Text = Field(min_length=1, description="Parameter code, e.g. nh3n")
    time: PushTime
    value: float | None = Field(description="The value in `unit`; null when there is none")
    unit: Text = Field(description="Unit of `value`, e.g. mg/L, ug/m3, ppb (converted on intake)")
    period_s: Literal[0, 60, 3600, 86400] = Field(
        default=0, description="0 instant, 60 minute, 3600 hourly, 86400 daily mean"
    )
    flag: Flag | None = Field(default=None, description=_FLAG_HELP)


class PushBody(BaseModel):
    """Readings pushed by a partner system: at most 10,000 per request and 5 MiB of JSON."""

    model_config = ConfigDict(extra="forbid", title="ReadingsPush")

    readings: list[PushReading] = Field(max_length=MAX_READINGS)


class PushItemResult(BaseModel):
    """What happened to one pushed item; `index` is its place in `readings`."""

    index: int
    outcome: Outcome
    reason: str | None = Field(default=None, description="Why the item was rejected")


class PushSummary(BaseModel):
    accepted: int
    duplicate: int
    revised: int
    rejected: int


class PushResult(BaseModel):
    """Per-item results in input order; received = accepted + duplicate + revised + rejected."""

    received: int
    summary: PushSummary
    results: list[PushItemResult]


def validate_item(raw: object) -> PushReading | str:
    """A pushed item as a PushReading, or the reason it is not one (naming each bad field)."""
    if not isinstance(raw, dict):
        return f"item must be a JSON object, not {_json_type(raw)}"
    try:
        return PushReading.model_validate(raw)
    except ValidationError as exc:
        return "; ".join(_problem(error) for error in exc.errors())


def _problem(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "item"
    kind = error["type"]
    if kind == "missing":
        return f"{field}: missing"
    if kind == "extra_forbidden":
        return f"{field}: unexpected field (allowed: {', '.join(PushReading.model_fields)})"
    if field == "flag" and kind in ("literal_error", "string_type"):
        return (
            f"flag: {error['input']!r} is not an HJ 212 flag ({', '.join(DEVICE_FLAGS)})"
            f" or a QC state ({', '.join(QC_NAMES)})"
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith(f"{field}: "):
        return message
    got = json.dumps(error["input"], ensure_ascii=False)
    if first_unstorable(got):  # a lone surrogate: only its JSON escape can be shown
        got = json.dumps(error["input"])
    return f"{field}: {message} (got {got[:80]})"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def push_body_schema() -> dict[str, Any]:
    """The body's JSON Schema (draft 2020-12), self-contained so OpenAPI can embed it as is."""
    schema = PushBody.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **_inline(schema, definitions),
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, definitions) for value in node]
    return node


if __name__ == "__main__":
    print(json.dumps(push_body_schema(), indent=2, ensure_ascii=False))
