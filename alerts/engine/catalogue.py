"""The engine's view of the catalogue and of the rules in force, cached per database.

The catalogue changes only with `envlink seed`; like the ingest pipeline, the engine picks a
change up within CATALOGUE_TTL_S. Parsed rule definitions are cached by their JSON text, so a
rule changed through the API applies from the next round. Neither cache holds alert state.
Everything cached lives in this file, so one shared catalogue read model can replace it.
"""

from __future__ import annotations

import time as monotonic
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from alerts.propagation import Reach
from schemas.rules import RuleDefinition
from store.alerts import (
    EngineSeries,
    EngineStation,
    agency_ids,
    engine_series,
    engine_stations,
    reach_rows,
)
from store.pool import Conn
from store.rules import active_rule_texts

CATALOGUE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class ActiveRule:
    """A rule's version in force, as the engine evaluates it."""

    id: str
    version: int
    definition: RuleDefinition


@dataclass(frozen=True)
class Catalogue:
    """Stations, their series, the river's reaches, the agencies and the enabled rules."""

    stations: dict[int, EngineStation]
    series: dict[tuple[int, int], EngineSeries]
    by_station: dict[int, list[EngineSeries]]
    parameter_ids: dict[str, int]
    reaches: dict[str, Reach]
    agencies: list[int]
    rules: dict[str, ActiveRule]

    def station_series(self, station_id: int, codes: Iterable[str]) -> list[EngineSeries]:
        """The station's series of these parameter codes."""
        wanted = set(codes)
        return [s for s in self.by_station.get(station_id, ()) if s.parameter in wanted]


_catalogues: dict[str, tuple[float, Catalogue]] = {}
_definitions: dict[str, RuleDefinition] = {}


async def load(conn: Conn) -> Catalogue:
    """The catalogue (cached for CATALOGUE_TTL_S per database) with the rules in force now."""
    database = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    cached = _catalogues.get(database)
    if cached is None or monotonic.monotonic() - cached[0] > CATALOGUE_TTL_S:
        cached = (monotonic.monotonic(), await _load_catalogue(conn))
        _catalogues[database] = cached
    if len(_definitions) > 10_000:
        _definitions.clear()
    rules = {}
    for text in await active_rule_texts(conn):
        definition = _definitions.get(text.definition)
        if definition is None:
            definition = RuleDefinition.model_validate_json(text.definition)
            _definitions[text.definition] = definition
        if definition.enabled:
            rules[text.id] = ActiveRule(text.id, text.version, definition)
    return replace(cached[1], rules=rules)


async def _load_catalogue(conn: Conn) -> Catalogue:
    stations = await engine_stations(conn)
    series = await engine_series(conn)
    by_station: dict[int, list[EngineSeries]] = defaultdict(list)
    for entry in series:
        by_station[entry.station_id].append(entry)
    reaches = {
        r.code: Reach(
            r.code, tuple(r.downstream), r.length_km, r.velocity_m_s, r.tidal, r.tidal_factor
        )
        for r in await reach_rows(conn)
    }
    return Catalogue(
        stations={s.id: s for s in stations},
        series={(s.station_id, s.parameter_id): s for s in series},
        by_station=dict(by_station),
        parameter_ids={s.parameter: s.parameter_id for s in series},
        reaches=reaches,
        agencies=await agency_ids(conn),
        rules={},
    )
