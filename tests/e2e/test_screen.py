"""The agencies' screen in Debian's headless Chromium, served by a real uvicorn on loopback:
sign in with a key, both cities' AQI and every station's label on the map, the English toggle
switching every visible label, a station's latest values and its chart (as many points as the
API's series, suspect and invalid ones marked, the limits as lines), the situation of both areas
(stations in the API's order with their states), every source's ingest health, an alert from
the database on the alerts board, a silence created from it; a breach sent over HJ 212 to a
real `envlink worker` on the open board within 3 s of the packet's acknowledgement (the worker's
alert loop, then the alert stream), acknowledged by the responder and shown so to a reader; the
acknowledge and silence buttons for responders only, nothing loaded from outside EnvLink, no
console error; last month's bulletin as the API gives it and its
three files downloaded; the sources' health on the overview; no serious or critical axe-core
violation in any view, at 1280×800 and at 390×844; the navigation by Tab with a visible focus;
each station on the map a button named with its name, code and AQI or water class, opened by
Enter or Space; the overview and the board on a 390×844 viewport without sideways scrolling; the
first view's transfer (< 1 MiB) and render time (printed; guarded at 5 s); the server stopped
with the board's alert stream open, within its grace and with nothing logged. A screenshot of
each view in each language is saved under the test's tmp_path.

With a site's tile server set (ENVLINK_MAP_TILE_URL, one on loopback here), the overview map is
drawn on the tiles under it, each station on its own tile, every tile asked of that server.

Needs `chromium` and `chromium-driver` (Debian packages). ENVLINK_BROWSER_TESTS: `auto` (the
default) skips, saying why, where they are not installed; `on` (what .ci/run sets, after
installing them) fails without them; `off` skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.rollups import hour_start
from api.app import create_app
from bench.faults import EnvlinkProcess, free_port
from core.settings import Settings
from core.timeutil import utcnow
from ingest.pipeline import Pipeline, SourceRef
from ingest.sources.hj212.client import Hj212Client
from schemas.readings import ReadingIn, Rejection
from schemas.rules import load_rules
from store.alerts import NewAlert, insert_alerts
from store.keys import create_key
from store.rollups import pending_dirty
from store.rules import seed_rules
from tests.conftest import CONFIG_DIR, worker_loop
from tests.integration.test_api_pool import served

pytestmark = pytest.mark.slow

WAIT_S = 10
LIVE_S = 3  # a new alert is on the open board within this
# The breach sent over HJ 212: NO2 (a21004) at Huangpu far above its critical threshold (700).
BREACH_STATION, BREACH_MN, BREACH_NAME = "gz-a-huangpu", "44010010000086", "Huangpu"
BREACH_NO2 = 900.0
AIR = {"so2": 8.0, "no2": 35.0, "co": 0.7, "o3": 90.0, "pm10": 70.0, "pm25": 40.0}
# The first air station's NO2 in the hours before: hours back -> (value, QC as delivered).
NO2_BEFORE = {k: (30.0 + (7 * k) % 13, "valid") for k in range(1, 19)} | {
    5: (150.0, "suspect"),
    9: (5.0, "invalid"),
}
VIEWS = ("overview", "station", "situation", "bulletin", "sources", "alerts")
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"  # tests/e2e/vendor/refresh.sh
FIRST_VIEW_BYTES = 1 << 20  # the first view's transfer, compressed
FIRST_VIEW_S = 5.0  # a guard only: the first view is drawn well within 1.5 s on loopback
PHONE = (390, 844)
# A water station with a class on the map: its dissolved oxygen in the last complete hour.
WATER_STATION, WATER_DO = "dg-w-shilong", 6.5
ROMAN = {
    "zh": ["", "I", "II", "III", "IV", "V", "劣V"],
    "en": ["", "I", "II", "III", "IV", "V", "worse than V"],
}
CJK = re.compile(r"[\u3400-\u9fff]")


def _browser(downloads: Path) -> Any:
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "downloads").mkdir()
    chromium = _browser(tmp_path / "downloads")
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
    """Every air station's six pollutants in the last complete hour, the first one's NO2 in the
    18 hours before (NO2_BEFORE: one suspect, one invalid), WATER_STATION's dissolved oxygen, the
    thresholds, and one firing alert at a Dongguan water station; returns the alert's id and
    the air stations."""
    hour = hour_start(utcnow()) - timedelta(hours=1)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT code FROM station WHERE medium = 'air' ORDER BY code")
        air = [row[0] for row in await cur.fetchall()]
    batch: list[ReadingIn | Rejection] = (
        [
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
        + [
            ReadingIn.model_validate(
                {
                    "station": air[0],
                    "parameter": "no2",
                    "time": hour - timedelta(hours=back),
                    "value": value,
                    "unit": "ug/m3",
                    "period_s": 3600,
                    "qc": qc,
                }
            )
            for back, (value, qc) in NO2_BEFORE.items()
        ]
        + [
            ReadingIn.model_validate(
                {
                    "station": WATER_STATION,
                    "parameter": "do",
                    "time": hour,
                    "value": WATER_DO,
                    "unit": "mg/L",
                    "period_s": 3600,
                }
            )
        ]
    )
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


async def _settled(db: AsyncConnectionPool) -> None:
    """Wait until the worker's alert loop has processed every committed reading."""
    async with asyncio.timeout(60):
        while True:
            async with db.connection() as conn:
                if await pending_dirty(conn) == 0:
                    return
            await asyncio.sleep(0.05)


def _new_row(browser: Any, known: set[str], name: str) -> tuple[str, float]:
    """Watch the open board for a row not in `known` at the station called `name`: its alert's
    id and time.monotonic() when it was first seen (looked for every 20 ms)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        rows = browser.execute_script(
            "return [...document.querySelectorAll('[data-alert]')]"
            ".map((r) => [r.getAttribute('data-alert'), r.cells[1].textContent])"
        )
        found = [alert for alert, where in rows if alert not in known and name in where]
        if found:
            return str(found[0]), time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"no new alert at {name} on the board in {WAIT_S} s")


def _board_ids(browser: Any) -> set[str]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "[data-alert]")
    return {str(r.get_attribute("data-alert")) for r in rows}


async def _breach(
    db: AsyncConnectionPool, settings: Settings, browser: Any, logs: Path
) -> tuple[int, float]:
    """Send a breach over HJ 212 to a real `envlink worker` while the board is open; returns the
    alert's id as the board shows it and the seconds from the packet's acknowledgement to it."""
    assert settings.database_url is not None
    worker = EnvlinkProcess("worker", settings.database_url, free_port(), logs / "worker.log")
    await worker.start()
    logger = Hj212Client(mn=BREACH_MN)
    try:
        await logger.connect("127.0.0.1", worker.port)
        # A first packet of ordinary PM10 lets the worker's first round (and its sweep) pass.
        now = utcnow().replace(microsecond=0)
        answer = await logger.upload("2011", now - timedelta(seconds=2), {"a34002": (60.0, "N")})
        assert answer is not None and answer.cn == "9014"
        await _settled(db)
        known = await asyncio.to_thread(_board_ids, browser)
        watching = asyncio.create_task(asyncio.to_thread(_new_row, browser, known, BREACH_NAME))
        answer = await logger.upload("2011", utcnow(), {"a21004": (BREACH_NO2, "N")})
        acknowledged = time.monotonic()
        assert answer is not None and answer.cn == "9014"
        alert, seen = await watching
    finally:
        await logger.close()
        status = await worker.stop()
    assert (status, worker.errors()) == (0, [])
    return int(alert), seen - acknowledged


def _go(browser: Any, view: str) -> Any:
    """Open a view from the navigation; returns its root once drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    shown = browser.find_elements(By.CSS_SELECTOR, "#view > [data-view]")
    browser.find_element(By.CSS_SELECTOR, f'[data-go="{view}"]').click()
    if shown:
        wait.until(staleness_of(shown[0]))
    return wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f'#view > [data-view="{view}"]'))


def _redrawn(browser: Any, root: Any, selector: str) -> Any:
    """Wait for a view to be drawn again after a change of its controls."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    wait.until(staleness_of(root))
    return wait.until(lambda b: b.find_element(By.CSS_SELECTOR, selector))


def _choose(root: Any, selector: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(root.find_element(By.CSS_SELECTOR, selector)).select_by_value(value)


def _labels_are(browser: Any, language: str) -> None:
    """Every visible label is in `language`: no Chinese character in English (but the toggle's
    own 中文), and none of the English words of i18n.js in Chinese."""
    toggle = "中文" if language == "en" else "English"
    text = str(
        browser.execute_script(
            "return [document.body.innerText,"
            " ...[...document.querySelectorAll('svg text')].map((n) => n.textContent)].join('\\n')"
        )
    ).replace(toggle, "")
    if language == "en":
        assert CJK.findall(text) == [], text
        return
    words = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        " import('/web/i18n.js').then((module) => done(module.words));"
    )
    english = {
        value
        for key, value in words["en"].items()
        if value != words["zh"][key] and len(value) >= 4 and re.search("[A-Za-z]", value)
    }
    found = sorted(w for w in english if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text))
    assert found == [], (found, text)


def _accessible(browser: Any, view: str) -> None:
    """axe-core (vendored) finds no serious or critical violation of WCAG A/AA in the page."""
    if not browser.execute_script("return typeof axe !== 'undefined'"):
        browser.execute_script(AXE.read_text(encoding="utf-8"))
    found = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        " axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',"
        " 'best-practice'], resultTypes: ['violations']})"
        ".then((r) => done(r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))"
        ".map((v) => [v.id, v.nodes.slice(0, 3).map((n) => n.target.join(' '))])),"
        " (e) => done(String(e)));"
    )
    assert found == [], (view, found)


def _first_view(browser: Any) -> tuple[int, float]:
    """Reload with an empty cache (the key stays in the session): the bytes transferred up to
    the first view drawn, compressed, and the time from navigation to it, in ms."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Network.clearBrowserCache", {})
    browser.refresh()
    WebDriverWait(browser, WAIT_S).until(
        lambda b: b.execute_script(
            "return performance.getEntriesByName('envlink:first-view').length"
        )
    )
    size, drawn = browser.execute_script(
        "const drawn = performance.getEntriesByName('envlink:first-view')[0].startTime;"
        " const entries = [...performance.getEntriesByType('navigation'),"
        " ...performance.getEntriesByType('resource').filter((e) => e.startTime <= drawn)];"
        " return [entries.reduce((sum, e) => sum + e.transferSize, 0), drawn];"
    )
    return int(size), float(drawn)


def _tab_to(browser: Any, selector: str) -> Any:
    """Tab from the top of the page until `selector` has the focus, visibly outlined (a map's
    station: drawn with an orange ring)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    for _ in range(60):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script(f"return document.activeElement.matches({json.dumps(selector)})"):
            break
    else:
        raise AssertionError(f"{selector} is not reached by Tab")
    outline = browser.execute_script(
        "const style = getComputedStyle(document.activeElement);"
        " return document.activeElement instanceof SVGElement"
        " ? [style.stroke, style.strokeWidth] : [style.outlineStyle, style.outlineWidth]"
    )
    assert outline in (["solid", "3px"], ["rgb(255, 153, 0)", "4px"]), outline
    return browser.switch_to.active_element


def _stations_named(browser: Any, names: dict[str, str]) -> None:
    """Each station on the map is a button (in the accessibility tree Chromium builds) named as
    `names` says: its name, code and AQI or water class; every other station has a name too."""
    from selenium.webdriver.common.by import By

    for code, name in names.items():
        circle = browser.find_element(By.CSS_SELECTOR, f'circle[data-station="{code}"]')
        assert (circle.aria_role, circle.accessible_name) == ("button", name), code
    for circle in browser.find_elements(By.CSS_SELECTOR, "circle[data-station]"):
        code = circle.get_attribute("data-station")
        assert circle.aria_role == "button", code
        assert f" ({code}) · " in circle.accessible_name, (code, circle.accessible_name)


def _fits(browser: Any, *selectors: str) -> None:
    """Nothing overflows the viewport's width; each selector's elements are displayed in it."""
    from selenium.webdriver.common.by import By

    width, inner, wide = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " [...document.querySelectorAll('body *')].filter((e) =>"
        " e.getBoundingClientRect().right > window.innerWidth + 0.5).slice(0, 5)"
        ".map((e) => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right)]"
    )
    assert (inner, width <= inner) == (PHONE[0], True), (width, inner, wide)
    for selector in selectors:
        found = browser.find_elements(By.CSS_SELECTOR, selector)
        assert found, selector
        for element in found:
            right = browser.execute_script(
                "arguments[0].scrollIntoView({block: 'center'});"
                " return arguments[0].getBoundingClientRect().right",
                element,
            )
            assert element.is_displayed() and right <= inner, (selector, right)


def _bulletin(browser: Any, expected: dict[str, Any], downloads: Path) -> None:
    """Last month's bulletin as the API gives it; then the month before, chosen in the picker,
    and its three files downloaded."""
    from selenium.webdriver.common.by import By

    root = _go(browser, "bulletin")
    bulletin = expected["bulletin"]
    month = root.find_element(By.CSS_SELECTOR, "[data-bulletin-month]")
    assert month.get_attribute("value") == bulletin["month"]

    def attributes(name: str) -> list[str]:
        return [
            str(e.get_attribute(name)) for e in root.find_elements(By.CSS_SELECTOR, f"[{name}]")
        ]

    assert attributes("data-summary") == [r["unit"] for r in bulletin["summary"]]
    assert attributes("data-unit") == [u["unit"] for u in bulletin["air"]]
    assert attributes("data-rank") == [r["code"] for r in bulletin["stations"]]
    assert attributes("data-section") == [r["code"] for r in bulletin["water"]["sections"]]
    assert len(attributes("data-pollutant")) == sum(len(u["pollutants"]) for u in bulletin["air"])
    region = root.find_element(By.CSS_SELECTOR, '[data-unit="region"]')
    assert region.text.startswith(f"{bulletin['air'][2]['name']} "), region.text
    assert len(region.find_elements(By.TAG_NAME, "td")) == 9
    earlier = expected["bulletin_earlier"]
    browser.execute_script(
        "arguments[0].value = arguments[1];"
        " arguments[0].dispatchEvent(new Event('change', {bubbles: true}))",
        month,
        earlier["month"],
    )
    root = _redrawn(browser, root, '#view > [data-view="bulletin"]')
    assert root.find_element(By.TAG_NAME, "h2").text.endswith(f" {earlier['month']}")
    assert attributes("data-section") == [r["code"] for r in earlier["water"]["sections"]]
    name = f"envlink-bulletin-{earlier['month']}"
    for format, suffix in (("json", "json"), ("csv", "zip"), ("html", "html")):
        root.find_element(By.CSS_SELECTOR, f'[data-download="{format}"]').click()
        path = downloads / f"{name}.{suffix}"
        deadline = time.monotonic() + WAIT_S
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.exists(), sorted(p.name for p in downloads.iterdir())
    saved = json.loads((downloads / f"{name}.json").read_text(encoding="utf-8"))
    assert (saved["month"], saved["summary"]) == (earlier["month"], earlier["summary"])
    with zipfile.ZipFile(downloads / f"{name}.zip") as tables:
        assert "summary.csv" in tables.namelist(), tables.namelist()
    page = (downloads / f"{name}.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html") and earlier["month"] in page


def _phone(browser: Any, shots: Path) -> None:
    """Every view on a phone-sized viewport: no serious or critical axe-core violation; the
    overview and the alerts board without sideways scrolling, the navigation and the board's
    buttons on screen."""
    width, height = PHONE
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        for view in VIEWS:
            _go(browser, view)
            assert browser.execute_script("return window.innerWidth") == width
            _accessible(browser, f"{view}-phone")
            if view == "overview":
                _fits(
                    browser, "[data-go]", "#language", "#sign-out", "svg.map", "[data-alert-counts]"
                )
            elif view == "alerts":
                _fits(browser, "[data-go]", "button[data-ack]", "[data-silenced]")
            browser.save_screenshot(str(shots / f"{view}-phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _scenario(
    browser: Any, url: str, keys: dict[str, str], expected: dict[str, Any], shots: Path
) -> None:
    """What a duty officer does; runs in a thread, while the server answers on the test's loop."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)

    def text_of(selector: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, selector).text)

    def attributes(selector: str, *names: str) -> list[tuple[str, ...]]:
        return [
            tuple(str(e.get_attribute(n)) for n in names)
            for e in browser.find_elements(By.CSS_SELECTOR, selector)
        ]

    browser.get(url + "/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    _accessible(browser, "sign-in")
    _sign_in(browser, keys["responder"])
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '[data-view="overview"] svg'))
    expected["first_view"] = _first_view(browser)
    size, drawn = expected["first_view"]
    assert (size < FIRST_VIEW_BYTES, drawn < FIRST_VIEW_S * 1000) == (True, True), (size, drawn)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '[data-view="overview"] svg'))
    circles = browser.find_elements(By.CSS_SELECTOR, "circle[data-station]")
    assert sorted(c.get_attribute("data-station") for c in circles) == expected["stations"]
    for city, name in (("guangzhou", "广州"), ("dongguan", "东莞")):
        assert text_of(f'[data-city="{city}"]').startswith(
            f"{name} 城市 AQI\nAQI {expected[city]} "
        )
    for station in expected["air"]:
        assert " · AQI " in text_of(f'text[data-label="{station}"]')
    _stations_named(browser, expected["station_names"]["zh"])
    assert "严重: 1" in text_of("[data-alert-counts]")
    assert text_of("[data-sources-health]") == (
        f"数据源\n正常: {len(expected['sources'])}\n出错: 0\n尚无数据: 0"
    )
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin))"
    )
    assert outside == []
    for view in VIEWS:  # every view in Chinese, the default
        _go(browser, view)
        _labels_are(browser, "zh")
        _accessible(browser, view)
        browser.save_screenshot(str(shots / f"{view}-zh.png"))
    shown = browser.find_element(By.CSS_SELECTOR, "#view > [data-view]")
    _tab_to(browser, '[data-go="bulletin"]').send_keys(Keys.ENTER)
    _redrawn(browser, shown, '#view > [data-view="bulletin"]')
    _tab_to(browser, "[data-bulletin-month]")
    shown = _go(browser, "overview")
    station = expected["air"][0]
    _tab_to(browser, f'circle[data-station="{station}"]').send_keys(Keys.ENTER)
    shown = _redrawn(browser, shown, '#view > [data-view="station"]')
    picked = shown.find_element(By.CSS_SELECTOR, "[data-station-picker]")
    assert picked.get_attribute("value") == station
    shown = _go(browser, "overview")
    _tab_to(browser, f'circle[data-station="{WATER_STATION}"]').send_keys(Keys.SPACE)
    shown = _redrawn(browser, shown, '#view > [data-view="station"]')
    picked = shown.find_element(By.CSS_SELECTOR, "[data-station-picker]")
    assert picked.get_attribute("value") == WATER_STATION

    _go(browser, "overview")
    browser.find_element(By.ID, "language").click()
    wait.until(lambda b: text_of('[data-city="dongguan"]').startswith("Dongguan City AQI"))
    assert text_of("nav") == "Overview\nAlerts\nStation\nSituation\nBulletin\nSources"
    _labels_are(browser, "en")
    _stations_named(browser, expected["station_names"]["en"])
    browser.save_screenshot(str(shots / "overview-en.png"))

    browser.find_element(By.CSS_SELECTOR, f'circle[data-station="{expected["air"][0]}"]').click()
    root = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, '[data-view="station"]'))
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-parameter]")
    assert sorted(r.get_attribute("data-parameter") for r in rows) == sorted(AIR)
    assert all(r.text.endswith(" valid") and " min " in r.text for r in rows), [
        r.text for r in rows
    ]
    _station_chart(browser, root, expected)
    _labels_are(browser, "en")
    browser.save_screenshot(str(shots / "station-en.png"))

    root = _go(browser, "situation")
    for area in ("dongjiang", "shiziyang"):
        if area != "dongjiang":
            _choose(root, "[data-area]", area)
            root = _redrawn(browser, root, '[data-view="situation"]')
        listed = attributes("li[data-station]", "data-station", "data-state")
        assert listed == expected["situation"][area]
        assert attributes("circle[data-river-station]", "data-river-station") == [
            (code,) for code, _ in expected["situation"][area] if code in expected["water"]
        ]
        _labels_are(browser, "en")
        browser.save_screenshot(str(shots / f"situation-{area}-en.png"))

    _bulletin(browser, expected, shots / "downloads")
    _labels_are(browser, "en")
    _accessible(browser, "bulletin-en")
    browser.save_screenshot(str(shots / "bulletin-en.png"))

    _go(browser, "sources")
    assert attributes("[data-source]", "data-source") == [(c,) for c in expected["sources"]]
    assert attributes("[data-source]", "data-health") == [("healthy",)] * len(expected["sources"])
    _labels_are(browser, "en")
    browser.save_screenshot(str(shots / "sources-en.png"))

    _go(browser, "alerts")
    row = browser.find_element(By.CSS_SELECTOR, f'[data-alert="{expected["alert"]}"]')
    assert row.text.startswith("Critical Shilong")
    assert len(row.find_elements(By.CSS_SELECTOR, "button[data-ack]")) == 1
    row.find_element(By.CSS_SELECTOR, "button[data-silence]").click()
    form = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "[data-silence-form]"))
    _choose(form, "select[name=hours]", "4")
    form.find_element(By.NAME, "comment").send_keys("pump test at Shilong")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    silenced = wait.until(
        lambda b: b.find_element(By.CSS_SELECTOR, f'[data-silenced="{expected["alert"]}"]')
    )
    assert silenced.text.startswith("Silenced until ")
    _labels_are(browser, "en")
    browser.save_screenshot(str(shots / "alerts-en.png"))
    _phone(browser, shots)
    wait.until(lambda b: b.find_element(By.ID, "live").is_displayed())


def _station_chart(browser: Any, root: Any, expected: dict[str, Any]) -> None:
    """NO2 of the last day: every reading a point, the flagged ones marked, the limits drawn;
    then the hourly series of 7 days."""
    from selenium.webdriver.common.by import By

    _choose(root, "[data-chart-parameter]", "no2")
    root = _redrawn(browser, root, '[data-chart="no2:raw"]')
    points = root.find_elements(By.CSS_SELECTOR, "[data-point]")
    assert [p.get_attribute("data-qc") for p in points] == expected["raw_qc"]
    flagged = root.find_elements(By.CSS_SELECTOR, "circle.flagged")
    assert [p.get_attribute("data-qc") for p in flagged] == ["invalid", "suspect"]
    lines = root.find_elements(By.CSS_SELECTOR, "line[data-limit]")
    assert [line.get_attribute("data-limit") for line in lines] == ["standard", "threshold"]
    labels = [label.text for label in root.find_elements(By.CSS_SELECTOR, ".limit-label")]
    assert labels == [
        f"{expected['no2_standard']} 1-hour mean ≤ 200",
        "Warning threshold > 200",
        "↑ Critical threshold > 700",
    ]
    station = browser.find_element(By.CSS_SELECTOR, '[data-view="station"]')
    _choose(station, "[data-chart-range]", "7d")
    chart = _redrawn(browser, root, '[data-chart="no2:1h"]')
    assert len(chart.find_elements(By.CSS_SELECTOR, "[data-point]")) == expected["hourly"]
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.missing")) == expected["hourly_missing"]


def _acknowledged_and_read(browser: Any, keys: dict[str, str], expected: dict[str, Any]) -> None:
    """The responder acknowledges the breach from the board; a reader then sees the responder's
    agency in its Acknowledged column and no acknowledge or silence button; nothing went to the
    console as an error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    breach = f'[data-alert="{expected["breach"]}"]'

    def cells() -> list[str]:
        """The row's cells as shown, read at once (the board is redrawn as events come)."""
        found: list[str] = browser.execute_script(
            "const row = document.querySelector(arguments[0]);"
            " return row ? [...row.cells].map((c) => c.innerText) : []",
            breach,
        )
        return found

    row = browser.find_element(By.CSS_SELECTOR, breach)
    assert cells()[:4] == ["Critical", expected["breach_where"], "no2", "Firing"], cells()
    row.find_element(By.CSS_SELECTOR, "button[data-ack]").click()
    wait.until(lambda b: cells()[5:7] == ["dg_eeb", ""])
    assert browser.find_elements(By.CSS_SELECTOR, f"{breach} button[data-ack]") == []

    browser.find_element(By.ID, "sign-out").click()
    _sign_in(browser, keys["reader"])
    wait.until(lambda b: cells())
    assert cells() == ["Critical", expected["breach_where"], "no2", "Firing", cells()[4], "dg_eeb"]
    row = browser.find_element(By.CSS_SELECTOR, f'[data-alert="{expected["alert"]}"]')
    assert row.text.startswith("Critical Shilong")
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-ack]") == []
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-silence]") == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


async def _expected(api: httpx.AsyncClient, air: list[str]) -> dict[str, Any]:
    """What the API says of the series, areas and sources the screen is checked against."""

    async def get(path: str, **params: str) -> Any:
        response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    now = utcnow()
    series = {"station": air[0], "parameter": "no2"}
    raw = await get(
        "/v1/readings", **series, interval="raw", start=(now - timedelta(days=1)).isoformat()
    )
    hourly = await get(
        "/v1/readings", **series, interval="1h", start=(now - timedelta(days=7)).isoformat()
    )
    limits = await get("/v1/limits", **series)
    situation = {
        area: [(s["code"], s["state"]) for s in (await get("/v1/situation", area=area))["stations"]]
        for area in ("dongjiang", "shiziyang")
    }
    stations = (await get("/v1/stations"))["items"]
    named = {s["code"]: s for s in stations}
    aqi = await get("/v1/aqi", station=air[0])
    water = await get("/v1/water-quality", station=WATER_STATION)
    assert isinstance(aqi["aqi"], int) and water["overall_class"] is not None, (aqi, water)
    levels = {
        air[0]: {
            "zh": f"AQI {aqi['aqi']} {aqi['category_zh']}",
            "en": f"AQI {aqi['aqi']} {aqi['category']}",
        },
        WATER_STATION: {
            "zh": f"{ROMAN['zh'][water['overall_class']]} 类",
            "en": f"{ROMAN['en'][water['overall_class']]} Class",
        },
    }
    shanghai = now + timedelta(hours=8)
    last_month = shanghai.replace(day=1) - timedelta(days=1)
    month_before = last_month.replace(day=1) - timedelta(days=1)
    return {
        "bulletin": await get("/v1/reports/bulletin", month=last_month.strftime("%Y-%m")),
        "bulletin_earlier": await get("/v1/reports/bulletin", month=month_before.strftime("%Y-%m")),
        "raw_qc": [item["qc"] for item in raw["items"]],
        "hourly": len(hourly["items"]),
        "hourly_missing": sum(item["value"] is None for item in hourly["items"]),
        "no2_standard": limits["limits"][0]["standard"].split(" (")[0],
        "situation": situation,
        "water": {s["code"] for s in stations if s["medium"] == "water"},
        "sources": [s["code"] for s in (await get("/v1/sources"))["items"]],
        # Each station's button on the map, named in each language.
        "station_names": {
            language: {
                code: f"{named[code][field]} ({code}) · {level[language]}"
                for code, level in levels.items()
            }
            for language, field in (("zh", "name_zh"), ("en", "name"))
        },
    }


async def test_a_duty_officer_signs_in_and_reads_the_screen(
    db: AsyncConnectionPool, settings: Settings, browser: Any, tmp_path: Path
) -> None:
    alert, air = await _seed(db)
    app = create_app(settings, pool=db)
    logged = Logged()
    try:
        async with served(app) as url:
            await _read_the_screen(db, settings, browser, tmp_path, url, alert, air)
            # The reader's board is open: its alert stream ends with the server, at once.
            for _ in range(WAIT_S * 20):  # the responder's stream ended, the reader's opened
                if app.state.feed.subscribers == 1:
                    break
                await asyncio.sleep(0.05)
            assert app.state.feed.subscribers == 1
            logged.attach()  # after uvicorn set its loggers up (which drops their handlers)
            stopping = time.monotonic()
        stopped_s = time.monotonic() - stopping
    finally:
        logged.detach()
    # No traceback, nothing cancelled: the server stopped well within its 1 s grace.
    assert (logged.lines, stopped_s < 0.9) == ([], True), (logged.lines, stopped_s)
    print(f"server stopped {stopped_s:.2f} s after it was asked to, its alert stream open")


class Logged(logging.Handler):
    """Every warning, error or traceback logged in this process while attached (uvicorn's own
    logger does not pass its lines on to the root logger: it is watched too)."""

    LOGGERS = ("", "uvicorn")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {self.format(record)}")

    def attach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


async def _read_the_screen(
    db: AsyncConnectionPool,
    settings: Settings,
    browser: Any,
    tmp_path: Path,
    url: str,
    alert: int,
    air: list[str],
) -> None:
    """The duty officers' session on the served screen (the test's body, while it serves)."""
    async with db.connection() as conn:
        _, responder = await create_key(conn, agency="dg_eeb", roles=["reader", "responder"])
        _, reader = await create_key(conn, agency="gz_eeb", roles=["reader"])
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": reader}) as api:
        stations = (await api.get("/v1/stations")).json()["items"]
        city_aqi = {
            city: (await api.get("/v1/aqi", params={"city": city})).json()["aqi"]
            for city in ("guangzhou", "dongguan")
        }
        expected = await _expected(api, air)
    assert all(isinstance(value, int) for value in city_aqi.values()), city_aqi
    # The hours before, oldest first, and the hour every air station reported.
    before = [NO2_BEFORE[back][1] for back in sorted(NO2_BEFORE, reverse=True)]
    assert expected["raw_qc"] == [*before, "valid"]
    # An hour of each reading; the suspect one's and the invalid one's have no valid mean.
    assert (expected["hourly"], expected["hourly_missing"]) == (len(NO2_BEFORE) + 1, 2)
    assert all(expected["situation"].values()), expected["situation"]
    assert expected["sources"] != []
    expected |= {
        "stations": sorted(s["code"] for s in stations), "air": air, "alert": alert,
        **city_aqi,
    }  # fmt: skip
    keys = {"responder": responder, "reader": reader}
    await asyncio.to_thread(_scenario, browser, url, keys, expected, tmp_path)
    expected["breach"], live_s = await _breach(db, settings, browser, tmp_path)
    print(f"breach over HJ 212: on the board {live_s:.2f} s after its acknowledgement")
    assert live_s < LIVE_S
    expected["breach_where"] = next(s["name"] for s in stations if s["code"] == BREACH_STATION)
    await asyncio.to_thread(_acknowledged_and_read, browser, keys, expected)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": responder}) as api:
        silences = (await api.get("/v1/silences")).json()["items"]
        breach = (await api.get(f"/v1/alerts/{expected['breach']}")).json()
    assert (breach["rule_id"], breach["station"], breach["severity"]) == (
        "no2_1h",
        BREACH_STATION,
        "critical",
    )
    assert breach["acknowledged_by"] == ["dg_eeb"]
    assert [(s["rules"], s["stations"], s["comment"]) for s in silences] == [
        (["do_low"], ["dg-w-shilong"], "pump test at Shilong")
    ]
    shots = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.glob("*.png")))
    assert shots == sorted(
        [f"{view}-zh.png" for view in VIEWS]
        + [f"{view}-en.png" for view in ("overview", "station", "bulletin", "sources", "alerts")]
        + [f"{view}-phone.png" for view in VIEWS]
        + [f"situation-{area}-en.png" for area in ("dongjiang", "shiziyang")]
    )
    size, drawn = expected["first_view"]
    print(f"first view: {size} bytes transferred, drawn {drawn:.0f} ms after navigation")
    print(f"screenshots: {tmp_path}")


def _png() -> bytes:
    """A 1×1 grey PNG: a tile as a tile server sends it."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xcc\xcc\xcc"))
        + chunk(b"IEND", b"")
    )


@contextlib.contextmanager
def _tile_server() -> Iterator[tuple[str, set[str]]]:
    """A tile server on loopback: its URL template and the tiles asked of it ("z/x/y")."""
    asked: set[str] = set()
    tile = _png()

    class Tiles(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.add(self.path.removeprefix("/tiles/").removesuffix(".png"))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/tiles/{{z}}/{{x}}/{{y}}.png", asked
    finally:
        server.shutdown()
        server.server_close()


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    """Web Mercator pixels of the world at zoom 0 (256 px)."""
    sin = math.sin(math.radians(lat))
    return (lon + 180) / 360 * 256, (0.5 - math.log((1 + sin) / (1 - sin)) / (4 * math.pi)) * 256


def _tiles_under(points: list[list[float]]) -> tuple[int, set[str], dict[str, str]]:
    """The zoom, the tiles under the 900 px wide map of `points` (40 px around them), and the
    tile of each point, as the screen chooses them."""
    projected = [_mercator(lon, lat) for lon, lat in points]
    xs, ys = [p[0] for p in projected], [p[1] for p in projected]
    k = (900 - 80) / (max(xs) - min(xs))
    height = math.ceil((max(ys) - min(ys)) * k + 80)
    zoom = round(math.log2(k))
    n = 2**zoom

    def span(low: float, extent: float) -> range:
        first = math.floor((low - 40 / k) * n / 256)
        return range(first, math.floor((low + (extent - 40) / k) * n / 256) + 1)

    under = {f"{zoom}/{x}/{y}" for x in span(min(xs), 900) for y in span(min(ys), height)}
    own = {
        f"{lon},{lat}": f"{zoom}/{math.floor(x * n / 256)}/{math.floor(y * n / 256)}"
        for (lon, lat), (x, y) in zip(points, projected, strict=True)
    }
    return zoom, under, own


def _on_tiles(
    browser: Any, url: str, key: str, stations: dict[str, str], tiles: tuple[set[str], set[str]]
) -> None:
    """The overview draws the tiles under the map (`tiles`: those and the ones the tile server
    was asked for) and each station on its own tile."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    _sign_in(browser, key)
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '[data-view="overview"] svg'))
    drawn = {
        str(image.get_attribute("data-tile")): image
        for image in browser.find_elements(By.CSS_SELECTOR, "svg.map image[data-tile]")
    }
    under, asked = tiles
    assert set(drawn) == under
    wait.until(lambda b: asked == under)
    for code, tile in stations.items():
        circle = browser.find_element(By.CSS_SELECTOR, f'circle[data-station="{code}"]')
        cx, cy = (float(circle.get_attribute(name)) for name in ("cx", "cy"))
        x, y, size = (float(drawn[tile].get_attribute(name)) for name in ("x", "y", "width"))
        assert (x <= cx < x + size, y <= cy < y + size) == (True, True), (code, tile, cx, cy)
    _accessible(browser, "overview-tiles")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


async def test_the_overview_map_draws_on_the_sites_tile_server(
    db: AsyncConnectionPool, settings: Settings, browser: Any
) -> None:
    async with db.connection() as conn:
        _, reader = await create_key(conn, agency="gz_eeb", roles=["reader"])
    with _tile_server() as (template, asked):
        tiled = settings.model_copy(update={"map_tile_url": template})
        async with served(create_app(tiled, pool=db)) as url:
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": reader}) as api:
                stations = (await api.get("/v1/stations", params={"format": "geojson"})).json()
                rivers = (await api.get("/v1/rivers")).json()
            points = [f["geometry"]["coordinates"] for f in stations["features"]] + [
                point for f in rivers["features"] for point in f["geometry"]["coordinates"]
            ]
            zoom, under, own = _tiles_under(points)
            assert len(under) > 1, (zoom, under)
            of_station = {
                f["properties"]["code"]: own["{},{}".format(*f["geometry"]["coordinates"])]
                for f in stations["features"]
            }
            await asyncio.to_thread(_on_tiles, browser, url, reader, of_station, (under, asked))
