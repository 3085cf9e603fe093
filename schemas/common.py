"""Shared vocabulary (docs/conventions.md): QC states, cities, areas, media, roles, list envelope.

And the input types every door shares, so that hostile input is refused where it is declared:
Text (no NUL, no lone surrogate), Finite (no NaN or infinity), Instant and Day (no year a
monitoring network has not seen).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    Strict,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from core.timeutil import FIRST_YEAR, LAST_YEAR, in_years

# What no text column can hold: NUL, and lone surrogates, which have no UTF-8 encoding (sources
# keep bytes that were not UTF-8 as U+DC80..U+DCFF, the way Python's surrogateescape does).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Text's pattern in JSON Schema (ECMA-262); JSON cannot carry a lone surrogate to be valid.
TEXT_PATTERN = "^[^\\u0000]*$"


def first_unstorable(text: str) -> re.Match[str] | None:
    """Where `text` has a character no text column can hold (NUL, a lone surrogate), or None."""
    # Searching is slow next to the usual answer: NUL is one memchr, ASCII text is a flag in
    # CPython, and other text without a lone surrogate encodes as UTF-8.
    if "\x00" not in text:
        if text.isascii():
            return None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return None
    return _UNSTORABLE.search(text)


def _storable_text(value: object) -> object:
    # Before str's own checks: a length or pattern check would refuse a lone surrogate first,
    # with a message that does not say what is wrong.
    found = first_unstorable(value) if isinstance(value, str) else None
    if found is None:
        return value
    code = ord(found.group())
    if code == 0:
        what = "NUL (U+0000)"
    elif 0xDC80 <= code <= 0xDCFF:
        what = f"U+{code:04X} (a lone surrogate, or the byte 0x{code & 0xFF:02X} that is not UTF-8)"
    else:
        what = f"U+{code:04X} (a lone surrogate)"
    raise PydanticCustomError(
        "unstorable_text",
        "must not contain {what}, found at character {at}",
        {"what": what, "at": found.start() + 1},
    )


class _TextPattern:
    """Publishes TEXT_PATTERN, unless the field has a pattern of its own."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("pattern", TEXT_PATTERN)
        return json_schema


class _PublishedPattern:
    """Publishes a pattern the field checks: beside a BeforeValidator, pydantic leaves it out."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


_Moment = TypeVar("_Moment", bound=date)
# The years FIRST_YEAR to LAST_YEAR as a pattern of ISO 8601 text (the wall-clock year leads).
YEARS_PATTERN = "^(19|2[01])[0-9]{2}-"
_YEARS = re.compile(YEARS_PATTERN)
_YEAR_FIRST = re.compile("^[0-9]{4}-")
ISO_TIME_PROBLEM = "must be an ISO 8601 date or time, such as 2026-03-01T08:00:00+08:00"


class _YearsPattern:
    """Publishes YEARS_PATTERN, so that the schema refuses the years the API refuses."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = YEARS_PATTERN
        return json_schema


def _iso_text(value: object) -> object:
    # Before pydantic's lax parsing, which would also read "0.5" or 1700000000 as Unix times:
    # the API takes ISO 8601 text only, as its schema says.
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _YEAR_FIRST.match(value):
        raise PydanticCustomError("iso_time", ISO_TIME_PROBLEM)
    if not _YEARS.match(value):
        raise PydanticCustomError(
            "time_range",
            "must be in the years {first}-{last}",
            {"first": FIRST_YEAR, "last": LAST_YEAR},
        )
    return value


def _in_years(value: _Moment) -> _Moment:
    if not in_years(value):
        raise PydanticCustomError(
            "time_range",
            "must be in the years {first}-{last}",
            {"first": FIRST_YEAR, "last": LAST_YEAR},
        )
    return value


# Every text a client or config gives EnvLink: no NUL, no lone surrogate, so that a 422 names
# the field instead of the database refusing the text later.
Text = Annotated[str, BeforeValidator(_storable_text), _TextPattern()]
# A month, YYYY-MM, and a signature (HMAC-SHA256 in hex): checked as text first, so that a NUL
# or lone surrogate is named as such rather than as a pattern mismatch, then for their shape.
MONTH_PATTERN = "^[0-9]{4}-[0-9]{2}$"
SIGNATURE_PATTERN = "^[0-9a-f]{64}$"
Month = Annotated[
    str,
    BeforeValidator(_storable_text),
    StringConstraints(min_length=7, max_length=7, pattern=MONTH_PATTERN),
    _PublishedPattern(MONTH_PATTERN),
]
Signature = Annotated[
    str,
    BeforeValidator(_storable_text),
    StringConstraints(min_length=64, max_length=64, pattern=SIGNATURE_PATTERN),
    _PublishedPattern(SIGNATURE_PATTERN),
]
# Every number a client or config gives EnvLink that is not a reading's value: no NaN, no ±inf,
# and a number, as the schema says, not true/false or text that pydantic would read as one.
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
# Every whole number in a body a client or config gives EnvLink: an integer, not true/false
# (which pydantic would read as 1/0) or text.
Whole = Annotated[int, Strict()]
# Every yes/no in a body a client or config gives EnvLink: true or false, not 1 or "yes".
Flag = Annotated[bool, Strict()]
# Every time and date a client gives EnvLink: years FIRST_YEAR to LAST_YEAR (core.timeutil).
Instant = Annotated[
    datetime, BeforeValidator(_iso_text), AfterValidator(_in_years), _YearsPattern()
]
Day = Annotated[date, BeforeValidator(_iso_text), AfterValidator(_in_years), _YearsPattern()]

City = Literal["guangzhou", "dongguan"]
Area = Literal["dongjiang", "shiziyang"]
Medium = Literal["air", "water"]
Role = Literal["reader", "writer", "responder", "joint_office", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "responder", "joint_office", "admin")


class QC(StrEnum):
    """Quality state of a reading; the value is the API string, `code` the stored smallint."""

    VALID = "valid"
    SUSPECT = "suspect"
    INVALID = "invalid"
    BELOW_DETECTION = "below_detection"
    MAINTENANCE = "maintenance"
    CALIBRATION = "calibration"
    MANUAL = "manual"
    STOPPED = "stopped"
    FAULT = "fault"
    OVER_RANGE = "over_range"
    COMM_FAULT = "comm_fault"

    @property
    def code(self) -> int:
        return QC_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> QC:
        return QC_BY_CODE[code]

    @property
    def feeds_statistics(self) -> bool:
        """Only valid data (and below-detection, as its limit) feeds statistics and alerts."""
        return self in (QC.VALID, QC.BELOW_DETECTION)


QC_CODES: dict[QC, int] = {
    QC.VALID: 0,
    QC.SUSPECT: 1,
    QC.INVALID: 2,
    QC.BELOW_DETECTION: 3,
    QC.MAINTENANCE: 10,
    QC.CALIBRATION: 11,
    QC.MANUAL: 12,
    QC.STOPPED: 13,
    QC.FAULT: 14,
    QC.OVER_RANGE: 15,
    QC.COMM_FAULT: 16,
}
QC_BY_CODE: dict[int, QC] = {code: qc for qc, code in QC_CODES.items()}

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """The one list envelope: items and an opaque keyset cursor for the next page."""

    items: list[T]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """The one error envelope."""

    error: ErrorBody
