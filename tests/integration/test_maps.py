"""Maps: GET /v1/stations as GeoJSON points (format=geojson or Accept), the bbox filter, and
GET /v1/rivers as GeoJSON line strings; both checked against RFC 7946 (tests/geojson)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest
from psycopg_pool import AsyncConnectionPool

from core.settings import Settings
from tests.conftest import ROOT
from tests.integration.conftest import reader_client

SCHEMA = json.loads((ROOT / "tests" / "geojson" / "rfc7946.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
SHIZIYANG_BOX = "113.5,22.75,113.65,23.0"


@pytest.fixture
async def client(db: AsyncConnectionPool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with reader_client(db, settings, "gz_eeb") as client:
        yield client


def _geojson(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    body: dict[str, Any] = response.json()
    VALIDATOR.validate(body)
    return body


def test_the_schema_refuses_what_rfc_7946_refuses() -> None:
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [113.5, 23.1]}}
    assert VALIDATOR.is_valid({**point, "properties": None})
    assert not VALIDATOR.is_valid(point)  # a Feature has a properties member
    line = {"type": "LineString", "coordinates": [[113.5, 23.1]]}
    assert not VALIDATOR.is_valid({"type": "Feature", "geometry": line, "properties": {}})
    swapped = {"type": "Point", "coordinates": [23.1, 193.5]}
    assert not VALIDATOR.is_valid(swapped)


async def test_stations_as_geojson_points(client: httpx.AsyncClient) -> None:
    body = _geojson(await client.get("/v1/stations", params={"format": "geojson"}))
    assert body["type"] == "FeatureCollection"
    assert len(body["features"]) == 20
    dadun = next(f for f in body["features"] if f["id"] == "gz-w-dadun")
    assert dadun["geometry"] == {"type": "Point", "coordinates": [113.573, 23.108]}
    properties = dadun["properties"]
    assert {k: properties[k] for k in ("code", "medium", "reach", "river_km", "approximate")} == {
        "code": "gz-w-dadun",
        "medium": "water",
        "reach": "north_main",
        "river_km": 33.0,
        "approximate": True,
    }
    by_accept = await client.get(
        "/v1/stations", headers={"Accept": "application/geo+json"}, params={"medium": "air"}
    )
    assert [f["id"] for f in _geojson(by_accept)["features"]][:2] == [
        "dg-a-humen",
        "dg-a-machong",
    ]
    plain = await client.get("/v1/stations", headers={"Accept": "application/json"})
    assert plain.headers["content-type"] == "application/json"
    assert len(plain.json()["items"]) == 20
    # format wins over Accept.
    asked = await client.get(
        "/v1/stations", params={"format": "json"}, headers={"Accept": "application/geo+json"}
    )
    assert asked.headers["content-type"] == "application/json"


async def test_bbox_keeps_the_stations_inside(client: httpx.AsyncClient) -> None:
    inside = ["dg-w-humen", "dg-w-shatian", "gz-a-nansha", "gz-w-lianhuashan", "gz-w-nansha"]
    body = _geojson(
        await client.get("/v1/stations", params={"bbox": SHIZIYANG_BOX, "format": "geojson"})
    )
    assert [f["id"] for f in body["features"]] == inside
    listed = await client.get("/v1/stations", params={"bbox": SHIZIYANG_BOX, "medium": "water"})
    assert [s["code"] for s in listed.json()["items"]] == [c for c in inside if "-w-" in c]
    nowhere = await client.get("/v1/stations", params={"bbox": "0,0,1,1", "format": "geojson"})
    assert _geojson(nowhere)["features"] == []


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        (
            "113.5,22.75,113.65",
            "bbox: expected minLon,minLat,maxLon,maxLat (4 numbers), got 3 parts",
        ),
        ("113.5,22.75,east,23", "bbox: 'east' is not a number"),
        ("113.5,22.75,inf,23", "bbox: 'inf' is not a finite number"),
        ("113.5,nan,113.65,23", "bbox: 'nan' is not a finite number"),
        ("-190,22.75,113.65,23", "bbox: minLon -190 is outside [-180, 180]"),
        ("113.5,22.75,113.65,91", "bbox: maxLat 91 is outside [-90, 90]"),
        ("113.65,22.75,113.5,23", "bbox: minLon 113.65 must be below maxLon 113.5"),
        ("113.5,23,113.65,23", "bbox: minLat 23 must be below maxLat 23"),
        ("", "bbox: expected minLon,minLat,maxLon,maxLat (4 numbers), got 1 parts"),
    ],
)
async def test_a_bad_bbox_is_a_400_naming_it(
    client: httpx.AsyncClient, bbox: str, message: str
) -> None:
    response = await client.get("/v1/stations", params={"bbox": bbox, "format": "geojson"})
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid_input", "message": message}}


async def test_rivers_as_geojson_line_strings(client: httpx.AsyncClient) -> None:
    body = _geojson(await client.get("/v1/rivers"))
    assert [f["id"] for f in body["features"]] == [
        "dongjiang_upper",
        "north_main",
        "shiziyang",
        "south_branch",
    ]
    assert {f["geometry"]["type"] for f in body["features"]} == {"LineString"}
    north = body["features"][1]
    assert north["geometry"]["coordinates"][0] == [113.858, 23.114]  # Shilong
    assert north["geometry"]["coordinates"][-1] == [113.52, 23.07]  # into Shiziyang
    assert north["properties"] == {
        "code": "north_main",
        "name": "Dongjiang north main stream (Shilong to Shiziyang)",
        "name_zh": "东江北干流",
        "downstream": ["shiziyang"],
        "length_km": 42.0,
        "approximate": True,
        "stations": [
            {"station": "dg-w-zhongtang", "name": "Zhongtang", "name_zh": "中堂", "river_km": 22.0},
            {"station": "gz-w-xintang", "name": "Xintang", "name_zh": "新塘", "river_km": 28.0},
            {
                "station": "gz-w-dadun",
                "name": "Dadun (national assessment section)",
                "name_zh": "大墩",
                "river_km": 33.0,
            },
        ],
    }
    shiziyang = body["features"][2]["properties"]
    assert [(s["station"], s["river_km"]) for s in shiziyang["stations"]] == [
        ("gz-w-lianhuashan", 9.0),
        ("dg-w-shatian", 17.0),
        ("dg-w-humen", 25.0),
        ("gz-w-nansha", 29.0),
    ]


async def test_maps_need_a_key(client: httpx.AsyncClient) -> None:
    for path in ("/v1/rivers", "/v1/stations?format=geojson"):
        response = await client.get(path, headers={"X-API-Key": ""})
        assert response.status_code == 401, path
