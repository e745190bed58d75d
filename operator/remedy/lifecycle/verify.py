"""PromQL verification: the expression must return an empty result within a timeout.

prometheus-api-client is synchronous, so queries run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..api.common import parse_duration
from ..api.remediation import PromQLVerify
from ..base.errors import PermanentError, RetryableError

# The client is synchronous and its thread cannot be cancelled: the HTTP timeout bounds it.
DEFAULT_TIMEOUT = float(os.environ.get("REMEDY_PROMETHEUS_TIMEOUT", "10"))


def _query(url: str, promql: str, timeout: float) -> list[dict[str, Any]]:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util import Retry

    # One quick retry at most: the caller polls again anyway, and the client's default retries
    # with backoff would hold a thread for many seconds while Prometheus is down.
    prom = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout,
                             retry=Retry(total=1, backoff_factor=0.1, status_forcelist=[502, 503, 504]))
    result: list[dict[str, Any]] = prom.custom_query(query=promql, timeout=timeout)
    return result


async def query(url: str, promql: str, timeout: float | None = None) -> list[dict[str, Any]]:
    bound = DEFAULT_TIMEOUT if timeout is None else timeout
    try:
        return await asyncio.wait_for(asyncio.to_thread(_query, url, promql, bound), timeout=bound + 1.0)
    except Exception as exc:  # noqa: BLE001 - the client raises bare requests / PrometheusApiClientException
        if "bad_data" in str(exc) or "parse error" in str(exc):
            raise PermanentError(f"invalid PromQL {promql!r}: {exc}", reason="InvalidPromQL") from None
        raise RetryableError(f"Prometheus query failed: {type(exc).__name__}", delay=5.0, reason="PrometheusUnavailable") from None


async def verify_promql(url: str | None, spec: PromQLVerify) -> dict[str, Any]:
    if not url:
        raise PermanentError("spec.verify needs REMEDY_PROMETHEUS_URL configured in the operator", reason="NoPrometheus")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + parse_duration(spec.timeout)
    interval = parse_duration(spec.interval)
    polls = 0
    while True:
        polls += 1
        try:
            series = await query(url, spec.promql)
        except RetryableError:
            series = None
        if series == []:
            return {"promql": spec.promql, "polls": polls, "empty": True}
        if loop.time() >= deadline:
            raise PermanentError(
                f"{spec.promql!r} still returned {len(series or [])} series after {spec.timeout}", reason="StillFiring"
            )
        await asyncio.sleep(interval)
