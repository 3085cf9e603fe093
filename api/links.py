"""OpenAPI links: where an answer's ids and codes can be used next (a client, or a fuzzer, follows
them to real stations, alerts, rules, subscriptions and silences)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def link(
    method: str,
    path: str,
    description: str,
    parameters: dict[str, str],
    *,
    request_body: str | None = None,
) -> dict[str, Any]:
    """A link to the operation `method path`; values are OpenAPI runtime expressions."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    found: dict[str, Any] = {
        "operationRef": f"#/paths/{quote(pointer, safe='~')}/{method.lower()}",
        "description": description,
        "parameters": parameters,
    }
    if request_body is not None:
        found["requestBody"] = request_body
    return found


def linked(status: int, **links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A `responses` entry that gives the answer `status` these links."""
    return {status: {"links": links}}
