"""JSON items of a large page, written a field at a time for the whole page with numpy.

A page of /v1/readings holds up to 10,000 readings. As a dict per reading serialised by orjson
it cost the API process about 10 ms of CPU, most of it building Python objects: a datetime and
a float per reading from the driver, a dict, the rounded value. Here the store hands the page
over as numpy columns and each field becomes a column of JSON literals (bytes arrays, one per
item) in a few vectorised steps; `items` joins them. The bytes are those orjson writes for the
dicts (`api.output.json_response`; tests/unit/test_page_json.py compares the two over random
pages and every edge this module names).

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

# One JSON literal per item, as bytes padded with NULs to the longest (numpy's "S" arrays; a
# value read back from one drops its padding).
Column = npt.NDArray[np.bytes_]

_STRINGS = np.strings
# "00" to "99": two ASCII digits by their number.
_PAIRS = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), dtype=np.uint8).reshape(100, 2)
_MICROSECOND = timedelta(microseconds=1)
# Below 10^15 a value of a few decimals is at most 15 significant digits: the shortest decimal
# of the double nearest it is that decimal (doubles keep 15 digits). orjson writes a value
# without an exponent from 10^-5 up to 10^16.
_LARGEST = 10**15
_SMALLEST_EXPONENT = -5
# Codes spanning fewer values than this are looked up in a table (a period's 0 to 86,400 s).
_DENSE_CODES = 1 << 17


def _digits(numbers: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    """(len(numbers), width) ASCII digits of each number (0 ≤ number < 10**width), zero-padded."""
    even = width + (width & 1)
    out = np.empty((len(numbers), even), dtype=np.uint8)
    rest = numbers
    for place in range(even - 2, -1, -2):
        rest, pair = np.divmod(rest, 100)
        out[:, place : place + 2] = _PAIRS[pair]
    return out[:, width & 1 :]


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
        return np.empty(0, dtype="S1")
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
        text[micro == 0, 20:] = np.append(suffix, np.zeros(fraction, dtype=np.uint8))
    return text.view(f"S{text.shape[1]}").ravel()


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
    present = ~missing
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.where(present, values * 10.0**decimals, 0.0)
        if not np.all(np.abs(scaled) < _LARGEST):  # also the infinities
            return None
    units = np.rint(scaled).astype(np.int64)
    magnitude = np.abs(units)
    if decimals + _SMALLEST_EXPONENT > 0 and np.any(
        (magnitude > 0) & (magnitude < 10 ** (decimals + _SMALLEST_EXPONENT))
    ):
        return None
    whole, fraction = np.divmod(magnitude, 10**decimals)
    if decimals:
        fractional = _STRINGS.rstrip(_digits(fraction, decimals).view(f"S{decimals}").ravel(), b"0")
        fractional = np.where(_STRINGS.str_len(fractional) == 0, b"0", fractional)
    else:
        fractional = np.full(len(units), b"0")
    written = _STRINGS.add(_STRINGS.add(_whole(whole), b"."), fractional)
    return nullable(_signed(written, units < 0), missing)


def integers(values: npt.NDArray[np.int64]) -> Column:
    """Integers as JSON numbers."""
    return _signed(_whole(np.abs(values)), values < 0)


def _whole(magnitude: npt.NDArray[np.int64]) -> Column:
    """The digits of non-negative integers, without leading zeros."""
    width = len(str(int(magnitude.max()))) if len(magnitude) else 1
    written = _STRINGS.lstrip(_digits(magnitude, width).view(f"S{width}").ravel(), b"0")
    return np.where(_STRINGS.str_len(written) == 0, b"0", written)


def _signed(written: Column, negative: npt.NDArray[np.bool_]) -> Column:
    return np.where(negative, _STRINGS.add(b"-", written), written) if negative.any() else written


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
        literals = np.array([literal(least + offset) for offset in present.tolist()], np.bytes_)
        table = np.zeros(most - least + 1, dtype=literals.dtype)
        table[present] = literals
        return table[offsets]
    distinct, index = np.unique(codes, return_inverse=True)
    return np.array([literal(code) for code in distinct.tolist()], dtype=np.bytes_)[index]


def nullable(column: Column, missing: npt.NDArray[np.bool_]) -> Column:
    """`column` with null where `missing`."""
    return np.where(missing, b"null", column) if missing.any() else column


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
    # The objects' text in pieces: literals shared by all, and columns. The pieces are copied
    # side by side into one block of bytes, a row per object and a comma after each; what pads
    # a column's shorter literals (NUL bytes, which JSON text never holds: orjson escapes them)
    # is then taken out of the whole at once.
    pieces: list[Column | bytes] = []
    text = b"{"
    for position, (name, value) in enumerate(fields):
        text += (b"," if position else b"") + b'"' + name.encode() + b'":'
        if isinstance(value, bytes):
            text += value
        else:
            pieces += [text, value]
            text = b""
    pieces.append(text + b"},")
    widths = [len(p) if isinstance(p, bytes) else p.itemsize for p in pieces]
    opening = before + b"["
    end = len(opening) + count * sum(widths)
    buffer = np.empty(end + len(after), dtype=np.uint8)  # the last comma becomes the "]"
    buffer[: len(opening)] = np.frombuffer(opening, dtype=np.uint8)
    block = buffer[len(opening) : end].reshape(count, sum(widths))
    place = 0
    padded = False
    for piece, width in zip(pieces, widths, strict=True):
        if isinstance(piece, bytes):
            block[:, place : place + width] = np.frombuffer(piece, dtype=np.uint8)
        else:
            block[:, place : place + width] = piece.view(np.uint8).reshape(count, width)
            padded = padded or bool(_STRINGS.str_len(piece).min() < width)
        place += width
    buffer[end - 1 :] = np.frombuffer(b"]" + after, dtype=np.uint8)
    written = buffer.tobytes()
    return written.replace(b"\0", b"") if padded else written
