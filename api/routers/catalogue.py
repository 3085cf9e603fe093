"""Stations (JSON or GeoJSON), river reaches (GeoJSON) and parameters of the joint catalogue."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import CatalogueDep, ConnDep, KeyDep
from api.errors import error_responses
from api.links import link, linked
from api.params import StationCode
from core.errors import StationNotFound
from schemas.catalogue import ParameterGroup, ParameterOut, StationOut
from schemas.common import Area, City, ErrorOut, Medium, Page, Text
from schemas.geojson import (
    GEOJSON_MEDIA_TYPE,
    LineStringGeometry,
    ReachCollection,
    ReachFeature,
    ReachProperties,
    ReachStationOut,
    StationCollection,
    parse_bbox,
    station_collection,
)
from store.catalogue import list_parameters
from store.rivers import reaches_with_stations

router = APIRouter(prefix="/v1", tags=["catalogue"], responses=error_responses(401, 422, 503))

_FIRST = "$response.body#/items/0/code"


class GeoJsonResponse(JSONResponse):
    media_type = GEOJSON_MEDIA_TYPE


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema with its definitions written in place, for a response's content
    (its own "#/$defs/..." would point into the OpenAPI document, not into it)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


@router.get(
    "/stations",
    response_model=Page[StationOut],
    responses={
        200: {
            "description": "JSON, or GeoJSON points (format=geojson or Accept:"
            " application/geo+json)",
            "content": {GEOJSON_MEDIA_TYPE: {"schema": _inline_schema(StationCollection)}},
            "links": dict(
                station=link("get", "/v1/stations/{code}", "The first station", {"code": _FIRST}),
                maintenance=link(
                    "get", "/v1/stations/{code}/maintenance", "Its maintenance", {"code": _FIRST}
                ),
                plan_maintenance=link(
                    "post",
                    "/v1/stations/{code}/maintenance",
                    "Plan its maintenance",
                    {"code": _FIRST},
                ),
            ),
        },
        400: {"model": ErrorOut, "description": "A malformed bbox"},
    },
)
async def stations(
    catalogue: CatalogueDep,
    key: KeyDep,
    city: City | None = None,
    area: Area | None = None,
    medium: Medium | None = None,
    bbox: Annotated[
        Text | None,
        Query(
            description="minLon,minLat,maxLon,maxLat (WGS-84): only stations inside, edges included"
        ),
    ] = None,
    output_format: Annotated[
        Literal["json", "geojson"] | None,
        Query(alias="format", description="geojson: a FeatureCollection of points"),
    ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Page[StationOut] | Response:
    """Stations of both cities, filtered by city, area, medium and bounding box."""
    box = parse_bbox(bbox) if bbox is not None else None
    items = [
        s
        for s in catalogue.stations_out.values()
        if (city is None or s.city == city)
        and (area is None or s.area == area)
        and (medium is None or s.medium == medium)
        and (box is None or box.holds(s.lon, s.lat))
    ]
    if output_format == "geojson" or (
        output_format is None and GEOJSON_MEDIA_TYPE in (accept or "")
    ):
        return GeoJsonResponse(station_collection(items).model_dump(mode="json"))
    return Page[StationOut](items=items)


@router.get("/rivers", response_class=GeoJsonResponse)
async def rivers(conn: ConnDep, key: KeyDep) -> ReachCollection:
    """The river reaches as GeoJSON line strings, each with its stations' river km."""
    features = [
        ReachFeature(
            id=row.code,
            geometry=LineStringGeometry(coordinates=[(lon, lat) for lon, lat in row.path])
            if row.path
            else None,
            properties=ReachProperties(
                code=row.code,
                name=row.name,
                name_zh=row.name_zh,
                downstream=row.downstream,
                length_km=row.length_km,
                approximate=row.approximate,
                stations=[ReachStationOut(**station) for station in row.stations],
            ),
        )
        for row in await reaches_with_stations(conn)
    ]
    return ReachCollection(features=features)


@router.get(
    "/stations/{code}",
    responses={
        **error_responses(404),
        **linked(
            200,
            readings=link(
                "get",
                "/v1/readings",
                "Readings of its first parameter",
                {
                    "station": "$response.body#/code",
                    "parameter": "$response.body#/parameters/0/parameter",
                },
            ),
            plan_maintenance=link(
                "post",
                "/v1/stations/{code}/maintenance",
                "Plan its maintenance",
                {"code": "$response.body#/code"},
            ),
        ),
    },
)
async def station(catalogue: CatalogueDep, key: KeyDep, code: StationCode) -> StationOut:
    """One station with its parameters."""
    found = catalogue.stations_out.get(code)
    if found is None:
        raise StationNotFound(f"no station with code {code!r}")
    return found


@router.get("/parameters")
async def parameters(
    conn: ConnDep, key: KeyDep, group: Annotated[ParameterGroup | None, Query()] = None
) -> Page[ParameterOut]:
    """The parameter registry: codes, names, canonical units, HJ 212 codes, valid ranges."""
    items = await list_parameters(conn)
    return Page[ParameterOut](items=[p for p in items if group is None or p.group == group])
