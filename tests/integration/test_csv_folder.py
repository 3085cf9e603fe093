"""The CSV drop folder on real PostgreSQL and a real folder: reports, moves, quarantine."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from core.timeutil import CST
from ingest.pipeline import Pipeline
from ingest.sources.csv_folder import CsvFolder, FileReport
from schemas.common import QC
from store.intake import rejected_readings

NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
SAMPLED = datetime(2026, 11, 3, 10, tzinfo=CST)
BELOW = QC.BELOW_DETECTION.code

LAB = (
    "station,parameter,time,value,unit,period_s,flag\n"
    "gz-w-dadun,cu,2026-11-03T10:00,0.012,mg/L,,\n"
    "gz-w-dadun,cd,2026-11-03T10:00,0.0005L,mg/L,,\n"
    "gz-w-dadun,hg,2026-11-03T10:00,ND,mg/L,,\n"
    "gz-w-dadun,pb,2026-11-03T10:00,1.5,ug/L,,\n"
    "gz-w-nowhere,cu,2026-11-03T10:00,0.01,mg/L,,\n"
    "gz-w-dadun,zn,2026-11-03T10:00,lots,mg/L,,\n"
    "\n"
    "gz-w-dadun,as,2026-11-03T10:00,0.003,ppm,,\n"
    "gz-w-dadun,cr6,2026-11-03T10:00,150,mg/L,,\n"
    "gz-w-dadun,cn,2026-11-03T10:00\n"
    "gz-w-dadun,pm25,2026-11-03T10:00,12,ug/m3,,\n"
    "gz-w-dadun,se,2026/11/3 10:00,<0.0004,mg/L,86400,valid\n"
)


def _folder(pool: AsyncConnectionPool, directory: Path) -> CsvFolder:
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)
    return CsvFolder(pipeline, directory, clock=lambda: NOW)


async def _two_polls(folder: CsvFolder) -> list[FileReport]:
    """The first poll only notes the files; the second reads the ones that did not change."""
    assert await folder.run() == []
    return await folder.run()


def _tree(directory: Path, *, deep: bool = True) -> list[str]:
    found = directory.rglob("*") if deep else directory.iterdir()
    return sorted(path.relative_to(directory).as_posix() for path in found)


async def _query(pool: AsyncConnectionPool, query: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode())
        return await cur.fetchall()


async def _stored(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await _query(
        pool,
        "SELECT s.code, p.code, r.period_s, r.time, r.value, r.qc FROM reading r"
        " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
        " ORDER BY s.code, p.code, r.time",
    )


LAB_REPORT = (
    "line,outcome,reason\n"
    "2,accepted,\n"
    "3,accepted,\n"
    "4,accepted,\n"
    "5,accepted,\n"
    "6,rejected,unknown station 'gz-w-nowhere'\n"
    "7,rejected,\"value 'lots' is not a number, ND, or a detection limit like 0.01L\"\n"
    '9,rejected,"ppm is only accepted for the gases SO2, NO2, O3 and CO, not as"\n'
    '10,rejected,"cr6: value 150 mg/L is outside the physically possible range [0, 100]"\n'
    "11,rejected,the line has 3 fields; the header has 7\n"
    "12,rejected,station gz-w-dadun does not measure pm25\n"
    "13,accepted,\n"
)


async def test_mixed_file_keeps_good_rows_quarantines_bad_ones_and_files_a_report(
    db: AsyncConnectionPool, tmp_path: Path
) -> None:
    (tmp_path / "lab-2026-11.csv").write_text(LAB, encoding="utf-8")
    reports = await _two_polls(_folder(db, tmp_path))

    assert [(r.name, r.encoding, r.failure, r.summary) for r in reports] == [
        (
            "lab-2026-11.csv",
            "utf-8",
            None,
            {"accepted": 5, "duplicate": 0, "revised": 0, "rejected": 6},
        )
    ]
    assert _tree(tmp_path) == [
        "failed",
        "processed",
        "processed/lab-2026-11.csv",
        "processed/lab-2026-11.report.csv",
    ]
    assert (tmp_path / "processed" / "lab-2026-11.csv").read_text(encoding="utf-8") == LAB
    report = (tmp_path / "processed" / "lab-2026-11.report.csv").read_bytes()
    assert report == b"\xef\xbb\xbf" + LAB_REPORT.encode()

    assert await _stored(db) == [
        ("gz-w-dadun", "cd", 0, SAMPLED, 0.0005, BELOW),
        ("gz-w-dadun", "cu", 0, SAMPLED, 0.012, QC.VALID.code),
        ("gz-w-dadun", "hg", 0, SAMPLED, None, BELOW),
        ("gz-w-dadun", "pb", 0, SAMPLED, pytest.approx(0.0015), QC.VALID.code),
        ("gz-w-dadun", "se", 86400, datetime(2026, 11, 3, tzinfo=CST), 0.0004, BELOW),
    ]
    assert await _query(
        db,
        "SELECT so.code, r.station_code, r.parameter_code, r.reason, r.payload"
        " FROM rejected_reading r JOIN source so ON so.id = r.source_id ORDER BY r.id",
    ) == [
        (
            "csv",
            "gz-w-nowhere",
            "cu",
            "unknown station 'gz-w-nowhere'",
            "gz-w-nowhere,cu,2026-11-03T10:00,0.01,mg/L,,",
        ),
        (
            "csv",
            "gz-w-dadun",
            "zn",
            "value 'lots' is not a number, ND, or a detection limit like 0.01L",
            "gz-w-dadun,zn,2026-11-03T10:00,lots,mg/L,,",
        ),
        (
            "csv",
            "gz-w-dadun",
            "as",
            "ppm is only accepted for the gases SO2, NO2, O3 and CO, not as",
            "gz-w-dadun,as,2026-11-03T10:00,0.003,ppm,,",
        ),
        (
            "csv",
            "gz-w-dadun",
            "cr6",
            "cr6: value 150 mg/L is outside the physically possible range [0, 100]",
            "gz-w-dadun,cr6,2026-11-03T10:00,150,mg/L,,",
        ),
        (
            "csv",
            None,
            None,
            "the line has 3 fields; the header has 7",
            "gz-w-dadun,cn,2026-11-03T10:00",
        ),
        (
            "csv",
            "gz-w-dadun",
            "pm25",
            "station gz-w-dadun does not measure pm25",
            "gz-w-dadun,pm25,2026-11-03T10:00,12,ug/m3,,",
        ),
    ]
    assert await _query(
        db, "SELECT code, kind, accepted, duplicate, revised, rejected, last_error FROM source"
    ) == [("csv", "csv", 5, 0, 0, 6, None)]


async def test_bom_and_gbk_files_with_chinese_text(db: AsyncConnectionPool, tmp_path: Path) -> None:
    bom = (
        "station,parameter,time,value,unit\r\n"
        "gz-w-dadun,cu,2026-11-03 10:00,12,μg/L\r\n"
        "gz-w-dadun,cd,2026-11-03 10:00,0.1L,µg/L\r\n"
    )
    gbk = (
        "station,parameter,time,value,unit,flag\r\n"
        "gz-w-dadun,hg,2026-11-03 10:00,未检出,mg/L,\r\n"
        "gz-w-dadun,pb,2026-11-03 10:00,0.002,毫克/升,\r\n"
        "gz-w-dadun,zn,2026-11-03 10:00,0.05,mg/L,S\r\n"
    )
    (tmp_path / "a-bom.csv").write_bytes(b"\xef\xbb\xbf" + bom.encode("utf-8"))
    (tmp_path / "b-gbk.csv").write_bytes(gbk.encode("gbk"))
    reports = await _two_polls(_folder(db, tmp_path))

    assert [(r.name, r.encoding, r.summary) for r in reports] == [
        ("a-bom.csv", "utf-8", {"accepted": 2, "duplicate": 0, "revised": 0, "rejected": 0}),
        ("b-gbk.csv", "gbk", {"accepted": 2, "duplicate": 0, "revised": 0, "rejected": 1}),
    ]
    assert (tmp_path / "processed" / "b-gbk.report.csv").read_text(encoding="utf-8-sig") == (
        "line,outcome,reason\n"
        "2,accepted,\n"
        "3,rejected,unit '毫克/升' cannot be converted to mg/L for pb\n"
        "4,accepted,\n"
    )
    assert (tmp_path / "processed" / "b-gbk.csv").read_bytes() == gbk.encode("gbk")
    assert await _stored(db) == [
        ("gz-w-dadun", "cd", 0, SAMPLED, pytest.approx(0.0001), BELOW),
        ("gz-w-dadun", "cu", 0, SAMPLED, pytest.approx(0.012), QC.VALID.code),
        ("gz-w-dadun", "hg", 0, SAMPLED, None, BELOW),
        ("gz-w-dadun", "zn", 0, SAMPLED, 0.05, QC.MANUAL.code),
    ]
    # Quarantined as the row is in the file (decoded from GBK, without its line end).
    assert await _query(
        db, "SELECT reason, station_code, parameter_code, payload FROM rejected_reading"
    ) == [
        (
            "unit '毫克/升' cannot be converted to mg/L for pb",
            "gz-w-dadun",
            "pb",
            "gz-w-dadun,pb,2026-11-03 10:00,0.002,毫克/升,",
        )
    ]


async def test_unreadable_files_go_to_failed_with_the_reason(
    db: AsyncConnectionPool, tmp_path: Path
) -> None:
    (tmp_path / "bad-header.csv").write_bytes(
        "站点,项目,时间,数值,单位\r\n大墩,铜,2026-11-03,0.01,mg/L\r\n".encode("gbk")
    )
    (tmp_path / "utf16.csv").write_bytes("station,parameter,time,value,unit\n".encode("utf-16"))
    (tmp_path / "empty.csv").write_bytes(b"")
    reports = await _two_polls(_folder(db, tmp_path))

    header = (
        "line 1: bad header: unknown column(s) 站点, 项目, 时间, 数值, 单位; missing column(s)"
        " station, parameter, time, value, unit (expected station,parameter,time,value,unit"
        "[,period_s][,flag])"
    )
    utf16 = (
        "the file is neither UTF-8 (byte 0xff on line 1) nor GBK (byte 0xff on line 1);"
        " save it as UTF-8 CSV"
    )
    empty = (
        "the file is empty; line 1 must be the header station,parameter,time,value,unit"
        "[,period_s][,flag]"
    )
    assert [(r.name, r.failure) for r in reports] == [
        ("bad-header.csv", header),
        ("empty.csv", empty),
        ("utf16.csv", utf16),
    ]
    failed = tmp_path / "failed"
    assert _tree(failed) == [
        "bad-header.csv",
        "bad-header.report.csv",
        "empty.csv",
        "empty.report.csv",
        "utf16.csv",
        "utf16.report.csv",
    ]
    assert _tree(tmp_path / "processed") == []
    assert (failed / "bad-header.report.csv").read_text(encoding="utf-8-sig") == (
        f'line,outcome,reason\n1,failed,"{header}"\n'
    )
    assert (failed / "utf16.report.csv").read_text(encoding="utf-8-sig") == (
        f"line,outcome,reason\n,failed,{utf16}\n"
    )
    assert await _query(db, "SELECT count(*) FROM reading") == [(0,)]
    assert await _query(db, "SELECT count(*) FROM rejected_reading") == [(0,)]
    assert await _query(
        db, "SELECT code, accepted, rejected, last_error, last_error_at FROM source"
    ) == [("csv", 0, 0, f"utf16.csv: {utf16}", NOW)]


async def test_redropping_a_file_reports_duplicates(
    db: AsyncConnectionPool, tmp_path: Path
) -> None:
    folder = _folder(db, tmp_path)
    (tmp_path / "lab-2026-11.csv").write_text(LAB, encoding="utf-8")
    await _two_polls(folder)
    revised = LAB.replace(
        "gz-w-dadun,cu,2026-11-03T10:00,0.012", "gz-w-dadun,cu,2026-11-03T10:00,0.013"
    )
    (tmp_path / "lab-2026-11.csv").write_text(revised, encoding="utf-8")
    reports = await _two_polls(folder)
    assert [r.summary for r in reports] == [
        {"accepted": 0, "duplicate": 4, "revised": 1, "rejected": 6}
    ]
    assert _tree(tmp_path / "processed") == [
        "lab-2026-11.20261126T040000.csv",
        "lab-2026-11.20261126T040000.report.csv",
        "lab-2026-11.csv",
        "lab-2026-11.report.csv",
    ]
    second = (tmp_path / "processed" / "lab-2026-11.20261126T040000.report.csv").read_text(
        encoding="utf-8-sig"
    )
    assert second == (
        LAB_REPORT.replace("2,accepted", "2,revised")
        .replace("3,accepted", "3,duplicate")
        .replace("4,accepted", "4,duplicate")
        .replace("5,accepted", "5,duplicate")
        .replace("13,accepted", "13,duplicate")
    )
    assert await _query(db, "SELECT value FROM reading_revision") == [(0.012,)]
    assert await _query(db, "SELECT count(*) FROM rejected_reading") == [(12,)]
    counts = await _query(db, "SELECT accepted, duplicate, revised, rejected FROM source")
    assert counts == [(5, 4, 1, 12)]
    assert sum(counts[0]) == 2 * 11


async def test_a_file_still_being_written_is_not_read(
    db: AsyncConnectionPool, tmp_path: Path
) -> None:
    folder = _folder(db, tmp_path)
    lines = LAB.splitlines(keepends=True)
    path = tmp_path / "growing.csv"
    path.write_text("".join(lines[:3]), encoding="utf-8")
    (tmp_path / "upload.csv.part").write_text(LAB, encoding="utf-8")
    (tmp_path / "~$growing.csv").write_text("lock", encoding="utf-8")
    (tmp_path / ".~lock.growing.csv#").write_text("lock", encoding="utf-8")
    assert await folder.run() == []
    with path.open("a", encoding="utf-8") as grow:
        grow.write("".join(lines[3:]))
    assert await folder.run() == []
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert await folder.run() == []
    reports = await folder.run()
    assert [(r.name, r.summary) for r in reports] == [
        ("growing.csv", {"accepted": 5, "duplicate": 0, "revised": 0, "rejected": 6})
    ]
    assert await folder.run() == []
    assert _tree(tmp_path, deep=False) == [
        ".~lock.growing.csv#",
        "failed",
        "processed",
        "upload.csv.part",
        "~$growing.csv",
    ]


async def test_import_csv_command_prints_a_report_per_row(
    db: AsyncConnectionPool, database_url: str, tmp_path: Path
) -> None:
    lab = tmp_path / "lab.csv"
    lab.write_text(LAB.replace("2026-11-03T10:00", "2026-11-03T11:00"), encoding="utf-8")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    env = {**os.environ, "ENVLINK_DATABASE_URL": database_url, "ENVLINK_LOG_LEVEL": "ERROR"}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "envlink.cli", "import-csv", str(lab), str(tmp_path / "bad.csv")),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert (process.returncode, err.decode()) == (1, "")
    stdout = out.decode()
    bad_reason = (
        "line 1: bad header: unknown column(s) a, b; missing column(s) station, parameter, time,"
        " value, unit (expected station,parameter,time,value,unit[,period_s][,flag])"
    )
    assert stdout.splitlines() == [
        f"{lab}: 11 rows (utf-8): 5 accepted, 0 duplicate, 0 revised, 6 rejected",
        f"{lab}:2\taccepted",
        f"{lab}:3\taccepted",
        f"{lab}:4\taccepted",
        f"{lab}:5\taccepted",
        f"{lab}:6\trejected\tunknown station 'gz-w-nowhere'",
        f"{lab}:7\trejected\tvalue 'lots' is not a number, ND, or a detection limit like 0.01L",
        f"{lab}:9\trejected\tppm is only accepted for the gases SO2, NO2, O3 and CO, not as",
        f"{lab}:10\trejected\tcr6: value 150 mg/L is outside the physically possible range"
        " [0, 100]",
        f"{lab}:11\trejected\tthe line has 3 fields; the header has 7",
        f"{lab}:12\trejected\tstation gz-w-dadun does not measure pm25",
        f"{lab}:13\taccepted",
        f"{tmp_path / 'bad.csv'}: failed: {bad_reason}",
    ]
    assert lab.exists()
    assert await _query(db, "SELECT count(*) FROM reading") == [(5,)]


async def test_hostile_rows_are_rejected_alone_and_quarantined_byte_for_byte(
    db: AsyncConnectionPool, tmp_path: Path
) -> None:
    # (the row's bytes, why it is rejected, or None when it is stored)
    rows: list[tuple[bytes, str | None]] = [
        (b"gz-w-dadun,cu,2026-11-03T10:00,0.012,mg/L,,", None),
        (b"gz-w-dadun\x00,cu,2026-11-03T10:00,0.01,mg/L,,", "unknown station 'gz-w-dadun\\x00'"),
        (
            b"gz-w-dadun,zn,2026-11-03T10:00,0.5\x00,mg/L,,",
            "value '0.5\\x00' is not a number, ND, or a detection limit like 0.01L",
        ),
        (
            b"gz-w-dadun,pb\xff,2026-11-03T10:00,1.5,ug/L,,",
            "byte 0xff (character 14 of the line) is not text in the file's encoding",
        ),
        (
            b"gz-w-dadun,cd,2026-11-03T10:00,1e308,mg/L,,",
            "cd: value 1e+308 mg/L is outside the physically possible range [0, 100]",
        ),
        (b"gz-w-dadun,hg,2026-11-03T10:00,1e400,mg/L,,", "value '1e400' is not a finite number"),
        (b"gz-w-dadun,as,2026-11-03T10:00,nan,mg/L,,", "value 'nan' is not a finite number"),
        (
            b"gz-w-dadun,cr6,2026-11-03T10:00,18446744073709551616,mg/L,,",
            "cr6: value 1.84467e+19 mg/L is outside the physically possible range [0, 100]",
        ),
        (
            b"gz-w-dadun,cn,0001-01-01T00:00+14:00,0.01,mg/L,,",
            "time: '0001-01-01T00:00+14:00' is outside the years 1900-2199",
        ),
        (
            b"gz-w-dadun,cn,9999/12/31 23:59,0.01,mg/L,,",
            "time: '9999/12/31 23:59' is outside the years 1900-2199",
        ),
        (
            b"gz-w-dadun,cn,2026-11-03T10:00+25:00,0.01,mg/L,,",
            "time '2026-11-03T10:00+25:00' is not an ISO 8601 time like 2026-11-03T10:00",
        ),
        (b"gz-w-dadun,pb,2026-11-03T10:00,-0,ug/L,,", None),
    ]
    data = b"station,parameter,time,value,unit,period_s,flag\n"
    data += b"".join(row + b"\n" for row, _ in rows)
    (tmp_path / "hostile.csv").write_bytes(data)
    [report] = await _two_polls(_folder(db, tmp_path))
    assert report.failure is None and report.encoding == "utf-8"
    assert [(line.line, line.outcome, line.reason) for line in report.lines] == [
        (n + 2, "accepted" if reason is None else "rejected", reason or "")
        for n, (_, reason) in enumerate(rows)
    ]
    stored = await _stored(db)
    assert stored == [
        ("gz-w-dadun", "cu", 0, SAMPLED, 0.012, QC.VALID.code),
        ("gz-w-dadun", "pb", 0, SAMPLED, 0.0, QC.VALID.code),
    ]
    assert str(stored[1][4]) == "0.0"  # -0 is stored without its sign
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    assert [(q.reason, q.payload.encode("utf-8", "surrogateescape")) for q in quarantined] == [
        (reason, row) for row, reason in rows if reason is not None
    ]
    assert await _query(
        db, "SELECT station_code, parameter_code, payload FROM rejected_reading WHERE escaped"
    ) == [
        ("gz-w-dadun\\x00", "cu", "gz-w-dadun\\x00,cu,2026-11-03T10:00,0.01,mg/L,,"),
        ("gz-w-dadun", "zn", "gz-w-dadun,zn,2026-11-03T10:00,0.5\\x00,mg/L,,"),
        ("gz-w-dadun", "pb\\xff", "gz-w-dadun,pb\\xff,2026-11-03T10:00,1.5,ug/L,,"),
    ]
    # Reasons quote what a row held as Python does, so the report is plain UTF-8.
    report_text = (tmp_path / "processed" / "hostile.report.csv").read_text(encoding="utf-8-sig")
    assert report_text.splitlines()[2] == "3,rejected,unknown station 'gz-w-dadun\\x00'"
