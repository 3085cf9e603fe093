"""The joint catalogue: what config/*.yaml holds, and what the API shows of it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import ConfigError
from schemas.common import Area, City, Medium
from schemas.config import read_yaml_model

CrcMode = Literal["hj212", "modbus", "modbus_swapped"]
WaterStandard = Literal["gb3838", "gb3097"]
ParameterGroup = Literal["air", "weather", "water", "lab"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterDef(Strict):
    """A registry parameter: code and canonical unit (docs/standards.md §7), HJ 212 code, range."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    name_zh: str
    group: ParameterGroup
    unit: str
    decimals: int = Field(ge=0, le=9)
    noise: float = Field(ge=0, description="A 3-hour change within ± this is steady")
    hj212: str | None = None
    valid_min: float
    valid_max: float

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.valid_min >= self.valid_max:
            raise ValueError(f"{self.code}: valid_min must be below valid_max")
        return self


Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]


class ReachDef(Strict):
    """A reach of the river graph; `downstream` names the reaches the water flows into."""

    code: str
    name: str
    name_zh: str
    river: str = Field(description="The river the reach is part of (reports group by it)")
    downstream: list[str]
    length_km: float = Field(gt=0)
    velocity_m_s: float = Field(gt=0)
    tidal: bool = False
    tidal_factor: float | None = Field(default=None, ge=0, le=1)
    approximate: bool = Field(description="The path is drawn roughly, not surveyed")
    path: list[tuple[Longitude, Latitude]] = Field(
        min_length=2, description="[longitude, latitude] points (WGS-84), upstream to downstream"
    )


class AgencyDef(Strict):
    code: str
    name: str
    name_zh: str
    city: City | None


class StationParameterDef(Strict):
    unit: str
    interval_s: int = Field(gt=0)


class Hj212Def(Strict):
    mn: str = Field(min_length=1, max_length=64)
    password: str | None = None
    crc: CrcMode = "hj212"


class StationDef(Strict):
    """A monitoring station as the joint agreement lists it."""

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    name_zh: str
    city: City
    area: Area
    medium: Medium
    agency: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    approximate: bool
    hj212: Hj212Def | None = None
    background: bool | None = None
    parameter_set: str | None = None
    parameters: dict[str, StationParameterDef] = Field(default_factory=dict)
    reach: str | None = None
    river_km: float | None = Field(default=None, ge=0)
    water_standard: WaterStandard | None = None
    water_body: Literal["river", "lake"] | None = None
    target_class: int | None = Field(default=None, ge=1, le=5)

    @model_validator(mode="after")
    def _medium_fields(self) -> Self:
        water_only = ("reach", "river_km", "water_standard", "water_body", "target_class")
        if self.medium == "air":
            present = [name for name in water_only if getattr(self, name) is not None]
            if present:
                raise ValueError(f"air station {self.code} must not set {', '.join(present)}")
            if self.background is None:
                raise ValueError(
                    f"air station {self.code} must say whether it is a background site"
                )
        else:
            missing = [name for name in water_only if getattr(self, name) is None]
            if missing:
                raise ValueError(f"water station {self.code} needs {', '.join(missing)}")
            if self.background is not None:
                raise ValueError(f"water station {self.code} must not set background")
            if self.water_standard == "gb3097" and (self.target_class or 0) > 4:
                raise ValueError(f"{self.code}: GB 3097 has classes 1-4")
        return self


class StationsFile(Strict):
    agencies: list[AgencyDef]
    parameter_sets: dict[str, dict[str, StationParameterDef]] = Field(default_factory=dict)
    stations: list[StationDef]


class ParametersFile(Strict):
    parameters: list[ParameterDef]


class RiversFile(Strict):
    reaches: list[ReachDef]


class StationParameterOut(BaseModel):
    parameter: str
    unit: str
    interval_s: int


class StationOut(BaseModel):
    """A station as the API shows it."""

    code: str
    name: str
    name_zh: str
    city: City
    area: Area
    medium: Medium
    agency: str
    lat: float
    lon: float
    approximate: bool
    hj212_mn: str | None
    background: bool | None
    reach: str | None
    river_km: float | None
    water_standard: WaterStandard | None
    target_class: int | None
    parameters: list[StationParameterOut]


class ParameterOut(BaseModel):
    code: str
    name: str
    name_zh: str
    group: ParameterGroup
    unit: str
    decimals: int | None = Field(
        description="Decimal places values are published with (rounded half to even)"
    )
    noise: float | None = Field(
        description="A 3-hour change within ± this is `steady` in /v1/situation's trends"
    )
    hj212: str | None
    valid_min: float
    valid_max: float


class Catalogue(BaseModel):
    """The three config files, cross-checked: every reference resolves, every code is unique."""

    parameters: list[ParameterDef]
    reaches: list[ReachDef]
    agencies: list[AgencyDef]
    stations: list[StationDef]
    station_parameters: dict[str, dict[str, StationParameterDef]]


def load_catalogue(config_dir: Path) -> Catalogue:
    """Read parameters.yaml, rivers.yaml and stations.yaml; ConfigError names what is wrong."""
    parameters = read_yaml_model(config_dir / "parameters.yaml", ParametersFile).parameters
    reaches = read_yaml_model(config_dir / "rivers.yaml", RiversFile).reaches
    stations_file = read_yaml_model(config_dir / "stations.yaml", StationsFile)
    where = str(config_dir / "stations.yaml")

    _unique(str(config_dir / "parameters.yaml"), "parameter code", [p.code for p in parameters])
    _unique(str(config_dir / "rivers.yaml"), "reach code", [r.code for r in reaches])
    _unique(where, "agency code", [a.code for a in stations_file.agencies])
    _unique(where, "station code", [s.code for s in stations_file.stations])
    _unique(where, "HJ 212 MN", [s.hj212.mn for s in stations_file.stations if s.hj212])

    parameter_codes = {p.code for p in parameters}
    reach_codes = {r.code for r in reaches}
    for reach in reaches:
        for downstream in reach.downstream:
            if downstream not in reach_codes:
                raise ConfigError(
                    f"rivers.yaml: reach {reach.code} flows into unknown {downstream}"
                )
    agency_codes = {a.code for a in stations_file.agencies}
    resolved: dict[str, dict[str, StationParameterDef]] = {}
    for station in stations_file.stations:
        if station.agency not in agency_codes:
            raise ConfigError(f"{where}: station {station.code}: unknown agency {station.agency}")
        if station.reach is not None and station.reach not in reach_codes:
            raise ConfigError(f"{where}: station {station.code}: unknown reach {station.reach}")
        merged: dict[str, StationParameterDef] = {}
        if station.parameter_set is not None:
            if station.parameter_set not in stations_file.parameter_sets:
                raise ConfigError(
                    f"{where}: station {station.code}: "
                    f"unknown parameter_set {station.parameter_set}"
                )
            merged.update(stations_file.parameter_sets[station.parameter_set])
        merged.update(station.parameters)
        unknown = sorted(set(merged) - parameter_codes)
        if unknown:
            raise ConfigError(
                f"{where}: station {station.code}: unknown parameters {', '.join(unknown)}"
            )
        if not merged:
            raise ConfigError(f"{where}: station {station.code} has no parameters")
        resolved[station.code] = merged
    return Catalogue(
        parameters=parameters,
        reaches=reaches,
        agencies=stations_file.agencies,
        stations=stations_file.stations,
        station_parameters=resolved,
    )


def _unique(where: str, what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: {what} {value!r} appears twice")
        seen.add(value)
