"""Runbook 000: stale idempotency locks (in_progress, lock expired) make the gateway wait;
a RemediationPolicy on the alert purges exactly the stale ones."""

from __future__ import annotations

from typing import Any

from ..demo.stack import ADMIN_TOKEN, Stack
from ..demo.support import DemoError, http
from .base import AlertRule, Scenario, alert_chain

RULE = AlertRule("IdempotencyHighLockWaitP95", "idemp_lock_wait_p95_seconds > 1", "3s",
                 {"severity": "page", "team": "payments"}, "idempotency lock wait p95 above 1s")


def inject(st: Stack) -> str:
    gw = st.url("gateway")
    s1, _ = http("POST", f"{gw}/admin/idempotency/_inject", {"count": 4, "stale": True, "prefix": "order-"}, ADMIN_TOKEN)
    s2, _ = http("POST", f"{gw}/admin/idempotency/_inject", {"count": 2, "stale": False, "prefix": "fresh-"}, ADMIN_TOKEN)
    if (s1, s2) != (201, 201):
        raise DemoError(f"inject failed: {s1} {s2}")
    return "4 stale idempotency locks (in_progress, lock expired 60s ago) + 2 healthy keys into the gateway"


def check(st: Stack, obj: dict[str, Any]) -> str:
    _, recent = http("GET", f"{st.url('gateway')}/admin/idempotency/recent", token=ADMIN_TOKEN)
    keys = [i["key"] for i in recent["items"]]
    stale = [k for k in keys if k.startswith("order-")]
    fresh = [k for k in keys if k.startswith("fresh-")]
    if stale or len(fresh) != 2:
        raise DemoError(f"stale keys left {stale}, fresh keys {fresh}")
    purged = (obj.get("status", {}).get("result") or {}).get("purgedCount")
    return f"{purged} stale keys purged, 2 healthy keys kept; p95 back below 1s"


SCENARIO = Scenario(
    "idempotency-locks", "000", "stale idempotency locks", f"alert {RULE.alert}", "purgeIdempotencyKeys",
    inject, alert_chain(RULE), check, policy="idem-stuck-locks", alerts=(RULE,))
