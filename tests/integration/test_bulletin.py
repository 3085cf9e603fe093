"""GET /v1/reports/bulletin over real PostgreSQL: rollups of a month for a station of each city
and the Dongjiang's sections, the bulletin's figures checked against the air and water reports
of the same month and against the month worked by hand (docs/evaluation.md §3's example)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from tests.integration.conftest import reader_client
from tests.integration.test_engine import Feed, _rules
from tests.integration.test_episodes import RULE, _feed
from tests.integration.test_reports_api import DONGJIANG_NH3N, _november, _water_days, air_days

NOVEMBER = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
TABLES = [
    "summary.csv", "air_days.csv", "air_pollutants.csv", "primary_pollutants.csv",
    "stations.csv", "episodes.csv", "aqi_calendar.csv", "air_months.csv", "water_sections.csv",
    "water_groups.csv", "notes.csv",
]  # fmt: skip


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "joint_office") as client:
        yield client


async def _seed(pool: AsyncConnectionPool) -> None:
    """Dongguan: §3's example month (and the same a year earlier); Guangzhou: 30 clean days
    (PM2.5 20); the Dongjiang's six sections II, II, III, III, IV, 劣V; Shilong's NH3-N 0.5 in
    2025-11."""
    await air_days(pool, "dg-a-shilong", _november())
    await air_days(pool, "dg-a-shilong", {d.replace(year=2025): v for d, v in _november().items()})
    await air_days(pool, "gz-a-huangpu", dict.fromkeys(NOVEMBER, 20.0))
    await _water_days(pool, DONGJIANG_NH3N, NOVEMBER)
    await _water_days(pool, {"dg-w-shilong": 0.5}, [d.replace(year=2025) for d in NOVEMBER])


async def _json(client: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_bulletin_gives_the_reports_figures(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    bulletin = await _json(client, "/v1/reports/bulletin", month="2026-11")
    assert bulletin["month"] == "2026-11"
    assert bulletin["period"] == {"start": "2026-11-01", "end": "2026-12-01", "label": "2026-11"}
    assert bulletin["last_year_period"]["label"] == "2025-11"
    air = {unit["unit"]: unit for unit in bulletin["air"]}
    summary = {row["unit"]: row for row in bulletin["summary"]}
    assert list(air) == list(summary) == ["guangzhou", "dongguan", "region"]
    for unit, scope in (("guangzhou", "city"), ("dongguan", "city"), ("region", "region")):
        params = {"scope": scope, "period": "2026-11"} | ({"code": unit} if scope == "city" else {})
        report = await _json(client, "/v1/reports/air", **params)
        like = report["last_year"]["like_for_like"]
        changes = report["last_year"]["changes"]
        found = air[unit]
        assert found["stations"] == report["scope"]["stations"]
        assert found["rule_set"] == report["rule_set"]["name"]
        for key in ("days", "valid_days", "category_days", "good_days", "exceedance_days",
                    "heavy_pollution_days", "good_day_share"):  # fmt: skip
            assert found["this_period"][key] == report[key], (unit, key)
            assert found["last_year"][key] == like[key], (unit, key)
            assert (
                found["last_year_as_published"][key] == (report["last_year"]["as_published"][key])
            ), (unit, key)
        assert {p["pollutant"]: p["value"] for p in found["pollutants"]} == {
            code: value["value"] for code, value in report["pollutants"].items()
        }
        assert {p["pollutant"]: p["last_year"] for p in found["pollutants"]} == {
            code: value["value"] for code, value in like["pollutants"].items()
        }
        assert {p["pollutant"]: p["change_percent"] for p in found["pollutants"]} == (
            changes["pollutants_percent"]
        )
        assert found["composite_index"] == report["composite_index"]["value"]
        assert found["composite_index_last_year"] == like["composite_index"]["value"]
        assert found["composite_index_change_percent"] == changes["composite_index_percent"]
        assert found["primary_pollutant_shares"] == report["primary_pollutant_shares"]
        assert summary[unit]["good_day_share"] == report["good_day_share"]
        assert summary[unit]["good_day_share_change_points"] == changes["good_day_share_points"]
        assert summary[unit]["composite_index"] == report["composite_index"]["value"]

    # By hand: Dongguan is §3's month (24 good of 29 valid days, 82.8 %; index 3.39) and was the
    # same a year earlier; Guangzhou's 30 days are all 优 with PM2.5 20: terms .17 + .5 + .12 +
    # .5 + .5 + .67 = 2.46; the region is their mean: (24/29 + 1)/2 = 91.4 %, 5.85/2 = 2.92.
    assert [
        (r["good_day_share"], r["composite_index"], r["composite_index_change_percent"])
        for r in bulletin["summary"]
    ] == [(100.0, 2.46, None), (82.8, 3.39, 0.0), (91.4, 2.92, None)]
    assert air["dongguan"]["this_period"]["category_days"] == {
        "excellent": 10, "good": 14, "lightly_polluted": 4, "moderately_polluted": 1,
        "heavily_polluted": 0, "severely_polluted": 0,
    }  # fmt: skip
    assert air["dongguan"]["last_year_rule_set"] == "HJ 663-2013 / GB 3095-2012 / HJ 633-2012"
    assert [(s["rank"], s["code"], s["composite_index"]) for s in bulletin["stations"][:3]] == [
        (1, "gz-a-huangpu", 2.46),
        (2, "dg-a-shilong", 3.39),
        (None, "dg-a-humen", {"status": "insufficient_data", "have": 0, "need": 6}),
    ]
    assert len(bulletin["stations"]) == 9  # the assessment stations: not Maofengshan
    for ranked in bulletin["stations"]:
        station = await _json(
            client, "/v1/reports/air", scope="station", code=ranked["code"], period="2026-11"
        )
        assert (ranked["composite_index"], ranked["good_day_share"]) == (
            station["composite_index"]["value"], station["good_day_share"],
        )  # fmt: skip
    assert bulletin["episodes"] == []  # the region's air report lists none this month
    assert bulletin["notes"]["episodes_status"] == "listed"

    # The charts' months are the city's air report of each month; the calendar its days.
    charts = {chart["city"]: chart for chart in bulletin["charts"]}
    dongguan = charts["dongguan"]
    assert [m["label"] for m in dongguan["months"]] == [f"2026-{m:02d}" for m in range(1, 12)]
    assert (
        dongguan["months"][-1]["category_days"] == air["dongguan"]["this_period"]["category_days"]
    )
    assert dongguan["months"][-1]["pollutants"]["pm25"] == 48
    assert dongguan["months"][0]["rule_set"] == "HJ 663-2013 / GB 3095-2012 / HJ 633-2012"
    calendar = dongguan["calendar"]
    assert [d["day"] for d in calendar] == [d.isoformat() for d in NOVEMBER]
    assert [d["category"] for d in calendar] == (
        ["excellent"] * 10 + ["good"] * 14 + ["lightly_polluted"] * 4
        + ["moderately_polluted", None]
    )  # fmt: skip
    # PM2.5 130 under HJ 633-2026: 150 + 50 × (130 - 115)/(150 - 115) = 171.4, rounded up.
    assert (calendar[-2]["aqi"], calendar[-1]["aqi"]) == (172, None)

    # Water: every section as the water report has it, along the rivers.
    water = bulletin["water"]
    river = await _json(
        client, "/v1/reports/water", scope="river", code="dongjiang", period="2026-11"
    )
    sections = {s["code"]: s for s in water["sections"]}
    assert [s["code"] for s in water["sections"] if s["river"] == "dongjiang"] == (
        river["scope"]["stations"]
    )
    for found in river["sections"]:
        row = sections[found["code"]]
        assert (row["water_class"], row["class_label"], row["compliant"], row["cwqi"]) == (
            found["class"], found["class_label"], found["compliant"], found["cwqi"]
        )  # fmt: skip
    assert sections["dg-w-shijie"]["exceedances_text"] == "氨氮(1.40)"
    assert sections["dg-w-shijie"]["target_label"] == "II"
    assert sections["dg-w-wanjiang"]["class_label"] == "劣V"
    # Shilong: CWQI 0.4 against 0.5 a year earlier: -20.0 %.
    assert (sections["dg-w-shilong"]["last_year_class"], sections["dg-w-shilong"]["cwqi"]) == (
        2, 0.4
    )  # fmt: skip
    assert sections["dg-w-shilong"]["cwqi_change_percent"] == -20.0
    rivers = {g["code"]: g for g in water["rivers"]}
    group = river["group"]
    assert list(rivers) == ["dongjiang"]
    assert rivers["dongjiang"] == {
        "kind": "river", "code": "dongjiang", "name_zh": "东江", "name": "Dongjiang",
        "sections": 6, "good_share": 66.7, "worse_than_v_share": 16.7,
        "compliant_share": group["compliant_share"], "method": "proportion",
        "grade_zh": "轻度污染", "grade": group["grade"], "cwqi": 1.02,
        "cwqi_last_year": 0.5, "cwqi_change_percent": 104.0,
    }  # fmt: skip
    north = await _json(
        client, "/v1/reports/water", scope="reach", code="north_main", period="2026-11"
    )
    assert water["dongjiang_north_main"]["grade_zh"] == north["group"]["grade_zh"]
    assert water["dongjiang_north_main"]["method"] == "mean_concentration"
    assert water["shiziyang_estuary"] is None  # no estuary data
    assert water["shiziyang_sea_area"] is None
    assert [(c["code"], c["sections"]) for c in water["cities"]] == [
        ("guangzhou", 2), ("dongguan", 4),
    ]  # fmt: skip
    notes = bulletin["notes"]
    assert notes["air_valid_days"] == {"guangzhou": 30, "dongguan": 29, "region": 29.5}
    assert notes["water_sections_evaluated"] == 6
    assert set(notes["water_sections_short"]) == {
        "gz-w-lianhuashan", "dg-w-shatian", "dg-w-humen", "gz-w-nansha",
    }  # fmt: skip
    assert notes["rule_sets"] == [
        "HJ 663-2026 / GB 3095-2026 (transition limits) / HJ 633-2026",
        "HJ 663-2013 / GB 3095-2012 / HJ 633-2012",
    ]
    assert notes["data_status"] == "provisional"


async def test_the_csv_zip_holds_one_table_a_file(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    response = await client.get(
        "/v1/reports/bulletin", params={"month": "2026-11", "format": "csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == (
        'attachment; filename="envlink-bulletin-2026-11.zip"'
    )
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == TABLES
    tables = {}
    for name in TABLES:
        raw = archive.read(name)
        assert raw.startswith("\ufeff".encode()), name
        tables[name] = list(csv.reader(io.StringIO(raw.decode("utf-8")[1:])))
    assert tables["summary.csv"] == [
        ["unit", "name_zh", "good_day_share", "good_day_share_last_year",
         "good_day_share_change_points", "composite_index", "composite_index_last_year",
         "composite_index_change_percent"],
        ["guangzhou", "广州", "100.0", "insufficient_data (0/1)", "", "2.46",
         "insufficient_data (0/6)", ""],
        ["dongguan", "东莞", "82.8", "82.8", "0.0", "3.39", "3.39", "0.0"],
        ["region", "广州—东莞区域", "91.4", "insufficient_data (14/1)", "", "2.92",
         "insufficient_data (0/6)", ""],
    ]  # fmt: skip
    assert tables["air_days.csv"][0] == [
        "unit", "period", "rule_set", "days", "valid_days", "excellent", "good",
        "lightly_polluted", "moderately_polluted", "heavily_polluted", "severely_polluted",
        "good_days", "exceedance_days", "heavy_pollution_days", "good_day_share",
    ]  # fmt: skip
    assert tables["air_days.csv"][4][:13] == [
        "dongguan", "this_month", "HJ 663-2026 / GB 3095-2026 (transition limits) / HJ 633-2026",
        "30", "29", "10", "14", "4", "1", "0", "0", "24", "5",
    ]  # fmt: skip
    pollutants = {(r[0], r[1]): r for r in tables["air_pollutants.csv"][1:]}
    assert pollutants[("dongguan", "pm25")] == [
        "dongguan", "pm25", "mean", "ug/m3", "30.0", "48", "48", "0.0", "0.6",
    ]  # fmt: skip
    assert pollutants[("dongguan", "composite_index")][5] == "3.39"
    assert tables["episodes.csv"] == [
        ["id", "start", "end", "cities", "city_days", "peak_aqi", "peak_category",
         "primary_pollutants", "alert_id"],
    ]  # fmt: skip
    assert tables["aqi_calendar.csv"][0] == ["city", "day", "aqi", "category"]
    assert tables["aqi_calendar.csv"][31:33] == [
        ["dongguan", "2026-11-01", tables["aqi_calendar.csv"][31][2], "excellent"],
        ["dongguan", "2026-11-02", tables["aqi_calendar.csv"][32][2], "excellent"],
    ]
    assert tables["aqi_calendar.csv"][-1] == ["dongguan", "2026-11-30", "", ""]
    assert len(tables["air_months.csv"]) == 1 + 2 * 11
    shijie = next(r for r in tables["water_sections.csv"] if r[2] == "dg-w-shijie")
    assert shijie == [
        "dongjiang", "south_branch", "dg-w-shijie", "石碣", "dongguan", "GB 3838-2002", "II",
        "IV", "", "False", "氨氮(1.40)", "1.2", "", "", "",
    ]  # fmt: skip
    assert tables["water_groups.csv"][1][:9] == [
        "river", "dongjiang", "东江", "6", "66.7", "16.7", "33.3", "proportion", "轻度污染",
    ]  # fmt: skip
    assert ["data_status", "provisional"] in tables["notes.csv"]


async def test_the_page_is_bilingual_with_inline_charts_and_nothing_from_outside(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    response = await client.get(
        "/v1/reports/bulletin", params={"month": "2026-11", "format": "html"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.startswith('<!DOCTYPE html>\n<html class="zh" lang="zh-CN">')
    for chart in (
        "aqi-calendar-guangzhou", "aqi-calendar-dongguan", "category-months-guangzhou",
        "category-months-dongguan", "pollutant-trends", "river-classes-dongjiang",
        "river-classes-shiziyang",
    ):  # fmt: skip
        assert f'<svg id="{chart}"' in page, chart
    for zh, en in (
        ("优良天数比例(%)", "Good-day share (%)"),
        ("综合指数", "Composite index"),
        ("沿程断面水质类别", "Section classes along the river"),
        ("本月无区域污染过程", "No regional episode this month"),
    ):  # fmt: skip
        assert f'<span lang="zh">{zh}</span><span lang="en">{en}</span>' in page
    assert "氨氮(1.40)" in page
    # Nothing from outside EnvLink: no address, no loaded script, style sheet, font or image.
    assert re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, flags=re.IGNORECASE) == []
    assert re.findall(r"<(?:link|img|iframe|object|embed)\b|\bsrc=|@import|url\(", page) == []
    assert page.count("<script>") == 1
    english = await client.get(
        "/v1/reports/bulletin", params={"month": "2026-11", "format": "html", "lang": "en"}
    )
    assert english.text.startswith('<!DOCTYPE html>\n<html class="en" lang="en">')


async def test_the_months_episodes_are_the_air_reports(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    # The joint rule's episode of test_episodes: 10-14 November, 8 city-days, peak 210.
    await _rules(db, RULE)
    feed = Feed(db)
    for day in range(5):
        await _feed(feed, day)
    region = await _json(client, "/v1/reports/air", scope="region", period="2026-11")
    (episode,) = region["episodes"]
    bulletin = await _json(client, "/v1/reports/bulletin", month="2026-11")
    assert bulletin["episodes"] == [
        {key: value for key, value in episode.items() if key not in ("rule_id", "series")}
    ]
    assert bulletin["episodes"][0] == {
        "id": 1, "start": "2026-11-10T00:00:00+08:00", "end": "2026-11-14T00:00:00+08:00",
        "cities": ["guangzhou", "dongguan"], "city_days": 8, "peak_aqi": 210,
        "peak_category": "heavily_polluted", "primary_pollutants": ["pm25"], "alert_id": 1,
    }  # fmt: skip
    zipped = await client.get("/v1/reports/bulletin", params={"month": "2026-11", "format": "csv"})
    rows = list(csv.reader(io.StringIO(
        zipfile.ZipFile(io.BytesIO(zipped.content)).read("episodes.csv").decode("utf-8-sig")
    )))  # fmt: skip
    assert rows[1] == [
        "1", "2026-11-10T00:00:00+08:00", "2026-11-14T00:00:00+08:00", "guangzhou dongguan",
        "8", "210", "heavily_polluted", "pm25", "1",
    ]  # fmt: skip
    page = await client.get("/v1/reports/bulletin", params={"month": "2026-11", "format": "html"})
    assert "<td>210</td>" in page.text and "2026-11-10T00:00:00+08:00" in page.text
    october = await _json(client, "/v1/reports/bulletin", month="2026-10")
    assert october["episodes"] == []


async def test_a_month_without_data_is_short_everywhere(client: httpx.AsyncClient) -> None:
    bulletin = await _json(client, "/v1/reports/bulletin", month="1901-01")
    assert bulletin["summary"][0]["good_day_share"] == {
        "status": "insufficient_data", "have": 0, "need": 1,
    }  # fmt: skip
    assert [s["rank"] for s in bulletin["stations"]] == [None] * 9
    assert {s["water_class"] for s in bulletin["water"]["sections"]} == {None}


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"month": "2026-13"}, 400, "month: '2026-13': month 13 is not 1..12"),
        ({"month": "2026-00"}, 400, "month: '2026-00': month 0 is not 1..12"),
        ({"month": "1900-12"}, 400, "month: '1900-12' is outside the years 1901-2198"),
        ({"month": "2199-01"}, 400, "month: '2199-01' is outside the years"),
        ({"month": "Nov 2026"}, 422, "month"),
        ({}, 422, "month"),
        ({"month": "2026-11", "format": "pdf"}, 422, "format"),
        ({"month": "2026-11", "lang": "fr"}, 422, "lang"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, params: dict[str, str], status: int, message: str
) -> None:
    response = await client.get("/v1/reports/bulletin", params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
