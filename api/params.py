"""Parameters declared by many routes, bounded where they are declared (never a 500 downstream)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# The largest id PostgreSQL's bigint (and every id column, int or bigint) can compare with.
BIGINT_MAX = 2**63 - 1

# The id of a stored row (alert, subscription, silence): beyond the bounds it can name none.
PathId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
