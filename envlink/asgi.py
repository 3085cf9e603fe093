"""The API as each of `envlink api --workers N`'s processes loads it (uvicorn, factory=True).

The parent process resolved the database (starting the embedded server if needed) and validated
the settings; it hands the URL down in ENVLINK_DATABASE_URL. Each process opens its own pool
and listening connection in the app's lifespan.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from core.logging import configure_logging
from core.settings import load_settings
from envlink.runtime import tune_gc


def create() -> FastAPI:
    """The API of one worker process, configured from the ENVLINK_* environment."""
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    tune_gc()
    return app
