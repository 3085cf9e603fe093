"""The one protocol every source of readings implements, and the health it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ingest.pipeline import SourceRef


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What a source says of itself now: whether it runs, its latest problem, its counters."""

    code: str
    running: bool
    last_error: str | None = None
    last_error_at: datetime | None = None
    counters: dict[str, int] = field(default_factory=dict)


class Source(Protocol):
    """A way readings come in (HJ 212, MQTT, HTTP pull, CSV folder, the simulator).

    The worker drives every source alike: `start()` once, then `run()`, then `stop()` once.

    - `start()` gets ready and returns promptly: it binds a port or prepares a client, and
      raises SettingsError naming the setting that cannot work.
    - `run()` does the work. With `interval_s` None it runs until `stop()` ends it (a server,
      a subscription). With `interval_s` set it is one round (a pull, a poll, a tick), which the
      elected scheduler calls every `interval_s` seconds on the worker that leads only, so a
      feed is never pulled by two workers at once; a round that fails is recorded as the
      scheduler job's failure, and the next round runs as usual.
    - `stop()` stops taking input and lets what is under way finish: what was received is
      stored (and answered), what was not stored stays with its sender to be sent again. It
      releases what `start()` took and may be called before `start()`.
    - `health()` reports without I/O whether the source runs, its latest problem and counters.

    A source delivers through `Pipeline.ingest` as `ref`, and records a failure worth showing on
    /v1/sources with `Pipeline.record_error`.
    """

    @property
    def ref(self) -> SourceRef:
        """The source row its readings are counted on."""
        ...

    @property
    def interval_s(self) -> float | None:
        """Seconds between scheduled rounds, or None for a source that runs until stopped."""
        ...

    async def start(self) -> None:
        """Get ready to run."""
        ...

    async def run(self) -> object:
        """Run until stopped, or one scheduled round."""
        ...

    async def stop(self) -> None:
        """Stop taking input; finish what is under way."""
        ...

    def health(self) -> SourceHealth:
        """What the source says of itself now."""
        ...
