"""The joint rule definition: one pydantic model for config/thresholds.yaml and PUT /v1/rules.

Thresholds are in the parameter's canonical unit (parameters.yaml). Comparisons are strict, as the
standards word them: `above` fires when the statistic exceeds `trigger` (value > trigger) and
clears when it is back at or below `clear`; `below` fires under `trigger` and clears at or above
`clear`. Each level of the severity ladder has its own pair, so a value hovering around a trigger
neither flaps nor hides a real change (hysteresis).

Statistics (and the kinds that may use them):
- `instant`: each valid reading (threshold, rate_of_change);
- `mean_1h`, `mean_8h` (moving, ≥ 6 of 8 hours), `mean_24h` (moving, ≥ 20 of 24), `day_mean`
  (natural day, Asia/Shanghai), `o3_max_8h` (O3 daily maximum 8-hour mean): from the rollups
  with the standards' validity minimums (threshold; aqi uses `mean_1h` for the real-time AQI and
  `day_mean` for the daily AQI);
- `water_day`: the day's mean of valid water samples (threshold, water_class);
- `water_sample`: the class of each hour's sample, every item's newest valid hourly value
  within its reporting interval (water_class; alerts/assessment/water.py).
Staleness, propagation and regional episodes have no statistic: staleness measures silence in
multiples of each parameter's reporting interval, propagation reacts to other rules' breaches, a
regional episode rule (docs/evaluation.md §7) judges the cities' daily or rolling 24-hour AQI
together.
"""

from __future__ import annotations

from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import Area, City, Day, Finite, Flag, Medium, Text, Whole
from schemas.config import read_yaml_model

Severity = Literal["advisory", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("advisory", "warning", "critical")
RuleKind = Literal[
    "threshold", "aqi", "water_class", "staleness", "rate_of_change", "propagation",
    "regional_episode",
]  # fmt: skip
Statistic = Literal[
    "instant",
    "mean_1h",
    "mean_8h",
    "mean_24h",
    "day_mean",
    "o3_max_8h",
    "water_day",
    "water_sample",
]
Direction = Literal["above", "below"]

_STATISTICS: dict[str, frozenset[str]] = {
    "threshold": frozenset(
        {"instant", "mean_1h", "mean_8h", "mean_24h", "day_mean", "o3_max_8h", "water_day"}
    ),
    "aqi": frozenset({"mean_1h", "day_mean"}),
    "water_class": frozenset({"water_sample", "water_day"}),
    "rate_of_change": frozenset({"instant"}),
    "staleness": frozenset(),
    "propagation": frozenset(),
    "regional_episode": frozenset(),
}
_NEEDS_PARAMETER = frozenset({"threshold", "rate_of_change"})
_RULE_ID = r"^[a-z][a-z0-9_]{1,63}$"


def severity_rank(severity: Severity) -> int:
    """0 for advisory, 1 for warning, 2 for critical: for "severity at least" comparisons."""
    return SEVERITIES.index(severity)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Names(Strict):
    en: Text = Field(min_length=1)
    zh: Text = Field(min_length=1)


class Level(Strict):
    """One rung of the severity ladder: fire past `trigger`, clear back at `clear`."""

    severity: Severity
    trigger: Finite
    clear: Finite
    basis: Text = Field(min_length=1, description="Where the number comes from (clause, edition)")


class Ladder(Strict):
    """The levels in force for observations in [applies_from, applies_until) (Asia/Shanghai)."""

    standard: Text = Field(min_length=1, description="Standard and edition, e.g. 'GB 3095-2012'")
    applies_from: Day | None = None
    applies_until: Day | None = None
    levels: list[Level] = Field(min_length=1, max_length=3)

    def covers(self, day: date) -> bool:
        """Whether an observation on `day` falls under this ladder."""
        after_start = self.applies_from is None or day >= self.applies_from
        before_end = self.applies_until is None or day < self.applies_until
        return after_start and before_end


class Scope(Strict):
    """Which stations a rule watches. `city_wide` rules judge each city's non-background mean.

    Background stations are judged by station rules like any other (unless excluded here), but
    never count toward, nor raise, a city-wide alert.
    """

    medium: Medium | None = None
    city: City | None = None
    area: Area | None = None
    stations: list[Text] | None = Field(default=None, min_length=1)
    exclude_background: Flag = False
    city_wide: Flag = False


class RateOfChange(Strict):
    """Change of a series within `window_s` before each reading; the levels bound its size."""

    window_s: Whole = Field(gt=0, le=7 * 86400)
    direction: Literal["rise", "fall"]


class StalenessSpec(Strict):
    """Silence is measured in multiples of each series' reporting interval (station_parameter).

    Series reporting less often than `max_interval_s` (monthly lab samples) are not watched.
    """

    max_interval_s: Whole = Field(default=86400, gt=0, le=366 * 86400)
    parameters: list[Text] | None = Field(default=None, min_length=1)


class Propagation(Strict):
    """Which breaches travel downstream, and how loud the pre-alert at a downstream station is."""

    from_rules: list[Text] = Field(min_length=1)
    min_severity: Severity = "advisory"
    pre_alert_severity: dict[Severity, Severity]
    max_eta_s: Whole = Field(default=2 * 86400, gt=0, le=30 * 86400)
    basis: Text = Field(min_length=1)


_BOTH_CITIES: tuple[City, ...] = ("guangzhou", "dongguan")


class RegionalEpisode(Strict):
    """EnvLink's own joint rule (docs/evaluation.md §7): a regional air episode is open while every
    listed city's AQI is above `aqi_above` for at least `min_days` consecutive days (the daily
    AQI) or 24 x `min_days` consecutive hours (the rolling 24-hour AQI). The levels grade the
    episode by its worst city AQI so far."""

    cities: list[City] = Field(default_factory=lambda: list(_BOTH_CITIES), min_length=1)
    aqi_above: Whole = Field(default=100, ge=0, le=500)
    min_days: Whole = Field(default=2, ge=1, le=30)
    series: Literal["daily", "rolling_24h"] = "daily"

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.cities)) != len(self.cities):
            raise ValueError(f"cities: each city once, not {self.cities}")
        return self


class RuleDefinition(Strict):
    """A rule of the joint agreement, as config/thresholds.yaml and the API write it."""

    id: Text = Field(pattern=_RULE_ID)
    name: Names
    description: Text | None = None
    kind: RuleKind
    enabled: Flag = True
    parameter: Text | None = None
    unit: Text | None = Field(default=None, description="The parameter's canonical unit")
    statistic: Statistic | None = None
    direction: Direction = "above"
    scope: Scope = Field(default_factory=Scope)
    ladders: list[Ladder] = Field(default_factory=list)
    for_s: Whole = Field(default=0, ge=0, le=7 * 86400)
    qc: Literal["valid"] = Field(
        default="valid", description="Only valid (and below-detection) data feeds a rule"
    )
    rate: RateOfChange | None = None
    staleness: StalenessSpec | None = None
    propagation: Propagation | None = None
    episode: RegionalEpisode | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        allowed = _STATISTICS[self.kind]
        if allowed and self.statistic not in allowed:
            raise ValueError(
                f"rule {self.id}: a {self.kind} rule needs a statistic among {sorted(allowed)},"
                f" not {self.statistic!r}"
            )
        if not allowed and self.statistic is not None:
            raise ValueError(f"rule {self.id}: a {self.kind} rule takes no statistic")
        if (self.kind in _NEEDS_PARAMETER) != (self.parameter is not None):
            need = "needs" if self.kind in _NEEDS_PARAMETER else "takes no"
            raise ValueError(f"rule {self.id}: a {self.kind} rule {need} parameter")
        if self.parameter is not None and self.unit is None:
            raise ValueError(f"rule {self.id}: give the unit of {self.parameter}'s thresholds")
        for name, needed in (
            ("rate", "rate_of_change"),
            ("staleness", "staleness"),
            ("propagation", "propagation"),
            ("episode", "regional_episode"),
        ):
            present = getattr(self, name) is not None
            if present != (self.kind == needed):
                raise ValueError(f"rule {self.id}: `{name}` goes with kind {needed} only")
        if self.statistic == "o3_max_8h" and self.parameter != "o3":
            raise ValueError(f"rule {self.id}: o3_max_8h applies to o3 only")
        if self.kind == "propagation":
            if self.ladders:
                raise ValueError(
                    f"rule {self.id}: propagation takes pre_alert_severity, no ladders"
                )
        elif not self.ladders:
            raise ValueError(f"rule {self.id}: give at least one ladder of levels")
        if self.scope.city_wide and self.kind != "aqi":
            raise ValueError(f"rule {self.id}: only aqi rules can be city_wide")
        for ladder in self.ladders:
            self._check_ladder(ladder)
        self._check_ladders_disjoint()
        if self.episode is not None:
            self._check_episode_levels(self.episode)
        return self

    def _check_episode_levels(self, episode: RegionalEpisode) -> None:
        """Every episode raises an alert, which keeps its grade until the episode ends."""
        if self.direction != "above" or self.scope.city_wide:
            raise ValueError(f"rule {self.id}: a regional episode is judged above, region-wide")
        for ladder in self.ladders:
            if ladder.levels[0].trigger > episode.aqi_above:
                raise ValueError(
                    f"rule {self.id}: the first level's trigger must be at most aqi_above"
                    f" {episode.aqi_above}, so that every episode raises an alert"
                )
            for level in ladder.levels:
                if level.clear < 0:
                    raise ValueError(
                        f"rule {self.id}: {level.severity} clear {level.clear} must be at least 0,"
                        " the value of a step without an episode"
                    )
                if level.clear > episode.aqi_above:
                    raise ValueError(
                        f"rule {self.id}: {level.severity} clear {level.clear} must be at most"
                        f" aqi_above {episode.aqi_above}: an episode keeps its grade until it ends"
                    )

    def _check_ladder(self, ladder: Ladder) -> None:
        severities = [level.severity for level in ladder.levels]
        if severities != sorted(set(severities), key=SEVERITIES.index):
            raise ValueError(
                f"rule {self.id}: levels must rise in severity (advisory < warning < critical)"
                f" without repeats, not {severities}"
            )
        sign = 1.0 if self.direction == "above" else -1.0
        for level in ladder.levels:
            if sign * (level.trigger - level.clear) < 0:
                side = "at or below" if self.direction == "above" else "at or above"
                raise ValueError(
                    f"rule {self.id}: {level.severity} clear {level.clear} must be {side}"
                    f" its trigger {level.trigger}"
                )
        for lower, higher in zip(ladder.levels, ladder.levels[1:], strict=False):
            if sign * (higher.trigger - lower.trigger) <= 0:
                raise ValueError(
                    f"rule {self.id}: the {higher.severity} trigger must be beyond the"
                    f" {lower.severity} trigger"
                )
        if (
            ladder.applies_from is not None
            and ladder.applies_until is not None
            and ladder.applies_from >= ladder.applies_until
        ):
            raise ValueError(f"rule {self.id}: a ladder's applies_from must precede applies_until")

    def _check_ladders_disjoint(self) -> None:
        spans = sorted(
            (ladder.applies_from or date.min, ladder.applies_until or date.max)
            for ladder in self.ladders
        )
        for (_, end), (start, _) in pairwise(spans):
            if start < end:
                raise ValueError(f"rule {self.id}: two ladders apply to the same dates")

    def ladder_for(self, day: date) -> Ladder | None:
        """The ladder in force for an observation on `day`, or None if no ladder covers it."""
        return next((ladder for ladder in self.ladders if ladder.covers(day)), None)

    def catalogue_problems(
        self, *, parameter_units: dict[str, str], stations: set[str]
    ) -> list[str]:
        """What in the rule does not match the catalogue (unknown codes, a wrong unit)."""
        problems = []
        if self.parameter is not None:
            unit = parameter_units.get(self.parameter)
            if unit is None:
                problems.append(f"rule {self.id}: unknown parameter {self.parameter!r}")
            elif unit != self.unit:
                problems.append(
                    f"rule {self.id}: {self.parameter} thresholds must be in its canonical unit"
                    f" {unit!r}, not {self.unit!r}"
                )
        unknown = sorted(set(self.scope.stations or ()) - stations)
        if unknown:
            problems.append(f"rule {self.id}: unknown stations {', '.join(unknown)}")
        watched = self.staleness.parameters if self.staleness else None
        unknown = sorted(set(watched or ()) - set(parameter_units))
        if unknown:
            problems.append(f"rule {self.id}: unknown parameters {', '.join(unknown)}")
        return problems


class RuleSet(Strict):
    """config/thresholds.yaml: the rules, ids unique, propagation sources resolvable."""

    rules: list[RuleDefinition]

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [rule.id for rule in self.rules]
        repeated = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
        if repeated:
            raise ValueError(f"rule ids appear more than once: {', '.join(repeated)}")
        for rule in self.rules:
            if rule.propagation is None:
                continue
            unknown = sorted(set(rule.propagation.from_rules) - set(ids))
            if unknown:
                raise ValueError(f"rule {rule.id}: propagates unknown rules {', '.join(unknown)}")
        return self


def load_rules(path: Path) -> RuleSet:
    """Read config/thresholds.yaml; ConfigError names the file, the place and the problem."""
    return read_yaml_model(path, RuleSet)


class RuleOut(BaseModel):
    """A rule as GET /v1/rules shows it: the version in force and who made it."""

    id: str
    version: int
    changed_via: Literal["config", "api"]
    changed_by: str
    changed_at: datetime
    comment: str | None
    definition: RuleDefinition


class RuleUpdate(Strict):
    """The body of PUT /v1/rules/{id}: the whole new definition and why it changed."""

    definition: RuleDefinition
    comment: Text | None = Field(default=None, max_length=2000)


def definition_differences(file_rule: RuleDefinition, stored: RuleDefinition) -> list[str]:
    """Where two definitions differ, as 'path: file X, database Y' strings."""
    found: list[str] = []
    _diff(file_rule.model_dump(mode="json"), stored.model_dump(mode="json"), "", found)
    return found


def _diff(left: Any, right: Any, path: str, found: list[str]) -> None:
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            _diff(left.get(key), right.get(key), f"{path}.{key}" if path else key, found)
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _diff(a, b, f"{path}[{index}]", found)
    elif left != right:
        found.append(f"{path}: file {_short(left)}, database {_short(right)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
