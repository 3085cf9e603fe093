"""GET /v1/reports/water for the Shiziyang estuary end to end over real PostgreSQL: readings
ingested through the pipeline, rolled up by the worker's loop, evaluated by the report (GB 3838
sections, the GB 3097 point and its area grade, docs/evaluation.md §5-§6), figures by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.loop import AlertLoop
from core.settings import Settings
from core.timeutil import CST
from ingest.pipeline import Pipeline, SourceRef
from schemas.common import QC
from schemas.readings import ReadingIn, Rejection
from tests.integration.conftest import reader_client

NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
FEED = SourceRef(code="test", kind="test")
NOVEMBER = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
UNITS = {"ph": "1"}
# Daily means of the automatic items: a ramp about the mean (no flat line for the QC to flag),
# each step twice the last published decimal so the ramp stays symmetric once stored.
STEPS = {"ph": 0.02, "do": 0.02, "nh3n": 0.002, "tp": 0.002}
SECTIONS = {
    # GB 3838 river, target III: NH3-N III, DO II, TP III -> III, compliant.
    "gz-w-lianhuashan": {"nh3n": 0.8, "do": 6.5, "tp": 0.15},
    # Target III: NH3-N IV, DO III, TP III -> IV.
    "dg-w-shatian": {"nh3n": 1.2, "do": 5.5, "tp": 0.15},
    # Target IV: NH3-N 劣V, DO IV, TP V -> 劣V.
    "dg-w-humen": {"nh3n": 2.2, "do": 4.0, "tp": 0.35},
    # GB 3097 point, target 3: pH class 1 (7.8-8.5), DO class 2 (> 5).
    "gz-w-nansha": {"ph": 8.0, "do": 5.5},
}


def _at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=CST)


# The point's monthly sea-water samples (mg/L): (item, time, value, below detection).
NANSHA_LAB = [
    # DIN (0.28 + 0.36)/2 = 0.32: class 3 (0.30 < x <= 0.40), the point's worst item.
    ("din", _at(10, 10), 0.28, False),
    ("din", _at(24, 10), 0.36, False),
    # Outside November's [start, end): not in its mean.
    ("din", datetime(2026, 10, 31, 23, tzinfo=CST), 0.9, False),
    ("din", datetime(2026, 12, 1, 0, tzinfo=CST), 0.9, False),
    ("po4p", _at(10, 10), 0.02, False),  # class 2 (0.015 < x <= 0.030)
    ("cod_mn_alkaline", _at(10, 10), 1.5, False),  # class 1
    # Pb: one sample below its detection limit 0.0016, entering the mean as 0.0008:
    # (0.0008 + 0.0008)/2 = 0.0008, class 1 (<= 0.001). At the limit itself it would be 0.0012,
    # class 2.
    ("pb", _at(10, 10), 0.0016, True),
    ("pb", _at(24, 10), 0.0008, False),
    # Hg below detection (0.00004) throughout: classed by its limit, class 1 (<= 0.00005); its
    # mean is half the limit.
    ("hg", _at(10, 10), 0.00004, True),
    ("hg", _at(24, 10), 0.00004, True),
    # Cd below detection throughout, limit 0.002: class 2 by its limit (class 1 is <= 0.001),
    # although half the limit would pass class 1.
    ("cd", _at(10, 10), 0.002, True),
]


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "gz_eeb") as client:
        yield client


def _readings() -> list[ReadingIn | Rejection]:
    found: list[ReadingIn | Rejection] = []
    for station, items in SECTIONS.items():
        for item, level in items.items():
            for i, day in enumerate(NOVEMBER):
                value = round(level + (i - 14.5) * STEPS[item], 3)
                found.append(
                    ReadingIn(
                        station=station,
                        parameter=item,
                        time=datetime(day.year, day.month, day.day, tzinfo=CST),
                        value=value,
                        unit=UNITS.get(item, "mg/L"),
                        period_s=86400,
                    )
                )
    for item, time, value, below in NANSHA_LAB:
        found.append(
            ReadingIn(
                station="gz-w-nansha",
                parameter=item,
                time=time,
                value=value,
                unit="mg/L",
                qc=QC.BELOW_DETECTION if below else QC.VALID,
            )
        )
    return found


async def _seed(pool: AsyncConnectionPool) -> None:
    """Ingest the month through the pipeline and roll it up as the worker does."""
    batch = _readings()
    pipeline = Pipeline(pool, earliest=date(2000, 1, 1), clock=lambda: NOW)
    result = await pipeline.ingest(batch, source=FEED)
    assert sum(result.summary.values()) == len(batch)
    assert result.summary.get("rejected", 0) == 0, result.summary
    await AlertLoop(pool, batch=5000, water_min_samples=1).drain()


async def _water(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/reports/water", params={**params, "period": "2026-11"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _classes(items: dict[str, Any]) -> dict[str, int]:
    return {item: found["class"] for item, found in items.items()}


async def test_the_estuary_sections_point_and_area(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    report = await _water(client, scope="area", code="shiziyang")
    assert report["scope"]["stations"] == [
        "gz-w-lianhuashan", "dg-w-shatian", "dg-w-humen", "gz-w-nansha"
    ]  # fmt: skip

    # The GB 3097 point: its lab items from the month's samples, pH and DO from daily means.
    (point,) = report["sea_points"]
    assert (point["code"], point["standard"]) == ("gz-w-nansha", "GB 3097-1997")
    assert _classes(point["items"]) == {
        "ph": 1, "do": 2, "din": 3, "po4p": 2, "cod_mn_alkaline": 1, "pb": 1, "hg": 1, "cd": 2
    }  # fmt: skip
    items = point["items"]
    assert (items["din"]["mean"], items["din"]["values"]) == (pytest.approx(0.32, abs=1e-12), 2)
    assert (items["pb"]["mean"], items["pb"]["below_detection"]) == (0.0008, False)
    assert (items["hg"]["mean"], items["hg"]["below_detection"]) == (0.00002, True)
    assert (items["hg"]["detection_limit"], items["hg"]["values"]) == (0.00004, 2)
    assert (items["cd"]["mean"], items["cd"]["detection_limit"]) == (0.001, 0.002)
    assert (items["ph"]["values"], items["ph"]["mean"]) == (30, pytest.approx(8.0, abs=1e-12))
    assert (point["class"], point["class_label"]) == (3, "3")
    # Judged against its target, class 3 (GB 3097 labels), which it meets.
    assert point["target"] == {"class": 3, "label": "3", "item_limits": {}}
    assert point["compliant"] is True
    assert point["exceedances"] == {"target": [], "class_iii": []}
    assert point["insufficient_data"] == {}
    # The area's one point is class 3: classes 1-2 0 % (< 60 %), 劣四类 0 % (<= 30 %) -> 差.
    assert report["sea_area"] == {
        "points": 1, "class_1_share": 0.0, "class_1_2_share": 0.0, "worse_than_4_share": 0.0,
        "grade_zh": "差", "grade": "poor",
    }  # fmt: skip

    sections = {s["code"]: s for s in report["sections"]}
    assert list(sections) == ["gz-w-lianhuashan", "dg-w-shatian", "dg-w-humen"]
    assert {
        code: (s["class"], s["class_label"], s["grade_zh"]) for code, s in sections.items()
    } == {
        "gz-w-lianhuashan": (3, "III", "良好"),
        "dg-w-shatian": (4, "IV", "轻度污染"),
        "dg-w-humen": (6, "劣V", "重度污染"),
    }
    assert _classes(sections["dg-w-humen"]["items"]) == {"do": 4, "nh3n": 6, "tp": 5}
    assert {code: s["compliant"] for code, s in sections.items()} == {
        "gz-w-lianhuashan": True, "dg-w-shatian": False, "dg-w-humen": False
    }  # fmt: skip
    assert sections["gz-w-lianhuashan"]["exceedances"] == {"target": [], "class_iii": []}
    # Shatian against its target III (= class III): NH3-N (1.2 - 1.0)/1.0 = 0.2.
    shatian = sections["dg-w-shatian"]["exceedances"]
    assert [(e["item"], e["multiple"]) for e in shatian["target"]] == [("nh3n", 0.2)]
    assert [(e["item"], e["multiple"]) for e in shatian["class_iii"]] == [("nh3n", 0.2)]
    # Humen against its target IV (NH3-N 1.5, TP 0.3): (2.2 - 1.5)/1.5 = 0.47, (0.35 - 0.3)/0.3
    # = 0.17; against class III (1.0, 0.2; DO 5): 1.2, 0.75 and DO without a multiple.
    humen = sections["dg-w-humen"]["exceedances"]
    assert [(e["item"], e["multiple"], e["against"]) for e in humen["target"]] == [
        ("nh3n", 0.47, "target"), ("tp", 0.17, "target")
    ]  # fmt: skip
    assert [(e["item"], e["multiple"]) for e in humen["class_iii"]] == [
        ("nh3n", 1.2), ("tp", 0.75), ("do", None)
    ]  # fmt: skip
    # CWQI: 0.8/1 + 5/6.5 + 0.15/0.2 = 2.3192; 1.2 + 5/5.5 + 0.75 = 2.8591; 2.2 + 5/4 + 0.35/0.2
    # = 5.2; their mean 3.4594.
    assert {code: s["cwqi"] for code, s in sections.items()} == {
        "gz-w-lianhuashan": 2.32, "dg-w-shatian": 2.86, "dg-w-humen": 5.2
    }  # fmt: skip
    # Three sections (< 5): the means are classed. NH3-N (0.8 + 1.2 + 2.2)/3 = 1.4 IV, DO 5.33
    # III, TP 0.2167 IV -> IV, 轻度污染. One of three in I-III, one 劣V, one compliant.
    assert report["group"] == {
        "sections": 3, "good_share": 33.3, "worse_than_v_share": 33.3, "compliant_share": 33.3,
        "method": "mean_concentration", "grade_zh": "轻度污染", "grade": "lightly polluted",
        "mean_class": 4, "cwqi": 3.46,
    }  # fmt: skip

    # Nothing a year earlier: every section and the point unclassed, no grades.
    last_year = report["last_year"]
    assert last_year["period"]["label"] == "2025-11"
    assert [s["class"] for s in last_year["sections"]] == [None, None, None]
    assert [p["class"] for p in last_year["sea_points"]] == [None]
    assert last_year["sea_area"] is None


async def test_the_point_alone_and_its_city(
    db: AsyncConnectionPool, client: httpx.AsyncClient
) -> None:
    await _seed(db)
    station = await _water(client, scope="station", code="gz-w-nansha")
    assert station["sections"] == []
    assert [(p["code"], p["class"]) for p in station["sea_points"]] == [("gz-w-nansha", 3)]
    # A station is no group: neither a group grade nor an area grade.
    assert (station["group"], station["sea_area"]) == (None, None)

    # Guangzhou: of its sections only Lianhuashan has data (III, 良好 by its means); the point
    # grades the city's sea area.
    city = await _water(client, scope="city", code="guangzhou")
    assert "gz-w-nansha" in city["scope"]["stations"]
    classed = {s["code"]: s["class"] for s in city["sections"] if s["class"] is not None}
    assert classed == {"gz-w-lianhuashan": 3}
    group = city["group"]
    assert (group["sections"], group["method"], group["mean_class"], group["grade_zh"]) == (
        1, "mean_concentration", 3, "良好"
    )  # fmt: skip
    assert (group["good_share"], group["compliant_share"]) == (100.0, 100.0)
    assert [(p["code"], p["class"]) for p in city["sea_points"]] == [("gz-w-nansha", 3)]
    assert city["sea_area"]["grade_zh"] == "差"
