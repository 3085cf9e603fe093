"""GET /v1/reports/bulletins and /v1/reports/bulletins/{month} over real PostgreSQL: the versions
the worker generated and stored, listed with their links, and each fetched as it was stored."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.bulletin.monthly import generate_monthly_bulletin
from core.settings import Settings
from core.timeutil import CST
from schemas.bulletin import Bulletin
from store.bulletins import bulletin_body, bulletin_files
from tests.integration.conftest import reader_client
from tests.integration.test_reports_api import _november, air_days

# The worker's runs: 2026-11 on 1 December (twice: late data came in between), 2026-10 on
# 1 November.
DECEMBER_1 = datetime(2026, 12, 1, 9, tzinfo=CST)
NOVEMBER_1 = datetime(2026, 11, 1, 9, tzinfo=CST)
AGAIN = DECEMBER_1 + timedelta(days=2)


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "gz_eeb") as client:
        yield client


@pytest.fixture
async def stored(db: AsyncConnectionPool) -> None:
    await generate_monthly_bulletin(db, now=NOVEMBER_1)
    await generate_monthly_bulletin(db, now=DECEMBER_1)
    await air_days(db, "dg-a-shilong", _november())  # late data: version 2 differs
    await generate_monthly_bulletin(db, now=AGAIN)


@pytest.mark.usefixtures("stored")
async def test_the_stored_versions_are_listed_latest_first_with_their_links(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/reports/bulletins")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    assert [(i["month"], i["version"]) for i in page["items"]] == [
        ("2026-11", 2), ("2026-11", 1), ("2026-10", 1),
    ]  # fmt: skip
    latest = page["items"][0]
    assert latest["generated_at"] == "2026-12-03T09:00:00+08:00"
    assert latest["formats"] == ["json", "html", "csv"]
    assert latest["links"] == {
        "json": "/v1/reports/bulletins/2026-11?version=2",
        "html": "/v1/reports/bulletins/2026-11?version=2&format=html",
        "csv": "/v1/reports/bulletins/2026-11?version=2&format=csv",
    }
    # Times in the zone asked for, as everywhere.
    zoned = await client.get("/v1/reports/bulletins", params={"tz": "UTC", "limit": 1})
    assert zoned.json()["items"][0]["generated_at"] == "2026-12-03T01:00:00Z"
    # One month's versions; pages by cursor.
    october = await client.get("/v1/reports/bulletins", params={"month": "2026-10"})
    assert [(i["month"], i["version"]) for i in october.json()["items"]] == [("2026-10", 1)]
    first = (await client.get("/v1/reports/bulletins", params={"limit": 2})).json()
    assert [i["version"] for i in first["items"]] == [2, 1]
    rest = await client.get(
        "/v1/reports/bulletins", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [(i["month"], i["version"]) for i in rest.json()["items"]] == [("2026-10", 1)]
    assert rest.json()["next_cursor"] is None


@pytest.mark.usefixtures("stored")
async def test_each_link_answers_the_version_as_stored(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    links = (await client.get("/v1/reports/bulletins")).json()["items"][1]["links"]
    async with db.connection() as conn:
        body = await bulletin_body(conn, DECEMBER_1.date().replace(month=11), 1)
        files = await bulletin_files(conn, DECEMBER_1.date().replace(month=11), 1)
    assert body is not None and files is not None
    as_json = await client.get(links["json"])
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["x-bulletin-version"] == "1"
    assert as_json.json() == json.loads(body)
    bulletin = Bulletin.model_validate(as_json.json())
    assert (bulletin.month, bulletin.generated_at) == ("2026-11", DECEMBER_1)
    page = await client.get(links["html"])
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == files.html
    archive = await client.get(links["csv"])
    assert archive.headers["content-type"] == "application/zip"
    assert archive.headers["content-disposition"] == (
        'attachment; filename="envlink-bulletin-2026-11-v1.zip"'
    )
    assert archive.content == files.csv_zip
    assert "summary.csv" in zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    # tz=UTC: the stored version with its times in UTC.
    in_utc = await client.get(links["json"] + "&tz=UTC")
    assert in_utc.json()["generated_at"] == "2026-12-01T01:00:00Z"
    assert in_utc.json() | {"generated_at": as_json.json()["generated_at"]} == as_json.json()
    # No version: the latest, which holds the late data.
    latest = await client.get("/v1/reports/bulletins/2026-11")
    assert latest.headers["x-bulletin-version"] == "2"
    dongguan = next(row for row in latest.json()["summary"] if row["unit"] == "dongguan")
    assert dongguan["good_day_share"] == 82.8
    first = next(row for row in as_json.json()["summary"] if row["unit"] == "dongguan")
    assert first["good_day_share"]["status"] == "insufficient_data"


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/reports/bulletins/2026-09", {}, 404, "month: no bulletin of 2026-09 was generated"),
        ("/v1/reports/bulletins/2026-11", {"version": "3"}, 404, "has no stored version 3"),
        ("/v1/reports/bulletins/2026-11", {"version": "3", "format": "csv"}, 404, "version 3"),
        ("/v1/reports/bulletins/2026-09", {"format": "html", "version": "1"}, 404, "version: "),
        ("/v1/reports/bulletins/2026-13", {}, 400, "month: '2026-13': month 13 is not 1..12"),
        ("/v1/reports/bulletins/Nov-2026", {}, 422, "month"),
        ("/v1/reports/bulletins/2026-11", {"version": "0"}, 422, "version"),
        ("/v1/reports/bulletins/2026-11", {"format": "pdf"}, 422, "format"),
        ("/v1/reports/bulletins", {"month": "2026-1"}, 422, "month"),
        ("/v1/reports/bulletins", {"month": "2026-00"}, 400, "month: '2026-00'"),
        ("/v1/reports/bulletins", {"cursor": "bm90IGEgY3Vyc29y"}, 400, "cursor"),
        ("/v1/reports/bulletins", {"limit": "0"}, 422, "limit"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, path: str, params: dict[str, str], status: int, message: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


async def test_a_key_is_needed(client: httpx.AsyncClient) -> None:
    for path in ("/v1/reports/bulletins", "/v1/reports/bulletins/2026-11"):
        response = await client.get(path, headers={"X-API-Key": ""})
        assert response.status_code == 401, (path, response.text)
