"""Readings in and out, and what every write reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import QC

Outcome = Literal["accepted", "duplicate", "revised", "rejected"]


class ReadingIn(BaseModel):
    """One reading as a source delivers it, before units, ranges and times are checked."""

    model_config = ConfigDict(extra="forbid")

    station: str
    parameter: str
    time: datetime
    value: float | None
    unit: str
    period_s: Literal[0, 60, 3600, 86400] = 0
    qc: QC = QC.VALID


class SourceReading(NamedTuple):
    """A reading with ReadingIn's fields that its source has typed itself (an HJ 212 frame's
    items: a finite float, an aware time, one of the four periods, a QC state), so it skips
    pydantic's validation. The pipeline checks it exactly as it checks a ReadingIn."""

    station: str
    parameter: str
    time: datetime
    value: float | None
    unit: str
    period_s: Literal[0, 60, 3600, 86400]
    qc: QC


TIME_HELP = "The sampling instant (period_s 0) or the start of the averaging period"
PERIOD_END_HELP = (
    "The end of the averaging period, which Chinese publication labels the value by"
    " (the 16:00 value is the mean of 15:00-16:00); null for an instant"
)
VALUE_HELP = "In the parameter's unit, rounded half to even to its published decimals"


class ReadingOut(BaseModel):
    time: datetime = Field(description=TIME_HELP)
    period_s: int
    period_end: datetime | None = Field(description=PERIOD_END_HELP)
    value: float | None = Field(description=VALUE_HELP)
    unit: str
    qc: QC


Interval = Literal["raw", "1h", "1d"]
# The period of the rollups each interval reads (raw reads the stored readings).
INTERVAL_PERIOD_S: dict[Interval, int] = {"1h": 3600, "1d": 86400}


class RollupOut(BaseModel):
    """An hourly or daily value from the rollups (GET /v1/readings?interval=1h|1d)."""

    time: datetime = Field(
        description="The start of the hour, or of the natural day (00:00 Asia/Shanghai)"
    )
    period_s: int = Field(description="3600 (an hour) or 86400 (a day)")
    period_end: datetime = Field(description=PERIOD_END_HELP)
    value: float | None = Field(
        description=VALUE_HELP + "; null when too little valid data (the standards' minimums)"
    )
    unit: str
    count: int = Field(
        description="Valid samples of the hour; valid hourly values (air, weather) or valid"
        " samples (water) of the day"
    )
    coverage: float | None = Field(
        description="Share of the period the value stands on, 0 to 1 (3 decimals): valid"
        " sampling time / 1 h; for a day count / 24 (air, weather) or count / the samples the"
        " station's interval gives a day (water); 1 for a station's own reported mean"
    )
    origin: Literal["reported", "computed"] = Field(
        description="reported: the station's own mean; computed: EnvLink's from finer data"
    )


class LatestOut(BaseModel):
    station: str
    parameter: str
    time: datetime = Field(description=TIME_HELP)
    period_s: int
    period_end: datetime | None = Field(description=PERIOD_END_HELP)
    value: float | None = Field(description=VALUE_HELP)
    unit: str
    qc: QC
    age_s: int = Field(description="Seconds since the end of the reading's period")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one input item was not stored; `index` is its place in the batch."""

    index: int
    reason: str
    station: str | None = None
    parameter: str | None = None
    payload: str | None = None


@dataclass
class IntakeResult:
    """What an intake did with every item: in = accepted + duplicate + revised + rejected."""

    outcomes: list[Outcome] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return self.outcomes.count(outcome)

    @property
    def summary(self) -> dict[str, int]:
        return {name: self.count(name) for name in ("accepted", "duplicate", "revised", "rejected")}
