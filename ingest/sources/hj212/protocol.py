"""HJ 212 codec: CRC, stream framing, data-segment parsing, data items, flags and replies.

Pure functions and one small stateful decoder; no sockets, no database, stdlib only. The
protocol (HJ 212-2017) as EnvLink meets it in the field is summed up in docs/standards.md §8.

Framing rule (FrameDecoder). A frame is `##` + 4 decimal digits L + L bytes of segment + 4 hex
digits of CRC + CR LF. A data segment never contains CR LF, so the first CR LF after a frame's
header must sit exactly at its declared end:

- CR LF earlier than the declared end: the frame lost bytes (truncated) or declares too much;
- CR LF later, or none although the declared span has fully arrived: the tail is malformed;
- no CR LF yet and the declared span has not fully arrived: wait (at most MAX_FRAME bytes).

Any complete frame behind a truncated one ends in CR LF, so it exposes the truncation as soon as
it has arrived. A rejected frame is skipped by resynchronising at the next `##` after its start,
never by jumping its declared length. The one arrangement the CR LF rule cannot see is a
truncated frame whose declared end coincides exactly with the end of a later frame inside its
span; the decoder looks for such an aligned `##LLLL` inside every segment that contains `##` and
prefers it. CR LF is required: a frame without it is reported (bad_tail) once the following bytes
arrive, since accepting `CCCC` alone would mean guessing where a frame ends.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from core.timeutil import CST, floor_to_period
from schemas.catalogue import CrcMode
from schemas.common import QC

__all__ = [
    "CRC_MODES",
    "DATA_CNS",
    "MAX_FRAME",
    "MAX_SEGMENT",
    "CpData",
    "CrcMode",
    "DataItem",
    "Frame",
    "FrameDecoder",
    "FrameEvent",
    "Garbage",
    "GarbageReason",
    "Packet",
    "ProtocolError",
    "RequestAnswer",
    "build_frame",
    "build_request",
    "crc",
    "crc_hj212",
    "crc_matches",
    "crc_modbus",
    "crc_modbus_swapped",
    "data_items",
    "detect_crc_mode",
    "format_datatime",
    "parse_datatime",
    "parse_segment",
    "qc_for_flag",
    "reply_for",
    "request_answer",
    "request_window",
]

MAX_SEGMENT: Final = 9999
MAX_FRAME: Final = 2 + 4 + MAX_SEGMENT + 4 + 2

CRC_MODES: Final[tuple[CrcMode, ...]] = ("hj212", "modbus", "modbus_swapped")

# noise: bytes outside any frame; bad_header: `##` without 4 length digits; bad_tail: the
# declared end is not CRC + CR LF (truncated frame, wrong length, no CR LF, CRC not hex);
# nested: a frame that starts inside it ends exactly at its declared end.
GarbageReason = Literal["noise", "bad_header", "bad_tail", "nested"]

# CN → (value suffix, period in seconds) of the data uploads EnvLink stores.
DATA_CNS: Final[dict[str, tuple[str, int]]] = {
    "2011": ("Rtd", 0),
    "2051": ("Avg", 60),
    "2061": ("Avg", 3600),
    "2031": ("Avg", 86400),
}
_DATA_ANSWERED: Final = frozenset({"2011", "2051", "2061", "2031", "2081"})
# 9021 is a heartbeat in some provincial profiles; answering it like 9015 is harmless because
# devices match answers by QN, while leaving a wanted answer out makes them retry or reconnect.
_NOTICE_ANSWERED: Final = frozenset({"1013", "9015", "9021"})

_HEX_BYTES: Final = b"0123456789abcdefABCDEF"
_UNSAFE_IN_HEADER: Final = frozenset(";=&,\r\n")
_HEX_CHARS: Final = frozenset("0123456789abcdefABCDEF")

_QC_2017: Final[dict[str, QC]] = {
    "N": QC.VALID,
    "F": QC.STOPPED,
    "M": QC.MAINTENANCE,
    "S": QC.MANUAL,
    "D": QC.FAULT,
    "C": QC.CALIBRATION,
    "T": QC.OVER_RANGE,
    "B": QC.COMM_FAULT,
}
# 2005: P is a power fault (no own QC state, so `fault`), F a stopped source, C a check.
_QC_2005: Final[dict[str, QC]] = {
    "N": QC.VALID,
    "P": QC.FAULT,
    "F": QC.STOPPED,
    "C": QC.CALIBRATION,
    "M": QC.MAINTENANCE,
    "T": QC.OVER_RANGE,
    "D": QC.FAULT,
    "S": QC.MANUAL,
}


class ProtocolError(ValueError):
    """A frame, data segment or value that does not follow HJ 212."""


def _crc_table() -> tuple[int, ...]:
    table: list[int] = []
    for byte in range(256):
        register = byte
        for _ in range(8):
            register = (register >> 1) ^ 0xA001 if register & 1 else register >> 1
        table.append(register)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc_hj212(data: bytes) -> int:
    """CRC of a data segment as HJ 212 defines it (0xFFFF start, poly 0xA001, no final XOR)."""
    # (register >> 8) ^ b is below 256, so the eight shift/XOR rounds are one table lookup.
    table = _CRC_TABLE
    register = 0xFFFF
    for b in data:
        register = table[(register >> 8) ^ b]
    return register


def crc_modbus(data: bytes) -> int:
    """Standard CRC-16/MODBUS, which some devices send instead of the HJ 212 CRC."""
    table = _CRC_TABLE
    register = 0xFFFF
    for b in data:
        register = (register >> 8) ^ table[(register ^ b) & 0xFF]
    return register


def crc_modbus_swapped(data: bytes) -> int:
    """CRC-16/MODBUS with its two bytes swapped (MODBUS puts the low byte first on the wire)."""
    value = crc_modbus(data)
    return ((value & 0xFF) << 8) | (value >> 8)


_CRC_FUNCTIONS: Final[dict[CrcMode, Callable[[bytes], int]]] = {
    "hj212": crc_hj212,
    "modbus": crc_modbus,
    "modbus_swapped": crc_modbus_swapped,
}


def crc(data: bytes, mode: CrcMode = "hj212") -> int:
    """CRC of `data` under a station's CRC mode."""
    try:
        function = _CRC_FUNCTIONS[mode]
    except KeyError:
        raise ProtocolError(f"unknown CRC mode {mode!r}; use one of {CRC_MODES}") from None
    return function(data)


def crc_matches(segment: bytes, crc_text: str, mode: CrcMode = "hj212") -> bool:
    """Whether 4 hex digits (either case) equal the segment's CRC under `mode`."""
    if len(crc_text) != 4 or not _HEX_CHARS.issuperset(crc_text):
        return False
    return int(crc_text, 16) == crc(segment, mode)


def detect_crc_mode(segment: bytes, crc_text: str) -> CrcMode | None:
    """The first CRC mode the frame's CRC matches, for diagnosing a station's setting."""
    for mode in CRC_MODES:
        if crc_matches(segment, crc_text, mode):
            return mode
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    """A structurally complete frame; its CRC is checked later, under the station's mode."""

    segment: bytes
    crc_text: str
    raw: bytes

    def crc_ok(self, mode: CrcMode = "hj212") -> bool:
        """Whether the frame's CRC matches its segment under `mode`."""
        return crc_matches(self.segment, self.crc_text, mode)


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes the decoder skipped, with the reason and a detail for the log."""

    raw: bytes
    reason: GarbageReason
    detail: str = ""


FrameEvent = Frame | Garbage


class FrameDecoder:
    """Split one connection's byte stream into frames and skipped garbage (rule: module doc)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.garbage_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held back until the rest of a frame arrives (always below MAX_FRAME)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Add bytes read from the connection; return the frames and garbage now complete."""
        buf = self._buffer
        buf += data
        size = len(buf)
        events: list[FrameEvent] = []
        pos = 0
        # Position of the first CR LF at or after the current header; -2 = not searched yet.
        # Reused across candidates so that hostile input full of `##` stays linear.
        crlf = -2
        while True:
            start = _next_start(buf, pos)
            self._skip(events, pos, start, "noise")
            pos = start
            if size - pos < 6:
                break
            digits = bytes(buf[pos + 2 : pos + 6])
            if not digits.isdigit():
                pos = self._resync(events, pos, "bad_header", f"length field {digits!r}")
                continue
            length = int(digits)
            end = pos + 6 + length
            if crlf != -1 and crlf < pos + 6:
                crlf = buf.find(b"\r\n", pos + 6)
            if crlf == end + 4:
                crc_field = bytes(buf[end : end + 4])
                if crc_field.translate(None, _HEX_BYTES):
                    pos = self._resync(events, pos, "bad_tail", f"CRC field {crc_field!r}")
                    continue
                inner = _aligned_inner_frame(buf, pos, length)
                if inner >= 0:
                    self._skip(events, pos, inner, "nested", "a frame inside it ends at its end")
                    pos = inner
                    continue
                segment, raw = bytes(buf[pos + 6 : end]), bytes(buf[pos : end + 6])
                events.append(Frame(segment, crc_field.decode(), raw))
                self.frames += 1
                pos = end + 6
                continue
            if crlf == -1 and size < end + 6:
                break
            if 0 <= crlf < end + 4:
                detail = f"declared length {length} but CR LF after {crlf - pos - 10} bytes"
            else:
                detail = f"declared length {length}, then {bytes(buf[end : end + 6])!r}"
            pos = self._resync(events, pos, "bad_tail", detail)
        del buf[:pos]
        return events

    def _skip(
        self,
        events: list[FrameEvent],
        start: int,
        stop: int,
        reason: GarbageReason,
        detail: str = "",
    ) -> None:
        if stop > start:
            events.append(Garbage(bytes(self._buffer[start:stop]), reason, detail))
            self.garbage_bytes += stop - start

    def _resync(
        self, events: list[FrameEvent], pos: int, reason: GarbageReason, detail: str
    ) -> int:
        # Callers hold at least a 6-byte header at pos, so the skip always makes progress.
        stop = _next_start(self._buffer, pos + 1)
        self._skip(events, pos, stop, reason, detail)
        return stop


def _next_start(buf: bytearray, start: int) -> int:
    """Index of the next `##` from `start`, else the end less a final '#' (maybe half a `##`)."""
    found = buf.find(b"##", start)
    if found >= 0:
        return found
    return len(buf) - 1 if len(buf) > start and buf.endswith(b"#") else len(buf)


def _aligned_inner_frame(buf: bytearray, pos: int, length: int) -> int:
    """Start of a `##LLLL` inside the segment whose declared end is the outer frame's, or -1."""
    end = pos + 6 + length
    inner = buf.find(b"##", pos + 6, end)
    while inner >= 0:
        if buf[inner + 2 : inner + 6] == b"%04d" % (end - inner - 6):
            return inner
        inner = buf.find(b"##", inner + 1, end)
    return -1


@dataclass(frozen=True, slots=True)
class CpData:
    """The CP of a packet: plain keys (DataTime, RtdInterval…) and per-code fields in order."""

    fields: dict[str, str]
    codes: dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Packet:
    """A parsed data segment; `version` 0 = 2005, 1 = 2017, 2 = 2025 / surface water."""

    qn: str | None
    st: str | None
    cn: str
    pw: str | None
    mn: str
    flag: int | None
    version: int
    reply_wanted: bool
    split: bool
    pnum: int | None
    pno: int | None
    cp: CpData
    extra: dict[str, str]


_HEADER_KEYS: Final = frozenset({"QN", "ST", "CN", "PW", "MN", "FLAG", "PNUM", "PNO"})


def _decode(segment: bytes) -> str:
    try:
        return segment.decode()
    except UnicodeDecodeError:
        pass
    # Chinese devices put GBK text in free-form values now and then; keys are always ASCII.
    try:
        return segment.decode("gbk")
    except UnicodeDecodeError:
        pass
    # Neither: the bytes that are not UTF-8 are kept as surrogates, so the frame still parses
    # and is answered, its values fail on their own, and the quarantine keeps every byte.
    return segment.decode("utf-8", "surrogateescape")


def _header_int(header: dict[str, str], key: str, label: str) -> int | None:
    text = header.get(key)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise ProtocolError(f"{label}={text!r} is not a non-negative integer")
    return int(text)


def parse_segment(segment: bytes) -> Packet:
    """Parse a data segment (`QN=…;…;CP=&&…&&`) into a Packet; header keys in any order."""
    text = _decode(segment)
    cp_at = text.find("CP=&&")
    while cp_at > 0 and text[cp_at - 1] != ";":
        cp_at = text.find("CP=&&", cp_at + 1)
    if cp_at < 0:
        raise ProtocolError("data segment has no CP=&&…&& field")
    if len(text) < cp_at + 7 or not text.endswith("&&"):
        raise ProtocolError("CP=&& is not closed by a final && at the end of the data segment")
    header: dict[str, str] = {}
    extra: dict[str, str] = {}
    for entry in text[:cp_at].split(";"):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep:
            raise ProtocolError(f"header field {entry!r} has no '='")
        key, value = key.strip(), value.strip()
        # Field names differ in case between devices (Flag, FLAG, flag).
        name = key.upper()
        target, stored = (header, name) if name in _HEADER_KEYS else (extra, key)
        if stored in target:
            raise ProtocolError(f"header field {key} appears twice")
        target[stored] = value
    for required in ("CN", "MN"):
        if not header.get(required):
            raise ProtocolError(f"data segment has no {required}")
    flag = _header_int(header, "FLAG", "Flag")
    if flag is not None and flag > 255:
        raise ProtocolError(f"Flag={flag} does not fit in one byte")
    flag_bits = flag or 0
    return Packet(
        qn=header.get("QN"),
        st=header.get("ST"),
        cn=header["CN"],
        pw=header.get("PW"),
        mn=header["MN"],
        flag=flag,
        # A missing Flag is a 2005-style upload: version 0, no reply wanted.
        version=flag_bits >> 2,
        reply_wanted=bool(flag_bits & 1),
        split=bool(flag_bits & 2),
        pnum=_header_int(header, "PNUM", "PNUM"),
        pno=_header_int(header, "PNO", "PNO"),
        cp=_parse_cp(text[cp_at + 5 : -2]),
        extra=extra,
    )


def _parse_cp(content: str) -> CpData:
    fields: dict[str, str] = {}
    codes: dict[str, dict[str, str]] = {}
    # Items are split at ';' and their entries at ',': the entries are the same in one split.
    for entry in content.replace(";", ",").split(","):
        key, sep, value = entry.partition("=")
        if not sep:
            if not entry.strip():
                continue
            raise ProtocolError(f"CP entry {entry!r} is not key=value")
        key = key.strip()
        if not key:
            raise ProtocolError(f"CP entry {entry!r} is not key=value")
        code, dash, name = key.partition("-")
        if dash:
            if not code or not name:
                raise ProtocolError(f"CP key {key!r} needs a code and a field around '-'")
            target = codes.get(code)
            if target is None:
                target = codes[code] = {}
        else:
            target, name = fields, key
        previous = target.setdefault(name, value)
        if previous != value:
            raise ProtocolError(f"CP key {key} given twice: {previous!r} and {value!r}")
    return CpData(fields, codes)


def parse_datatime(text: str) -> datetime:
    """Parse a DataTime/QN-style time (14 digits, or 17 with milliseconds) as China time."""
    if len(text) not in (14, 17) or not (text.isascii() and text.isdigit()):
        raise ProtocolError(f"time {text!r} is not YYYYMMDDhhmmss or YYYYMMDDhhmmsszzz")
    try:
        return datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            int(text[14:17] or 0) * 1000,
            tzinfo=CST,
        )
    except ValueError as exc:
        raise ProtocolError(f"time {text!r} is not a valid date and time: {exc}") from None


def format_datatime(moment: datetime, *, ms: bool = False) -> str:
    """Format an aware datetime as HJ 212 China time: 14 digits, or 17 with milliseconds."""
    if moment.tzinfo is None:
        raise ProtocolError("HJ 212 times need an aware datetime; got a naive one")
    local = moment.astimezone(CST)
    text = local.strftime("%Y%m%d%H%M%S")
    return f"{text}{local.microsecond // 1000:03d}" if ms else text


@dataclass(frozen=True, slots=True)
class DataItem:
    """One code's value from a data upload; `error` says why `value` is None or unusable."""

    code: str
    value: float | None
    flag: str | None
    period_s: int
    time: datetime
    extras: dict[str, str]
    error: str | None = None

    @property
    def period_end(self) -> datetime:
        """End of the averaging period (equal to `time` for real-time data)."""
        return self.time + timedelta(seconds=self.period_s)


def _number(text: str | None, suffix: str) -> tuple[float | None, str | None]:
    if text is None:
        return None, f"no {suffix} value"
    try:
        value = float(text)
    except ValueError:
        return None, f"{suffix} value {text!r} is not a number"
    # float() also takes 'nan', 'inf' and '1_000', none of which a device means as a reading.
    if "_" in text or not math.isfinite(value):
        return None, f"{suffix} value {text!r} is not a finite number"
    return value, None


def data_items(packet: Packet) -> list[DataItem]:
    """The values of a 2011/2051/2061/2031 upload, one per code; [] for other commands."""
    spec = DATA_CNS.get(packet.cn)
    if spec is None:
        return []
    suffix, period_s = spec
    data_time = packet.cp.fields.get("DataTime")
    if data_time is None:
        raise ProtocolError(f"CN={packet.cn} packet from MN {packet.mn} has no DataTime")
    # Period data is labelled by the period start; some loggers stamp a few seconds late.
    period_time = floor_to_period(parse_datatime(data_time), period_s)
    items: list[DataItem] = []
    for code, fields in packet.cp.codes.items():
        value, error = _number(fields.get(suffix), suffix)
        time = period_time
        sample_time = fields.get("SampleTime") if period_s == 0 else None
        if sample_time is not None:
            try:
                time = parse_datatime(sample_time)
            except ProtocolError as exc:
                error = f"{error}; SampleTime: {exc}" if error else f"SampleTime: {exc}"
        # The other fields in their order (a copy less two keys costs less than a filter).
        extras = fields.copy()
        extras.pop(suffix, None)
        extras.pop("Flag", None)
        items.append(DataItem(code, value, fields.get("Flag"), period_s, time, extras, error))
    return items


def qc_for_flag(flag: str | None, version: int) -> QC:
    """EnvLink QC state of an HJ 212 data flag; missing means N, unknown flags are `invalid`."""
    key = (flag or "").strip().upper()
    if not key:
        return QC.VALID
    return (_QC_2005 if version == 0 else _QC_2017).get(key, QC.INVALID)


def build_frame(segment: str | bytes, mode: CrcMode = "hj212") -> bytes:
    """Frame a data segment: `##LLLL` + segment + CRC (4 upper-case hex) + CR LF."""
    # A reply echoes a device's fields, bytes that are not UTF-8 included (see _decode).
    data = segment.encode("utf-8", "surrogateescape") if isinstance(segment, str) else segment
    if len(data) > MAX_SEGMENT:
        raise ProtocolError(f"data segment of {len(data)} bytes exceeds {MAX_SEGMENT}")
    return b"##%04d%s%04X\r\n" % (len(data), data, crc(data, mode))


def reply_for(packet: Packet, mode: CrcMode = "hj212") -> bytes | None:
    """The answer frame a device expects for `packet`, or None when none is due."""
    if not packet.reply_wanted:
        return None
    if packet.cn in _DATA_ANSWERED:
        cn = "9014"
    elif packet.cn in _NOTICE_ANSWERED:
        cn = "9013"
    else:
        # Platform commands and answers (1xxx, 9011, 9012, 9013, 9014) coming from a device.
        return None
    # A 2005-style packet without QN gets an answer without QN rather than an invented one.
    fields = [f"QN={packet.qn}"] if packet.qn is not None else []
    fields += ["ST=91", f"CN={cn}"]
    if packet.pw is not None:
        fields.append(f"PW={packet.pw}")
    fields += [f"MN={packet.mn}", f"Flag={packet.version << 2}", "CP=&&&&"]
    return build_frame(";".join(fields), mode)


def build_request(
    cn: str,
    mn: str,
    pw: str,
    qn_time: datetime,
    begin: datetime,
    end: datetime,
    *,
    st: str,
    version: int = 1,
    mode: CrcMode = "hj212",
) -> bytes:
    """Frame a platform→device request for stored 2051/2061/2031 data between begin and end."""
    if cn not in DATA_CNS or DATA_CNS[cn][1] == 0:
        raise ProtocolError(f"CN={cn} is not a minute, hourly or daily data command")
    for name, value in (("MN", mn), ("PW", pw), ("ST", st)):
        # These delimit the segment; a configured value holding one would garble the request.
        if not value or not _UNSAFE_IN_HEADER.isdisjoint(value):
            raise ProtocolError(f"{name}={value!r} cannot be sent in an HJ 212 header")
    qn, begin_text, end_text = (
        format_datatime(qn_time, ms=True),
        format_datatime(begin),
        format_datatime(end),
    )
    if begin > end:
        raise ProtocolError(f"BeginTime {begin.isoformat()} is after EndTime {end.isoformat()}")
    # The standard addresses commands with the target system's ST (its own 1062 example uses
    # ST=32) and sets A=1: the device answers 9011, sends the packets, then 9012.
    segment = (
        f"QN={qn};ST={st};CN={cn};PW={pw};MN={mn};Flag={version << 2 | 1};"
        f"CP=&&BeginTime={begin_text};EndTime={end_text}&&"
    )
    return build_frame(segment, mode)


def request_window(period_s: int, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """BeginTime and EndTime of a history request for the periods that overlap [start, end).

    Both are period starts (as DataTime labels them), the first and the last one asked for.
    """
    if period_s not in (60, 3600, 86400):
        raise ProtocolError(f"period of {period_s} s is not minute, hourly or daily data")
    if start >= end:
        raise ProtocolError(f"{start.isoformat()} is not before {end.isoformat()}")
    return floor_to_period(start, period_s), floor_to_period(
        end - timedelta(microseconds=1), period_s
    )


# HJ 212-2017's answer codes: QnRtn in a 9011 (may the request be executed?), ExeRtn in a 9012
# (how it went). 1 is the good answer of each; ExeRtn 100 means the device holds no such data.
QN_RETURNS: Final = {
    "1": "ready",
    "2": "refused",
    "3": "wrong PW",
    "4": "wrong MN",
    "5": "wrong ST",
    "6": "wrong Flag",
    "7": "wrong QN",
    "8": "wrong CN",
    "9": "wrong CRC",
    "100": "unknown error",
}
EXE_RETURNS: Final = {
    "1": "done",
    "2": "failed, reason unknown",
    "3": "the command's conditions are not met",
    "4": "communication timeout",
    "5": "system busy",
    "6": "system fault",
    "100": "no data",
}
NO_DATA: Final = "100"


@dataclass(frozen=True, slots=True)
class RequestAnswer:
    """A device's 9011 or 9012 to a platform request: its return code and what it means."""

    cn: str
    code: str | None
    meaning: str

    @property
    def ok(self) -> bool:
        """Ready (9011) or done (9012); an answer without its code is taken as one (be liberal)."""
        return self.code in ("1", None)

    @property
    def no_data(self) -> bool:
        return self.cn == "9012" and self.code == NO_DATA

    def text(self) -> str:
        """`QnRtn=2 (refused)` — for the request's detail."""
        key = "QnRtn" if self.cn == "9011" else "ExeRtn"
        return f"{key}={self.code} ({self.meaning})" if self.code else f"CN={self.cn} without {key}"


def request_answer(packet: Packet) -> RequestAnswer:
    """The return code of a 9011 (QnRtn) or 9012 (ExeRtn); codes the standard lacks say so."""
    if packet.cn not in ("9011", "9012"):
        raise ProtocolError(f"CN={packet.cn} is not an answer to a request (9011 or 9012)")
    key, meanings = ("QnRtn", QN_RETURNS) if packet.cn == "9011" else ("ExeRtn", EXE_RETURNS)
    code = packet.cp.fields.get(key)
    if code is None:
        return RequestAnswer(packet.cn, None, "no return code")
    return RequestAnswer(packet.cn, code, meanings.get(code, "a code HJ 212 does not define"))
