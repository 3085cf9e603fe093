"""Sea-area grade of GB 3097 points (docs/evaluation.md §6, thresholds a setting).

Each point carries its single-factor class (1..4, 5 = 劣四类) from evaluate_sea_point; the area
is graded on the shares of points by class, checked from the best grade down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from alerts.evaluation.publish import published_share
from alerts.evaluation.rules import SeaGradeThresholds

WORSE_THAN_4 = 5
# Grades from best to worst (Chinese, English).
SEA_GRADES = (
    ("优", "excellent"),
    ("良好", "good"),
    ("一般", "fair"),
    ("差", "poor"),
    ("极差", "very poor"),
)


@dataclass(frozen=True)
class SeaAreaGrade:
    """An area's grade and the shares of its points that decided it."""

    points: int
    class_1_share: Fraction
    class_1_2_share: Fraction
    worse_than_4_share: Fraction
    grade_zh: str
    grade: str

    def describe(self) -> dict[str, Any]:
        """The published grade and shares (percent, one decimal)."""
        return {
            "points": self.points,
            "class_1_share": published_share(self.class_1_share),
            "class_1_2_share": published_share(self.class_1_2_share),
            "worse_than_4_share": published_share(self.worse_than_4_share),
            "grade_zh": self.grade_zh,
            "grade": self.grade,
        }


def sea_area_grade(classes: Sequence[int], thresholds: SeaGradeThresholds) -> SeaAreaGrade | None:
    """The grade of an area from its points' classes; None without a classed point."""
    if any(not 1 <= c <= WORSE_THAN_4 for c in classes):
        raise ValueError(f"GB 3097 point classes are 1..5, not {sorted(set(classes))}")
    if not classes:
        return None
    count = len(classes)
    first = Fraction(sum(c == 1 for c in classes), count)
    first_two = Fraction(sum(c <= 2 for c in classes), count)
    worst = Fraction(sum(c == WORSE_THAN_4 for c in classes), count)
    grade_zh, grade = SEA_GRADES[_grade(first, first_two, worst, thresholds)]
    return SeaAreaGrade(count, first, first_two, worst, grade_zh, grade)


def _grade(
    first: Fraction, first_two: Fraction, worst: Fraction, limits: SeaGradeThresholds
) -> int:
    def pct(value: int) -> Fraction:
        return Fraction(value, 100)

    if first >= pct(limits.excellent_class_1) and first_two >= pct(limits.excellent_class_1_2):
        return 0
    if first_two >= pct(limits.good_class_1_2):
        return 1
    if first_two >= pct(limits.fair_class_1_2) and worst <= pct(limits.fair_worse_than_4_at_most):
        return 2
    if worst >= pct(limits.very_poor_worse_than_4):
        return 4
    # 1+2 below the fair share with 劣四 at most 30 %, or 劣四 between 30 % and 40 %.
    return 3
