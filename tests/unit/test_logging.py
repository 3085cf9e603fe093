"""Log lines: control characters escaped, tracebacks indented, recurring events rate-limited."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from core.logging import (
    ACCEPT_FAILED,
    FORMAT,
    EveryInterval,
    OneLineFormatter,
    escape_control,
    quiet_accept_errors,
)
from ingest.leader import CancelledJobs


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain 东江 text", "plain 东江 text"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("nul\x00", "nul\\x00"),
        ("esc\x1b[31m", "esc\\x1b[31m"),
        ("del\x7f c1\x85", "del\\x7f c1\\x85"),
        ("line\u2028sep", "line\\u2028sep"),
        ("byte\udcff", "byte\\udcff"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_escape_control(text: str, escaped: str) -> None:
    assert escape_control(text) == escaped


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.one_line")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, text
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_message_and_args_are_escaped(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, text = logged
    logger.warning("unknown MN %s from\n%r", "1\nCRITICAL x: forged\x00", "peer")
    assert text.getvalue() == (
        "WARNING test.one_line: unknown MN 1\\nCRITICAL x: forged\\x00 from\\n'peer'\n"
    )


def test_a_traceback_keeps_its_lines_each_indented(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, text = logged
    try:
        raise ValueError("bad MN\nCRITICAL x: forged")
    except ValueError:
        logger.exception("frame failed")
    lines = text.getvalue().splitlines()
    assert lines[0] == "ERROR test.one_line: frame failed"
    assert lines[1] == "  Traceback (most recent call last):"
    assert lines[-2:] == ["  ValueError: bad MN", "  CRITICAL x: forged"]
    assert all(line.startswith("  ") for line in lines[1:])


def test_format_is_time_level_logger_message() -> None:
    assert FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"


def test_every_interval_logs_once_then_counts(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, text = logged
    now = [100.0]
    every = EveryInterval(logger, 10.0, clock=lambda: now[0])
    for _ in range(1000):
        every(logging.ERROR, "accept failed: %s", "EMFILE")
        now[0] += 0.001
    now[0] = 111.0
    every(logging.ERROR, "accept failed: %s", "EMFILE")
    assert text.getvalue().splitlines() == [
        "ERROR test.one_line: accept failed: EMFILE",
        "ERROR test.one_line: accept failed: EMFILE (999 more in the last 11 s)",
    ]


def test_accept_errors_are_logged_once_per_interval_and_others_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        quiet_accept_errors(loop)
        error = OSError(24, "Too many open files")
        for _ in range(500):  # what asyncio's accept loop reports, once per waiting connection
            loop.call_exception_handler({"message": ACCEPT_FAILED, "exception": error})
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "asyncio",
            "ERROR",
            f"{ACCEPT_FAILED}: [Errno 24] Too many open files; new connections wait until"
            " descriptors are free (open-files limit, ENVLINK_HJ212_MAX_CONNECTIONS)",
        ),
        ("asyncio", "ERROR", "something else"),
    ]


def test_a_job_cancelled_at_stand_down_is_one_line_at_info(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, text = logged
    logger.addFilter(CancelledJobs())
    try:
        raise asyncio.CancelledError
    except asyncio.CancelledError:
        logger.exception('Job "%s" raised an exception', "SimulatorJob.run")
    try:
        raise ValueError("a real failure")
    except ValueError:
        logger.exception('Job "%s" raised an exception', "HttpPullJob.run")
    lines = text.getvalue().splitlines()
    assert lines[0] == (
        'INFO test.one_line: Job "SimulatorJob.run" cancelled as the scheduler stood down'
    )
    assert lines[1] == 'ERROR test.one_line: Job "HttpPullJob.run" raised an exception'
    assert lines[-1] == "  ValueError: a real failure"
