"""The worker's monthly bulletin over real PostgreSQL: the month before, stored as a version;
generated again after late data, a new version beside the earlier one. Subscriptions' kind."""

from __future__ import annotations

import json
from datetime import date, datetime

import httpx
from psycopg_pool import AsyncConnectionPool

from alerts.bulletin.monthly import bulletin_trigger, generate_monthly_bulletin, previous_month
from api.app import create_app
from core.settings import Settings
from core.timeutil import CST
from store.bulletins import bulletin_body, bulletin_versions
from store.keys import create_key
from tests.integration.test_reports_api import _november, air_days

FIRST = datetime(2026, 12, 1, 9, 0, tzinfo=CST)


def test_the_1st_at_0900_shanghai_for_the_month_before() -> None:
    trigger = bulletin_trigger()
    after = datetime(2026, 11, 15, 12, 0, tzinfo=CST)
    assert trigger.get_next_fire_time(None, after) == FIRST
    assert trigger.get_next_fire_time(FIRST, FIRST.replace(second=1)) == datetime(
        2027, 1, 1, 9, 0, tzinfo=CST
    )
    assert previous_month(FIRST).label == "2026-11"
    # 2027-01-01 00:30 in Shanghai is still 2026-12-31 in UTC: the month before is December.
    assert previous_month(datetime(2027, 1, 1, 0, 30, tzinfo=CST)).label == "2026-12"


async def test_generating_again_keeps_the_earlier_version(db: AsyncConnectionPool) -> None:
    first = await generate_monthly_bulletin(db, now=FIRST)
    assert (first.month, first.version, first.generated_at) == (date(2026, 11, 1), 1, FIRST)
    await air_days(db, "dg-a-shilong", _november())  # late data
    later = FIRST.replace(day=3)
    second = await generate_monthly_bulletin(db, now=later)
    assert (second.month, second.version) == (date(2026, 11, 1), 2)
    async with db.connection() as conn:
        versions = await bulletin_versions(conn, date(2026, 11, 1))
        bodies = [await bulletin_body(conn, date(2026, 11, 1), v) for v in (1, 2)]
    assert [(v.version, v.generated_at) for v in versions] == [(1, FIRST), (2, later)]
    shares = [json.loads(body or "{}")["summary"][1]["good_day_share"] for body in bodies]
    assert shares == [{"status": "insufficient_data", "have": 0, "need": 1}, 82.8]


async def test_a_subscription_is_for_alerts_or_the_bulletin(
    db: AsyncConnectionPool, settings: Settings
) -> None:
    async with db.connection() as conn:
        _, plain = await create_key(conn, agency="gz_eeb", roles=["admin"])
    app = create_app(settings, pool=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://envlink",
        headers={"X-API-Key": plain},
    ) as client:  # fmt: skip
        body = {"code": "gz-monthly", "channel": "email", "target": "office@example.cn"}
        plain_one = await client.post("/v1/subscriptions", json=body)
        assert plain_one.status_code == 201, plain_one.text
        assert plain_one.json()["kind"] == "alerts"
        monthly = await client.post(
            "/v1/subscriptions", json={**body, "code": "gz-bulletin", "kind": "bulletin"}
        )
        assert monthly.status_code == 201, monthly.text
        assert monthly.json()["kind"] == "bulletin"
        wrong = await client.post(
            "/v1/subscriptions", json={**body, "code": "gz-x", "kind": "weekly"}
        )
        assert wrong.status_code == 422
        assert "kind" in wrong.json()["error"]["message"]
