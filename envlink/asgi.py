"""The API as each of `envlink api --workers N`'s processes loads it (uvicorn, factory=True).

The parent process resolved the database (starting the embedded server if needed) and validated
the settings; it hands the URL down in ENVLINK_DATABASE_URL. Each process opens its own pool
and listening connection in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from fastapi import FastAPI

from api.app import create_app, end_streams
from core.logging import configure_logging
from core.settings import load_settings
from envlink.runtime import tune_gc, tune_malloc

Handler = Callable[[int, FrameType | None], Any]


def create() -> FastAPI:
    """The API of one worker process, configured from the ENVLINK_* environment."""
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    end_streams_on_stop(app)
    tune_gc()
    tune_malloc()
    return app


def end_streams_on_stop(app: FastAPI) -> None:
    """End the app's open alert streams as soon as this process is told to stop.

    The server of each process is uvicorn's own (its process supervisor makes it), and it has
    set its SIGINT and SIGTERM handlers when it loads the app: each is wrapped to end the
    streams too, as envlink.runtime.ApiServer does for a single process. Otherwise every open
    stream holds the shutdown for the whole graceful period, then is cancelled with a traceback.
    uvicorn puts the handlers it found back when it stops, so the wrappers go with it.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # not loaded by a running server
    if threading.current_thread() is not threading.main_thread():
        return
    ending: set[asyncio.Task[None]] = set()

    def end() -> None:
        task = loop.create_task(end_streams(app))
        ending.add(task)
        task.add_done_callback(ending.discard)

    def wrapped(previous: Handler) -> Handler:
        def stopping(signum: int, frame: FrameType | None) -> None:
            previous(signum, frame)
            loop.call_soon_threadsafe(end)

        return stopping

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if callable(previous):
            signal.signal(signum, wrapped(previous))
