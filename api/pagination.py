"""Opaque keyset cursors: base64url of a small JSON object."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from api.params import BIGINT_MAX
from core.errors import InvalidInput


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str, *, keys: Mapping[str, type[int] | type[str]]) -> dict[str, Any]:
    """The position a cursor holds (each key of its type); InvalidInput if not encode_cursor's."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidInput("cursor: not a cursor this API issued") from None
    if (
        not isinstance(position, dict)
        or set(position) != set(keys)
        or not all(_fits(position[key], kind) for key, kind in keys.items())
    ):
        raise InvalidInput("cursor: not a cursor this API issued")
    return position


def _fits(value: object, kind: type[int] | type[str]) -> bool:
    if kind is int:
        # orjson reads integers beyond 64 bits as floats, and bool is an int subclass.
        return type(value) is int and -BIGINT_MAX <= value <= BIGINT_MAX
    return isinstance(value, kind)
