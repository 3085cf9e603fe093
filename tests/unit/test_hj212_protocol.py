"""HJ 212 codec: CRC, framing, parsing, data items, flags to QC, replies and requests."""

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.sources.hj212 import (
    CRC_MODES,
    MAX_FRAME,
    CrcMode,
    Frame,
    FrameDecoder,
    FrameEvent,
    Garbage,
    Packet,
    ProtocolError,
    build_frame,
    build_request,
    crc_hj212,
    crc_matches,
    crc_modbus,
    crc_modbus_swapped,
    data_items,
    detect_crc_mode,
    format_datatime,
    parse_datatime,
    parse_segment,
    qc_for_flag,
    reply_for,
)
from ingest.sources.hj212.client import Hj212Client

# A fixed +08:00 offset, independent of the codec's own zone: aware datetimes compare by instant.
CHINA = timezone(timedelta(hours=8))

STANDARD_1062 = (
    "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    "CP=&&RtdInterval=30&&1C80"
)
AIR_2051 = (
    "##0411QN=20220513162608370;ST=22;CN=2051;PW=123456;MN=JLYP01_AIR01_0001;Flag=4;"
    "CP=&&DataTime=20220513162600;a21004-Avg=4,a21004-Flag=N;a05024-Avg=63,a05024-Flag=N;"
    "a21026-Avg=6,a21026-Flag=N;a21005-Avg=0.427,a21005-Flag=N;a34004-Avg=14,a34004-Flag=N;"
    "a34002-Avg=31,a34002-Flag=N;a01007-Avg=1,a01007-Flag=N;a01008-Avg=11,a01008-Flag=N;"
    "a01001-Avg=17,a01001-Flag=N;a01002-Avg=85,a01002-Flag=N;a01006-Avg=95,a01006-Flag=N&&D641"
)
HOURLY_2061 = (
    "##0285QN=20190925181031464;ST=22;CN=2061;PW=BF470F88957588DE902D1A52;MN=Z13401000010301;"
    "Flag=5;CP=&&DataTime=20190924220000;a34006-Avg=2.69700,a34006-Flag=N;"
    "a34007-Avg=7.96600,a34007-Flag=N;a34048-Avg=3.30600,a34048-Flag=N;"
    "a34047-Avg=7.35700,a34047-Flag=N;a34049-Avg=10.66300,a34049-Flag=N&&C181"
)
REPLY_9014 = (
    "##0096QN=20190925181031464;ST=91;CN=9014;PW=BF470F88957588DE902D1A52;MN=Z13401000010301;"
    "Flag=4;CP=&&&&CE81"
)
REPLY_9013 = (
    "##0087QN=20160801085857223;ST=91;CN=9013;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
    "CP=&&&&2A80"
)
DOC_FRAMES = (STANDARD_1062, AIR_2051, HOURLY_2061, REPLY_9014, REPLY_9013)

WATER_2011_V2 = (
    "##0435QN=20210301111100112;ST=21;CN=2011;PW=123456;MN=ZLDSZ20210127;Flag=8;"
    "CP=&&DataTime=20210301111100;w01001-Rtd=8.33,w01001-Flag=N;w01009-Rtd=10.15,w01009-Flag=N;"
    "w01010-Rtd=9.7,w01010-Flag=N;w01014-Rtd=1425,w01014-Flag=N;w01003-Rtd=13.10,w01003-Flag=N;"
    "w21011-Rtd=0,w21011-Flag=N;w21001-Rtd=3.563168,w21001-Flag=N;"
    "w21003-Rtd=0.09055002,w21003-Flag=N;w01019-Rtd=4.102818,w01019-Flag=N;"
    "w01008-Rtd=0,w01008-Flag=N;w23002-Rtd=0,w23002-Flag=N&&7d00"
)
GAS_2011 = (
    "##0317QN=20191012133710130;ST=22;CN=2011;PW=123456;MN=Y80110010000010;Flag=4;"
    "CP=&&DataTime=20191012133710;a21005-Rtd=0.00,a21005-Flag=N;a21004-Rtd=0.00,a21004-Flag=N;"
    "a21007-Rtd=0.033,a21007-Flag=N;a21006-Rtd=0.036,a21006-Flag=N;"
    "a21001-Rtd=25.40,a21001-Flag=N;a21003-Rtd=101.94,a21003-Flag=N;"
    "a21002-Rtd=49.20,a21002-Flag=N&&cc01"
)
ANSWER_9014 = (
    "##0087QN=20201015123632010;ST=91;CN=9014;PW=123456;MN=410183160889201000212505;Flag=4;"
    "CP=&&&&f001"
)
SAMPLE_2011 = (
    "##0162QN=20231008123340461;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
    "CP=&&DataTime=20231008123340;w01008-SampleTime=20231008123340,w01008-Rtd=123.456&&F441"
)
ANSWER_9011 = (
    "##0094QN=20231008125115215;ST=22;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
    "CP=&&QnRtn=1&&CC01"
)
RESTART_2081 = (
    "##0137QN=20231008130452757;ST=22;CN=2081;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
    "CP=&&DataTime=20231008130452;RestartTime=20231007130452&&3AC0"
)
OLD_2011_MS = (
    "##0139ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;"
    "B01-Rtd=36.91;011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&4980"
)
OLD_2011 = (
    "##0234ST=101;CN=2011;PW=123456;MN=41050022000017;CP=&&DataTime=20200922110000;"
    "a34010-Rtd=2.017,a34010-Flag=N;a34009-Rtd=0.522,a34009-Flag=N;ua19004-Rtd=2.017,"
    "ua19004-Flag=N;ua19005-Rtd=0.522,ua19005-Flag=N;ua19003-Rtd=2.539,ua19003-Flag=N&&3300"
)
WATER_2061_V2 = (
    "##0561QN=20201030000000437;ST=21;CN=2061;PW=123456;MN=NM100000_0005;Flag=9;"
    "CP=&&DataTime=20201129210001;w01010-Avg=23.1,w01010-Flag=N;w01001-Avg=7.64,w01001-Flag=N;"
    "w01009-Avg=6.60,w01009-Flag=N;w01014-Avg=300,w01014-Flag=N;w01003-Avg=17,w01003-Flag=N;"
    "w01019-Avg=1.4,w01019-Flag=N;w21011-Avg=0.042,w21011-Flag=N;w21001-Avg=3.04,w21001-Flag=N;"
    "w21003-Avg=0.16,w21003-Flag=N;w20120-Avg=0.00011,w20120-Flag=N;"
    "w20119-Avg=0.00000,w20119-Flag=N;w23002-Avg=0.0005,w23002-Flag=N;"
    "w21016-Avg=0.002,w21016-Flag=N;w20115-Avg=0.00001,w20115-Flag=N;"
    "w20122-Avg=0.00005,w20122-Flag=N&&4C80"
)
FLAG_FIRST_2011 = (
    "##0344QN=20220928142812336;ST=22;CN=2011;PW=123456;MN=JSRCTD000YD107;Flag=5;"
    "CP=&&DataTime=20220928142812;l01001-Flag=N,l01001-Rtd=119.90287;"
    "l01002-Flag=N,l01002-Rtd=32.48505;a34002-Rtd=5,a34002-Flag=N;a34004-Rtd=4,a34004-Flag=N;"
    "a21026-Rtd=22.25,a21026-Flag=N;a21004-Rtd=22.7,a21004-Flag=N;a21005-Rtd=0.36,a21005-Flag=N;"
    "a05024-Rtd=8.82,a05024-Flag=N&&9241"
)
OLD_2051 = (
    "##0245ST=32;CN=2051;PW=123456;MN=12091200160055;CP=&&DataTime=20150430135700;"
    "B01-Min=895.13,B01-Avg=909.87,B01-Max=932.28,B01-Cou=54.59;011-Min=999.99,011-Avg=999.99,"
    "011-Max=999.99,011-Cou=54.59;060-Min=30.18,060-Avg=30.18,060-Max=30.18,060-Cou=1.65&&7640"
)
# Real frames sent by devices and platforms in public projects, in a fixed order.
FIELD_FRAMES = (
    STANDARD_1062,
    WATER_2011_V2,
    AIR_2051,
    HOURLY_2061,
    GAS_2011,
    ANSWER_9014,
    SAMPLE_2011,
    ANSWER_9011,
    RESTART_2081,
    OLD_2011_MS,
    OLD_2011,
    WATER_2061_V2,
    FLAG_FIRST_2011,
    OLD_2051,
)
ALL_FRAMES = DOC_FRAMES + FIELD_FRAMES


def wire(frame: str) -> bytes:
    """A documented frame as it travels: with CR LF."""
    return frame.encode() + b"\r\n"


def segment_of(frame: str) -> bytes:
    """The data segment of a documented frame."""
    return frame.encode()[6:-4]


def reference_crc(data: bytes) -> int:
    """HJ 212-2017's CRC, bit by bit, to check the table-driven implementation against."""
    register = 0xFFFF
    for byte in data:
        register = (register >> 8) ^ byte
        for _ in range(8):
            carry = register & 1
            register >>= 1
            if carry:
                register ^= 0xA001
    return register


def frames_of(events: list[FrameEvent]) -> list[Frame]:
    """The frames among decoder events."""
    return [event for event in events if isinstance(event, Frame)]


def garbage_of(events: list[FrameEvent]) -> list[Garbage]:
    """The skipped garbage among decoder events."""
    return [event for event in events if isinstance(event, Garbage)]


def exactly(message: str) -> str:
    """A `match=` pattern for exactly this error message."""
    return f"^{re.escape(message)}$"


def starting(message: str) -> str:
    """A `match=` pattern for an error message that starts with this text."""
    return f"^{re.escape(message)}"


def frame_of(frame: str) -> Frame:
    """The Frame event a documented frame must decode to."""
    return Frame(segment_of(frame), frame[-4:], wire(frame))


def test_crc_table_equals_bitwise_definition() -> None:
    samples = [bytes([b]) for b in range(256)]
    samples += [b"", bytes(range(256)) * 3, b"\xff\x00" * 50]
    samples += [segment_of(frame) for frame in ALL_FRAMES]
    assert [crc_hj212(s) for s in samples] == [reference_crc(s) for s in samples]


@pytest.mark.parametrize(
    ("data", "hj212", "modbus", "swapped"),
    [
        (b"123456789", 0x2F80, 0x4B37, 0x374B),
        (segment_of(STANDARD_1062), 0x1C80, 0x0759, 0x5907),
        (b"", 0xFFFF, 0xFFFF, 0xFFFF),
    ],
)
def test_crc_modes(data: bytes, hj212: int, modbus: int, swapped: int) -> None:
    assert (crc_hj212(data), crc_modbus(data), crc_modbus_swapped(data)) == (
        hj212,
        modbus,
        swapped,
    )


@pytest.mark.parametrize("frame", ALL_FRAMES)
def test_every_documented_frame_verifies(frame: str) -> None:
    segment, crc_text = segment_of(frame), frame[-4:]
    assert crc_matches(segment, crc_text)
    assert crc_matches(segment, crc_text.lower())
    assert crc_matches(segment, crc_text.upper())
    assert detect_crc_mode(segment, crc_text) == "hj212"
    assert int(crc_text, 16) == reference_crc(segment)


@pytest.mark.parametrize("frame", ALL_FRAMES)
def test_bad_crc_is_detectable(frame: str) -> None:
    segment, crc_text = segment_of(frame), frame[-4:]
    damaged = segment[:10] + bytes([segment[10] ^ 0x01]) + segment[11:]
    assert not crc_matches(damaged, crc_text)
    assert detect_crc_mode(damaged, crc_text) is None
    wrong = f"{int(crc_text, 16) ^ 0x0100:04X}"
    assert not frame_of(frame[:-4] + wrong).crc_ok("hj212")


@pytest.mark.parametrize("crc_text", ["", "1C8", "1C800", "1C8G", " 1C8", "0x1C", "1_C8"])
def test_crc_text_that_is_not_four_hex_digits_never_matches(crc_text: str) -> None:
    assert not crc_matches(segment_of(STANDARD_1062), crc_text)


@pytest.mark.parametrize("mode", ["hj212", "modbus", "modbus_swapped"])
def test_station_crc_modes_round_trip(mode: CrcMode) -> None:
    raw = build_frame(segment_of(AIR_2051), mode)
    [frame] = FrameDecoder().feed(raw)
    assert isinstance(frame, Frame)
    assert frame.crc_ok(mode)
    assert detect_crc_mode(frame.segment, frame.crc_text) == mode
    assert [other for other in CRC_MODES if frame.crc_ok(other)] == [mode]


def test_unknown_crc_mode_is_a_clear_error() -> None:
    with pytest.raises(ProtocolError, match=starting("unknown CRC mode 'crc32'")):
        build_frame(b"CN=9014;MN=X;CP=&&&&", "crc32")  # type: ignore[arg-type]


@pytest.mark.parametrize("frame", ALL_FRAMES)
def test_one_frame_in_one_read(frame: str) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(wire(frame)) == [frame_of(frame)]
    assert (decoder.pending, decoder.frames, decoder.garbage_bytes) == (0, 1, 0)


@pytest.mark.parametrize("frame", ALL_FRAMES)
def test_frame_split_across_two_reads_at_every_offset(frame: str) -> None:
    raw = wire(frame)
    for cut in range(len(raw) + 1):
        decoder = FrameDecoder()
        events = decoder.feed(raw[:cut])
        assert decoder.pending == (cut if cut < len(raw) else 0)
        events += decoder.feed(raw[cut:])
        assert events == [frame_of(frame)], cut
        assert decoder.pending == 0


def test_every_frame_in_one_read_and_byte_by_byte() -> None:
    stream = b"".join(wire(frame) for frame in ALL_FRAMES)
    expected = [frame_of(frame) for frame in ALL_FRAMES]
    assert FrameDecoder().feed(stream) == expected
    decoder = FrameDecoder()
    events = [event for i in range(len(stream)) for event in decoder.feed(stream[i : i + 1])]
    assert events == expected
    assert (decoder.frames, decoder.garbage_bytes, decoder.pending) == (len(ALL_FRAMES), 0, 0)


def test_two_frames_in_one_read() -> None:
    events = FrameDecoder().feed(wire(AIR_2051) + wire(HOURLY_2061))
    assert events == [frame_of(AIR_2051), frame_of(HOURLY_2061)]


def test_garbage_before_between_and_after_frames() -> None:
    decoder = FrameDecoder()
    stream = b"\x00AT+OK\r\n" + wire(AIR_2051) + b"#x\r\n# #!" + wire(HOURLY_2061) + b"tail#"
    assert decoder.feed(stream) == [
        Garbage(b"\x00AT+OK\r\n", "noise"),
        frame_of(AIR_2051),
        Garbage(b"#x\r\n# #!", "noise"),
        frame_of(HOURLY_2061),
        Garbage(b"tail", "noise"),
    ]
    # The trailing '#' is held back: it may start the next frame.
    assert decoder.pending == 1
    assert decoder.feed(wire(ANSWER_9014)[1:]) == [frame_of(ANSWER_9014)]
    assert (decoder.frames, decoder.garbage_bytes, decoder.pending) == (3, 20, 0)


@pytest.mark.parametrize(
    ("junk", "garbage"),
    [
        (b"##ab12", [Garbage(b"##ab12", "bad_header", "length field b'ab12'")]),
        (b"##12", [Garbage(b"##12", "bad_header", "length field b'12##'")]),
        (b"###", [Garbage(b"#", "bad_header", "length field b'###0'"),
                  Garbage(b"#", "bad_header", "length field b'##00'"),
                  Garbage(b"#", "bad_header", "length field b'#008'")]),
    ],
)  # fmt: skip
def test_bad_length_field_resynchronises(junk: bytes, garbage: list[Garbage]) -> None:
    events = FrameDecoder().feed(junk + wire(ANSWER_9014))
    assert events == [*garbage, frame_of(ANSWER_9014)]


@pytest.mark.parametrize("truncated", [STANDARD_1062, AIR_2051, WATER_2061_V2, ANSWER_9014])
def test_truncated_frame_never_swallows_the_good_frames_behind_it(truncated: str) -> None:
    good = (ANSWER_9014, HOURLY_2061, SAMPLE_2011)
    tail = b"".join(wire(frame) for frame in good)
    raw = wire(truncated)
    for cut in range(1, len(raw) - 1):
        for reads in ([raw[:cut] + tail], [raw[:cut], tail]):
            decoder = FrameDecoder()
            events = [event for data in reads for event in decoder.feed(data)]
            assert frames_of(events) == [frame_of(frame) for frame in good], cut
            assert b"".join(g.raw for g in garbage_of(events)) == raw[:cut], cut
            assert decoder.pending == 0


def test_random_mix_of_frames_cut_frames_and_noise_in_random_reads() -> None:
    rng = random.Random(212)
    frames = [wire(frame) for frame in FIELD_FRAMES]
    for _ in range(500):
        parts: list[bytes] = []
        good: list[bytes] = []
        for _ in range(rng.randint(1, 8)):
            kind, frame = rng.random(), rng.choice(frames)
            if kind < 0.5:
                parts.append(frame)
                good.append(frame)
            elif kind < 0.8:
                parts.append(frame[: rng.randint(1, len(frame) - 1)])
            else:
                parts.append(bytes(rng.choices(b"abc#\r\n0123", k=rng.randint(1, 20))))
        parts.append(frames[0])
        good.append(frames[0])
        stream = b"".join(parts)
        decoder = FrameDecoder()
        events: list[FrameEvent] = []
        position = 0
        while position < len(stream):
            read = rng.randint(1, 600)
            events += decoder.feed(stream[position : position + read])
            position += read
        assert [frame.raw for frame in frames_of(events)] == good
        assert b"".join(event.raw for event in events) == stream
        assert decoder.pending == 0


def test_truncated_long_frame_reports_where_its_tail_went() -> None:
    cut = wire(WATER_2061_V2)[:100]
    assert FrameDecoder().feed(cut + wire(ANSWER_9014)) == [
        Garbage(cut, "bad_tail", "declared length 561 but CR LF after 187 bytes"),
        frame_of(ANSWER_9014),
    ]


def test_truncated_frame_waits_only_until_a_later_frame_completes() -> None:
    decoder = FrameDecoder()
    cut = wire(WATER_2061_V2)[:300]
    assert decoder.feed(cut) == []
    assert decoder.feed(wire(ANSWER_9014)[:-1]) == []
    assert decoder.pending == 300 + len(wire(ANSWER_9014)) - 1
    assert decoder.feed(b"\n") == [
        Garbage(cut, "bad_tail", "declared length 561 but CR LF after 387 bytes"),
        frame_of(ANSWER_9014),
    ]


def test_truncated_frame_whose_declared_end_is_the_end_of_a_later_frame() -> None:
    good = wire(ANSWER_9014)
    prefix = b"QN=20201015123632010;ST=22;CN=2011;PW=123456;MN=X;CP=&&DataTime=2020"
    # Declared length chosen so that the truncated frame would end exactly where `good` ends.
    stray = b"##0005a##b;"
    truncated = b"##%04d" % (len(prefix) + len(stray) + len(good) - 6) + prefix
    assert FrameDecoder().feed(truncated + stray + good) == [
        Garbage(truncated + stray, "nested", "a frame inside it ends at its end"),
        frame_of(ANSWER_9014),
    ]


def test_frame_may_contain_hashes_that_do_not_start_a_frame() -> None:
    raw = build_frame(b"ST=22;CN=9015;PW=a##0001b;MN=X##;Flag=5;CP=&&&&")
    [frame] = FrameDecoder().feed(raw)
    assert isinstance(frame, Frame)
    assert parse_segment(frame.segment).pw == "a##0001b"


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (wire(ANSWER_9014).replace(b"##0087", b"##0085"), "declared length 85, then b'&&f001'"),
        (
            wire(ANSWER_9014).replace(b"##0087", b"##0089"),
            "declared length 89 but CR LF after 87 bytes",
        ),
        (wire(ANSWER_9014).replace(b"f001", b"f0g1"), "CRC field b'f0g1'"),
        (wire(ANSWER_9014)[:-2] + b"\n\n", "declared length 87, then b'f001\\n\\n'"),
    ],
)
def test_malformed_tail_is_skipped_up_to_the_next_frame(raw: bytes, detail: str) -> None:
    assert FrameDecoder().feed(raw + wire(AIR_2051)) == [
        Garbage(raw, "bad_tail", detail),
        frame_of(AIR_2051),
    ]


def test_frame_without_cr_lf_is_reported_when_the_next_bytes_arrive() -> None:
    decoder = FrameDecoder()
    raw = wire(ANSWER_9014)[:-2]
    assert decoder.feed(raw) == []
    assert decoder.feed(wire(AIR_2051)) == [
        Garbage(raw, "bad_tail", "declared length 87, then b'f001##'"),
        frame_of(AIR_2051),
    ]


def test_longest_frame_9999_bytes() -> None:
    head = "QN=20220513162608370;ST=22;CN=2011;PW=1;MN=LONG;Flag=4;CP=&&DataTime=20220513162600"
    body = "".join(f";a{n:05d}-Rtd={n % 97}.5,a{n:05d}-Flag=N" for n in range(250))
    padding = 9999 - len(head) - len(body) - 2 - len(";z-Info=")
    segment = f"{head}{body};z-Info={'x' * padding}&&"
    raw = build_frame(segment)
    assert (len(segment), raw[:6], len(raw)) == (9999, b"##9999", MAX_FRAME)
    decoder = FrameDecoder()
    events: list[FrameEvent] = []
    for start in range(0, len(raw), 1000):
        events += decoder.feed(raw[start : start + 1000])
        assert decoder.pending < MAX_FRAME
    [frame] = events
    assert isinstance(frame, Frame)
    assert frame.crc_ok()
    items = data_items(parse_segment(frame.segment))
    assert len(items) == 251
    assert (items[249].code, items[249].value, items[249].flag) == ("a00249", 55.5, "N")
    assert (items[250].code, items[250].value, items[250].error) == ("z", None, "no Rtd value")
    with pytest.raises(ProtocolError, match=exactly("data segment of 10000 bytes exceeds 9999")):
        build_frame(segment[:-2] + "x&&")


def test_buffer_stays_bounded_without_cr_lf() -> None:
    decoder = FrameDecoder()
    events: list[FrameEvent] = []
    junk = b"##9999" + b"x" * 30000
    for start in range(0, len(junk), 700):
        events += decoder.feed(junk[start : start + 700])
        assert decoder.pending < MAX_FRAME
    events += decoder.feed(wire(ANSWER_9014))
    assert frames_of(events) == [frame_of(ANSWER_9014)]
    assert b"".join(g.raw for g in garbage_of(events)) == junk
    assert (decoder.pending, decoder.garbage_bytes) == (0, len(junk))


def test_stream_full_of_headers_yields_the_one_real_frame() -> None:
    # 100 000 candidate headers: the decoder must reuse its CR LF search to stay linear.
    junk = b"##9999" * 100_000 + b"\r\n"
    decoder = FrameDecoder()
    events = decoder.feed(junk + wire(ANSWER_9014))
    assert frames_of(events) == [frame_of(ANSWER_9014)]
    # Each candidate is skipped up to the next `##`; the last one takes the CR LF with it.
    assert [g.raw for g in garbage_of(events)] == [b"##9999"] * 99_999 + [b"##9999\r\n"]
    assert decoder.garbage_bytes == len(junk)


@dataclass(frozen=True)
class Case:
    """What one documented frame must parse to, yield and be answered with."""

    frame: str
    cn: str
    st: str | None
    mn: str
    qn: str | None
    flag: int | None
    version: int
    reply_wanted: bool
    fields: dict[str, str]
    period_s: int | None = None
    time: datetime | None = None
    items: tuple[tuple[str, float, str | None], ...] = ()
    extras: dict[str, dict[str, str]] = field(default_factory=dict)
    reply: str | None = None


CASES = [
    Case(
        STANDARD_1062,
        "1062",
        "32",
        "010000A8900016F000169DC0",
        "20160801085857223",
        5,
        1,
        True,
        {"RtdInterval": "30"},
    ),
    Case(
        WATER_2011_V2,
        "2011",
        "21",
        "ZLDSZ20210127",
        "20210301111100112",
        8,
        2,
        False,
        {"DataTime": "20210301111100"},
        0,
        datetime(2021, 3, 1, 11, 11, tzinfo=CHINA),
        (
            ("w01001", 8.33, "N"),
            ("w01009", 10.15, "N"),
            ("w01010", 9.7, "N"),
            ("w01014", 1425.0, "N"),
            ("w01003", 13.1, "N"),
            ("w21011", 0.0, "N"),
            ("w21001", 3.563168, "N"),
            ("w21003", 0.09055002, "N"),
            ("w01019", 4.102818, "N"),
            ("w01008", 0.0, "N"),
            ("w23002", 0.0, "N"),
        ),
    ),
    Case(
        AIR_2051,
        "2051",
        "22",
        "JLYP01_AIR01_0001",
        "20220513162608370",
        4,
        1,
        False,
        {"DataTime": "20220513162600"},
        60,
        datetime(2022, 5, 13, 16, 26, tzinfo=CHINA),
        (
            ("a21004", 4.0, "N"),
            ("a05024", 63.0, "N"),
            ("a21026", 6.0, "N"),
            ("a21005", 0.427, "N"),
            ("a34004", 14.0, "N"),
            ("a34002", 31.0, "N"),
            ("a01007", 1.0, "N"),
            ("a01008", 11.0, "N"),
            ("a01001", 17.0, "N"),
            ("a01002", 85.0, "N"),
            ("a01006", 95.0, "N"),
        ),
    ),
    Case(
        HOURLY_2061,
        "2061",
        "22",
        "Z13401000010301",
        "20190925181031464",
        5,
        1,
        True,
        {"DataTime": "20190924220000"},
        3600,
        datetime(2019, 9, 24, 22, tzinfo=CHINA),
        (
            ("a34006", 2.697, "N"),
            ("a34007", 7.966, "N"),
            ("a34048", 3.306, "N"),
            ("a34047", 7.357, "N"),
            ("a34049", 10.663, "N"),
        ),
        reply=REPLY_9014,
    ),
    Case(
        GAS_2011,
        "2011",
        "22",
        "Y80110010000010",
        "20191012133710130",
        4,
        1,
        False,
        {"DataTime": "20191012133710"},
        0,
        datetime(2019, 10, 12, 13, 37, 10, tzinfo=CHINA),
        (
            ("a21005", 0.0, "N"),
            ("a21004", 0.0, "N"),
            ("a21007", 0.033, "N"),
            ("a21006", 0.036, "N"),
            ("a21001", 25.4, "N"),
            ("a21003", 101.94, "N"),
            ("a21002", 49.2, "N"),
        ),
    ),
    Case(
        ANSWER_9014, "9014", "91", "410183160889201000212505", "20201015123632010", 4, 1, False, {}
    ),
    Case(
        SAMPLE_2011,
        "2011",
        "22",
        "010000A8900016F000169DC0",
        "20231008123340461",
        5,
        1,
        True,
        {"DataTime": "20231008123340"},
        0,
        datetime(2023, 10, 8, 12, 33, 40, tzinfo=CHINA),
        (("w01008", 123.456, None),),
        {"w01008": {"SampleTime": "20231008123340"}},
        reply="##0087QN=20231008123340461;ST=91;CN=9014;PW=123456;"
        "MN=010000A8900016F000169DC0;Flag=4;CP=&&&&0F00",
    ),
    Case(
        ANSWER_9011,
        "9011",
        "22",
        "010000A8900016F000169DC0",
        "20231008125115215",
        4,
        1,
        False,
        {"QnRtn": "1"},
    ),
    Case(
        RESTART_2081,
        "2081",
        "22",
        "010000A8900016F000169DC0",
        "20231008130452757",
        5,
        1,
        True,
        {"DataTime": "20231008130452", "RestartTime": "20231007130452"},
        reply="##0087QN=20231008130452757;ST=91;CN=9014;PW=123456;"
        "MN=010000A8900016F000169DC0;Flag=4;CP=&&&&47C0",
    ),
    Case(
        OLD_2011_MS,
        "2011",
        "32",
        "LD130133000015",
        None,
        None,
        0,
        False,
        {"DataTime": "20160824003817000"},
        0,
        datetime(2016, 8, 24, 0, 38, 17, tzinfo=CHINA),
        (("B01", 36.91, None), ("011", 231.0, "N"), ("060", 1.803, "N")),
    ),
    Case(
        OLD_2011,
        "2011",
        "101",
        "41050022000017",
        None,
        None,
        0,
        False,
        {"DataTime": "20200922110000"},
        0,
        datetime(2020, 9, 22, 11, tzinfo=CHINA),
        (
            ("a34010", 2.017, "N"),
            ("a34009", 0.522, "N"),
            ("ua19004", 2.017, "N"),
            ("ua19005", 0.522, "N"),
            ("ua19003", 2.539, "N"),
        ),
    ),
    # Flag=9: version 2, reply wanted; DataTime 21:00:01 is floored to the hour.
    Case(
        WATER_2061_V2,
        "2061",
        "21",
        "NM100000_0005",
        "20201030000000437",
        9,
        2,
        True,
        {"DataTime": "20201129210001"},
        3600,
        datetime(2020, 11, 29, 21, tzinfo=CHINA),
        (
            ("w01010", 23.1, "N"),
            ("w01001", 7.64, "N"),
            ("w01009", 6.6, "N"),
            ("w01014", 300.0, "N"),
            ("w01003", 17.0, "N"),
            ("w01019", 1.4, "N"),
            ("w21011", 0.042, "N"),
            ("w21001", 3.04, "N"),
            ("w21003", 0.16, "N"),
            ("w20120", 0.00011, "N"),
            ("w20119", 0.0, "N"),
            ("w23002", 0.0005, "N"),
            ("w21016", 0.002, "N"),
            ("w20115", 0.00001, "N"),
            ("w20122", 0.00005, "N"),
        ),
        reply="##0076QN=20201030000000437;ST=91;CN=9014;PW=123456;MN=NM100000_0005;Flag=8;"
        "CP=&&&&71C0",
    ),
    Case(
        FLAG_FIRST_2011,
        "2011",
        "22",
        "JSRCTD000YD107",
        "20220928142812336",
        5,
        1,
        True,
        {"DataTime": "20220928142812"},
        0,
        datetime(2022, 9, 28, 14, 28, 12, tzinfo=CHINA),
        (
            ("l01001", 119.90287, "N"),
            ("l01002", 32.48505, "N"),
            ("a34002", 5.0, "N"),
            ("a34004", 4.0, "N"),
            ("a21026", 22.25, "N"),
            ("a21004", 22.7, "N"),
            ("a21005", 0.36, "N"),
            ("a05024", 8.82, "N"),
        ),
        reply="##0077QN=20220928142812336;ST=91;CN=9014;PW=123456;MN=JSRCTD000YD107;Flag=4;"
        "CP=&&&&2080",
    ),
    Case(
        OLD_2051,
        "2051",
        "32",
        "12091200160055",
        None,
        None,
        0,
        False,
        {"DataTime": "20150430135700"},
        60,
        datetime(2015, 4, 30, 13, 57, tzinfo=CHINA),
        (("B01", 909.87, None), ("011", 999.99, None), ("060", 30.18, None)),
        {
            "B01": {"Min": "895.13", "Max": "932.28", "Cou": "54.59"},
            "011": {"Min": "999.99", "Max": "999.99", "Cou": "54.59"},
            "060": {"Min": "30.18", "Max": "30.18", "Cou": "1.65"},
        },
    ),
    Case(REPLY_9014, "9014", "91", "Z13401000010301", "20190925181031464", 4, 1, False, {}),
    Case(
        REPLY_9013, "9013", "91", "010000A8900016F000169DC0", "20160801085857223", 4, 1, False, {}
    ),
]


def test_cases_cover_every_documented_frame() -> None:
    assert {case.frame for case in CASES} == set(ALL_FRAMES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.frame[6:40])
def test_parse_header_and_cp(case: Case) -> None:
    packet = parse_segment(segment_of(case.frame))
    assert (packet.cn, packet.st, packet.mn, packet.qn) == (case.cn, case.st, case.mn, case.qn)
    assert (packet.flag, packet.version, packet.reply_wanted) == (
        case.flag,
        case.version,
        case.reply_wanted,
    )
    assert (packet.split, packet.pnum, packet.pno, packet.extra) == (False, None, None, {})
    assert packet.cp.fields == case.fields
    assert list(packet.cp.codes) == [code for code, _, _ in case.items]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.frame[6:40])
def test_data_items(case: Case) -> None:
    items = data_items(parse_segment(segment_of(case.frame)))
    assert [(item.code, item.value, item.flag) for item in items] == list(case.items)
    assert {item.period_s for item in items} == ({case.period_s} if case.items else set())
    assert {item.time for item in items} == ({case.time} if case.items else set())
    assert {item.code: item.extras for item in items if item.extras} == case.extras
    assert [item.error for item in items] == [None] * len(case.items)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.frame[6:40])
def test_reply_exactly_where_due(case: Case) -> None:
    reply = reply_for(parse_segment(segment_of(case.frame)))
    assert reply == (wire(case.reply) if case.reply else None)
    if reply is not None:
        assert int(reply[-6:-2], 16) == reference_crc(reply[6:-6])


def test_flag_before_value_groups_by_code() -> None:
    packet = parse_segment(segment_of(FLAG_FIRST_2011))
    assert packet.cp.codes["l01001"] == {"Flag": "N", "Rtd": "119.90287"}
    assert list(packet.cp.codes["l01001"]) == ["Flag", "Rtd"]


def test_header_in_any_order_any_case_with_unknown_fields() -> None:
    packet = parse_segment(b"mn=X1;flag=7;PNO=2;Foo=bar;cn=2061;PNUM=3;st=21;CP=&&DataTime=1&&")
    assert (packet.cn, packet.mn, packet.st, packet.qn, packet.pw) == (
        "2061",
        "X1",
        "21",
        None,
        None,
    )
    assert (packet.flag, packet.version, packet.reply_wanted, packet.split) == (7, 1, True, True)
    assert (packet.pnum, packet.pno, packet.extra) == (3, 2, {"Foo": "bar"})


def test_cp_marker_inside_a_value_is_not_the_cp() -> None:
    packet = parse_segment(b"ST=22;CN=9015;PW=aCP=&&b;MN=X;Flag=5;CP=&&&&")
    assert (packet.pw, packet.cp.fields, packet.cp.codes) == ("aCP=&&b", {}, {})


def test_gbk_text_in_a_value() -> None:
    assert parse_segment(b"ST=22;CN=9015;MN=\xb2\xe2\xca\xd4;CP=&&&&").mn == "测试"


def test_same_key_twice_with_the_same_value_is_accepted() -> None:
    packet = parse_segment(b"CN=2011;MN=X;CP=&&DataTime=1;a01-Rtd=1;a01-Rtd=1,a01-Flag=N;&&")
    assert packet.cp.codes == {"a01": {"Rtd": "1", "Flag": "N"}}


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        (b"QN=1;ST=22;CN=2011;MN=X;Flag=4", "data segment has no CP=&&…&& field"),
        (
            b"ST=22;CN=2011;MN=X;CP=&&DataTime=1",
            "CP=&& is not closed by a final && at the end of the data segment",
        ),
        (
            b"ST=22;CN=2011;MN=X;CP=&&&",
            "CP=&& is not closed by a final && at the end of the data segment",
        ),
        (b"ST=22;CN=2011;CP=&&&&", "data segment has no MN"),
        (b"ST=22;MN=X;CP=&&&&", "data segment has no CN"),
        (b"ST=22;CN=2011;MN=;CP=&&&&", "data segment has no MN"),
        (b"ST=22;CN=2011;MN;CP=&&&&", "header field 'MN' has no '='"),
        (b"ST=22;CN=2011;CN=2051;MN=X;CP=&&&&", "header field CN appears twice"),
        (b"CN=2011;MN=X;Flag=A;CP=&&&&", "Flag='A' is not a non-negative integer"),
        (b"CN=2011;MN=X;Flag=-1;CP=&&&&", "Flag='-1' is not a non-negative integer"),
        (b"CN=2011;MN=X;Flag=256;CP=&&&&", "Flag=256 does not fit in one byte"),
        (b"CN=2011;MN=X;PNUM=x;CP=&&&&", "PNUM='x' is not a non-negative integer"),
        (b"CN=2011;MN=X;CP=&&DataTime&&", "CP entry 'DataTime' is not key=value"),
        (b"CN=2011;MN=X;CP=&&DataTime=1;=5&&", "CP entry '=5' is not key=value"),
        (b"CN=2011;MN=X;CP=&&a01-Rtd=1;a01-Rtd=2&&", "CP key a01-Rtd given twice: '1' and '2'"),
        (b"CN=2011;MN=X;CP=&&-Rtd=1&&", "CP key '-Rtd' needs a code and a field around '-'"),
        (b"CN=2011;MN=X;CP=&&a01-=1&&", "CP key 'a01-' needs a code and a field around '-'"),
    ],
)
def test_malformed_segments_give_clear_errors(segment: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=exactly(message)):
        parse_segment(segment)


def test_bytes_neither_utf8_nor_gbk_are_kept_and_echoed_in_the_reply() -> None:
    segment = (
        b"QN=20261126120000001;ST=22;CN=2011;PW=1\x00;MN=A\xff\xfe;Flag=5;CP=&&a01-Rtd=1\xff&&"
    )
    packet = parse_segment(segment)
    assert (packet.pw, packet.mn) == ("1\x00", "A\udcff\udcfe")
    assert packet.cp.codes == {"a01": {"Rtd": "1\udcff"}}
    assert reply_for(packet) == build_frame(
        b"QN=20261126120000001;ST=91;CN=9014;PW=1\x00;MN=A\xff\xfe;Flag=4;CP=&&&&"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20220513162600", datetime(2022, 5, 13, 16, 26, tzinfo=CHINA)),
        ("20160824003817123", datetime(2016, 8, 24, 0, 38, 17, 123000, tzinfo=CHINA)),
        ("20231231235959999", datetime(2023, 12, 31, 23, 59, 59, 999000, tzinfo=CHINA)),
    ],
)
def test_parse_datatime(text: str, expected: datetime) -> None:
    parsed = parse_datatime(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2022051316260", "time '2022051316260' is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz"),
        ("202205131626000", "time '202205131626000' is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz"),
        ("2022-05-13T16:2", "time '2022-05-13T16:2' is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz"),
        (
            "２０２２０５１３１６２６００",
            "time '２０２２０５１３１６２６００' is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz",
        ),
        ("", "time '' is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz"),
        ("20221313000000", "time '20221313000000' is not a valid date and time: "),
        ("20220230000000", "time '20220230000000' is not a valid date and time: "),
        ("20220513246000", "time '20220513246000' is not a valid date and time: "),
    ],
)
def test_bad_datatime_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=starting(message)):
        parse_datatime(text)


def test_format_datatime() -> None:
    moment = datetime(2024, 5, 1, 2, 3, 4, 567890, tzinfo=UTC)
    assert format_datatime(moment) == "20240501100304"
    assert format_datatime(moment, ms=True) == "20240501100304567"
    assert parse_datatime(format_datatime(moment, ms=True)) == moment.replace(microsecond=567000)
    with pytest.raises(
        ProtocolError, match=exactly("HJ 212 times need an aware datetime; got a naive one")
    ):
        format_datatime(datetime(2024, 5, 1))


def data_packet(cn: str, cp: str) -> Packet:
    """A minimal upload with the given CN and CP content."""
    return parse_segment(f"QN=20220513162608370;ST=22;CN={cn};MN=X;Flag=4;CP=&&{cp}&&".encode())


@pytest.mark.parametrize(
    ("cn", "data_time", "period_s", "time", "period_end"),
    [
        (
            "2011",
            "20220513162659123",
            0,
            datetime(2022, 5, 13, 16, 26, 59, 123000, tzinfo=CHINA),
            datetime(2022, 5, 13, 16, 26, 59, 123000, tzinfo=CHINA),
        ),
        (
            "2051",
            "20220513162659",
            60,
            datetime(2022, 5, 13, 16, 26, tzinfo=CHINA),
            datetime(2022, 5, 13, 16, 27, tzinfo=CHINA),
        ),
        (
            "2061",
            "20201129210001",
            3600,
            datetime(2020, 11, 29, 21, tzinfo=CHINA),
            datetime(2020, 11, 29, 22, tzinfo=CHINA),
        ),
        (
            "2061",
            "20220513235959",
            3600,
            datetime(2022, 5, 13, 23, tzinfo=CHINA),
            datetime(2022, 5, 14, 0, tzinfo=CHINA),
        ),
        (
            "2031",
            "20220513162659",
            86400,
            datetime(2022, 5, 13, tzinfo=CHINA),
            datetime(2022, 5, 14, tzinfo=CHINA),
        ),
    ],
)
def test_period_data_time_is_floored_to_the_period_start(
    cn: str, data_time: str, period_s: int, time: datetime, period_end: datetime
) -> None:
    suffix = "Rtd" if cn == "2011" else "Avg"
    [item] = data_items(data_packet(cn, f"DataTime={data_time};a34004-{suffix}=14"))
    assert (item.period_s, item.time, item.period_end, item.value) == (
        period_s,
        time,
        period_end,
        14.0,
    )


def test_values_that_are_not_numbers_are_kept_with_an_error() -> None:
    cp = (
        "DataTime=20220513162600;a01-Rtd=abc,a01-Flag=N;a02-Rtd=nan;a03-Rtd=1_0;a04-Rtd=;"
        "a05-Flag=D;a06-Rtd=-1.5e2,a06-Flag=T;a07-Rtd=inf"
    )
    items = data_items(data_packet("2011", cp))
    assert [(item.code, item.value, item.flag, item.error) for item in items] == [
        ("a01", None, "N", "Rtd value 'abc' is not a number"),
        ("a02", None, None, "Rtd value 'nan' is not a finite number"),
        ("a03", None, None, "Rtd value '1_0' is not a finite number"),
        ("a04", None, None, "Rtd value '' is not a number"),
        ("a05", None, "D", "no Rtd value"),
        ("a06", -150.0, "T", None),
        ("a07", None, None, "Rtd value 'inf' is not a finite number"),
    ]


def test_real_time_sample_time_is_used_and_period_sample_time_kept() -> None:
    cp = (
        "DataTime=20220513162600;a01-SampleTime=20220513162512,a01-Rtd=1;"
        "a02-SampleTime=2022,a02-Rtd=2"
    )
    first, second = data_items(data_packet("2011", cp))
    assert (first.time, first.error) == (datetime(2022, 5, 13, 16, 25, 12, tzinfo=CHINA), None)
    assert (second.time, second.value, second.error) == (
        datetime(2022, 5, 13, 16, 26, tzinfo=CHINA),
        2.0,
        "SampleTime: time '2022' is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz",
    )
    hourly_cp = "DataTime=20220513160000;a01-SampleTime=20220513162512,a01-Avg=1"
    [hourly] = data_items(data_packet("2061", hourly_cp))
    assert (hourly.time, hourly.extras) == (
        datetime(2022, 5, 13, 16, tzinfo=CHINA),
        {"SampleTime": "20220513162512"},
    )


def test_data_packet_without_data_time_is_a_clear_error() -> None:
    with pytest.raises(ProtocolError, match=exactly("CN=2051 packet from MN X has no DataTime")):
        data_items(data_packet("2051", "a01-Avg=1"))
    with pytest.raises(ProtocolError, match=starting("time '2022' is not YYYYMMDDhhmmss")):
        data_items(data_packet("2051", "DataTime=2022;a01-Avg=1"))


def test_data_items_of_other_commands_are_empty() -> None:
    assert data_items(data_packet("2081", "DataTime=20220513162600;a01-Avg=1")) == []
    assert data_items(data_packet("9014", "")) == []


@pytest.mark.parametrize(
    ("flag", "version", "qc"),
    [
        (None, 1, "valid"),
        ("", 1, "valid"),
        (None, 0, "valid"),
        ("N", 1, "valid"),
        ("n", 1, "valid"),
        ("F", 1, "stopped"),
        ("M", 1, "maintenance"),
        ("S", 1, "manual"),
        ("D", 1, "fault"),
        ("C", 1, "calibration"),
        ("T", 1, "over_range"),
        ("B", 1, "comm_fault"),
        ("N", 2, "valid"),
        ("F", 2, "stopped"),
        ("M", 2, "maintenance"),
        ("S", 2, "manual"),
        ("D", 2, "fault"),
        ("C", 2, "calibration"),
        ("T", 2, "over_range"),
        ("B", 2, "comm_fault"),
        ("N", 0, "valid"),
        ("P", 0, "fault"),
        ("F", 0, "stopped"),
        ("C", 0, "calibration"),
        ("M", 0, "maintenance"),
        ("T", 0, "over_range"),
        ("D", 0, "fault"),
        ("S", 0, "manual"),
        ("P", 1, "invalid"),
        ("B", 0, "invalid"),
        ("X", 1, "invalid"),
        ("X", 0, "invalid"),
        ("NN", 1, "invalid"),
    ],
)
def test_flag_to_qc(flag: str | None, version: int, qc: str) -> None:
    assert qc_for_flag(flag, version) == qc


def test_time_calibration_request_gets_the_documented_9013() -> None:
    request = (
        b"QN=20160801085857223;ST=32;CN=1013;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&&&"
    )
    assert reply_for(parse_segment(request)) == wire(REPLY_9013)


@pytest.mark.parametrize(
    ("segment", "reply"),
    [
        (
            b"QN=20240501100000000;ST=22;CN=9015;PW=1;MN=X;Flag=5;CP=&&&&",
            b"QN=20240501100000000;ST=91;CN=9013;PW=1;MN=X;Flag=4;CP=&&&&",
        ),
        (
            b"QN=20240501100000000;ST=22;CN=9021;PW=1;MN=X;Flag=9;CP=&&&&",
            b"QN=20240501100000000;ST=91;CN=9013;PW=1;MN=X;Flag=8;CP=&&&&",
        ),
        (
            b"QN=20240501100000000;ST=22;CN=2031;PW=1;MN=X;Flag=5;CP=&&DataTime=20240430000000&&",
            b"QN=20240501100000000;ST=91;CN=9014;PW=1;MN=X;Flag=4;CP=&&&&",
        ),
        (
            b"QN=20240501100000000;ST=22;CN=2051;PW=1;MN=X;Flag=7;PNUM=2;PNO=1;CP=&&&&",
            b"QN=20240501100000000;ST=91;CN=9014;PW=1;MN=X;Flag=4;CP=&&&&",
        ),
        # 2005-style: no QN to echo (none is invented), version 0, no PW.
        (
            b"ST=32;CN=2011;MN=X;Flag=1;CP=&&DataTime=20240430000000&&",
            b"ST=91;CN=9014;MN=X;Flag=0;CP=&&&&",
        ),
        (b"QN=1;ST=22;CN=2011;PW=1;MN=X;Flag=4;CP=&&&&", None),
        (b"QN=1;ST=22;CN=2011;PW=1;MN=X;CP=&&&&", None),
        (b"QN=1;ST=22;CN=9015;PW=1;MN=X;Flag=4;CP=&&&&", None),
        (b"QN=1;ST=22;CN=1011;PW=1;MN=X;Flag=5;CP=&&&&", None),
        (b"QN=1;ST=22;CN=1012;PW=1;MN=X;Flag=5;CP=&&SystemTime=20240501100000&&", None),
        (b"QN=1;ST=22;CN=9011;PW=1;MN=X;Flag=5;CP=&&QnRtn=1&&", None),
        (b"QN=1;ST=22;CN=9012;PW=1;MN=X;Flag=5;CP=&&ExeRtn=1&&", None),
        (b"QN=1;ST=91;CN=9013;PW=1;MN=X;Flag=5;CP=&&&&", None),
        (b"QN=1;ST=91;CN=9014;PW=1;MN=X;Flag=5;CP=&&&&", None),
    ],
)
def test_replies(segment: bytes, reply: bytes | None) -> None:
    assert reply_for(parse_segment(segment)) == (None if reply is None else build_frame(reply))


def test_reply_uses_the_station_crc_mode() -> None:
    reply = reply_for(parse_segment(segment_of(HOURLY_2061)), "modbus")
    assert reply is not None
    assert reply[:-6] == wire(REPLY_9014)[:-6]
    assert int(reply[-6:-2], 16) == crc_modbus(reply[6:-6])


def test_build_request_for_gap_recovery() -> None:
    raw = build_request(
        "2061",
        "Z13401000010301",
        "123456",
        datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=CHINA),
        datetime(2024, 5, 1, 0, 0, tzinfo=CHINA),
        datetime(2024, 5, 1, 2, 0, tzinfo=UTC),
        st="22",
    )
    segment = (
        b"QN=20240501100000123;ST=22;CN=2061;PW=123456;MN=Z13401000010301;Flag=5;"
        b"CP=&&BeginTime=20240501000000;EndTime=20240501100000&&"
    )
    assert raw == b"##%04d%s%04X\r\n" % (len(segment), segment, reference_crc(segment))
    packet = parse_segment(segment)
    assert (packet.cn, packet.reply_wanted, packet.version) == ("2061", True, 1)
    version_2 = build_request(
        "2031",
        "M",
        "p",
        datetime(2024, 5, 1, tzinfo=CHINA),
        datetime(2024, 4, 1, tzinfo=CHINA),
        datetime(2024, 5, 1, tzinfo=CHINA),
        st="21",
        version=2,
    )
    assert version_2 == build_frame(
        "QN=20240501000000000;ST=21;CN=2031;PW=p;MN=M;Flag=9;"
        "CP=&&BeginTime=20240401000000;EndTime=20240501000000&&"
    )


@pytest.mark.parametrize(
    ("mn", "pw", "st", "message"),
    [
        ("A;B", "p", "22", "MN='A;B' cannot be sent in an HJ 212 header"),
        ("", "p", "22", "MN='' cannot be sent in an HJ 212 header"),
        ("M", "p&&", "22", "PW='p&&' cannot be sent in an HJ 212 header"),
        ("M", "p=1", "22", "PW='p=1' cannot be sent in an HJ 212 header"),
        ("M", "p", "2\r\n", "ST='2\\r\\n' cannot be sent in an HJ 212 header"),
    ],
)
def test_build_request_rejects_header_values_that_would_garble_it(
    mn: str, pw: str, st: str, message: str
) -> None:
    moment = datetime(2024, 5, 1, tzinfo=CHINA)
    with pytest.raises(ProtocolError, match=exactly(message)):
        build_request("2061", mn, pw, moment, moment, moment, st=st)


@pytest.mark.parametrize(
    ("cn", "begin", "end", "message"),
    [
        (
            "2011",
            datetime(2024, 5, 1, tzinfo=CHINA),
            datetime(2024, 5, 2, tzinfo=CHINA),
            "CN=2011 is not a minute, hourly or daily data command",
        ),
        (
            "9014",
            datetime(2024, 5, 1, tzinfo=CHINA),
            datetime(2024, 5, 2, tzinfo=CHINA),
            "CN=9014 is not a minute, hourly or daily data command",
        ),
        (
            "2061",
            datetime(2024, 5, 2, tzinfo=CHINA),
            datetime(2024, 5, 1, tzinfo=CHINA),
            "BeginTime 2024-05-02T00:00:00+08:00 is after EndTime 2024-05-01T00:00:00+08:00",
        ),
        (
            "2061",
            datetime(2024, 5, 1),
            datetime(2024, 5, 2),
            "HJ 212 times need an aware datetime; got a naive one",
        ),
    ],
)
def test_build_request_rejects_what_cannot_be_right(
    cn: str, begin: datetime, end: datetime, message: str
) -> None:
    with pytest.raises(ProtocolError, match=exactly(message)):
        build_request(cn, "M", "p", datetime(2024, 5, 1, tzinfo=CHINA), begin, end, st="22")


def test_a_device_gives_frames_within_one_millisecond_distinct_qns() -> None:
    # Frames sent back to back (a device catching up) fall in one millisecond of its clock;
    # their QNs still differ, or the platform's answer to the second is taken for the first's.
    start = datetime(2024, 5, 1, 8, 58, 57, 223_100, tzinfo=CHINA)
    times = iter([start, start + timedelta(microseconds=400), start + timedelta(microseconds=800)])
    client = Hj212Client(mn="010000A8900016F000169DC0", clock=lambda: next(times))
    qns = [client.next_qn() for _ in range(3)]
    assert qns == ["20240501085857223", "20240501085857224", "20240501085857225"]
