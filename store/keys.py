"""API keys: only a SHA-256 of each key is stored; the plain key is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from core.errors import AgencyNotFound, NotFound
from store.pool import Conn

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


async def create_key(
    conn: Conn,
    *,
    agency: str,
    roles: list[str],
    label: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns its record and the plain key, which is not kept anywhere."""
    cur = await conn.execute("SELECT id FROM agency WHERE code = %s", [agency])
    row = await cur.fetchone()
    if row is None:
        raise AgencyNotFound(f"no agency with code {agency!r} (run `envlink seed` first?)")
    prefix = secrets.token_hex(4)
    plain = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    cur = await conn.execute(
        "INSERT INTO api_key (agency_id, prefix, key_hash, roles, label, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        [row[0], prefix, hash_key(plain), sorted(set(roles)), label, expires_at],
    )
    created = await cur.fetchone()
    assert created is not None
    return await get_key(conn, int(created[0])), plain


_SELECT = (
    "SELECT k.id, k.prefix, a.code AS agency, a.city AS agency_city, k.roles, k.label,"
    " k.created_at, k.expires_at, k.revoked_at, k.last_used_at"
    " FROM api_key k JOIN agency a ON a.id = k.agency_id"
)


async def get_key(conn: Conn, key_id: int) -> ApiKey:
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(_SELECT + " WHERE k.id = %s", [key_id])
        found = await cur.fetchone()
    if found is None:
        raise NotFound(f"no API key with id {key_id}")
    return found


async def list_keys(conn: Conn) -> list[ApiKey]:
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(_SELECT + " ORDER BY k.id")
        return await cur.fetchall()


async def revoke_key(conn: Conn, key_id: int) -> ApiKey:
    """Revoke a key now; revoking twice keeps the first time."""
    await conn.execute(
        "UPDATE api_key SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s", [key_id]
    )
    return await get_key(conn, key_id)


async def authenticate(conn: Conn, plain: str) -> ApiKey | None:
    """The live key matching `plain`, or None if it is unknown, revoked or expired."""
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(
            _SELECT + " WHERE k.key_hash = %s AND k.revoked_at IS NULL"
            " AND (k.expires_at IS NULL OR k.expires_at > now())",
            [hash_key(plain)],
        )
        return await cur.fetchone()
