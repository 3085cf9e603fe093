"""The agencies' screen in Debian's headless Chromium, served by a real uvicorn on loopback:
sign in with a key, both cities' AQI and every station's label on the map, the English toggle,
a station's latest values, an alert from the database on the alerts board, a new one on the
open board within 3 s (the alert stream), the acknowledge button for responders only, nothing
loaded from outside EnvLink.

Needs `chromium` and `chromium-driver` (Debian packages). ENVLINK_BROWSER_TESTS: `auto` (the
default) skips, saying why, where they are not installed; `on` (what .ci/run sets, after
installing them) fails without them; `off` skips.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.rollups import hour_start
from api.app import create_app
from core.settings import Settings
from core.timeutil import utcnow
from ingest.pipeline import Pipeline, SourceRef
from schemas.readings import ReadingIn, Rejection
from schemas.rules import load_rules
from store.alerts import NewAlert, NewEvent, insert_alerts, insert_events, notify_alert_events
from store.keys import create_key
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR, worker_loop
from tests.integration.test_api_pool import served

pytestmark = pytest.mark.slow

WAIT_S = 10
LIVE_S = 3  # a new alert is on the open board within this
AIR = {"so2": 8.0, "no2": 35.0, "co": 0.7, "o3": 90.0, "pm10": 70.0, "pm25": 40.0}


def _browser() -> Any:
    """Headless Chromium from Debian's packages, driven by selenium through chromedriver."""
    wanted = os.environ.get("ENVLINK_BROWSER_TESTS", "auto")
    if wanted == "off":
        pytest.skip("ENVLINK_BROWSER_TESTS=off: the screen's browser tests are turned off")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        missing = (
            "the screen's browser tests need Debian's chromium and chromium-driver"
            " (apt-get install -y chromium chromium-driver)"
        )
        if wanted == "on":
            pytest.fail(f"ENVLINK_BROWSER_TESTS=on: {missing}")
        pytest.skip(f"{missing}; not installed here (ENVLINK_BROWSER_TESTS=on makes this fail)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium = _browser()
    try:
        yield chromium
    finally:
        chromium.quit()


def _new_alert(rule: str, station_id: int, severity: str, now: datetime) -> NewAlert:
    return NewAlert(
        rule_id=rule, rule_version=1, station_id=station_id, city=None, parameter_id=None,
        kind="threshold", state="firing", severity=severity, value=None, opened_at=now,
        pending_since=None, fired_at=now, resolved_at=None, retracted_at=None,
        last_evaluated_at=now, trigger_time=now, trigger_period_s=3600, last_point_at=now,
        clear_point_at=None, details={}, addressed_to=[1, 2, 3],
    )  # fmt: skip


async def _seed(pool: AsyncConnectionPool) -> tuple[int, list[str]]:
    """Every air station's six pollutants in the last complete hour, the thresholds, and one
    firing alert at a Dongguan water station; returns the alert's id and the air stations."""
    hour = hour_start(utcnow()) - timedelta(hours=1)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT code FROM station WHERE medium = 'air' ORDER BY code")
        air = [row[0] for row in await cur.fetchall()]
    batch: list[ReadingIn | Rejection] = [
        ReadingIn.model_validate(
            {
                "station": station,
                "parameter": code,
                "time": hour,
                "value": value,
                "unit": "mg/m3" if code == "co" else "ug/m3",
                "period_s": 3600,
            }
        )
        for station in air
        for code, value in AIR.items()
    ]
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1))
    result = await pipeline.ingest(batch, source=SourceRef("test", "test"))
    assert result.count("accepted") == len(batch), result.rejections
    await worker_loop(pool, pipeline).drain()
    now = utcnow()
    async with pool.connection() as conn, conn.transaction():
        await seed_rules(conn, load_rules(CONFIG_DIR / "thresholds.yaml"), at=now - timedelta(1))
        cur = await conn.execute("SELECT id FROM station WHERE code = 'dg-w-shilong'")
        station = await cur.fetchone()
        assert station is not None
        (alert,) = await insert_alerts(conn, [_new_alert("do_low", station[0], "critical", now)])
    return alert, air


def _sign_in(browser: Any, key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    field = WebDriverWait(browser, WAIT_S).until(lambda b: b.find_element(By.NAME, "api-key"))
    WebDriverWait(browser, WAIT_S).until(lambda b: field.is_displayed())
    field.clear()
    field.send_keys(key)
    field.submit()


async def _fire(pool: AsyncConnectionPool) -> int:
    """A second alert at Shilong, fired now with its event, told to the API's alert feed."""
    now = utcnow()
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT id FROM station WHERE code = 'dg-w-shilong'")
        station = await cur.fetchone()
        assert station is not None
        (alert,) = await insert_alerts(conn, [_new_alert("nh3n_high", station[0], "warning", now)])
        await insert_events(conn, [(alert, NewEvent("firing", "firing", "warning", None))], at=now)
        await notify_alert_events(conn)
    return alert


def _scenario(browser: Any, url: str, keys: dict[str, str], expected: dict[str, Any]) -> None:
    """What a duty officer does; runs in a thread, while the server answers on the test's loop."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)

    def text_of(selector: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, selector).text)

    browser.get(url + "/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    _sign_in(browser, keys["responder"])
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '[data-view="overview"] svg'))
    circles = browser.find_elements(By.CSS_SELECTOR, "circle[data-station]")
    assert sorted(c.get_attribute("data-station") for c in circles) == expected["stations"]
    for city, name in (("guangzhou", "广州"), ("dongguan", "东莞")):
        assert text_of(f'[data-city="{city}"]').startswith(
            f"{name} 城市 AQI\nAQI {expected[city]} "
        )
    for station in expected["air"]:
        assert " · AQI " in text_of(f'text[data-label="{station}"]')
    assert "严重: 1" in text_of("[data-alert-counts]")
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin))"
    )
    assert outside == []

    browser.find_element(By.ID, "language").click()
    wait.until(lambda b: text_of('[data-city="dongguan"]').startswith("Dongguan City AQI"))
    assert text_of("nav") == "Overview\nAlerts\nStation"
    browser.find_element(By.CSS_SELECTOR, f'circle[data-station="{expected["air"][0]}"]').click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '[data-view="station"] [data-parameter]'))
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-parameter]")
    assert sorted(r.get_attribute("data-parameter") for r in rows) == sorted(AIR)
    assert all(r.text.endswith(" valid") and " min " in r.text for r in rows), [
        r.text for r in rows
    ]
    browser.find_element(By.CSS_SELECTOR, '[data-go="alerts"]').click()
    row = wait.until(
        lambda b: b.find_element(By.CSS_SELECTOR, f'[data-alert="{expected["alert"]}"]')
    )
    assert row.text.startswith("Critical Shilong")
    assert len(row.find_elements(By.CSS_SELECTOR, "button[data-ack]")) == 1
    wait.until(lambda b: b.find_element(By.ID, "live").is_displayed())


def _live_and_reader(browser: Any, keys: dict[str, str], expected: dict[str, Any]) -> None:
    """The new alert reaches the open board within 3 s; a reader sees no acknowledge button."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    live = f'[data-alert="{expected["new_alert"]}"]'
    row = WebDriverWait(browser, LIVE_S).until(lambda b: b.find_element(By.CSS_SELECTOR, live))
    assert row.text.startswith("Warning Shilong")

    browser.find_element(By.ID, "sign-out").click()
    _sign_in(browser, keys["reader"])
    row = wait.until(
        lambda b: b.find_element(By.CSS_SELECTOR, f'[data-alert="{expected["alert"]}"]')
    )
    assert row.text.startswith("Critical Shilong")
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-ack]") == []


async def test_a_duty_officer_signs_in_and_reads_the_screen(
    db: AsyncConnectionPool, settings: Settings, browser: Any
) -> None:
    alert, air = await _seed(db)
    async with db.connection() as conn:
        _, responder = await create_key(conn, agency="dg_eeb", roles=["reader", "responder"])
        _, reader = await create_key(conn, agency="gz_eeb", roles=["reader"])
    async with served(create_app(settings, pool=db)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": reader}) as api:
            stations = (await api.get("/v1/stations")).json()["items"]
            city_aqi = {
                city: (await api.get("/v1/aqi", params={"city": city})).json()["aqi"]
                for city in ("guangzhou", "dongguan")
            }
        assert all(isinstance(value, int) for value in city_aqi.values()), city_aqi
        expected = {
            "stations": sorted(s["code"] for s in stations), "air": air, "alert": alert,
            **city_aqi,
        }  # fmt: skip
        keys = {"responder": responder, "reader": reader}
        await asyncio.to_thread(_scenario, browser, url, keys, expected)
        expected["new_alert"] = await _fire(db)
        await asyncio.to_thread(_live_and_reader, browser, keys, expected)
