"""The quarantine: items an intake rejected, kept with their raw payload and the reason.

What an intake writes goes to three places: readings (store/readings.py), the items it rejected
(here), and its source's counters (store/sources.py, which holds everything about the `source`
row itself). The caller owns every transaction.

The quarantine keeps a rejected item's text as it was received, including what PostgreSQL text
cannot hold: NUL characters, lone surrogates (JSON allows `"\\ud800"`), and bytes that were
not UTF-8, which sources keep in their text as Python's `surrogateescape` does (byte 0xHH as
U+DC00 + 0xHH). A row whose texts hold none of these (nearly every row) is stored as it is. A row
with one is stored with every text column escaped (`escape_text`) and `escaped` set, so nothing
is lost: `unescape_text` gives the text back exactly, and `rejected_readings` does so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from schemas.common import first_unstorable
from store.pool import Conn

_TO_ESCAPE = re.compile("[\\\\\x00\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:(\\)|x([0-9a-f]{2})|u([0-9a-f]{4}))")


def storable(text: str) -> bool:
    """Whether PostgreSQL text can hold `text` as it is."""
    return first_unstorable(text) is None


def escape_text(text: str) -> str:
    """`text` as storable text that `unescape_text` turns back into `text` exactly.

    A backslash becomes two; NUL becomes `\\x00`; a byte that was not UTF-8 (U+DC80..U+DCFF,
    as `surrogateescape` keeps it) becomes `\\xHH`, the byte; any other lone surrogate becomes
    `\\uXXXX`. Hex digits are lower case. Everything else is left as it is.
    """
    return _TO_ESCAPE.sub(_escape_match, text)


def unescape_text(text: str) -> str:
    """The text `escape_text` was given; bytes that were not UTF-8 come back as surrogates.

    For a source that received bytes, `unescape_text(t).encode("utf-8", "surrogateescape")` is
    what it received.
    """
    return _ESCAPE.sub(_unescape_match, text)


def _escape_match(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x5C:
        return "\\\\"
    if code == 0 or 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code & 0xFF:02x}"
    return f"\\u{code:04x}"


def _unescape_match(match: re.Match[str]) -> str:
    backslash, byte, code = match.groups()
    if backslash:
        return backslash
    if byte is not None:
        value = int(byte, 16)
        return chr(0xDC00 + value if value else 0)
    return chr(int(code, 16))


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    station_id: int | None
    station_code: str | None
    parameter_code: str | None
    reason: str
    payload: str


async def quarantine(
    conn: Conn, rows: Sequence[QuarantineRow], *, source_id: int | None, received_at: datetime
) -> None:
    """Keep rejected input with its raw payload and the reason, escaped where it must be."""
    if not rows:
        return
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY rejected_reading (received_at, source_id, station_id, station_code,"
            " parameter_code, reason, payload, escaped) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            texts: list[str | None] = [
                row.station_code,
                row.parameter_code,
                row.reason,
                row.payload,
            ]
            escaped = not all(text is None or storable(text) for text in texts)
            if escaped:
                texts = [None if text is None else escape_text(text) for text in texts]
            await copy.write_row((received_at, source_id, row.station_id, *texts, escaped))


@dataclass(frozen=True, slots=True)
class RejectedReading:
    """A quarantined item; `escaped` says it is stored escaped (the texts here are as received)."""

    id: int
    received_at: datetime
    source_id: int | None
    station_code: str | None
    parameter_code: str | None
    reason: str
    payload: str
    escaped: bool

    def unescaped(self) -> RejectedReading:
        """The item with its texts as they were received."""
        if not self.escaped:
            return self
        return dataclasses.replace(
            self,
            station_code=None if self.station_code is None else unescape_text(self.station_code),
            parameter_code=(
                None if self.parameter_code is None else unescape_text(self.parameter_code)
            ),
            reason=unescape_text(self.reason),
            payload=unescape_text(self.payload),
        )


async def rejected_readings(conn: Conn, *, limit: int = 100) -> list[RejectedReading]:
    """The newest quarantined items first, their texts as received."""
    async with conn.cursor(row_factory=class_row(RejectedReading)) as cur:
        await cur.execute(
            "SELECT id, received_at, source_id, station_code, parameter_code, reason, payload,"
            " escaped FROM rejected_reading ORDER BY id DESC LIMIT %s",
            [limit],
        )
        return [row.unescaped() for row in await cur.fetchall()]
