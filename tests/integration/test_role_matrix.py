"""Roles, exactly: every operation of the OpenAPI document × every role (docs/conventions.md §6).

Without a key every operation but /healthz, /readyz, /metrics and the signed bulletin link
answers 401; a key lacking the role an operation needs answers 403 naming that role; any other
key gets the operation's documented 2xx. The signed bulletin link is keyless: its signature is
its authority, so every role (and no key) gets its 200 alike; a key changes nothing. Each key
holds one role. An operation added without an entry in REQUESTS fails the test, so its roles are
decided when it is written.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from api.app import create_app
from core.settings import Settings
from core.signing import bulletin_link
from core.timeutil import utcnow
from store.bulletins import bulletin_versions, store_bulletin
from store.keys import create_key
from tests.integration.test_api_pool import served
from tests.integration.test_engine import T0, Feed, _air, _rule, _rules

ROLES = ("reader", "writer", "responder", "joint_office", "admin")
ANY = frozenset(ROLES)
# The roles an operation needs, where a plain reader is not enough (README "Roles").
NEEDS: dict[str, frozenset[str]] = {
    "POST /v1/readings": frozenset({"writer"}),
    "POST /v1/alerts/{alert_id}/ack": frozenset({"responder"}),
    "POST /v1/stations/{code}/maintenance": frozenset({"writer", "admin"}),
    "PUT /v1/rules/{rule_id}": frozenset({"joint_office"}),
    "GET /v1/audit": frozenset({"admin", "joint_office"}),
    **{
        f"{method} {path}": frozenset({"admin"})
        for method, path in [
            ("GET", "/v1/subscriptions"),
            ("POST", "/v1/subscriptions"),
            ("GET", "/v1/subscriptions/{subscription_id}"),
            ("PUT", "/v1/subscriptions/{subscription_id}"),
            ("DELETE", "/v1/subscriptions/{subscription_id}"),
            ("POST", "/v1/keys"),
            ("GET", "/v1/keys"),
            ("DELETE", "/v1/keys/{key_id}"),
        ]
    },
    **{
        f"{method} {path}": frozenset({"responder", "admin"})
        for method, path in [
            ("GET", "/v1/silences"),
            ("POST", "/v1/silences"),
            ("GET", "/v1/silences/{silence_id}"),
            ("DELETE", "/v1/silences/{silence_id}"),
        ]
    },
}
NO_KEY_NEEDED = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/reports/bulletin/signed",
}
SIGNING_KEY = "role-matrix-signing-key-0123"


@dataclass
class Call:
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None


@dataclass
class World:
    """What the requests need: an alert, a rule, and a key of every role to set things up."""

    client: httpx.AsyncClient
    pool: AsyncConnectionPool
    boss: dict[str, str]  # gz_eeb, every role: creates what a request consumes
    serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def created(self, path: str, body: dict[str, Any]) -> int:
        answer = await self.client.post(path, json=body, headers=self.boss)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def subscription_body(self) -> dict[str, Any]:
        return {
            "code": f"matrix-{next(self.serial)}",
            "channel": "webhook",
            "target": "https://hooks.example.cn/gz",
        }

    async def subscription(self) -> int:
        return await self.created("/v1/subscriptions", self.subscription_body())

    async def silence(self) -> int:
        return await self.created("/v1/silences", SILENCE)

    async def key(self) -> int:
        return await self.created("/v1/keys", {"agency": "gz_eeb", "roles": ["reader"]})

    async def rule(self) -> dict[str, Any]:
        answer = await self.client.get("/v1/rules/no2_instant", headers=self.boss)
        definition: dict[str, Any] = answer.json()["definition"]
        return {"definition": {**definition, "for_s": next(self.serial)}}


SILENCE = {"stations": ["gz-a-huangpu"], "ends_at": "2099-01-01T00:00:00", "comment": "matrix"}
PUSH = {
    "readings": [
        {"station": "gz-a-huangpu", "parameter": "no2", "time": "2026-11-20T09:00:00+08:00",
         "value": 41.0, "unit": "ug/m3"}
    ]
}  # fmt: skip
WINDOW = {"starts_at": "2026-11-20T09:00:00", "ends_at": "2026-11-20T10:00:00", "reason": "x"}
DAY = {"start": "2026-11-20T00:00:00", "end": "2026-11-21T00:00:00"}


async def _fixed(call: Call) -> Call:
    return call


def _static(path: str, **params: str) -> Callable[[World], Awaitable[Call]]:
    return lambda world: _fixed(Call(path, params))


async def _subscription_call(world: World) -> Call:
    return Call(f"/v1/subscriptions/{await world.subscription()}")


async def _subscription_put(world: World) -> Call:
    return Call(f"/v1/subscriptions/{await world.subscription()}", json=world.subscription_body())


async def _silence_call(world: World) -> Call:
    return Call(f"/v1/silences/{await world.silence()}")


async def _key_call(world: World) -> Call:
    return Call(f"/v1/keys/{await world.key()}")


async def _rule_put(world: World) -> Call:
    return Call("/v1/rules/no2_instant", json=await world.rule())


async def _subscription_post(world: World) -> Call:
    return Call("/v1/subscriptions", json=world.subscription_body())


async def _store_bulletin(world: World) -> None:
    """A stored version of 2026-11 (stored once)."""
    async with world.pool.connection() as conn, conn.transaction():
        if not await bulletin_versions(conn, date(2026, 11, 1)):
            await store_bulletin(
                conn, month=date(2026, 11, 1), generated_at=T0, body="{}", html="<p>11</p>",
                csv_zip=b"PK\x05\x06" + bytes(18),
            )  # fmt: skip


async def _stored_bulletin(world: World) -> Call:
    await _store_bulletin(world)
    return Call("/v1/reports/bulletins/2026-11", {"format": "html"})


async def _signed_bulletin(world: World) -> Call:
    """A signed link to a stored version."""
    await _store_bulletin(world)
    link = bulletin_link(
        "http://envlink", SIGNING_KEY, month="2026-11", version=1, file_format="html",
        expires_at=utcnow() + timedelta(days=1),
    )  # fmt: skip
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    return Call("/v1/reports/bulletin/signed", query)


# How to call each operation so that a key with the role gets its 2xx.
REQUESTS: dict[str, Callable[[World], Awaitable[Call]]] = {
    "GET /healthz": _static("/healthz"),
    "GET /readyz": _static("/readyz"),
    "GET /metrics": _static("/metrics"),
    "GET /v1/stations": _static("/v1/stations"),
    "GET /v1/rivers": _static("/v1/rivers"),
    "GET /v1/stations/{code}": _static("/v1/stations/gz-a-huangpu"),
    "GET /v1/parameters": _static("/v1/parameters"),
    "GET /v1/readings": _static("/v1/readings", station="gz-a-huangpu", parameter="no2"),
    "POST /v1/readings": lambda world: _fixed(Call("/v1/readings", json=PUSH)),
    "GET /v1/latest": _static("/v1/latest"),
    "GET /v1/export": _static("/v1/export", **DAY),
    "GET /v1/sources": _static("/v1/sources"),
    "GET /v1/aqi": _static("/v1/aqi", station="gz-a-huangpu"),
    "GET /v1/water-quality": _static("/v1/water-quality", station="gz-w-xintang"),
    "GET /v1/limits": _static("/v1/limits", station="gz-a-huangpu", parameter="pm25"),
    "GET /v1/notifications": _static("/v1/notifications"),
    "GET /v1/subscriptions": _static("/v1/subscriptions"),
    "POST /v1/subscriptions": _subscription_post,
    "GET /v1/subscriptions/{subscription_id}": _subscription_call,
    "PUT /v1/subscriptions/{subscription_id}": _subscription_put,
    "DELETE /v1/subscriptions/{subscription_id}": _subscription_call,
    "GET /v1/silences": _static("/v1/silences"),
    "POST /v1/silences": lambda world: _fixed(Call("/v1/silences", json=SILENCE)),
    "GET /v1/silences/{silence_id}": _silence_call,
    "DELETE /v1/silences/{silence_id}": _silence_call,
    "GET /v1/alerts/stream": _static("/v1/alerts/stream"),
    "POST /v1/stream-tokens": _static("/v1/stream-tokens"),
    "GET /v1/alerts": _static("/v1/alerts"),
    "GET /v1/alerts/{alert_id}.cap": _static("/v1/alerts/1.cap"),
    "GET /v1/alerts/{alert_id}": _static("/v1/alerts/1"),
    "POST /v1/alerts/{alert_id}/ack": _static("/v1/alerts/1/ack"),
    "POST /v1/stations/{code}/maintenance": lambda world: _fixed(
        Call("/v1/stations/gz-a-huangpu/maintenance", json=WINDOW)
    ),
    "GET /v1/stations/{code}/maintenance": _static("/v1/stations/gz-a-huangpu/maintenance"),
    "GET /v1/rules": _static("/v1/rules"),
    "GET /v1/rules/{rule_id}": _static("/v1/rules/no2_instant"),
    "PUT /v1/rules/{rule_id}": _rule_put,
    "GET /v1/rules/{rule_id}/versions": _static("/v1/rules/no2_instant/versions"),
    "POST /v1/keys": lambda world: _fixed(
        Call("/v1/keys", json={"agency": "gz_eeb", "roles": ["reader"]})
    ),
    "GET /v1/keys": _static("/v1/keys"),
    "GET /v1/me": _static("/v1/me"),
    "DELETE /v1/keys/{key_id}": _key_call,
    "GET /v1/audit": _static("/v1/audit"),
    "GET /v1/situation": _static("/v1/situation", area="dongjiang"),
    "GET /v1/reports/air": _static("/v1/reports/air", scope="region", period="2026-11"),
    "GET /v1/episodes": _static("/v1/episodes", start="2026-11-01", end="2026-12-01"),
    "GET /v1/reports/water": _static(
        "/v1/reports/water", scope="river", code="dongjiang", period="2026-11"
    ),
    "GET /v1/reports/bulletin": _static("/v1/reports/bulletin", month="2026-11"),
    "GET /v1/reports/bulletins": _static("/v1/reports/bulletins"),
    "GET /v1/reports/bulletins/{month}": _stored_bulletin,
    "GET /v1/reports/bulletin/signed": _signed_bulletin,
}


async def _status(world: World, method: str, call: Call, headers: dict[str, str]) -> httpx.Response:
    request = world.client.build_request(
        method, call.path, params=call.params, json=call.json, headers=headers
    )
    response = await world.client.send(request, stream=True)
    await response.aclose() if call.path.endswith("/stream") else await response.aread()
    return response


async def test_every_operation_answers_every_role_exactly(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    await _rules(db, _rule("no2_instant"))
    await Feed(db).send(_air(250, T0), at=T0)  # alert 1
    headers: dict[str, dict[str, str]] = {"none": {}}
    async with db.connection() as conn:
        for role in ROLES:
            agency = "joint_office" if role == "joint_office" else "gz_eeb"
            _, plain = await create_key(conn, agency=agency, roles=[role])
            headers[role] = {"Authorization": f"Bearer {plain}"}
        _, boss = await create_key(conn, agency="gz_eeb", roles=list(ROLES))
    update = {"rate_limits": "off", "signing_key": SecretStr(SIGNING_KEY)}
    app = create_app(settings.model_copy(update=update))
    operations = [
        (method.upper(), path, operation)
        for path, methods in app.openapi()["paths"].items()
        for method, operation in methods.items()
    ]
    assert sorted(f"{m} {p}" for m, p, _ in operations) == sorted(REQUESTS), (
        "every operation needs an entry in REQUESTS (and NEEDS, if a reader may not call it)"
    )
    answers: dict[tuple[str, str], int] = {}
    async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        world = World(client, db, {"Authorization": f"Bearer {boss}"})
        for method, path, operation in operations:
            name = f"{method} {path}"
            success = int(next(code for code in operation["responses"] if code.startswith("2")))
            needs = NEEDS.get(name, ANY)
            for role, role_headers in headers.items():
                call = await REQUESTS[name](world)
                response = await _status(world, method, call, role_headers)
                answers[(name, role)] = response.status_code
                if role == "none" and name not in NO_KEY_NEEDED:
                    assert response.status_code == 401, (name, role, response.text)
                elif role == "none" or role in needs:
                    assert response.status_code == success, (name, role, response.text)
                else:
                    assert response.status_code == 403, (name, role, response.text)
                    message = response.json()["error"]["message"]
                    assert all(needed in message for needed in needs), (name, message)
    assert len(answers) == len(REQUESTS) * 6
