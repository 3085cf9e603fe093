"""Every NOTIFY channel and advisory-lock key EnvLink uses, in one place so that none collide.

Processes coordinate only through the database (docs/conventions.md §7). A NOTIFY wakes whoever
listens on its channel when the sending transaction commits; each process hears them on its one
listening connection (store/listen.py). An advisory lock serialises work across processes; its
key must be the same in every process and differ from every other key.

Key spaces: the single-key locks below take a bigint. The plain keys have their high 32 bits
zero; a series lock packs ROLLUP_LOCK_TAG into the high 32 bits, so it never meets a plain key.
The alert engine's per-(rule, subject) locks use the two-int4 form
(`pg_advisory_xact_lock(hashtext(rule_id), subject)`, store/alerts.py), which PostgreSQL keeps
apart from every bigint key (pg_locks.objsubid 2, not 1).
"""

from __future__ import annotations

# NOTIFY channels: sender → listeners.
READINGS_CHANNEL = "envlink_readings"  # ingest committed readings → the alert loops
ALERT_EVENTS_CHANNEL = "envlink_alert_events"  # the engine committed events → stage, SSE streams
OUTBOX_CHANNEL = "envlink_notifications"  # the stage committed notifications → dispatchers
KEYS_CHANNEL = "envlink_keys"  # an API key was revoked → every API process's key cache
CATALOGUE_CHANNEL = "envlink_catalogue"  # a seed changed the catalogue → every CatalogueCache
BACKFILL_CHANNEL = "envlink_backfill"  # `envlink backfill --station` → the HJ 212 servers

CHANNELS = (
    READINGS_CHANNEL,
    ALERT_EVENTS_CHANNEL,
    OUTBOX_CHANNEL,
    KEYS_CHANNEL,
    CATALOGUE_CHANNEL,
    BACKFILL_CHANNEL,
)

# Advisory-lock keys: four ASCII letters each, easy to recognise in pg_locks.
MIGRATION_LOCK = 0x454E564C  # "ENVL": one process at a time applies migrations (session lock)
PARTITION_LOCK = 0x454E5650  # "ENVP": one transaction at a time creates reading partitions
SCHEDULER_LOCK = 0x454E5343  # "ENSC": the worker holding it runs the scheduled jobs (session)
SWEEP_LOCK = 0x454E5357  # "ENSW": one alert loop at a time runs the engine's periodic sweep
ROLLUP_LOCK_TAG = 0x524F4C4C  # "ROLL": high half of a series' rollup lock (rollup_lock_key)

LOCKS = (MIGRATION_LOCK, PARTITION_LOCK, SCHEDULER_LOCK, SWEEP_LOCK)


def rollup_lock_key(station_id: int, parameter_id: int) -> int:
    """The lock on one series' rollups: the tag, then the station and parameter ids (16 bits each).

    Station ids beyond 16 bits share a key with another station: that only serialises two
    series that need not wait for each other, never lets two rollups of one series overlap.
    """
    return (ROLLUP_LOCK_TAG << 32) | ((station_id & 0xFFFF) << 16) | (parameter_id & 0xFFFF)
