"""Parameters declared by many routes, bounded where they are declared (never a 500 downstream)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from schemas.common import Text

# The largest id PostgreSQL's bigint (and every id column, int or bigint) can compare with.
BIGINT_MAX = 2**63 - 1

# The id of a stored row (alert, subscription, silence): beyond the bounds it can name none.
PathId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]

# A station's code or a rule's id in a path; the examples name real ones of the catalogue.
StationCode = Annotated[Text, Path(description="A station's code", examples=["gz-a-huangpu"])]
RuleId = Annotated[Text, Path(description="A rule's id", examples=["no2_1h"])]
