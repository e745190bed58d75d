"""Runbook 001: chaos configuration left enabled on payments (chaos:payments:* keys in
Redis); a RemediationPolicy on the alert deletes exactly those keys."""

from __future__ import annotations

from typing import Any

from ..demo.stack import Stack
from ..demo.support import DemoError, http
from .base import AlertRule, Scenario, alert_chain

RULE = AlertRule("PaymentsChaosLeftEnabled", 'max(chaos_setting{job="payments"}) > 0', "2s",
                 {"severity": "warning", "team": "payments"}, "chaos injection still active on payments")


def inject(st: Stack) -> str:
    status, _ = http("PUT", f"{st.url('payments')}/chaos/config", {"error_rate": 0.3, "latency_ms": 150})
    if status != 200:
        raise DemoError(f"chaos PUT failed: {status}")
    return "chaos left enabled on payments: chaos:payments:error_rate=0.3, chaos:payments:latency_ms=150 in Redis"


def check(st: Stack, obj: dict[str, Any]) -> str:
    left = sorted(st.redis_client().scan_iter("chaos:payments:*"))
    if left:
        raise DemoError(f"chaos keys left: {left}")
    _, view = http("GET", f"{st.url('payments')}/chaos/config")
    if view.get("enabled"):
        raise DemoError(f"payments still reports chaos {view}")
    return "chaos:payments:* deleted; payments reports chaos disabled"


SCENARIO = Scenario(
    "chaos-keys", "001", "chaos config left enabled on payments", f"alert {RULE.alert}", "deleteRedisKeys",
    inject, alert_chain(RULE), check, policy="clear-payments-chaos", alerts=(RULE,))
