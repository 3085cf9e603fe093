"""What WeCom and DingTalk robots answer: HTTP 200 with an errcode, 0 meaning delivered."""

from __future__ import annotations

from collections.abc import Collection

import httpx
import orjson

from alerts.notify.channels.base import DeliveryResult, DeliveryStatus, clip


def robot_result(response: httpx.Response, *, retry_errcodes: Collection[int]) -> DeliveryResult:
    """Classify a robot's HTTP 200 answer by its errcode."""
    try:
        answer = orjson.loads(response.content)
        errcode = int(answer["errcode"])
        errmsg = str(answer.get("errmsg", ""))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        # Not the robot speaking (a proxy's page, a truncated answer): it may be right next time.
        problem = f"HTTP 200 without an errcode: {response.text.strip()[:200]!r}"
        return DeliveryResult("retry", response_code=response.status_code, error=clip(problem))
    if errcode == 0:
        return DeliveryResult("sent", response_code=response.status_code)
    status: DeliveryStatus = "retry" if errcode in retry_errcodes else "failed"
    return DeliveryResult(
        status, response_code=response.status_code, error=clip(f"errcode {errcode}: {errmsg}")
    )
