"""Runbooks 001/004: the orders outbox publisher is wedged and the backlog grows; a
RemediationPolicy polling PromQL restarts the Deployment (the rollout bridge restarts the
process, which restores and drains the outbox)."""

from __future__ import annotations

from typing import Any

from ..demo.stack import NS, Stack
from ..demo.support import DemoError, http, wait_until
from .base import AlertRule, Scenario, promql

RULE = AlertRule("OutboxBacklog", "outbox_pending > 500", "3s",
                 {"severity": "warning", "team": "orders"}, "outbox backlog above 500")


def inject(st: Stack) -> str:
    st.scratch["orders_pid"] = st.apps["orders"].pid
    status, _ = http("POST", f"{st.url('orders')}/admin/outbox/stick", {"rate": 200})
    if status != 200:
        raise DemoError(f"stick failed: {status}")
    return "orders outbox publisher wedged: backlog grows 200 events/s"


def check(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    rs = client.AppsV1Api(st.api).list_namespaced_replica_set(NS, label_selector="app=orders").items
    wait_until(lambda: st.apps["orders"].pid not in (None, st.scratch.get("orders_pid")), 30,
               "the rollout bridge to restart the orders process")
    pid = st.apps["orders"].pid
    stats = wait_until(lambda: st.stats("orders")["outbox"], 30, "the new orders process")
    if stats["stuck"]:
        raise DemoError("the orders publisher is still stuck")
    wait_until(lambda: st.stats("orders")["outbox"]["pending"] < 100, 30, "outbox drained")
    return (f"Deployment orders rolled ({len(rs)} ReplicaSets); new orders process pid {pid} "
            f"restored {stats['restored_from_state']} pending events and drained them")


SCENARIO = Scenario(
    "outbox-stuck", "001/004", "orders outbox publisher stuck", f"PromQL {RULE.expr}", "restartWorkload",
    inject, [("metric", promql(RULE.expr))], check, policy="outbox-stuck", alerts=(RULE,))
