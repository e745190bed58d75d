"""Runbook 002: reservations stuck pending; a RemediationPolicy on the alert calls the
reconcile endpoint once, with the bearer token from a Secret (the service counts runs)."""

from __future__ import annotations

from typing import Any

from ..demo.stack import Stack
from ..demo.support import DemoError, http
from .base import AlertRule, Scenario, alert_chain

RULE = AlertRule("StuckReservations", "stuck_reservations > 50", "2s",
                 {"severity": "high", "team": "purchasing"}, "more than 50 reservations stuck")


def inject(st: Stack) -> str:
    status, _ = http("POST", f"{st.url('reconcile')}/admin/reservations/stick", {"count": 60})
    if status != 200:
        raise DemoError(f"stick failed: {status}")
    return "60 reservations stuck pending (reconciliation worker not running)"


def check(st: Stack, obj: dict[str, Any]) -> str:
    stats = st.stats("reconcile")
    if stats["reconcile_runs"] != 1 or stats["stuck_reservations"] != 0:
        raise DemoError(f"reconcile stats {stats}")
    return "POST /api/cron/reconcile with the Secret's bearer token ran once; 0 stuck reservations"


SCENARIO = Scenario(
    "reconcile", "002", "stuck reservations", f"alert {RULE.alert}", "httpRequest",
    inject, alert_chain(RULE), check, policy="reconcile-stuck-reservations", alerts=(RULE,))
