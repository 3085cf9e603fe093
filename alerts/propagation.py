"""The river graph: which stations lie downstream of a breach, how far, and when it arrives.

Reaches come from the reach table (config/rivers.yaml): each lists the reaches directly
downstream, its length and a typical flow velocity. A station sits on a reach at `river_km` from
the reach's upstream end, and a reach flows into the upstream end (km 0) of each downstream
reach. A plume travels with the flow: the arrival time is the sum over the reaches it crosses of
distance / velocity. In a tidal reach (Shiziyang) it also travels upstream on the flood tide at
velocity × tidal_factor, within tidal reaches only. Where two paths lead to one station (north
main stream and south branch both enter Shiziyang) the earlier arrival counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from store.catalogue import ReachRef

Direction = Literal["downstream", "tidal_upstream"]


@dataclass(frozen=True, slots=True)
class RiverStation:
    """A water station's place on the river and the agency that owns it."""

    id: int
    code: str
    agency_id: int
    reach: str
    river_km: float


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where and when a breach at the source is expected; `path` lists the reaches crossed."""

    station: RiverStation
    distance_km: float
    eta_s: float
    direction: Direction
    path: tuple[str, ...]

    def expected_at(self, start: datetime) -> datetime:
        """When a breach that began at `start` at the source arrives here."""
        return start + timedelta(seconds=self.eta_s)


def flow_order(downstream: Mapping[str, Sequence[str]]) -> list[str]:
    """Reach codes in flow order: every reach before the reaches it flows into.

    Sources come first by code; a reach that splits hands on its branches in the order it lists
    them. Reaches of a malformed graph's loop, which have no such order, come last by code.
    """
    upstream_count = dict.fromkeys(downstream, 0)
    for below in downstream.values():
        for code in below:
            if code in upstream_count:
                upstream_count[code] += 1
    ready = sorted(code for code, count in upstream_count.items() if count == 0)
    order: list[str] = []
    while ready:
        code = ready.pop(0)
        order.append(code)
        for below in downstream[code]:
            if below in upstream_count:
                upstream_count[below] -= 1
                if upstream_count[below] == 0:
                    ready.append(below)
    placed = set(order)
    return order + sorted(code for code in downstream if code not in placed)


def arrivals(
    source: RiverStation,
    reaches: Mapping[str, ReachRef],
    stations: Sequence[RiverStation],
    *,
    max_eta_s: float | None = None,
) -> list[Arrival]:
    """Stations a breach at `source` reaches, earliest first (ties by code), within max_eta_s."""
    if source.reach not in reaches:
        raise ValueError(f"station {source.code} is on unknown reach {source.reach!r}")
    on_reach: dict[str, list[RiverStation]] = {}
    for station in stations:
        if station.id != source.id:
            on_reach.setdefault(station.reach, []).append(station)
    best: dict[int, Arrival] = {}

    def offer(arrival: Arrival) -> None:
        known = best.get(arrival.station.id)
        if known is None or arrival.eta_s < known.eta_s:
            best[arrival.station.id] = arrival

    def flow(
        reach: ReachRef, from_km: float, distance: float, seconds: float, path: tuple[str, ...]
    ) -> None:
        for station in on_reach.get(reach.code, ()):
            if station.river_km >= from_km:
                km = station.river_km - from_km
                offer(
                    Arrival(
                        station,
                        distance + km,
                        seconds + km * 1000 / reach.velocity_m_s,
                        "downstream",
                        path,
                    )
                )
        rest = max(reach.length_km - from_km, 0.0)
        for code in reach.downstream:
            if code in path:
                continue  # a malformed graph with a loop must not recurse forever
            flow(
                reaches[code],
                0.0,
                distance + rest,
                seconds + rest * 1000 / reach.velocity_m_s,
                (*path, code),
            )

    def flood(
        reach: ReachRef, from_km: float, distance: float, seconds: float, path: tuple[str, ...]
    ) -> None:
        if not reach.tidal or not reach.tidal_factor:
            return
        speed = reach.velocity_m_s * reach.tidal_factor
        for station in on_reach.get(reach.code, ()):
            if station.river_km < from_km:
                km = from_km - station.river_km
                offer(
                    Arrival(
                        station, distance + km, seconds + km * 1000 / speed, "tidal_upstream", path
                    )
                )
        for upstream in reaches.values():
            if reach.code in upstream.downstream and upstream.code not in path:
                flood(
                    upstream,
                    upstream.length_km,
                    distance + from_km,
                    seconds + from_km * 1000 / speed,
                    (*path, upstream.code),
                )

    start = reaches[source.reach]
    flow(start, source.river_km, 0.0, 0.0, (start.code,))
    flood(start, source.river_km, 0.0, 0.0, (start.code,))
    found = [a for a in best.values() if max_eta_s is None or a.eta_s <= max_eta_s]
    return sorted(found, key=lambda a: (a.eta_s, a.station.code))
