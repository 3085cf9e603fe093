"""How responses show times: in the zone the caller asked for (`tz`), +08:00 unless UTC.

Every endpoint that returns times takes ZoneDep and hands its response to `in_zone`, or builds
its items in that zone directly where a page holds thousands of them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import Depends, Query, Response
from pydantic import BaseModel

from core.timeutil import CST, as_aware

OutputZone = Literal["Asia/Shanghai", "UTC"]
ZONES: dict[str, tzinfo] = {"Asia/Shanghai": CST, "UTC": UTC}
# A time written into a free-form object (an alert's details) by the code that made it.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")

M = TypeVar("M", bound=BaseModel)


async def output_zone(
    tz: Annotated[
        OutputZone,
        Query(description="Zone of the times in the response: Asia/Shanghai (+08:00) or UTC (Z)"),
    ] = "Asia/Shanghai",
) -> tzinfo:
    """The zone the caller wants times in."""
    return ZONES[tz]


ZoneDep = Annotated[tzinfo, Depends(output_zone)]


# Asia/Shanghai has kept +08:00 all year since China's last daylight saving time ended
# (1991-09-14 17:00 UTC): from then on a fixed offset shows every time as the zone does, at a
# fraction of the cost a page of thousands of times would pay the zone database.
_STEADY: dict[tzinfo, tuple[tzinfo, datetime | None]] = {
    CST: (timezone(timedelta(hours=8)), datetime(1991, 9, 15, tzinfo=UTC)),
    UTC: (UTC, None),
}


def steady_zone(zone: tzinfo, earliest: datetime | None) -> tzinfo | None:
    """A fixed-offset zone that writes every time from `earliest` on (the earliest of a page;
    None for an empty page) exactly as `zone` does, or None if none does.

    With it a page's periods' ends are its times plus the periods, with no zone arithmetic.
    """
    steady = _STEADY.get(zone)
    if steady is None:
        return None
    fixed, since = steady
    if since is not None and earliest is not None and earliest < since:
        return None
    return fixed


def in_zone(model: M, zone: tzinfo) -> M:
    """`model` with its times in `zone`, nested ones and those in free-form dicts included."""
    shifted: M = _shift(model, zone, free=False)
    return shifted


def times_in_zone(value: Any, zone: tzinfo) -> Any:
    """A free-form JSON value (dicts, lists, strings) with its RFC 3339 times in `zone`."""
    return _shift(value, zone, free=True)


# Values that hold no time, by their exact type: most of a response's fields (a situation's
# open alerts and stations hold thousands), passed over without a call each.
_TIMELESS = frozenset({str, int, float, bool, type(None)})


def _shift(value: Any, zone: tzinfo, *, free: bool) -> Any:
    if isinstance(value, datetime):
        return as_aware(value).astimezone(zone)
    if isinstance(value, BaseModel):
        changes = {}
        for name in type(value).model_fields:
            old = getattr(value, name)
            if type(old) in _TIMELESS:  # a model's strings are not free-form text
                continue
            new = _shift(old, zone, free=False)
            if new is not old:
                changes[name] = new
        return value.model_copy(update=changes) if changes else value
    if isinstance(value, list):
        if not free and all(type(item) in _TIMELESS for item in value):
            return value
        items = [_shift(item, zone, free=free) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        entries = {k: _shift(v, zone, free=True) for k, v in value.items()}
        return entries if any(entries[k] is not value[k] for k in value) else value
    if free and isinstance(value, str) and _RFC3339.fullmatch(value):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone)
        return moment.isoformat().replace("+00:00", "Z")
    return value


def json_response(content: dict[str, Any]) -> Response:
    """Plain dicts and lists as JSON, written byte for byte as FastAPI writes a response model.

    For pages of up to thousands of items, where building and serialising a model per item
    costs several times the query (a year of hourly values: 8,760 items). Times must already be
    in the caller's zone (aware; UTC written with Z, as pydantic does); keys in the model's
    field order. The route declares the model (`response_model`) for its OpenAPI schema, and a
    unit test holds the dicts to it.
    """
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")
