"""Runbook 001, the refused case: the breaker is OPEN because payments is really down, so
resetCircuitBreaker must refuse (Skipped/UpstreamUnhealthy) and send no reset request."""

from __future__ import annotations

from typing import Any

from ..demo.stack import ADMIN_TOKEN, Stack
from ..demo.support import DemoError, http
from .base import Scenario, promql
from .breaker_stuck import breaker_state, trip

FORCE = "POST /admin/breakers/{name}/force"


def inject(st: Stack) -> str:
    st.scratch["force_before"] = st.stats("gateway").get("received", {}).get(FORCE, 0)
    http("POST", f"{st.url('payments')}/admin/down", {})
    trip(st)
    return "payments really down (/health 503) and its breaker OPEN"


def check(st: Stack, obj: dict[str, Any]) -> str:
    after = st.stats("gateway").get("received", {}).get(FORCE, 0)
    if after != st.scratch.get("force_before", 0):
        raise DemoError("a reset request reached the gateway")
    if breaker_state(st) != "OPEN":
        raise DemoError("breaker is no longer OPEN")
    return "refused: upstream unhealthy, no reset request sent, breaker left OPEN"


def cleanup(st: Stack) -> None:
    http("POST", f"{st.url('payments')}/admin/up", {})
    http("POST", f"{st.url('gateway')}/admin/breakers/payments/force", {"state": "HALF_OPEN"}, ADMIN_TOKEN)


SCENARIO = Scenario(
    "breaker-upstream-down", "001", "breaker OPEN and payments really down (must refuse)",
    "kubectl apply", "resetCircuitBreaker",
    inject, [("metric", promql('breaker_state{downstream="payments"} == 1 and on() service_up{job="payments"} == 0'))],
    check, remediation="payments-breaker-reset-while-down",
    expect_phase="Skipped", expect_reason="UpstreamUnhealthy", cleanup=cleanup)
