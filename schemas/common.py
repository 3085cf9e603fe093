"""Shared vocabulary (DESIGN §9): QC states, cities, areas, media, roles, the list envelope."""

from __future__ import annotations

from enum import StrEnum
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

City = Literal["guangzhou", "dongguan"]
Area = Literal["dongjiang", "shiziyang"]
Medium = Literal["air", "water"]
Role = Literal["reader", "writer", "responder", "joint_office", "admin"]
ROLES: tuple[Role, ...] = ("reader", "writer", "responder", "joint_office", "admin")


class QC(StrEnum):
    """Quality state of a reading; the value is the API string, `code` the stored smallint."""

    VALID = "valid"
    SUSPECT = "suspect"
    INVALID = "invalid"
    BELOW_DETECTION = "below_detection"
    MAINTENANCE = "maintenance"
    CALIBRATION = "calibration"
    MANUAL = "manual"
    STOPPED = "stopped"
    FAULT = "fault"
    OVER_RANGE = "over_range"
    COMM_FAULT = "comm_fault"

    @property
    def code(self) -> int:
        return QC_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> QC:
        return QC_BY_CODE[code]

    @property
    def feeds_statistics(self) -> bool:
        """Only valid data (and below-detection, as its limit) feeds statistics and alerts."""
        return self in (QC.VALID, QC.BELOW_DETECTION)


QC_CODES: dict[QC, int] = {
    QC.VALID: 0,
    QC.SUSPECT: 1,
    QC.INVALID: 2,
    QC.BELOW_DETECTION: 3,
    QC.MAINTENANCE: 10,
    QC.CALIBRATION: 11,
    QC.MANUAL: 12,
    QC.STOPPED: 13,
    QC.FAULT: 14,
    QC.OVER_RANGE: 15,
    QC.COMM_FAULT: 16,
}
QC_BY_CODE: dict[int, QC] = {code: qc for qc, code in QC_CODES.items()}

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """The one list envelope: items and an opaque keyset cursor for the next page."""

    items: list[T]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """The one error envelope."""

    error: ErrorBody
