"""Array query parameters in PostgreSQL's binary format, encoded from numpy columns.

psycopg dumps a Python list element by element in Python, which for the arrays of a batch of
readings (`unnest(%(station)s::int4[], ...)`) cost more than the statement itself. These are
built with a few numpy operations whatever their length; their dumpers are registered once,
when this module is imported, on the adapters every connection opened afterwards starts from.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format

from store.pool import Conn, alone

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# PG_EPOCH in microseconds since UNIX_EPOCH: a binary time read as a number, made a Unix time.
PG_EPOCH_UNIX_US = (PG_EPOCH - UNIX_EPOCH) // _MICROSECOND


def unix_time(microseconds: int) -> datetime:
    """The aware UTC time `microseconds` after 1970-01-01."""
    return UNIX_EPOCH + timedelta(microseconds=microseconds)


async def fetch_records(
    conn: Conn, statement: bytes, params: Mapping[str, Any], layout: np.dtype[Any]
) -> npt.NDArray[Any]:
    """The rows of a statement that aggregates them into one bytea of fixed-width binary
    records (string_agg of send functions; NULL for no row), as numpy reads it whole: no Python
    object per row. On a connection in no transaction, the statement is a transaction of its
    own (store.pool.alone)."""
    async with alone(conn), conn.cursor(binary=True) as cur:
        await cur.execute(statement, params)
        found = await cur.fetchone()
    assert found is not None  # an aggregate's one row
    return np.frombuffer(found[0] or b"", dtype=layout)


class TimeColumns:
    """What a page held as numpy columns (a dataclass whose first field is `time_us`,
    microseconds since 1970 UTC) can do with them: count, cut, and read one time."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    time_us: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.time_us)

    def head(self, count: int) -> Self:
        """The first `count` rows: every column cut, the other fields as they are."""
        cut = {
            field.name: value[:count]
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), np.ndarray)
        }
        return dataclasses.replace(self, **cut)

    def time(self, index: int) -> datetime:
        """The time of one row (aware, UTC)."""
        return unix_time(int(self.time_us[index]))


def micros(times: Iterable[datetime]) -> list[int]:
    """Microseconds since PG_EPOCH (PostgreSQL's binary timestamptz) of aware times.

    A time without an offset is a ValueError naming it.
    """
    times = list(times)
    # A batch holds few distinct instants (many series, same hours): each is converted once.
    known: dict[datetime, int] = {}
    try:
        return [
            known[t] if t in known else known.setdefault(t, (t - PG_EPOCH) // _MICROSECOND)
            for t in times
        ]
    except TypeError:
        naive = next((t for t in times if isinstance(t, datetime) and t.utcoffset() is None), None)
        if naive is None:
            raise
        raise ValueError(f"reading time {naive.isoformat()} has no UTC offset") from None


class BinaryArray(bytes):
    """A one-dimensional array parameter: a header (dimensions, null flag, element type,
    length, lower bound 1), then per element its length (-1 for NULL) and big-endian value."""

    oid: ClassVar[int]
    element_oid: ClassVar[int]
    kind: ClassVar[str]

    @classmethod
    def of(
        cls, column: npt.NDArray[Any], missing: npt.NDArray[np.bool_] | None = None
    ) -> BinaryArray:
        """The array of `column`'s values, NULL where `missing`."""
        size = len(column)
        nulls = missing is not None and bool(missing.any())
        if not size:
            return cls(struct.pack(">iii", 0, 0, cls.element_oid))
        header = struct.pack(">iiiii", 1, int(nulls), cls.element_oid, size, 1)
        itemsize = np.dtype(cls.kind).itemsize
        elements = np.empty(size, dtype=[("length", ">i4"), ("value", cls.kind)])
        elements["length"] = itemsize
        elements["value"] = column
        if not nulls:
            return cls(header + elements.tobytes())
        assert missing is not None
        elements["length"][missing] = -1
        # A NULL is its length alone: its value's bytes are left out.
        keep = np.ones((size, 4 + itemsize), dtype=np.bool_)
        keep[missing, 4:] = False
        return cls(header + elements.view(np.uint8).reshape(size, -1)[keep].tobytes())


class BoolArray(BinaryArray):
    oid, element_oid, kind = 1000, 16, "?"


class Int2Array(BinaryArray):
    oid, element_oid, kind = 1005, 21, ">i2"


class Int4Array(BinaryArray):
    oid, element_oid, kind = 1007, 23, ">i4"


class Int8Array(BinaryArray):
    oid, element_oid, kind = 1016, 20, ">i8"


class Float8Array(BinaryArray):
    oid, element_oid, kind = 1022, 701, ">f8"


class TimestamptzArray(BinaryArray):
    """Elements are microseconds since 2000-01-01 UTC (`micros`)."""

    oid, element_oid, kind = 1185, 1184, ">i8"


def _register(array: type[BinaryArray]) -> None:
    class ArrayDumper(Dumper):
        format = Format.BINARY
        oid = array.oid

        def dump(self, obj: Any) -> Buffer:
            return bytes(obj)

    # Once, at import: every connection opened afterwards starts from the global adapters.
    psycopg.adapters.register_dumper(array, ArrayDumper)


for _array in (BoolArray, Int2Array, Int4Array, Int8Array, Float8Array, TimestamptzArray):
    _register(_array)
