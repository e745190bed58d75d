"""Runbooks 001/004: the orders outbox publisher is wedged and the backlog grows; a
RemediationPolicy polling PromQL restarts the Deployment. orders is the demo app in a pod on
the real node: only that restart replaces the wedged process (a new ReplicaSet's pod, a new
container), which restores the backlog from its hostPath state file and drains it."""

from __future__ import annotations

from typing import Any

from ..demo.stack import NS, Stack
from ..demo.support import DemoError, http, wait_until
from .base import AlertRule, Scenario, promql

RULE = AlertRule("OutboxBacklog", "outbox_pending > 500", "3s",
                 {"severity": "warning", "team": "orders"}, "outbox backlog above 500")


def _orders_pods(st: Stack) -> list[Any]:
    from kubernetes import client

    core: Any = client.CoreV1Api(st.api)
    return [p for p in core.list_namespaced_pod(NS, label_selector="app=orders").items
            if p.metadata.deletion_timestamp is None]


def inject(st: Stack) -> str:
    st.scratch["orders_pid"] = st.apps["orders"].pid
    st.scratch["orders_pods"] = {p.metadata.uid for p in _orders_pods(st)}
    status, _ = http("POST", f"{st.url('orders')}/admin/outbox/stick", {"rate": 200})
    if status != 200:
        raise DemoError(f"stick failed: {status}")
    return "orders outbox publisher wedged: backlog grows 200 events/s"


def check(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    rs = client.AppsV1Api(st.api).list_namespaced_replica_set(NS, label_selector="app=orders").items
    old_pods = st.scratch.get("orders_pods") or set()

    def new_pods_running() -> list[Any] | None:  # real pods of the new ReplicaSet, on the node
        pods = _orders_pods(st)
        fresh = [p for p in pods if p.metadata.uid not in old_pods and p.status.phase == "Running"
                 and p.status.container_statuses and p.status.container_statuses[0].ready]
        return fresh if fresh and len(fresh) == len(pods) else None

    pods = wait_until(new_pods_running, 60, "new orders pods running on the node (and no old ones)")
    wait_until(lambda: st.apps["orders"].pid not in (None, st.scratch.get("orders_pid")), 30,
               "a new orders process (the new pod's container)")
    pid = st.apps["orders"].pid
    stats = wait_until(lambda: st.stats("orders")["outbox"], 30, "the new orders process")
    if stats["stuck"]:
        raise DemoError("the orders publisher is still stuck")
    wait_until(lambda: st.stats("orders")["outbox"]["pending"] < 100, 30, "outbox drained")
    return (f"Deployment orders rolled ({len(rs)} ReplicaSets): new pod {', '.join(sorted(p.metadata.name for p in pods))} "
            f"running on the node; its process (pid {pid}, was {st.scratch.get('orders_pid')}) restored "
            f"{stats['restored_from_state']} pending events and drained them")


SCENARIO = Scenario(
    "outbox-stuck", "001/004", "orders outbox publisher stuck", f"PromQL {RULE.expr}", "restartWorkload",
    inject, [("metric", promql(RULE.expr))], check, policy="outbox-stuck", alerts=(RULE,))
