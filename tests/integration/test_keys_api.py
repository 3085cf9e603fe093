"""Keys over the API: created once shown, listed without the key, revoked everywhere at once."""

from __future__ import annotations

from datetime import timedelta

import httpx
import psycopg
import pytest
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from core.timeutil import utcnow
from store.keys import LAST_USED_EVERY_S, authenticate, create_key, hash_key
from tests.integration.test_api_pool import database_of, pool_settings, served


async def _headers(pool: AsyncConnectionPool, agency: str, *roles: str) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency=agency, roles=list(roles))
    return {"Authorization": f"Bearer {plain}"}


async def test_a_created_key_is_shown_once_and_works(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    admin = await _headers(db, "gz_eeb", "admin")  # key 1
    body = {"agency": "gz_eeb", "roles": ["writer", "reader"], "label": "partner push"}
    body["rate_limit"] = 1200
    created = await client.post("/v1/keys", json=body, headers=admin)
    assert created.status_code == 201, created.text
    answer = created.json()
    plain = answer.pop("key")
    assert plain.startswith(f"elk_{answer['prefix']}_")
    assert answer.pop("created_at").endswith("+08:00")
    assert answer == {
        "id": 2, "prefix": answer["prefix"], "agency": "gz_eeb", "roles": ["reader", "writer"],
        "label": "partner push", "state": "active", "expires_at": None, "revoked_at": None,
        "last_used_at": None, "rate_limit": 1200,
    }  # fmt: skip
    async with db.connection() as conn:
        cur = await conn.execute("SELECT key_hash FROM api_key WHERE id = 2")
        assert await cur.fetchone() == (hash_key(plain),)
    used = await client.get("/v1/stations", headers={"X-API-Key": plain})
    assert used.status_code == 200
    listed = await client.get("/v1/keys", params={"tz": "UTC"}, headers=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(k["id"], k["agency"], "key" in k, k["rate_limit"]) for k in items] == [
        (1, "gz_eeb", False, None),
        (2, "gz_eeb", False, 1200),
    ]
    assert items[1]["last_used_at"] is not None and items[1]["last_used_at"].endswith("Z")
    assert plain not in listed.text


async def test_a_city_admin_manages_its_own_agency_only(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    gz_admin = await _headers(db, "gz_eeb", "admin")  # key 1
    await _headers(db, "dg_eeb", "reader")  # key 2
    refused = await client.post(
        "/v1/keys", json={"agency": "dg_eeb", "roles": ["reader"]}, headers=gz_admin
    )
    assert (refused.status_code, refused.json()["error"]["message"]) == (
        403,
        "an admin key of gz_eeb manages gz_eeb's keys only, not dg_eeb's"
        " (the joint office's admins manage every agency's keys)",
    )
    escalate = await client.post(
        "/v1/keys", json={"agency": "gz_eeb", "roles": ["joint_office"]}, headers=gz_admin
    )
    assert (escalate.status_code, escalate.json()["error"]["message"]) == (
        403,
        "only the joint office's admins grant the 'joint_office' role",
    )
    assert (await client.delete("/v1/keys/2", headers=gz_admin)).status_code == 403
    assert (await client.get("/v1/keys?agency=dg_eeb", headers=gz_admin)).status_code == 403
    own = await client.get("/v1/keys", headers=gz_admin)
    assert [k["id"] for k in own.json()["items"]] == [1]


async def test_the_joint_office_admin_manages_every_agency(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    office = await _headers(db, "joint_office", "admin")  # key 1
    for agency in ("dg_eeb", "gz_eeb"):
        body = {"agency": agency, "roles": ["joint_office", "reader"]}
        assert (await client.post("/v1/keys", json=body, headers=office)).status_code == 201
    listed = await client.get("/v1/keys?limit=2", headers=office)
    first = listed.json()
    assert [k["agency"] for k in first["items"]] == ["joint_office", "dg_eeb"]
    rest = await client.get(f"/v1/keys?limit=2&cursor={first['next_cursor']}", headers=office)
    assert [k["agency"] for k in rest.json()["items"]] == ["gz_eeb"]
    assert rest.json()["next_cursor"] is None
    revoked = await client.delete("/v1/keys/2", headers=office)
    assert (revoked.status_code, revoked.json()["state"]) == (200, "revoked")
    only_dg = await client.get("/v1/keys?agency=dg_eeb", headers=office)
    assert [(k["id"], k["state"]) for k in only_dg.json()["items"]] == [(2, "revoked")]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"agency": "xx", "roles": ["reader"]}, 400, "agency: no agency with code 'xx'"),
        ({"agency": "gz_eeb", "roles": []}, 422, "roles: List should have at least 1 item"),
        ({"agency": "gz_eeb", "roles": ["root"]}, 422, "roles.0: Input should be 'reader'"),
        ({"agency": "gz_eeb", "roles": ["reader"], "expires_at": "2020-01-01T00:00:00"}, 400,
         "expires_at: 2020-01-01T00:00:00+08:00 has passed"),
        ({"agency": "gz_eeb", "roles": ["reader"], "extra": 1}, 422, "extra: Extra inputs"),
        ({"agency": "gz_eeb", "roles": ["reader"], "rate_limit": 0}, 422,
         "rate_limit: Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
async def test_bad_key_requests_name_the_field(
    db: AsyncConnectionPool,
    client: httpx.AsyncClient,
    body: dict[str, object],
    status: int,
    message: str,
) -> None:
    office = await _headers(db, "joint_office", "admin")
    answer = await client.post("/v1/keys", json=body, headers=office)
    assert answer.status_code == status
    assert answer.json()["error"]["message"].startswith(message), answer.text


async def test_an_expiring_key_and_an_unknown_id(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    office = await _headers(db, "joint_office", "admin")
    expires = (utcnow() + timedelta(days=1)).isoformat()
    body = {"agency": "dg_eeb", "roles": ["reader"], "expires_at": expires}
    created = await client.post("/v1/keys?tz=UTC", json=body, headers=office)
    assert created.json()["expires_at"] == expires.replace("+00:00", "Z")
    missing = await client.delete("/v1/keys/99", headers=office)
    assert missing.status_code == 404


async def test_a_key_revoked_over_the_api_stops_at_once_in_every_process(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    office = await _headers(db, "joint_office", "admin")  # key 1
    victim = await _headers(db, "gz_eeb", "reader")  # key 2
    first, second = (create_app(pool_settings(settings)) for _ in range(2))
    async with (
        served(first) as first_base,
        served(second) as second_base,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for base in (first_base, second_base):
            assert (await client.get(f"{base}/v1/parameters", headers=victim)).status_code == 200
        assert database_of(second).keys.get(hash_key(victim["Authorization"][7:]), now=utcnow())
        revoked = await client.delete(f"{first_base}/v1/keys/2", headers=office)
        assert revoked.status_code == 200
        # The revoking process answers 401 at once, before its own NOTIFY comes back.
        again = await client.get(f"{first_base}/v1/parameters", headers=victim)
        assert again.status_code == 401
        for _ in range(100):
            answer = await client.get(f"{second_base}/v1/parameters", headers=victim)
            if answer.status_code == 401:
                break
        assert answer.status_code == 401


async def test_a_key_is_marked_used_at_most_every_30_seconds_and_its_row_never_held(
    db: AsyncConnectionPool, database_url: str
) -> None:
    """Requests that miss their process's key cache together must not queue on the key's row."""
    async with db.connection() as conn:
        key, plain = await create_key(conn, agency="gz_eeb", roles=["reader"])
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:

        async def last_used() -> object:
            cur = await other.execute("SELECT last_used_at FROM api_key WHERE id = %s", [key.id])
            return (await cur.fetchone() or [None])[0]

        async def row_free() -> bool:
            try:
                await other.execute(
                    "SELECT 1 FROM api_key WHERE id = %s FOR UPDATE NOWAIT", [key.id]
                )
            except errors.LockNotAvailable:
                return False
            return True

        async with db.connection() as conn:
            found = await authenticate(conn, plain)
            assert found is not None and found.last_used_at is None  # the mark it had
            # A statement of its own on a connection in no transaction: committed, nothing held.
            assert conn.info.transaction_status == TransactionStatus.IDLE
            marked = await last_used()
            assert marked is not None
            async with conn.transaction():
                again = await authenticate(conn, plain)
                assert again is not None and again.last_used_at == marked
                assert await row_free()  # marked within 30 s: not written, not locked
            assert await last_used() == marked
            await other.execute(
                "UPDATE api_key SET last_used_at = last_used_at - make_interval(secs => %s)"
                " WHERE id = %s",
                [LAST_USED_EVERY_S + 1, key.id],
            )
            stale = await last_used()
            assert await authenticate(conn, plain) is not None
            remarked = await last_used()
            assert isinstance(remarked, type(marked)) and remarked > stale  # type: ignore[operator]
