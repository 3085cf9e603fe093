"""The demo's story: scripted scenes the simulator plays on top of its everyday readings.

Times stay real. The story is anchored to an instant fixed per demo data folder (its first
start, kept there), and replays every STORY_PERIOD_S after it; only cycles from the anchor on
play, so the history a first start sends holds no earlier incidents. Cycle k's zero is
anchor + k × STORY_PERIOD_S, and each scene is placed relative to it:

- `plume`: a discharge at the first station of a river stretch (ammonia up, dissolved oxygen
  down) that travels downstream at the reaches' flow velocity (config/rivers.yaml), so it
  reaches each station when the propagation pre-alert says, weaker at each (`attenuation`).
  `start_s` is when it reaches the SECOND station (upstream it began the travel time earlier,
  so cycle 0's beginning lies before the demo started, in the backfilled past) and `end_s` when
  the discharge stops at the source; each station downstream sees it as long, a travel time
  later.
- `ozone`: ozone raised to `level` at the stations listed (both cities' urban stations). The
  rules judge each clock hour's mean, so in later cycles the episode builds from the top of
  its hour; in cycle 0 it begins at its offset, after the demo started.
- `silence`: the station sends nothing: its staleness alert fires 2 reporting intervals after
  the silence began, and ends when it reports again.
- `stuck`: a sensor repeats one value: QC's flat-line check flags its hourly means.

Values stay a deterministic function of (station, parameter, time) for a given anchor, so a
restarted demo re-sends duplicates, never revisions. A demo restarted after a pause longer than
STORY_LEAD_S (nothing sent since) begins a new story at its start: each instant plays the story
of the latest anchor whose lead reaches back to it, so what earlier stories sent stays as sent.

Why every 8 hours: the scenes need hours of lead (the plume's 3 h 20 min to Xintang, two hours
of silence before staleness fires, a flat line of 6 hours before QC calls it stuck), and a
cycle must outlast its longest scene; 8 hours replays the story three times a day, so a demo
left running (or restarted later with the same data folder) shows it again within 8 hours,
while most of the time the river and the air are quiet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from store.catalogue import CatalogueSnapshot

MINUTE_S = 60
HOUR_S = 3600
STORY_PERIOD_S = 8 * HOUR_S
# The first round backfills the stations of scenes already under way at this step over the
# last BACKFILL_S, so alerts of the backfilled past start when the scene did, not at an hour.
BACKFILL_STEP_S = 60
BACKFILL_S = 4 * HOUR_S
# How far before its anchor a story's scenes may begin (the stuck sensor's flat line, 6.5 h);
# a new story may begin only where nothing was sent for this long.
STORY_LEAD_S = 7 * HOUR_S

SceneKind = Literal["plume", "ozone", "silence", "stuck"]


@dataclass(frozen=True, slots=True)
class Scene:
    """One scripted scene: where, what, when (seconds from its cycle's zero) and how much."""

    kind: SceneKind
    stations: tuple[str, ...]
    start_s: int
    end_s: int
    levels: Mapping[str, float] = field(default_factory=dict)  # parameter -> canonical value
    ramp_s: int = 0  # linear ramps at both ends (plume, ozone)
    attenuation: tuple[float, ...] = ()  # plume: share of the level reaching each station
    backfill: bool = False  # backfilled at BACKFILL_STEP_S on the first round


# The story, as a newcomer watching the screen from the demo's first start sees it (minutes
# after the anchor): the ammonia / oxygen incident at Zhongtang is under way (backfilled) with
# pre-alerts downstream, and the Huangge PM2.5 sensor's flat line is flagged; ozone rises in both
# cities (+1) and falls back (+5); the silent Maofengshan station is reported (+2) and reports
# again (+6); the plume reaches Xintang as its pre-alert said (+4 to +5); the discharge stops at
# Zhongtang (+7), which recovers, ending its pre-alerts. README.md, "The demo's story".
SCENES: tuple[Scene, ...] = (
    Scene(
        "plume",
        ("dg-w-zhongtang", "gz-w-xintang", "gz-w-dadun"),
        start_s=4 * MINUTE_S,
        end_s=7 * MINUTE_S,
        levels={"nh3n": 2.6, "do": 1.6},
        ramp_s=MINUTE_S,
        attenuation=(1.0, 0.8, 0.6),
        backfill=True,
    ),
    Scene(
        "ozone",
        (
            "gz-a-huangpu",
            "gz-a-zengcheng",
            "gz-a-panyu",
            "gz-a-huangge",
            "gz-a-nansha",
            "dg-a-yuanling",
            "dg-a-shilong",
            "dg-a-machong",
            "dg-a-humen",
        ),
        start_s=1 * MINUTE_S,
        end_s=5 * MINUTE_S,
        levels={"o3": 420.0},
    ),
    Scene(
        "silence",
        ("gz-a-maofengshan",),
        start_s=-2 * HOUR_S + 3 * MINUTE_S,
        end_s=6 * MINUTE_S,
        backfill=True,
    ),
    Scene(
        "stuck",
        ("gz-a-huangge",),
        start_s=-6 * HOUR_S - 30 * MINUTE_S,
        end_s=7 * MINUTE_S,
        levels={"pm25": 38.0},
    ),
)


@dataclass(frozen=True, slots=True)
class Placed:
    """A scene at one station: its span in cycle offsets and the share of its level there."""

    scene: Scene
    start_s: int
    end_s: int
    share: float


def travel_s(catalogue: CatalogueSnapshot, upstream: str, downstream: str) -> float:
    """The flow time between two stations on one reach (distance / the reach's velocity)."""
    up = catalogue.stations[upstream]
    down = catalogue.stations[downstream]
    if up.reach_code is None or up.reach_code != down.reach_code:
        raise ValueError(f"{upstream} and {downstream} are not on one reach")
    assert up.river_km is not None and down.river_km is not None
    reach = catalogue.reaches[up.reach_code]
    return (down.river_km - up.river_km) * 1000 / reach.velocity_m_s


class Story:
    """The scenes anchored to an instant; applies them to simulated values."""

    def __init__(
        self,
        anchor: datetime,
        scenes: tuple[Scene, ...] = SCENES,
        *,
        period_s: int = STORY_PERIOD_S,
        earlier: Sequence[datetime] = (),
    ) -> None:
        """`earlier`: the anchors of stories begun before this one (restarts after a pause)."""
        self.anchor = anchor.astimezone(UTC)
        self.anchor_s = int(self.anchor.timestamp())
        anchors = sorted({int(a.timestamp()) for a in earlier} | {self.anchor_s})
        if anchors[-1] != self.anchor_s:
            raise ValueError("the story's anchor must be the latest")
        self._anchors = np.array(anchors, dtype=np.float64)
        self._reach = self._anchors - STORY_LEAD_S
        self.scenes = scenes
        self.period_s = period_s
        self._placed: tuple[CatalogueSnapshot, dict[str, list[Placed]]] | None = None

    def placed(self, catalogue: CatalogueSnapshot) -> dict[str, list[Placed]]:
        """Each station's scenes, plumes placed by the flow time from the catalogue's reaches."""
        if self._placed is not None and self._placed[0] is catalogue:
            return self._placed[1]
        found: dict[str, list[Placed]] = {}
        for scene in self.scenes:
            if scene.kind != "plume":
                for code in scene.stations:
                    found.setdefault(code, []).append(
                        Placed(scene, scene.start_s, scene.end_s, 1.0)
                    )
                continue
            # It reaches the second station at start_s and stops at the source at end_s; each
            # station sees it from its arrival for as long as the source did.
            offsets = [0.0]
            for up, down in zip(scene.stations, scene.stations[1:], strict=False):
                offsets.append(offsets[-1] + travel_s(catalogue, up, down))
            for code, offset, share in zip(scene.stations, offsets, scene.attenuation, strict=True):
                start = scene.start_s + round(offset - offsets[1])
                end = scene.end_s + round(offset)
                found.setdefault(code, []).append(Placed(scene, start, end, share))
        self._placed = (catalogue, found)
        return found

    def _cycles(
        self, seconds: npt.NDArray[np.float64], placed: Placed
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The cycle whose instance of the placed scene may hold each instant (-1: none), and
        that cycle's zero (epoch seconds), in the story that plays the instant."""
        which = np.searchsorted(self._reach, seconds, side="right") - 1
        anchor = self._anchors[np.maximum(which, 0)]
        lead = HOUR_S if placed.scene.kind == "ozone" else 0  # it may start at the hour before
        cycle = np.floor((seconds - anchor - placed.start_s + lead) / self.period_s)
        cycle = np.where(cycle >= 0, cycle, -1).astype(np.int64)
        return cycle, anchor + np.maximum(cycle, 0) * self.period_s

    def _span(
        self, seconds: npt.NDArray[np.float64], placed: Placed
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Which instants the scene holds, and each one's scene start and end (epoch seconds)."""
        cycle, zero = self._cycles(seconds, placed)
        start = zero + placed.start_s
        end = zero + placed.end_s
        if placed.scene.kind == "ozone":
            # Later cycles build from the top of the hour, whose mean the rules judge.
            hour = np.floor(start / HOUR_S) * HOUR_S
            start = np.where(cycle > 0, hour, start)
        inside = (cycle >= 0) & (seconds >= start) & (seconds < end)
        return inside, start, end

    def apply(
        self,
        catalogue: CatalogueSnapshot,
        station: str,
        parameter: str,
        seconds: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> npt.NDArray[np.float64]:
        """The values with the scenes that change them (plume, ozone, stuck) played."""
        moments = np.asarray(seconds, dtype=np.float64)
        result = np.array(values, dtype=np.float64)
        for placed in self.placed(catalogue).get(station, []):
            level = placed.scene.levels.get(parameter)
            if level is None or placed.scene.kind == "silence":
                continue
            inside, start, end = self._span(moments, placed)
            if not inside.any():
                continue
            if placed.scene.kind == "stuck":
                result = np.where(inside, level, result)
                continue
            weight = np.ones_like(moments)
            ramp = placed.scene.ramp_s
            if ramp:
                weight = np.clip(np.minimum(moments - start, end - moments) / ramp, 0.0, 1.0)
            weight = np.where(inside, weight * placed.share, 0.0)
            result = result + (level - result) * weight
        return result

    def silent(
        self, catalogue: CatalogueSnapshot, station: str, seconds: npt.ArrayLike, period_s: int = 0
    ) -> npt.NDArray[np.bool_]:
        """Which readings (starting at these instants, lasting `period_s`) a silence withholds."""
        moments = np.asarray(seconds, dtype=np.float64)
        hidden = np.zeros(moments.shape, dtype=bool)
        last = moments + max(period_s - 1, 0)  # the reading's last second
        for placed in self.placed(catalogue).get(station, []):
            if placed.scene.kind != "silence":
                continue
            # The latest instance starting before the reading ends is the one it may overlap.
            cycle, zero = self._cycles(last, placed)
            hidden |= (
                (cycle >= 0) & (last >= zero + placed.start_s) & (moments < zero + placed.end_s)
            )
        return hidden

    def backfill(self, catalogue: CatalogueSnapshot, now: datetime) -> tuple[list[str], list[int]]:
        """The stations whose backfilled scenes run in the last BACKFILL_S, and the instants
        (epoch seconds, BACKFILL_STEP_S apart, before `now`) to backfill them at."""
        end = math.ceil(now.timestamp() / BACKFILL_STEP_S) * BACKFILL_STEP_S
        first = end - BACKFILL_S
        instants = np.arange(first, end, BACKFILL_STEP_S, dtype=np.float64)
        instants = instants[instants < now.timestamp()]
        stations = []
        for code, scenes in sorted(self.placed(catalogue).items()):
            for placed in scenes:
                if placed.scene.backfill and self._span(instants, placed)[0].any():
                    stations.append(code)
                    break
        return stations, [int(s) for s in instants.tolist()]
