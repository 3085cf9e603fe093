"""GeoJSON (RFC 7946) as the API writes it: stations as points, river reaches as line strings.

And the `bbox` filter, parsed and checked where it is declared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from core.errors import InvalidInput
from schemas.catalogue import StationOut

GEOJSON_MEDIA_TYPE = "application/geo+json"
Position = tuple[float, float]  # [longitude, latitude], WGS-84


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: Position


class LineStringGeometry(BaseModel):
    type: Literal["LineString"] = "LineString"
    coordinates: list[Position]


class StationFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str = Field(description="The station's code")
    geometry: PointGeometry
    properties: StationOut


class StationCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[StationFeature]


class ReachStationOut(BaseModel):
    """A station on a reach, at its distance from the reach's upstream end."""

    station: str
    name: str
    name_zh: str
    river_km: float


class ReachProperties(BaseModel):
    code: str
    name: str
    name_zh: str
    downstream: list[str] = Field(description="The reaches this one flows into")
    length_km: float
    approximate: bool | None = Field(description="The course is drawn roughly, not surveyed")
    stations: list[ReachStationOut] = Field(description="By river_km, upstream first")


class ReachFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str = Field(description="The reach's code")
    geometry: LineStringGeometry | None = Field(
        description="The course, upstream to downstream; null until config/rivers.yaml is seeded"
    )
    properties: ReachProperties


class ReachCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[ReachFeature]


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """minLon,minLat,maxLon,maxLat (RFC 7946 §5, without crossing the antimeridian)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def holds(self, lon: float, lat: float) -> bool:
        """Whether a position lies inside the box, edges included."""
        return self.min_lon <= lon <= self.max_lon and self.min_lat <= lat <= self.max_lat


def parse_bbox(text: str) -> BoundingBox:
    """A `bbox` parameter as a BoundingBox; InvalidInput naming bbox and what is wrong."""
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidInput(
            f"bbox: expected minLon,minLat,maxLon,maxLat (4 numbers), got {len(parts)} parts"
        )
    numbers = []
    for part in parts:
        try:
            number = float(part)
        except ValueError:
            raise InvalidInput(f"bbox: {part.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise InvalidInput(f"bbox: {part.strip()!r} is not a finite number")
        numbers.append(number)
    min_lon, min_lat, max_lon, max_lat = numbers
    for name, value, limit in (
        ("minLon", min_lon, 180),
        ("maxLon", max_lon, 180),
        ("minLat", min_lat, 90),
        ("maxLat", max_lat, 90),
    ):
        if not -limit <= value <= limit:
            raise InvalidInput(f"bbox: {name} {value:g} is outside [-{limit}, {limit}]")
    if min_lon >= max_lon:
        raise InvalidInput(f"bbox: minLon {min_lon:g} must be below maxLon {max_lon:g}")
    if min_lat >= max_lat:
        raise InvalidInput(f"bbox: minLat {min_lat:g} must be below maxLat {max_lat:g}")
    return BoundingBox(min_lon, min_lat, max_lon, max_lat)


def station_collection(stations: list[StationOut]) -> StationCollection:
    """Stations as GeoJSON points."""
    return StationCollection(
        features=[
            StationFeature(
                id=station.code,
                geometry=PointGeometry(coordinates=(station.lon, station.lat)),
                properties=station,
            )
            for station in stations
        ]
    )
