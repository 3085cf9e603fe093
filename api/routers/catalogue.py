"""Stations and parameters of the joint catalogue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ConnDep, KeyDep
from schemas.catalogue import ParameterOut, StationOut
from schemas.common import Area, City, Medium, Page, Text
from store.catalogue import get_station, list_parameters, list_stations

router = APIRouter(prefix="/v1", tags=["catalogue"])


@router.get("/stations")
async def stations(
    conn: ConnDep,
    key: KeyDep,
    city: City | None = None,
    area: Area | None = None,
    medium: Medium | None = None,
) -> Page[StationOut]:
    """Stations of both cities, filtered by city, area and medium."""
    items = await list_stations(conn, city=city, area=area, medium=medium)
    return Page[StationOut](items=items)


@router.get("/stations/{code}")
async def station(conn: ConnDep, key: KeyDep, code: Text) -> StationOut:
    """One station with its parameters."""
    return await get_station(conn, code)


@router.get("/parameters")
async def parameters(
    conn: ConnDep, key: KeyDep, group: Annotated[Text | None, Query()] = None
) -> Page[ParameterOut]:
    """The parameter registry: codes, names, canonical units, HJ 212 codes, valid ranges."""
    items = await list_parameters(conn)
    return Page[ParameterOut](items=[p for p in items if group is None or p.group == group])
