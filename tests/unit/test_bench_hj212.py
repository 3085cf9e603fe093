"""bench/hj212.py's schedule: the packets its generator sends, built before the clock starts."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

import pytest

from bench.hj212 import POLLUTANTS, _schedule, items_of, mn_of
from ingest.sources.hj212.client import Hj212Client
from ingest.sources.hj212.protocol import (
    Frame,
    FrameDecoder,
    data_items,
    parse_datatime,
    parse_segment,
)


def test_each_station_sends_valid_frames_at_its_interval_with_rising_qns() -> None:
    stations, rate, seconds = 4, 8.0, 2.0  # each station every 0.5 s, for 2 s
    clients = [Hj212Client(mn=mn_of(i), pw="123456", st="22") for i in range(stations)]
    schedule = _schedule(clients, stations=stations, rate=rate, seconds=seconds)

    assert len(schedule) == stations * 4
    assert [due for due, *_ in schedule] == sorted(due for due, *_ in schedule)
    for index in range(stations):
        mine = [entry for entry in schedule if entry[1] == index]
        assert [due for due, *_ in mine] == pytest.approx(
            [index / 8 + step / 2 for step in range(4)]
        )
        qns = [qn for _, _, qn, _, _ in mine]
        assert qns == sorted(set(qns))
        packets = []
        for _, _, qn, frame, readings in mine:
            (event,) = FrameDecoder().feed(frame)
            assert isinstance(event, Frame) and event.crc_ok()
            packet = parse_segment(event.segment)
            assert (packet.mn, packet.cn, packet.qn, packet.reply_wanted) == (
                mn_of(index),
                "2011",
                qn,
                True,
            )
            items = data_items(packet)
            assert [item.code for item in items] == [c for c, _, _ in POLLUTANTS[: items_of(index)]]
            assert readings == len(items)
            packets.append(packet)
        # One second of DataTime a packet, whatever the interval.
        times = [parse_datatime(p.cp.fields["DataTime"]) for p in packets]
        assert [b - a for a, b in pairwise(times)] == [timedelta(seconds=1)] * 3
