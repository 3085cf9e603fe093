"""CSV drop folder for laboratory results (heavy metals, monthly manual sampling).

A file is `station,parameter,time,value,unit[,period_s][,flag]` with a header row (columns in any
order), UTF-8 with or without BOM, or GBK as Chinese spreadsheet tools save it. In a file that
is neither, a row holding bytes its encoding cannot read is rejected (and quarantined with the
bytes kept) and the other rows are read; only a header that cannot be read fails the file.
Values may use the lab notations for results below the detection limit: `0.01L` or `<0.01`
(stored as `below_detection` with the limit 0.01 as value) and `ND` / `未检出` (`below_detection`
with a null value: the limit was not given, so nothing is invented; labs should prefer `0.01L`).

The folder is polled. A file is read only once its size and modification time are the same on
two consecutive polls, so a file still being copied in is never read half; writers that cannot
guarantee that may write `name.csv.part` and rename it when done (only `*.csv` is picked up).
A read file moves to `processed/` with `<stem>.report.csv` (line, outcome, reason per data row);
a file of which no row could be read (encoding, header, no data rows) moves to `failed/` with a
report giving the reason, and the source's last error says so. Bad rows are quarantined with
their raw line, whether they fail to parse or the pipeline's checks; good rows of the same file
are kept. Dropping the same file again reports its rows as duplicates.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from core.errors import InvalidInput, TimeOutOfRange
from core.timeutil import CST, FIRST_YEAR, LAST_YEAR, in_years, parse_time, utcnow
from ingest.flags import qc_of_flag
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.base import SourceHealth
from schemas.common import QC
from schemas.readings import IntakeResult, Outcome, ReadingIn, Rejection

log = logging.getLogger(__name__)

CSV_SOURCE = SourceRef(code="csv", kind="csv")
PeriodS = Literal[0, 60, 3600, 86400]
REQUIRED_COLUMNS = ("station", "parameter", "time", "value", "unit")
OPTIONAL_COLUMNS = ("period_s", "flag")
EXPECTED_HEADER = "station,parameter,time,value,unit[,period_s][,flag]"
REPORT_HEADER = ("line", "outcome", "reason")

_NOT_DETECTED = frozenset({"nd", "n.d.", "n.d", "未检出"})
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_LIMIT_SUFFIX = re.compile(rf"^({_NUMBER})\s*[lL]$")
_LIMIT_PREFIX = re.compile(rf"^<\s*({_NUMBER})$")
_PERIODS: dict[str, PeriodS] = {"0": 0, "60": 60, "3600": 3600, "86400": 86400}
# A byte the file's encoding could not read, kept in the text as surrogateescape keeps it.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# Spreadsheet exports write dates with slashes; ISO 8601 is tried first.
_SLASH_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d")


class CsvFileError(ValueError):
    """A file of which no row can be read; the message says why and, where known, the line."""


def parse_value(text: str) -> tuple[float | None, bool]:
    """A lab value and whether it is below the detection limit (`0.01L`, `<0.01`, `ND`)."""
    cleaned = text.strip()
    if not cleaned:
        raise ValueError("value is empty")
    if cleaned.lower() in _NOT_DETECTED:
        return None, True
    below = _LIMIT_SUFFIX.match(cleaned) or _LIMIT_PREFIX.match(cleaned)
    if below:
        return float(below.group(1)), True
    try:
        value = float(cleaned)
    except ValueError:
        raise ValueError(
            f"value {cleaned!r} is not a number, ND, or a detection limit like 0.01L"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"value {cleaned!r} is not a finite number")
    return value, False


def parse_csv_time(text: str) -> datetime:
    """A CSV time: ISO 8601 / RFC 3339, or `2026/11/3 10:00`; no offset means Asia/Shanghai."""
    cleaned = text.strip()
    if not cleaned:
        raise ValueError("time is empty")
    try:
        return parse_time(cleaned)
    except TimeOutOfRange as exc:
        raise ValueError(str(exc)) from None
    except InvalidInput:
        for pattern in _SLASH_FORMATS:
            try:
                moment = datetime.strptime(cleaned, pattern).replace(tzinfo=CST)
            except ValueError:
                continue
            if not in_years(moment):
                raise ValueError(
                    f"time: {cleaned!r} is outside the years {FIRST_YEAR}-{LAST_YEAR}"
                ) from None
            return moment
    raise ValueError(f"time {cleaned!r} is not an ISO 8601 time like 2026-11-03T10:00")


def decode(data: bytes) -> tuple[str, str]:
    """The file's text and encoding: UTF-8 (a BOM is dropped), else GBK.

    A file that is neither is read as the one of the two that leaves fewer bytes unread (UTF-8
    on a tie), those bytes kept as surrogates for parse_rows to reject their rows;
    CsvFileError if the header line has one.
    """
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as utf8:
        try:
            return data.decode("gbk"), "gbk"
        except UnicodeDecodeError as gbk:
            utf8_text = data.decode("utf-8-sig", "surrogateescape")
            gbk_text = data.decode("gbk", "surrogateescape")
            unread = [len(_UNDECODABLE.findall(t)) for t in (utf8_text, gbk_text)]
            text, encoding = (gbk_text, "gbk") if unread[1] < unread[0] else (utf8_text, "utf-8")
            if _UNDECODABLE.search(text.partition("\n")[0]):
                raise CsvFileError(
                    f"the file is neither UTF-8 (byte 0x{data[utf8.start]:02x} on line"
                    f" {_line_of(data, utf8.start)}) nor GBK (byte 0x{data[gbk.start]:02x} on line"
                    f" {_line_of(data, gbk.start)}); save it as UTF-8 CSV"
                ) from None
            return text, encoding


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data row: the reading it holds, or why it holds none; `raw` is the row as in the file."""

    line: int
    item: ReadingIn | Rejection
    raw: str


def parse_rows(text: str) -> list[CsvRow]:
    """Every data row of a CSV text; CsvFileError when the header or the whole file is unusable."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise CsvFileError(f"line 1: the header is not readable CSV ({exc})") from None
    if header is None or not any(name.strip() for name in header):
        raise CsvFileError(f"the file is empty; line 1 must be the header {EXPECTED_HEADER}")
    columns = _columns(header)
    rows: list[CsvRow] = []
    while True:
        start = reader.line_num
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raw = _raw(lines, start, reader.line_num)
            reason = f"not readable CSV ({exc})"
            rows.append(CsvRow(start + 1, Rejection(len(rows), reason, payload=raw), raw))
            continue
        if not any(value.strip() for value in fields):
            continue
        raw = _raw(lines, start, reader.line_num)
        rows.append(CsvRow(start + 1, _row(fields, columns, raw, len(rows)), raw))
    if not rows:
        raise CsvFileError("the file has a header but no data rows")
    return rows


def _columns(header: list[str]) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    problems = []
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        problems.append("repeated column(s) " + ", ".join(duplicated))
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [
        name or f"(empty, column {i + 1})" for i, name in enumerate(names) if name not in known
    ]
    if unknown:
        problems.append("unknown column(s) " + ", ".join(unknown))
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    if problems:
        raise CsvFileError(
            f"line 1: bad header: {'; '.join(problems)} (expected {EXPECTED_HEADER})"
        )
    return {name: index for index, name in enumerate(names)}


def _raw(lines: Sequence[str], start: int, end: int) -> str:
    return "".join(lines[start:end]).rstrip("\r\n")


def _row(fields: list[str], columns: dict[str, int], raw: str, index: int) -> ReadingIn | Rejection:
    if len(fields) != len(columns):
        reason = f"the line has {len(fields)} fields; the header has {len(columns)}"
        return Rejection(index, reason, payload=raw)
    cell = {name: fields[position].strip() for name, position in columns.items()}
    station = cell["station"] or None
    parameter = cell["parameter"] or None
    problems = []
    unread = _UNDECODABLE.search(raw)
    if unread:
        problems.append(
            f"byte 0x{ord(unread.group()) & 0xFF:02x} (character {unread.start() + 1} of the line)"
            " is not text in the file's encoding"
        )
    if station is None:
        problems.append("station is empty")
    if parameter is None:
        problems.append("parameter is empty")
    moment = value = qc = None
    below = False
    try:
        moment = parse_csv_time(cell["time"])
    except ValueError as exc:
        problems.append(str(exc))
    try:
        value, below = parse_value(cell["value"])
    except ValueError as exc:
        problems.append(str(exc))
    period_text = cell.get("period_s", "") or "0"
    period_s = _PERIODS.get(period_text)
    if period_s is None:
        problems.append(f"period_s {period_text!r} is not one of 0, 60, 3600, 86400")
    flag = cell.get("flag", "")
    flag = flag.upper() if len(flag) == 1 else flag.lower()
    try:
        qc = qc_of_flag(flag)
    except ValueError as exc:
        problems.append(str(exc))
    if below and qc not in (None, QC.VALID, QC.BELOW_DETECTION):
        problems.append(
            f"value {cell['value']!r} is below the detection limit but flag {flag!r}"
            f" says {qc.value if qc else ''}"
        )
    if problems or not (station and parameter and moment and qc) or period_s is None:
        return Rejection(index, "; ".join(problems), station, parameter, raw)
    return ReadingIn(
        station=station,
        parameter=parameter,
        time=moment,
        value=value,
        unit=cell["unit"],
        period_s=period_s,
        qc=QC.BELOW_DETECTION if below else qc,
    )


ReportOutcome = Outcome | Literal["failed"]


@dataclass(frozen=True, slots=True)
class ReportLine:
    line: int | None
    outcome: ReportOutcome
    reason: str = ""


@dataclass
class FileReport:
    """What one file gave: an outcome per data row, or why the file could not be read."""

    name: str
    encoding: str | None = None
    lines: list[ReportLine] = field(default_factory=list)
    failure: str | None = None

    @property
    def summary(self) -> dict[str, int]:
        counts = {"accepted": 0, "duplicate": 0, "revised": 0, "rejected": 0}
        for line in self.lines:
            if line.outcome != "failed":
                counts[line.outcome] += 1
        return counts

    def csv_text(self) -> str:
        """The report as CSV text: line, outcome, reason."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(REPORT_HEADER)
        for line in self.lines:
            writer.writerow(("" if line.line is None else line.line, line.outcome, line.reason))
        return out.getvalue()


async def import_file(pipeline: Pipeline, path: Path) -> FileReport:
    """Read one CSV file and ingest its rows in one intake; the file itself is left in place."""
    report = FileReport(name=path.name)
    try:
        text, report.encoding = decode(await asyncio.to_thread(path.read_bytes))
        rows = parse_rows(text)
    except CsvFileError as exc:
        report.failure = str(exc)
        report.lines.append(ReportLine(_failure_line(str(exc)), "failed", str(exc)))
        return report
    result: IntakeResult = await pipeline.ingest(
        [row.item for row in rows], source=CSV_SOURCE, raw=[row.raw for row in rows]
    )
    reasons = {rejection.index: rejection.reason for rejection in result.rejections}
    for index, (row, outcome) in enumerate(zip(rows, result.outcomes, strict=True)):
        report.lines.append(ReportLine(row.line, outcome, reasons.get(index, "")))
    return report


def _failure_line(reason: str) -> int | None:
    found = re.match(r"line (\d+):", reason)
    return int(found.group(1)) if found else None


class CsvFolder:
    """Polls a drop folder: imports stable `*.csv` files, then files them with their report."""

    ref = CSV_SOURCE

    def __init__(
        self,
        pipeline: Pipeline,
        directory: Path,
        *,
        interval_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pipeline = pipeline
        self.directory = directory
        self.processed = directory / "processed"
        self.failed = directory / "failed"
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[Path, tuple[int, int]] = {}
        self._running = False
        self._problem: tuple[str, datetime] | None = None
        self._counters = {"polls": 0, "imported": 0, "failed": 0}

    async def start(self) -> None:
        """Nothing to prepare: each poll makes the folders it needs."""
        self._running = True

    async def stop(self) -> None:
        """Nothing to release: a file being imported when the worker stops is imported again."""
        self._running = False

    def health(self) -> SourceHealth:
        problem, at = self._problem or (None, None)
        return SourceHealth(CSV_SOURCE.code, self._running, problem, at, dict(self._counters))

    async def run(self) -> list[FileReport]:
        """Import every file unchanged since the previous poll; remember the others."""
        self._counters["polls"] += 1
        ready = await asyncio.to_thread(self._stable_files)
        reports = []
        for path in ready:
            try:
                reports.append(await self.process(path))
            except Exception as exc:
                # The file stays where it is and is tried again at the next poll.
                log.exception("csv: importing %s failed; it will be retried", path.name)
                self._problem = f"{path.name}: {type(exc).__name__}: {exc}", self._clock()
                continue
            self._seen.pop(path, None)
        return reports

    async def process(self, path: Path) -> FileReport:
        """Import one file, write its report and move both to processed/ or failed/."""
        report = await import_file(self._pipeline, path)
        await asyncio.to_thread(self._file_away, path, report)
        if report.failure:
            log.warning("csv: %s moved to failed/: %s", path.name, report.failure)
            self._counters["failed"] += 1
            problem, at = f"{path.name}: {report.failure}", self._clock()
            self._problem = problem, at
            await self._pipeline.record_error(CSV_SOURCE, problem, at=at)
        else:
            log.info("csv: %s imported (%s), moved to processed/", path.name, report.summary)
            self._counters["imported"] += 1
        return report

    def _stable_files(self) -> list[Path]:
        self.processed.mkdir(parents=True, exist_ok=True)
        self.failed.mkdir(parents=True, exist_ok=True)
        ready: list[Path] = []
        current: dict[Path, tuple[int, int]] = {}
        for path in sorted(self.directory.iterdir()):
            if not _is_drop(path):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            current[path] = (stat.st_size, stat.st_mtime_ns)
            if self._seen.get(path) == current[path]:
                ready.append(path)
        self._seen = current
        return ready

    def _file_away(self, path: Path, report: FileReport) -> None:
        # The report is in place before the file leaves the drop folder: a crash in between
        # means the file is imported again (duplicates), never a filed file without a report.
        folder = self.failed if report.failure else self.processed
        target = _free_name(folder, path.name, self._clock())
        report_path = folder / f"{target.stem}.report.csv"
        partial = report_path.with_name(report_path.name + ".part")
        partial.write_text(report.csv_text(), encoding="utf-8-sig")
        os.replace(partial, report_path)
        os.replace(path, target)


def _is_drop(path: Path) -> bool:
    # Editors' lock and temporary files (`.~lock.x.csv#`, `~$x.csv`) are not drops.
    name = path.name
    return path.suffix.lower() == ".csv" and not name.startswith((".", "~")) and path.is_file()


def _free_name(folder: Path, name: str, now: datetime) -> Path:
    """`name` in `folder`, or `stem.<UTC time>[-n].csv` when that name was filed there before."""
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    stamp = now.strftime("%Y%m%dT%H%M%S")
    for attempt in range(1, 1000):
        candidate = folder / f"{stem}.{stamp}{'' if attempt == 1 else f'-{attempt}'}{suffix}"
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name for {name} in {folder}")
