"""The demo's notification inbox: a webhook receiver that prints what it gets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from envlink.demo import INBOX_FILE, INBOX_PATH, inbox_router

BODY = {
    "notification": {"id": 7, "agency": {"code": "gz_eeb"}},
    "events": [
        {"headline": {"en": "[Warning] ALERT: O3 at Huangpu", "zh": "臭氧"}},
        {"headline": {"en": "[Warning] ALERT: O3 at Panyu", "zh": "臭氧"}},
    ],
}


async def test_the_inbox_prints_and_keeps_each_notification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    app.include_router(inbox_router(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        with caplog.at_level(logging.INFO, logger="envlink.demo.inbox"):
            answer = await client.post(INBOX_PATH, json=BODY)
        assert answer.status_code == 204
        assert [r.getMessage() for r in caplog.records] == [
            "notification to gz_eeb: [Warning] ALERT: O3 at Huangpu",
            "notification to gz_eeb: [Warning] ALERT: O3 at Panyu",
        ]
        kept = (tmp_path / INBOX_FILE).read_text().splitlines()
        assert [json.loads(line) for line in kept] == [BODY]
        for bad in (b"not json", b'{"events": []}', b"[1]"):
            refused = await client.post(INBOX_PATH, content=bad)
            assert refused.status_code == 400
            assert refused.json()["detail"].startswith("body: expected a notification's webhook")
    assert len((tmp_path / INBOX_FILE).read_text().splitlines()) == 1
