"""API keys: only a SHA-256 of each key is stored; the plain key is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from core.errors import AgencyNotFound, NotFound
from store.coordination import KEYS_CHANNEL
from store.pool import Conn, alone

KEY_PREFIX = "elk_"


def hash_key(key: str) -> bytes:
    """Keys are 256-bit random strings, so a plain SHA-256 is enough (no password stretching)."""
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    prefix: str
    agency: str
    agency_city: str | None
    roles: list[str]
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rate_limit: int | None = None  # requests a minute; None: ENVLINK_RATE_LIMIT_PER_MINUTE


async def create_key(
    conn: Conn,
    *,
    agency: str,
    roles: list[str],
    label: str | None = None,
    expires_at: datetime | None = None,
    rate_limit: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns its record and the plain key, which is not kept anywhere."""
    cur = await conn.execute("SELECT id FROM agency WHERE code = %s", [agency])
    row = await cur.fetchone()
    if row is None:
        raise AgencyNotFound(f"no agency with code {agency!r} (run `envlink seed` first?)")
    prefix = secrets.token_hex(4)
    plain = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    cur = await conn.execute(
        "INSERT INTO api_key (agency_id, prefix, key_hash, roles, label, expires_at, rate_limit)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [row[0], prefix, hash_key(plain), sorted(set(roles)), label, expires_at, rate_limit],
    )
    created = await cur.fetchone()
    assert created is not None
    return await get_key(conn, int(created[0])), plain


_COLUMNS = (
    "SELECT k.id, k.prefix, a.code AS agency, a.city AS agency_city, k.roles, k.label,"
    " k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.rate_limit"
)
_SELECT = _COLUMNS + " FROM api_key k JOIN agency a ON a.id = k.agency_id"


async def get_key(conn: Conn, key_id: int) -> ApiKey:
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(_SELECT + " WHERE k.id = %s", [key_id])
        found = await cur.fetchone()
    if found is None:
        raise NotFound(f"no API key with id {key_id}")
    return found


async def list_keys(
    conn: Conn, *, agency: str | None = None, after_id: int = 0, limit: int | None = None
) -> list[ApiKey]:
    """Keys by id (of one agency if given), those after `after_id`, at most `limit`."""
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(
            _SELECT + " WHERE (%(agency)s::text IS NULL OR a.code = %(agency)s)"
            " AND k.id > %(after)s ORDER BY k.id LIMIT %(limit)s",
            {"agency": agency, "after": after_id, "limit": limit},
        )
        return await cur.fetchall()


async def revoke_key(conn: Conn, key_id: int) -> ApiKey:
    """Revoke a key now; revoking twice keeps the first time.

    In the same statement, so in the same transaction even on an autocommit connection, it
    tells every API process to drop the keys it has cached (KEYS_CHANNEL, on commit).
    """
    await conn.execute(
        "WITH revoked AS (UPDATE api_key SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = %(id)s RETURNING id)"
        " SELECT pg_notify(%(channel)s, id::text) FROM revoked",
        {"id": key_id, "channel": KEYS_CHANNEL},
    )
    return await get_key(conn, key_id)


_LIVE = " AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())"


# A key's last_used_at is written at most once in this many seconds: written by every lookup,
# the lookups of a busy key whose cache entry just expired (every request in flight misses it)
# would queue on the key's row, each until the one before commits. They are not made to wait
# for one lookup instead: a request may hold a pooled connection while the one looking the key
# up waits for a connection. With the cache's lifetime (KeyCache ttl_s), last_used_at lags by
# up to a minute.
LAST_USED_EVERY_S = 30.0


async def authenticate(conn: Conn, plain: str) -> ApiKey | None:
    """The live key matching `plain`, or None if it is unknown, revoked or expired.

    A key found is marked used now unless it was marked in the last LAST_USED_EVERY_S seconds
    (the key returned holds the mark it had). On a connection in no transaction the statement
    is a transaction of its own, so the key's row is never locked past it.
    """
    async with alone(conn), conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(
            "WITH found AS (SELECT k.* FROM api_key k WHERE k.key_hash = %(hash)s"
            + _LIVE
            + "), marked AS (UPDATE api_key k SET last_used_at = now() FROM found"
            " WHERE k.id = found.id AND (k.last_used_at IS NULL"
            " OR k.last_used_at < now() - make_interval(secs => %(every)s)))"
            " " + _COLUMNS + " FROM found k JOIN agency a ON a.id = k.agency_id",
            {"hash": hash_key(plain), "every": LAST_USED_EVERY_S},
        )
        return await cur.fetchone()


STREAM_TOKEN_PREFIX = "elt_"


async def create_stream_token(conn: Conn, *, key_id: int, expires_at: datetime) -> str:
    """A new stream token of key `key_id`, valid until `expires_at`; tokens expired are dropped."""
    await conn.execute("DELETE FROM stream_token WHERE expires_at < now()")
    plain = f"{STREAM_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    await conn.execute(
        "INSERT INTO stream_token (token_hash, key_id, expires_at) VALUES (%s, %s, %s)",
        [hash_key(plain), key_id, expires_at],
    )
    return plain


async def authenticate_stream_token(conn: Conn, plain: str) -> ApiKey | None:
    """The live key a live stream token belongs to, or None (unknown, expired, key dead)."""
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(
            _SELECT + " JOIN stream_token t ON t.key_id = k.id"
            " WHERE t.token_hash = %s AND t.expires_at > now()" + _LIVE,
            [hash_key(plain)],
        )
        return await cur.fetchone()


class KeyCache:
    """Live keys recently authenticated in this process, by the SHA-256 of the key.

    Entries live `ttl_s` and never past their key's expiry. A revocation anywhere clears every
    process's cache at once (KEYS_CHANNEL, heard on the process's Listener), and so does a
    reconnect of the Listener, since a revocation may have been missed meanwhile. The owner
    consults the cache only while its Listener is connected. Unknown keys are never cached,
    so guessing keys cannot fill it.
    """

    def __init__(self, *, ttl_s: float = LAST_USED_EVERY_S, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[float, ApiKey]] = {}
        self.generation = 0  # bumped by every clear: a lookup older than it must not be stored

    def get(self, key_hash: bytes, *, now: datetime) -> ApiKey | None:
        """The cached live key with this hash, if any."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        cached_until, key = entry
        if time.monotonic() >= cached_until or (
            key.expires_at is not None and key.expires_at <= now
        ):
            del self._entries[key_hash]
            return None
        return key

    def put(self, key_hash: bytes, key: ApiKey, *, generation: int) -> None:
        """Cache `key`, read from the database while the cache was at `generation`."""
        if generation != self.generation:
            return  # cleared since the read began: the key may be revoked by now
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self._ttl_s, key)

    def clear(self, payload: str | None = None) -> None:
        """Drop every entry (a Listener callback: any revocation, any reconnect)."""
        self._entries.clear()
        self.generation += 1
