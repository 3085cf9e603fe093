"""Items' JSON text as a partner sent it, cut out of the received document only when needed.

The quarantine keeps what a partner actually sent, not EnvLink's reading of it. JSON sources
parse a whole document at once (an MQTT message, a push body, a page of a feed), so an item's own
text is found by scanning the document again. That is done only when an item is rejected (by
the pipeline, or by its source as unparseable), and once per document: a clean batch costs
nothing extra.

Received bytes become text by `received_text`: UTF-8, with any byte that is not UTF-8 kept as
Python's `surrogateescape` keeps it; the quarantine escapes such text (store.intake) and can give
the bytes back. `parse_json` reads a document so that one hostile item (a NUL, a lone surrogate,
a byte that is not UTF-8, a number beyond double precision) is that item's problem, not its
whole document's.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import overload

import orjson

from schemas.readings import ReadingIn, Rejection

# A quarantined payload keeps at most this many characters of what was received.
MAX_CHARS = 65_536

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class ReceivedJson(Sequence[str | None]):
    """Per item of a batch, its JSON text as received; None where it cannot be cut out."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._documents: list[_Document] = []
        self._length = 0

    def add(self, document: bytes, positions: Sequence[int], *, path: Sequence[str] = ()) -> None:
        """The next items: elements `positions` of the array at dotted `path` in `document`.

        Where the node at `path` is not an array (an MQTT message holding one reading), it is
        the one element, position 0.
        """
        if not positions:
            return
        self._starts.append(self._length)
        self._documents.append(_Document(document, tuple(path), positions))
        self._length += len(positions)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> str | None: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str | None]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str | None] | None:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(f"item {index} of {self._length}")
        part = bisect.bisect_right(self._starts, position) - 1
        return self._documents[part].text(position - self._starts[part])


class _Document:
    __slots__ = ("_data", "_elements", "_path", "_positions")

    def __init__(self, data: bytes, path: tuple[str, ...], positions: Sequence[int]) -> None:
        self._data = data
        self._path = path
        self._positions = positions
        self._elements: list[str] | None = None

    def text(self, item: int) -> str | None:
        if self._elements is None:
            self._elements = element_texts(self._data, self._path) or []
        position = self._positions[item]
        return self._elements[position] if 0 <= position < len(self._elements) else None


def quarantine_as_received(
    items: list[ReadingIn | Rejection], received: Sequence[str | None]
) -> None:
    """Give the rejections a source built (items it could not parse) their text as received.

    Where the text cannot be cut out, the payload the source gave (its re-serialisation) stays.
    """
    for index, item in enumerate(items):
        # Only a rejection looks its text up: a batch without one scans no document.
        if isinstance(item, Rejection) and (text := received[index]) is not None:
            items[index] = replace(item, payload=text)


def received_text(data: bytes) -> str:
    """Bytes as received, as text (bytes that are not UTF-8 kept as surrogates), bounded."""
    return data[: MAX_CHARS * 4].decode("utf-8", "surrogateescape")[:MAX_CHARS]


def json_text(value: object) -> str:
    """A parsed item as JSON text, for the quarantine where its text as received is unknown."""
    return json.dumps(value, ensure_ascii=False, default=repr)[:MAX_CHARS]


def parse_json(document: bytes) -> object:
    """A JSON document; orjson.JSONDecodeError when it is not one.

    orjson reads nearly every document. It refuses a whole document for a lone surrogate escape,
    a byte that is not UTF-8 or a number beyond double precision (1e400); the standard parser
    then reads it with such bytes kept as surrogates, such numbers as infinity (and NaN and
    Infinity as their floats), so the item holding one is rejected on its own.
    """
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError as strict:
        try:
            return json.loads(document.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            raise strict from None


def element_texts(document: bytes, path: Sequence[str] = ()) -> list[str] | None:
    """The texts of the array's elements at dotted `path` (as `dig` walks it), or None."""
    try:
        text = document.decode("utf-8", "surrogateescape")
        start = _skip(text, 0)
        for part in path:
            found = _child(text, start, part)
            if found is None:
                return None
            start = found
        spans = _array(text, start) if text.startswith("[", start) else [_value(text, start)]
    except (ValueError, IndexError, RecursionError):
        # Not the JSON its source parsed (it would not have got here): keep the fallback.
        return None
    return [text[low:high][:MAX_CHARS] for low, high in spans]


def _child(text: str, start: int, part: str) -> int | None:
    if text.startswith("{", start):
        found = None
        for key, low, _ in _members(text, start):
            if key == part:
                found = low  # a repeated key: the last one wins, as in the parsed document
        return found
    if text.startswith("[", start) and part.lstrip("-").isdigit():
        spans = _array(text, start)
        index = int(part)
        return spans[index][0] if -len(spans) <= index < len(spans) else None
    return None


def _members(text: str, start: int) -> Iterator[tuple[str, int, int]]:
    at = _skip(text, start + 1)
    if text.startswith("}", at):
        return
    while True:
        key, at = _DECODER.raw_decode(text, at)
        at = _skip(text, at)
        if not isinstance(key, str) or not text.startswith(":", at):
            raise ValueError(f"not an object member at {at}")
        low, high = _value(text, _skip(text, at + 1))
        yield key, low, high
        at = _skip(text, high)
        if text.startswith("}", at):
            return
        if not text.startswith(",", at):
            raise ValueError(f"expected , or }} at {at}")
        at = _skip(text, at + 1)


def _array(text: str, start: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    at = _skip(text, start + 1)
    if text.startswith("]", at):
        return spans
    while True:
        low, high = _value(text, at)
        spans.append((low, high))
        at = _skip(text, high)
        if text.startswith("]", at):
            return spans
        if not text.startswith(",", at):
            raise ValueError(f"expected , or ] at {at}")
        at = _skip(text, at + 1)


def _value(text: str, start: int) -> tuple[int, int]:
    return start, _DECODER.raw_decode(text, start)[1]


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()
