"""Runbooks 001/003: the gateway's payments breaker stuck OPEN while payments is healthy;
a person applies resetCircuitBreaker once the alert fires."""

from __future__ import annotations

from typing import Any

from ..demo.stack import ADMIN_TOKEN, Stack
from ..demo.support import DemoError, http, wait_until
from .base import AlertRule, Scenario, alert_chain

RULE = AlertRule("PaymentsBreakerOpen", 'breaker_state{downstream="payments"} == 1', "2s",
                 {"severity": "warning", "team": "payments"}, "payments circuit breaker open")


def trip(st: Stack) -> None:
    status, _ = http("POST", f"{st.url('gateway')}/admin/breakers/payments/trip", {}, ADMIN_TOKEN)
    if status != 200:
        raise DemoError(f"trip failed: {status}")


def breaker_state(st: Stack) -> str:
    _, doc = http("GET", f"{st.url('gateway')}/status/breakers")
    return str(doc["payments"]["state"])


def inject(st: Stack) -> str:
    trip(st)
    return "payments breaker tripped OPEN in the gateway while payments is healthy (stays OPEN: stuck)"


def check(st: Stack, obj: dict[str, Any]) -> str:
    wait_until(lambda: breaker_state(st) == "CLOSED", 15, "breaker CLOSED after HALF_OPEN probe")
    return "forced HALF_OPEN after 3/3 health checks; the gateway's probe closed it: CLOSED"


SCENARIO = Scenario(
    "breaker-stuck", "001/003", "payments breaker stuck OPEN, payments healthy",
    f"alert {RULE.alert} -> kubectl apply", "resetCircuitBreaker",
    inject, alert_chain(RULE, routed=False), check, remediation="payments-breaker-reset", alerts=(RULE,))
