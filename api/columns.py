"""JSON items of a large page, written a field at a time for the whole page with numpy.

A page of /v1/readings holds up to 10,000 readings. As a dict per reading serialised by orjson
it cost the API process about 10 ms of CPU, most of it building Python objects: a datetime and
a float per reading from the driver, a dict, the rounded value. Here the store hands the page
over as numpy columns and each field becomes a column of JSON literals (a row of bytes per
item) in a few vectorised steps; `items` lays them side by side. The bytes are those orjson
writes for the dicts (`api.output.json_response`; tests/unit/test_page_json.py compares the two
over random pages and every edge this module names).

Each writer returns None where its column holds what it does not write the way orjson would:
a time in Asia/Shanghai before 1991-09-15 (daylight saving then: no fixed offset), a value of
10^15 units of its last decimal place or more, or one below 10^-5 (orjson writes an exponent).
The caller then writes the page as dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta, tzinfo
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from api.output import steady_zone
from store.arrays import unix_time

# A column: one JSON literal per item, a row of bytes each, as wide as the longest and padded
# with NUL bytes where a literal is shorter. The padding may sit anywhere in a row (JSON text
# never holds a NUL: orjson escapes U+0000); `items` takes it out of the whole response at once,
# at a cost per NUL byte, so the writers pad only where literals differ in length.
Column = npt.NDArray[np.uint8]

_DIGIT_0 = ord("0")
# "0000" to "9999": four ASCII digits by their number, as one 32-bit word each.
_QUADS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype=np.uint32)
# "00" to "99": two ASCII digits by their number.
_PAIRS = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), dtype=np.uint8).reshape(100, 2)
_NULL = np.frombuffer(b"null", dtype=np.uint8)
_MICROSECOND = timedelta(microseconds=1)
# Below 10^15 a value of a few decimals is at most 15 significant digits: the shortest decimal
# of the double nearest it is that decimal (doubles keep 15 digits). orjson writes a value
# without an exponent from 10^-5 up to 10^16.
_LARGEST = 10**15
_SMALLEST_EXPONENT = -5
# Codes spanning fewer values than this are looked up in a table (a period's 0 to 86,400 s).
_DENSE_CODES = 1 << 17


def literals(column: Column | bytes) -> list[bytes] | bytes:
    """A column's literals, padding taken out (one literal for every item stays as it is)."""
    if isinstance(column, bytes):
        return column
    return [row.tobytes().replace(b"\0", b"") for row in column]


def _digits(numbers: npt.NDArray[np.int64], width: int) -> Column:
    """(len(numbers), width) ASCII digits of each number (0 ≤ number < 10**width), zero-padded."""
    groups = -(-width // 4)
    out = np.empty((len(numbers), groups), dtype=np.uint32)
    rest = numbers
    for group in range(groups - 1, 0, -1):
        rest, quad = np.divmod(rest, 10_000)
        out[:, group] = _QUADS[quad]
    out[:, 0] = _QUADS[rest]
    return out.view(np.uint8)[:, 4 * groups - width :]


def _pad_leading_zeros(digits: Column) -> None:
    """Pad (in place) each row's leading zeros but its last digit: 007 → 7, 000 → 0."""
    leading = digits[:, :-1]
    leading[np.logical_and.accumulate(leading == _DIGIT_0, axis=1)] = 0


def _pad_trailing_zeros(digits: Column) -> None:
    """Pad (in place) each row's trailing zeros but its first digit: 250 → 25, 000 → 0."""
    trailing = digits[:, 1:]
    zeros = np.logical_and.accumulate(trailing[:, ::-1] == _DIGIT_0, axis=1)[:, ::-1]
    trailing[zeros] = 0


def _civil(days: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], ...]:
    """Year, month and day of days since 1970-01-01 in the proleptic Gregorian calendar
    (H. Hinnant's days_from_civil, inverted)."""
    z = days + 719468
    era = z // 146097
    day_of_era = z - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    month = np.where(month_from_march < 10, month_from_march + 3, month_from_march - 9)
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day


def times(unix_us: npt.NDArray[np.int64], zone: tzinfo) -> Column | None:
    """Times (microseconds since 1970 UTC) as quoted RFC 3339 strings in `zone`, as orjson
    writes aware datetimes (microseconds only where there are any; UTC as Z); None unless one
    fixed offset writes every time as the zone does (api.output.steady_zone)."""
    if not len(unix_us):
        return np.empty((0, 1), dtype=np.uint8)
    fixed = steady_zone(zone, unix_time(int(unix_us.min())))
    if fixed is None:
        return None
    offset = fixed.utcoffset(None)
    assert offset is not None
    seconds, micro = np.divmod(unix_us + offset // _MICROSECOND, 1_000_000)
    days, second_of_day = np.divmod(seconds, 86400)
    # A page's days come in runs (it is in time order): each run's day is written once.
    first = np.concatenate(([0], np.flatnonzero(np.diff(days)) + 1))
    year, month, day = _civil(days[first])
    if year.min() < 1 or year.max() > 9999:
        return None
    date = np.empty((len(first), 12), dtype=np.uint8)
    date[:, 0] = ord('"')
    date[:, 1:5] = _digits(year, 4)
    date[:, 5] = date[:, 8] = ord("-")
    date[:, 6:8] = _PAIRS[month]
    date[:, 9:11] = _PAIRS[day]
    date[:, 11] = ord("T")
    suffix = np.frombuffer(_offset(offset) + b'"', dtype=np.uint8)
    has_micro = bool(micro.any())
    fraction = 7 if has_micro else 0
    text = np.empty((len(unix_us), 20 + fraction + len(suffix)), dtype=np.uint8)
    text[:, :12] = np.repeat(date, np.diff(np.append(first, len(days))), axis=0)
    text[:, 12:20] = _clock()[second_of_day].view(np.uint8).reshape(-1, 8)
    text[:, 20 + fraction :] = suffix
    if has_micro:
        text[:, 20] = ord(".")
        text[:, 21:27] = _digits(micro, 6)
        text[micro == 0, 20:27] = 0  # whole seconds: no fraction
    return text


@cache
def _clock() -> npt.NDArray[np.uint64]:
    """HH:MM:SS of every second of a day, eight ASCII bytes each (675 KiB, made once)."""
    second = np.arange(86400)
    text = np.empty((86400, 8), dtype=np.uint8)
    text[:, 0:2] = _PAIRS[second // 3600]
    text[:, 3:5] = _PAIRS[second // 60 % 60]
    text[:, 6:8] = _PAIRS[second % 60]
    text[:, 2] = text[:, 5] = ord(":")
    return text.view(np.uint64).ravel()


def _offset(offset: timedelta) -> bytes:
    if not offset:
        return b"Z"
    minutes = offset // timedelta(minutes=1)
    sign = b"+" if minutes > 0 else b"-"
    return sign + b"%02d:%02d" % divmod(abs(minutes), 60)


def numbers(values: npt.NDArray[np.float64], decimals: int) -> Column | None:
    """Values already rounded to `decimals` places as JSON numbers (null where missing: NaN, as
    the store reads a missing value), as orjson writes the floats; None where one is infinite,
    10^15 units of the last place or more, or below 10^-5."""
    if decimals < 0:
        return None
    missing = np.isnan(values)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values * 10.0**decimals
        if not np.all((np.abs(scaled) < _LARGEST) | missing):  # also the infinities
            return None
    units = np.rint(np.where(missing, 0.0, scaled)).astype(np.int64)
    magnitude = np.abs(units)
    if decimals + _SMALLEST_EXPONENT > 0 and np.any(
        (magnitude > 0) & (magnitude < 10 ** (decimals + _SMALLEST_EXPONENT))
    ):
        return None
    # [-]whole.fraction, the sign only if a value is negative, one fractional digit at least.
    whole, fraction = np.divmod(magnitude, 10**decimals)
    negative = units < 0
    sign = int(negative.any())
    whole_width = _width(whole)
    point = sign + whole_width
    width = point + 1 + max(decimals, 1)
    out = np.empty((len(values), width), dtype=np.uint8)
    if sign:
        out[:, 0] = np.where(negative, ord("-"), 0)
    out[:, sign:point] = _digits(whole, whole_width)
    _pad_leading_zeros(out[:, sign:point])
    out[:, point] = ord(".")
    if decimals:
        out[:, point + 1 : width] = _digits(fraction, decimals)
        _pad_trailing_zeros(out[:, point + 1 : width])
    else:
        out[:, point + 1] = _DIGIT_0
    return nullable(out, missing)


def integers(values: npt.NDArray[np.int64]) -> Column:
    """Integers as JSON numbers."""
    magnitude = np.abs(values)
    negative = values < 0
    sign = int(negative.any())
    width = _width(magnitude)
    out = np.empty((len(values), sign + width), dtype=np.uint8)
    if sign:
        out[:, 0] = np.where(negative, ord("-"), 0)
    out[:, sign:] = _digits(magnitude, width)
    _pad_leading_zeros(out[:, sign:])
    return out


def _width(magnitude: npt.NDArray[np.int64]) -> int:
    """Digits of the largest of non-negative integers."""
    return len(str(int(magnitude.max()))) if len(magnitude) else 1


def _matrix(literals: Sequence[bytes]) -> Column:
    """Literals as a column (a row each, NUL-padded)."""
    table = np.array(literals, dtype=np.bytes_)
    return table.view(np.uint8).reshape(len(literals), table.itemsize)


def choices(codes: npt.NDArray[Any], literal: Callable[[Any], bytes]) -> Column | bytes:
    """A column of few distinct codes as their JSON literals, each written once by `literal`;
    one literal if every code is the same."""
    if not len(codes):
        return b"null"
    least, most = int(codes.min()), int(codes.max())
    if least == most:
        return literal(codes[0].item())
    if most - least < _DENSE_CODES:  # codes close together: a table by code, no sort
        offsets = codes.astype(np.int64) - least
        present = np.flatnonzero(np.bincount(offsets))
        found = _matrix([literal(least + offset) for offset in present.tolist()])
        table = np.zeros((most - least + 1, found.shape[1]), dtype=np.uint8)
        table[present] = found
        return table[offsets]
    distinct, index = np.unique(codes, return_inverse=True)
    return _matrix([literal(code) for code in distinct.tolist()])[index]


def nullable(column: Column, missing: npt.NDArray[np.bool_]) -> Column:
    """`column` with null where `missing` (in place where the column is wide enough)."""
    if not missing.any():
        return column
    if column.shape[1] < len(_NULL):
        column = np.concatenate(
            (column, np.zeros((len(column), len(_NULL) - column.shape[1]), np.uint8)), axis=1
        )
    column[missing] = 0
    column[missing, : len(_NULL)] = _NULL
    return column


def items(
    fields: Sequence[tuple[str, Column | bytes]], *, before: bytes = b"", after: bytes = b""
) -> bytes:
    """A JSON array of objects, one per row of the columns, each with `fields` in order (a
    column of literals, or one literal for every object: JSON already, as orjson writes it),
    written between `before` and `after` (the rest of a response, made in the same buffer)."""
    count = next((len(value) for _, value in fields if not isinstance(value, bytes)), None)
    if count == 0:
        return before + b"[]" + after
    assert count is not None, "at least one field is a column"
    # An object's text with its columns' places left empty, and where each column goes: the
    # text is laid down once for every object (a row per object, a comma after each), then
    # each column into its place; the padding (NUL bytes) is taken out of the whole at once.
    row = bytearray(b"{")
    places: list[tuple[int, Column]] = []
    for position, (name, value) in enumerate(fields):
        row += (b"," if position else b"") + b'"' + name.encode() + b'":'
        if isinstance(value, bytes):
            row += value
        else:
            places.append((len(row), value))
            row += bytes(value.shape[1])
    row += b"},"
    opening = before + b"["
    end = len(opening) + count * len(row)
    buffer = np.empty(end + len(after), dtype=np.uint8)  # the last comma becomes the "]"
    buffer[: len(opening)] = np.frombuffer(opening, dtype=np.uint8)
    block = buffer[len(opening) : end].reshape(count, len(row))
    block[:] = np.frombuffer(row, dtype=np.uint8)
    for place, column in places:
        block[:, place : place + column.shape[1]] = column
    buffer[end - 1 :] = np.frombuffer(b"]" + after, dtype=np.uint8)
    return buffer.tobytes().replace(b"\0", b"")
