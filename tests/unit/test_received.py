"""Cutting items' JSON text out of received documents, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.received import MAX_CHARS, ReceivedJson, element_texts, quarantine_as_received
from schemas.readings import ReadingIn, Rejection


def test_array_elements_keep_their_text_exactly() -> None:
    document = '[ {"a" : 1e1},\n\t"µg/m³" ,[1, [2]],null,-0.50 ]'.encode()
    assert element_texts(document) == ['{"a" : 1e1}', '"µg/m³"', "[1, [2]]", "null", "-0.50"]
    assert element_texts(b"[]") == []


def test_a_path_is_walked_as_dig_walks_it() -> None:
    document = b'{"meta": {"n": [1]}, "data": {"records": [ {"x": 1} , {"y": [2]} ]}}'
    assert element_texts(document, ("data", "records")) == ['{"x": 1}', '{"y": [2]}']
    nested = b'{"pages": [[1], [ 2 , 3 ]]}'
    assert element_texts(nested, ("pages", "1")) == ["2", "3"]
    assert element_texts(nested, ("pages", "-2")) == ["1"]
    assert element_texts(nested, ("pages", "2")) is None
    assert element_texts(document, ("data", "missing")) is None
    assert element_texts(document, ("meta", "n", "x")) is None


def test_a_repeated_key_is_the_last_one_as_in_the_parsed_document() -> None:
    document = b'{"readings": [1], "readings": [ 2, 3 ]}'
    assert element_texts(document, ("readings",)) == ["2", "3"]


def test_a_node_that_is_not_an_array_is_its_own_one_element() -> None:
    assert element_texts(b' {"time" :"10:00"}\n') == ['{"time" :"10:00"}']


@pytest.mark.parametrize(
    "document",
    [b'[{"a": 1}', b"[1 2]", b'{"readings" [1]}', b"\xff[1]", b""],
    ids=["truncated", "no-comma", "no-colon", "not-utf8", "empty"],
)
def test_what_cannot_be_cut_out_is_none(document: bytes) -> None:
    assert element_texts(document, ("readings",) if b"readings" in document else ()) is None


def test_a_huge_element_is_bounded_like_every_quarantined_payload() -> None:
    big = '"' + "x" * (MAX_CHARS + 10) + '"'
    assert element_texts(f"[{big}]".encode()) == [big[:MAX_CHARS]]


def test_items_map_to_their_documents_and_positions() -> None:
    received = ReceivedJson()
    received.add(b'[{"a":1}, {"b":2}, {"c":3}]', [0, 2])
    received.add(b"[9]", [])
    received.add(b'{"readings": [ "x" ]}', range(1), path=("readings",))
    received.add(b'{"single" : true}', range(1))
    received.add(b"[1, oops]", [0])
    assert len(received) == 5
    assert list(received) == ['{"a":1}', '{"c":3}', '"x"', '{"single" : true}', None]
    assert received[-4] == '{"c":3}'
    assert received[1:3] == ['{"c":3}', '"x"']
    with pytest.raises(IndexError):
        received[5]


class _Lookups(list[str | None]):
    """Texts that remember which items were looked up."""

    def __init__(self, texts: list[str | None]) -> None:
        super().__init__(texts)
        self.asked: list[int] = []

    def __getitem__(self, index: Any) -> Any:
        self.asked.append(index)
        return super().__getitem__(index)


def test_source_rejections_take_their_text_as_received_and_readings_are_not_looked_up() -> None:
    at = datetime(2026, 11, 26, 10, tzinfo=UTC)
    reading = ReadingIn(station="gz-a-huangpu", parameter="pm25", time=at, value=1.0, unit="x")
    items: list[ReadingIn | Rejection] = [
        reading,
        Rejection(0, "time: 'no' is not a time", "gz-a-huangpu", "pm25", '{"time":"no"}'),
        reading,
        Rejection(0, "missing unit", None, None, '{"value":10.0}'),
    ]
    received = _Lookups(['{"a": 1}', '{ "time" : "no" }', '{"b": 2}', None])
    quarantine_as_received(items, received)
    assert items == [
        reading,
        Rejection(0, "time: 'no' is not a time", "gz-a-huangpu", "pm25", '{ "time" : "no" }'),
        reading,
        Rejection(0, "missing unit", None, None, '{"value":10.0}'),  # no text: the source's own
    ]
    assert received.asked == [1, 3]

    clean: list[ReadingIn | Rejection] = [reading, reading]
    nothing = _Lookups([None, None])
    quarantine_as_received(clean, nothing)
    assert (clean, nothing.asked) == ([reading, reading], [])
