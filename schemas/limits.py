"""The limits and thresholds that apply to a station's parameter on a day (GET /v1/limits)."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from schemas.common import Medium
from schemas.rules import Direction, Severity, Statistic


class StandardLimitOut(BaseModel):
    standard: str = Field(
        description="The standard and edition, e.g. 'GB 3095-2026 (transition limits)',"
        " 'GB 3838-2002', 'GB 3097-1997'"
    )
    edition: str = Field(
        description="GB 3095: 2012, 2026_transition or 2026_final (by the date); GB 3838: 2002;"
        " GB 3097: 1997"
    )
    level: str = Field(
        description="'Grade II' (air), or the water class as the standard writes it"
        " ('I'..'V'; '1'..'4')"
    )
    grade: int | None = Field(description="GB 3095 grade (2: urban areas); null for water")
    water_class: int | None = Field(description="The class 1..5 (GB 3838) or 1..4 (GB 3097)")
    averaging: Literal["1h", "8h", "24h", "annual"] | None = Field(
        description="Air: the mean the limit applies to (8h: O3 daily maximum 8-hour mean);"
        " water: null, a class applies to each sample and each day's mean"
    )
    comparison: Literal["<=", ">=", ">"] = Field(
        description="A value meets the limit when `value comparison limit` holds (pH gives two"
        " limits, its range)"
    )
    limit: float = Field(description="In the parameter's canonical unit (`unit`)")
    target: bool = Field(
        description="The station's own: its grade (air), or its target class (water)"
    )


class ThresholdOut(BaseModel):
    rule: str = Field(description="The rule's id (/v1/rules/{rule_id})")
    version: int = Field(description="The rule's version in force")
    name: str
    name_zh: str
    statistic: Statistic | None = Field(description="What the rule compares with its levels")
    direction: Direction
    standard: str = Field(description="The ladder's standard, as the rule names it")
    applies_from: datetime.date | None = Field(description="The ladder's first day (Asia/Shanghai)")
    applies_until: datetime.date | None = Field(description="The day after the ladder's last")
    severity: Severity
    trigger: float = Field(description="Fires when the statistic goes past it (direction)")
    clear: float = Field(description="Clears when the statistic is back at or within it")
    basis: str = Field(description="Where the number comes from (clause, edition)")


class LimitsOut(BaseModel):
    station: str
    parameter: str
    medium: Medium
    unit: str = Field(description="The parameter's canonical unit, of every limit and threshold")
    date: Annotated[datetime.date, Field(description="The day (Asia/Shanghai) the limits apply to")]
    limits: list[StandardLimitOut] = Field(
        description="The standards' limits in force on the date; empty where no standard sets"
        " one for the parameter"
    )
    thresholds: list[ThresholdOut] = Field(
        description="The levels in force on the date of the enabled threshold rules on this"
        " parameter whose scope takes in the station, by rule id and then severity"
    )
