"""Opaque keyset cursors: base64url of a small JSON object."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from core.errors import InvalidInput


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str, *, keys: tuple[str, ...]) -> dict[str, Any]:
    """The position a cursor holds; InvalidInput when it was not made by encode_cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidInput("cursor: not a cursor this API issued") from None
    if not isinstance(position, dict) or set(position) != set(keys):
        raise InvalidInput("cursor: not a cursor this API issued")
    return position
