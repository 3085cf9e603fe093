"""POST /v1/readings over real PostgreSQL: roles, ownership, per-item results, limits, schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from core.settings import Settings
from core.timeutil import CST
from schemas.common import QC
from schemas.push import MAX_BODY_BYTES, push_body_schema
from store.intake import rejected_readings
from store.keys import create_key

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "json" / "readings-push.schema.json"
T0 = datetime(2026, 11, 25, 10, tzinfo=CST)


async def _key(pool: AsyncConnectionPool, agency: str, *roles: str) -> dict[str, str]:
    async with pool.connection() as conn:
        _, plain = await create_key(conn, agency=agency, roles=list(roles))
    return {"Authorization": f"Bearer {plain}"}


def _item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "station": "gz-a-huangpu",
        "parameter": "pm25",
        "time": "2026-11-25T10:00:00+08:00",
        "value": 35.0,
        "unit": "ug/m3",
        "period_s": 3600,
    }
    return {**base, **fields}


async def _query(pool: AsyncConnectionPool, query: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode())
        return await cur.fetchall()


async def _stored(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await _query(
        pool,
        "SELECT s.code, p.code, r.period_s, r.time, r.value, r.qc FROM reading r"
        " JOIN station s ON s.id = r.station_id JOIN parameter p ON p.id = r.parameter_id"
        " ORDER BY s.code, p.code, r.time",
    )


async def _quarantined(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await _query(
        pool,
        "SELECT so.code, r.station_code, r.parameter_code, r.reason, r.payload"
        " FROM rejected_reading r JOIN source so ON so.id = r.source_id ORDER BY r.id",
    )


async def _nothing_stored(pool: AsyncConnectionPool) -> None:
    counts = await _query(
        pool,
        "SELECT (SELECT count(*) FROM reading), (SELECT count(*) FROM rejected_reading),"
        " (SELECT count(*) FROM source)",
    )
    assert counts == [(0, 0, 0)]


async def test_push_without_key_is_401(client: httpx.AsyncClient, db: AsyncConnectionPool) -> None:
    response = await client.post("/v1/readings", json={"readings": [_item()]})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "unauthenticated",
            "message": "an API key is required (Authorization: Bearer <key> or X-API-Key)",
        }
    }
    await _nothing_stored(db)


async def test_push_without_writer_role_is_403(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "reader", "responder")
    response = await client.post("/v1/readings", json={"readings": [_item()]}, headers=headers)
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "forbidden",
            "message": "this action needs the 'writer' role; the key has ['reader', 'responder']",
        }
    }
    await _nothing_stored(db)


async def test_another_agencys_station_refuses_the_whole_request(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    body = {
        "readings": [
            _item(),
            _item(station="dg-w-humen", parameter="ph", value=7.2, unit="1"),
            _item(station="dg-a-shilong", parameter="so2", time="not a time"),
            _item(station="gz-a-nowhere"),
            _item(station="dg-w-humen", parameter="do", value=6.1, unit="mg/L"),
        ]
    }
    response = await client.post("/v1/readings", json=body, headers=headers)
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "forbidden",
            "message": "a key of gz_eeb may push readings only for gz_eeb's stations, not"
            " dg-a-shilong (dg_eeb), dg-w-humen (dg_eeb); nothing from this request was stored",
        }
    }
    await _nothing_stored(db)

    joint = await _key(db, "joint_office", "writer")
    response = await client.post("/v1/readings", json={"readings": [_item()]}, headers=joint)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "a key of joint_office may push readings only for joint_office's stations, not"
        " gz-a-huangpu (gz_eeb); nothing from this request was stored"
    )
    await _nothing_stored(db)


async def test_mixed_items_get_per_item_results_and_bad_ones_are_quarantined(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    readings: list[Any] = [
        _item(),
        _item(
            station="gz-w-dadun",
            parameter="nh3n",
            time="2026-11-25T08:00:00",
            value=0.5,
            unit="mg/L",
            flag="M",
        ),
        _item(time="25/11/2026 10:00"),
        {"station": "gz-a-huangpu", "parameter": "pm10", "time": "2026-11-25T10:00", "value": 1},
        _item(value="12"),
        17,
        _item(station="gz-a-nowhere"),
        _item(time="2026-11-25T11:00:00+08:00", value=-5),
        _item(
            station="gz-w-dadun",
            parameter="cd",
            time="2026-11-03",
            value=0.0005,
            unit="mg/L",
            period_s=0,
            flag="below_detection",
        ),
        _item(flag="X"),
    ]
    body = json.dumps({"readings": readings}, ensure_ascii=False)
    headers["Content-Type"] = "application/json"
    response = await client.post("/v1/readings", content=body.encode(), headers=headers)
    assert response.status_code == 200
    reasons = {
        2: "time: '25/11/2026 10:00' is not an ISO 8601 / RFC 3339 time",
        3: "unit: missing",
        4: 'value: Input should be a valid number (got "12")',
        5: "item must be a JSON object, not a number",
        6: "unknown station 'gz-a-nowhere'",
        7: "pm25: value -5 ug/m3 is outside the physically possible range [0, 2000]",
        9: "flag: 'X' is not an HJ 212 flag (N, F, M, S, D, C, T, B) or a QC state (valid,"
        " suspect, invalid, below_detection, maintenance, calibration, manual, stopped, fault,"
        " over_range, comm_fault)",
    }
    assert response.json() == {
        "received": 10,
        "summary": {"accepted": 3, "duplicate": 0, "revised": 0, "rejected": 7},
        "results": [
            {"index": i, "outcome": "rejected", "reason": reasons[i]}
            if i in reasons
            else {"index": i, "outcome": "accepted"}
            for i in range(10)
        ],
    }
    assert await _stored(db) == [
        ("gz-a-huangpu", "pm25", 3600, T0, 35.0, QC.VALID.code),
        ("gz-w-dadun", "cd", 0, datetime(2026, 11, 3, tzinfo=CST), 0.0005, QC.BELOW_DETECTION.code),
        ("gz-w-dadun", "nh3n", 3600, T0 - timedelta(hours=2), 0.5, QC.MAINTENANCE.code),
    ]
    # Each item as it is in the body (json.dumps writes an item the same inside and alone).
    sent = {i: json.dumps(readings[i], ensure_ascii=False) for i in reasons}
    assert all(text in body for text in sent.values())
    assert await _quarantined(db) == [
        ("push:gz_eeb", "gz-a-huangpu", "pm25", reasons[2], sent[2]),
        ("push:gz_eeb", "gz-a-huangpu", "pm10", reasons[3], sent[3]),
        ("push:gz_eeb", "gz-a-huangpu", "pm25", reasons[4], sent[4]),
        ("push:gz_eeb", None, None, reasons[5], "17"),
        ("push:gz_eeb", "gz-a-nowhere", "pm25", reasons[6], sent[6]),
        ("push:gz_eeb", "gz-a-huangpu", "pm25", reasons[7], sent[7]),
        ("push:gz_eeb", "gz-a-huangpu", "pm25", reasons[9], sent[9]),
    ]
    assert await _query(
        db, "SELECT code, kind, accepted, duplicate, revised, rejected FROM source"
    ) == [("push:gz_eeb", "push", 3, 0, 0, 7)]


# A reading written by hand, stored when it travels next to the rejected ones.
GOOD_PM10 = (
    '{"station": "gz-a-huangpu", "parameter": "pm10", "time": "2026-11-25T10:00",'
    ' "value": 50, "unit": "µg/m³", "period_s": 3600}'
)


async def _push_text(client: httpx.AsyncClient, headers: dict[str, str], body: str) -> Any:
    """POST a hand-written JSON body as is; the summary of the 200 answer."""
    headers = {**headers, "Content-Type": "application/json"}
    response = await client.post("/v1/readings", content=body.encode(), headers=headers)
    assert response.status_code == 200
    return response.json()["summary"]


async def test_items_the_pipeline_rejects_are_quarantined_as_the_client_sent_them(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    # Written by hand: spacing, key order, 35 vs 35.0 and µg/m³ would change if re-serialised.
    nowhere = (
        '{"station":"gz-a-nowhere", "parameter": "pm25","time":"2026-11-25T10:00","value":35,'
        '"unit":"µg/m³"}'
    )
    ppb = (
        '{\n  "parameter" : "pm25",\n  "station" : "gz-a-huangpu",\n  "time" : "2026-11-25T10:00",'
        '\n  "value" : 1e1,\n  "unit" : "ppb"\n}'
    )
    body = f'{{ "readings" : [ {nowhere},\r\n{GOOD_PM10} ,\t{ppb} ] }}'
    assert await _push_text(client, headers, body) == {
        "accepted": 1,
        "duplicate": 0,
        "revised": 0,
        "rejected": 2,
    }
    assert await _quarantined(db) == [
        ("push:gz_eeb", "gz-a-nowhere", "pm25", "unknown station 'gz-a-nowhere'", nowhere),
        (
            "push:gz_eeb",
            "gz-a-huangpu",
            "pm25",
            "ppb is only accepted for the gases SO2, NO2, O3 and CO, not pm25",
            ppb,
        ),
    ]
    assert await _stored(db) == [("gz-a-huangpu", "pm10", 3600, T0, 50.0, QC.VALID.code)]


async def test_items_failing_validation_are_quarantined_as_the_client_sent_them(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    # Written by hand: spacing, 1e1, 5E0 and the \u escape would change if re-serialised.
    bad_time = (
        r'{ "station":"gz-a-huangpu", "time" : "not a time" ,"parameter":"pm25","value":1e1,'
        r' "unit":"\u00b5g/m3" }'
    )
    no_unit = '{"station" :"gz-a-huangpu","parameter":"pm10","time":"2026-11-25T10:00","value":5E0}'
    body = f'{{"readings":[{bad_time} ,\n {GOOD_PM10},{no_unit}]}}'
    assert await _push_text(client, headers, body) == {
        "accepted": 1,
        "duplicate": 0,
        "revised": 0,
        "rejected": 2,
    }
    assert await _quarantined(db) == [
        (
            "push:gz_eeb",
            "gz-a-huangpu",
            "pm25",
            "time: 'not a time' is not an ISO 8601 / RFC 3339 time",
            bad_time,
        ),
        ("push:gz_eeb", "gz-a-huangpu", "pm10", "unit: missing", no_unit),
    ]
    assert await _stored(db) == [("gz-a-huangpu", "pm10", 3600, T0, 50.0, QC.VALID.code)]


async def test_resent_items_are_duplicates_and_changed_ones_revisions(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    first = [_item(), _item(parameter="pm10", value=50.0)]
    response = await client.post("/v1/readings", json={"readings": first}, headers=headers)
    assert response.json()["summary"] == {
        "accepted": 2,
        "duplicate": 0,
        "revised": 0,
        "rejected": 0,
    }

    again = [
        _item(),
        _item(parameter="pm10", value=52.0),
        _item(time="2026-11-25T11:00:00+08:00"),
        _item(time="2026-11-25T10:00:00Z", value=40.0, flag="C"),
    ]
    for _ in range(2):
        response = await client.post("/v1/readings", json={"readings": again}, headers=headers)
        assert response.status_code == 200
        outcomes = [item["outcome"] for item in response.json()["results"]]
        if _ == 0:
            assert outcomes == ["duplicate", "revised", "accepted", "accepted"]
        else:
            assert outcomes == ["duplicate", "duplicate", "duplicate", "duplicate"]
    assert await _stored(db) == [
        ("gz-a-huangpu", "pm10", 3600, T0, 52.0, QC.VALID.code),
        ("gz-a-huangpu", "pm25", 3600, T0, 35.0, QC.VALID.code),
        ("gz-a-huangpu", "pm25", 3600, T0 + timedelta(hours=1), 35.0, QC.VALID.code),
        ("gz-a-huangpu", "pm25", 3600, T0 + timedelta(hours=8), 40.0, QC.CALIBRATION.code),
    ]
    assert await _query(db, "SELECT value, qc FROM reading_revision") == [(50.0, 0)]
    assert await _query(db, "SELECT accepted, duplicate, revised, rejected FROM source") == [
        (4, 5, 1, 0)
    ]


async def test_ppb_and_ppm_are_converted_to_the_canonical_unit(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "dg_eeb", "writer", "reader")
    readings = [
        _item(station="dg-a-shilong", parameter="so2", value=10.0, unit="ppb"),
        _item(station="dg-a-shilong", parameter="no2", value=10.0, unit="ppb"),
        _item(station="dg-a-shilong", parameter="co", value=1.0, unit="ppm"),
        _item(station="dg-a-shilong", parameter="o3", value=1.0, unit="mg/m³"),
        _item(station="dg-a-shilong", parameter="pm25", value=1.0, unit="ppb"),
    ]
    response = await client.post("/v1/readings", json={"readings": readings}, headers=headers)
    assert response.json()["summary"] == {
        "accepted": 4,
        "duplicate": 0,
        "revised": 0,
        "rejected": 1,
    }
    assert response.json()["results"][4] == {
        "index": 4,
        "outcome": "rejected",
        "reason": "ppb is only accepted for the gases SO2, NO2, O3 and CO, not pm25",
    }
    stored = {parameter: value for _, parameter, _, _, value, _ in await _stored(db)}
    assert stored == {
        "so2": pytest.approx(26.2),
        "no2": pytest.approx(18.8),
        "co": pytest.approx(1.145),
        "o3": pytest.approx(1000.0),
    }
    response = await client.get(
        "/v1/readings", params={"station": "dg-a-shilong", "parameter": "so2"}, headers=headers
    )
    assert response.json()["items"] == [
        {
            "time": "2026-11-25T10:00:00+08:00",
            "period_s": 3600,
            "period_end": "2026-11-25T11:00:00+08:00",
            "value": 26.0,  # stored 26.2 (10 ppb), published to an integer
            "unit": "ug/m3",
            "qc": "valid",
        }
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", 'the request body is empty; send {"readings": [...]} as JSON'),
        (
            b"readings=1",
            "the request body is not valid JSON: unexpected character, expected a"
            " JSON value: line 1 column 1 (char 0)",
        ),
        (
            b'{"readings": [1,]}',
            "the request body is not valid JSON: trailing comma is not"
            " allowed: line 1 column 16 (char 15)",
        ),
        (b"[]", 'the request body must be a JSON object {"readings": [...]}'),
        (b'{"reading": []}', 'the request body must be a JSON object {"readings": [...]}'),
        (
            b'{"readings": {"station": "x"}}',
            'the request body must be a JSON object {"readings": [...]}',
        ),
        (
            b'{"readings": [], "source": "x"}',
            'unexpected top-level field(s) source; the body is {"readings": [...]}',
        ),
    ],
)
async def test_a_body_that_is_not_a_readings_document_is_400(
    client: httpx.AsyncClient, db: AsyncConnectionPool, content: bytes, message: str
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    response = await client.post(
        "/v1/readings",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_input", "message": message}}
    assert await _query(db, "SELECT count(*) FROM reading") == [(0,)]


async def test_10000_readings_pass_and_10001_are_413(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    readings = [
        _item(time=(T0 - timedelta(minutes=n)).isoformat(), period_s=0, value=float(n % 500))
        for n in range(10_001)
    ]
    response = await client.post("/v1/readings", json={"readings": readings}, headers=headers)
    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "code": "payload_too_large",
            "message": "the request has 10,001 readings; the limit is 10,000 per request: split"
            " the readings into several requests",
        }
    }
    await _nothing_stored(db)

    response = await client.post(
        "/v1/readings", json={"readings": readings[:10_000]}, headers=headers
    )
    assert response.status_code == 200
    assert response.json()["summary"] == {
        "accepted": 10_000,
        "duplicate": 0,
        "revised": 0,
        "rejected": 0,
    }
    assert await _query(db, "SELECT count(*), sum(value) FROM reading") == [
        (10_000, float(sum(n % 500 for n in range(10_000))))
    ]


def _padded(size: int) -> bytes:
    """A valid one-reading body of exactly `size` bytes (whitespace padding)."""
    body = json.dumps({"readings": [_item()]}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def test_bodies_over_5_mib_are_413_with_or_without_content_length(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = {**await _key(db, "gz_eeb", "writer"), "Content-Type": "application/json"}
    response = await client.post(
        "/v1/readings", content=_padded(MAX_BODY_BYTES + 1), headers=headers
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "message": "the request body is 5,242,881 bytes (Content-Length); the limit is 5 MiB"
        " (5,242,880 bytes) per request: split the readings into several requests",
    }

    async def chunks() -> AsyncIterator[bytes]:
        body = _padded(MAX_BODY_BYTES + 1)
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = await client.post("/v1/readings", content=chunks(), headers=headers)
    assert response.request.headers.get("content-length") is None
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "message": "the request body is more than 5,242,880 bytes; the limit is 5 MiB"
        " (5,242,880 bytes) per request: split the readings into several requests",
    }
    await _nothing_stored(db)

    response = await client.post("/v1/readings", content=_padded(MAX_BODY_BYTES), headers=headers)
    assert response.status_code == 200
    assert response.json()["summary"] == {
        "accepted": 1,
        "duplicate": 0,
        "revised": 0,
        "rejected": 0,
    }


async def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    """Over a real socket: the 413 arrives although not one byte of the body was sent."""
    headers = await _key(db, "gz_eeb", "writer")
    config = uvicorn.Config(
        create_app(settings, pool=db), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /v1/readings HTTP/1.1\r\nHost: envlink\r\n"
                b"Content-Type: application/json\r\n"
                b"Authorization: " + headers["Authorization"].encode() + b"\r\n"
                b"Content-Length: 6000000\r\n\r\n"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            fields = dict(line.split(b": ", 1) for line in head.rstrip(b"\r\n").split(b"\r\n")[1:])
            body = await asyncio.wait_for(
                reader.readexactly(int(fields[b"content-length"])), timeout=5
            )
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 413 ")
        assert json.loads(body)["error"] == {
            "code": "payload_too_large",
            "message": "the request body is 6,000,000 bytes (Content-Length); the limit is 5 MiB"
            " (5,242,880 bytes) per request: split the readings into several requests",
        }
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
    await _nothing_stored(db)


def test_committed_json_schema_is_the_models_schema() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == push_body_schema(), (
        "schemas/json/readings-push.schema.json is stale: regenerate it with"
        " `python -m schemas.push > schemas/json/readings-push.schema.json`"
    )
    assert committed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert committed["properties"]["readings"]["maxItems"] == 10_000
    assert committed["properties"]["readings"]["items"]["required"] == [
        "station",
        "parameter",
        "time",
        "value",
        "unit",
    ]


async def test_openapi_documents_the_request_body_and_the_answer(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    push = spec["paths"]["/v1/readings"]["post"]
    body_schema = {k: v for k, v in push_body_schema().items() if k != "$schema"}
    # FastAPI's OpenAPI model leaves out null values, so `"default": null` of flag is dropped.
    del body_schema["properties"]["readings"]["items"]["properties"]["flag"]["default"]
    assert push["requestBody"]["required"] is True
    assert push["requestBody"]["content"]["application/json"]["schema"] == body_schema
    assert push["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PushResult"
    }
    assert sorted(push["responses"]) == ["200", "400", "401", "403", "413", "422", "429", "503"]
    assert sorted(spec["components"]["schemas"]["PushResult"]["properties"]) == [
        "received",
        "results",
        "summary",
    ]
    assert "get" in spec["paths"]["/v1/readings"]


def _hostile(**fields: str) -> bytes:
    """A pm25 item written by hand, with fields replaced by raw JSON text (bytes may be hostile)."""
    raw = {
        "station": b'"gz-a-huangpu"',
        "parameter": b'"pm25"',
        "time": b'"2026-11-25T10:00:00+08:00"',
        "value": b"35",
        "unit": b'"ug/m3"',
    }
    raw.update({name: text.encode("latin-1") for name, text in fields.items()})
    return b"{" + b", ".join(b'"%s": %s' % (k.encode(), v) for k, v in raw.items()) + b"}"


# Each hostile item of one push and why it is rejected (None: stored).
HOSTILE_PUSH: list[tuple[bytes, str | None]] = [
    (GOOD_PM10.encode(), None),
    (
        _hostile(station=r'"gz-a-huangpu\u0000"'),
        'station: must not contain NUL (U+0000), found at character 13 (got "gz-a-huangpu\\u0000")',
    ),
    (
        _hostile(unit=r'"ug/m3\ud800"'),
        "unit: must not contain U+D800 (a lone surrogate), found at character 6"
        ' (got "ug/m3\\ud800")',
    ),
    (
        _hostile(parameter='"pm25\xff\xfe"'),
        "parameter: must not contain U+DCFF (a lone surrogate, or the byte 0xFF that is not UTF-8),"
        ' found at character 5 (got "pm25\\udcff\\udcfe")',
    ),
    (_hostile(value="1e400"), "pm25: value inf is not a finite number"),
    (_hostile(value="NaN"), "pm25: value nan is not a finite number"),
    (_hostile(value="-Infinity"), "pm25: value -inf is not a finite number"),
    (
        _hostile(value="18446744073709551616"),
        "pm25: value 1.84467e+19 ug/m3 is outside the physically possible range [0, 2000]",
    ),
    (
        _hostile(value="1e308"),
        "pm25: value 1e+308 ug/m3 is outside the physically possible range [0, 2000]",
    ),
    (_hostile(time='"2026-11-25T11:00:00+08:00"', value="-0"), None),
    (
        _hostile(time='"0001-01-01T00:00:00+14:00"'),
        "time: '0001-01-01T00:00:00+14:00' is outside the years 1900-2199",
    ),
    (
        _hostile(time='"9999-12-31T23:59:59-23:59"'),
        "time: '9999-12-31T23:59:59-23:59' is outside the years 1900-2199",
    ),
    (
        _hostile(time='"2026-11-25T10:00:00+25:00"'),
        "time: '2026-11-25T10:00:00+25:00' is not an ISO 8601 / RFC 3339 time",
    ),
    (
        _hostile(time=r'"2026-11-25T10:00\u0000"'),
        "time: '2026-11-25T10:00\\x00' is not an ISO 8601 / RFC 3339 time",
    ),
    (
        _hostile(period_s="18446744073709551616"),
        "period_s: Unable to parse input string as an integer, exceeded maximum size"
        " (got 18446744073709551616)",
    ),
]


async def test_hostile_items_are_rejected_alone_and_quarantined_as_sent(
    client: httpx.AsyncClient, db: AsyncConnectionPool
) -> None:
    headers = await _key(db, "gz_eeb", "writer")
    body = b'{"readings": [' + b",\n".join(item for item, _ in HOSTILE_PUSH) + b"]}"
    response = await client.post(
        "/v1/readings", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "received": 15,
        "summary": {"accepted": 2, "duplicate": 0, "revised": 0, "rejected": 13},
        "results": [
            {"index": i, "outcome": "accepted"}
            if reason is None
            else {"index": i, "outcome": "rejected", "reason": reason}
            for i, (_, reason) in enumerate(HOSTILE_PUSH)
        ],
    }
    stored = await _stored(db)
    assert stored == [
        ("gz-a-huangpu", "pm10", 3600, T0, 50.0, QC.VALID.code),
        ("gz-a-huangpu", "pm25", 0, T0 + timedelta(hours=1), 0.0, QC.VALID.code),
    ]
    assert str(stored[1][4]) == "0.0"  # -0 is stored without its sign
    async with db.connection() as conn:
        quarantined = sorted(await rejected_readings(conn), key=lambda r: r.id)
    # As sent: the item's bytes exactly, its station and parameter as the client wrote them.
    rejected = [(reason, item) for item, reason in HOSTILE_PUSH if reason is not None]
    assert [(q.reason, q.payload.encode("utf-8", "surrogateescape")) for q in quarantined] == (
        rejected
    )
    assert [(q.station_code, q.parameter_code) for q in quarantined[:3]] == [
        ("gz-a-huangpu\x00", "pm25"),
        ("gz-a-huangpu", "pm25"),
        ("gz-a-huangpu", "pm25\udcff\udcfe"),
    ]
    # In the table, only the rows holding what text cannot hold are escaped.
    assert await _query(
        db, "SELECT escaped, station_code, parameter_code FROM rejected_reading ORDER BY id LIMIT 4"
    ) == [
        (True, "gz-a-huangpu\\x00", "pm25"),
        (False, "gz-a-huangpu", "pm25"),
        (True, "gz-a-huangpu", "pm25\\xff\\xfe"),
        (False, "gz-a-huangpu", "pm25"),
    ]
