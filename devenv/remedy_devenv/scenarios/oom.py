"""Runbook 004: inventory pods OOMKilled; raiseMemoryOnOOM raises the limit and the new
ReplicaSet becomes ready (the fake kubelet runs its pods)."""

from __future__ import annotations

from typing import Any

from ..demo.stack import NS, Stack
from ..demo.support import wait_until
from .base import Scenario


def inject(st: Stack) -> str:
    from kubernetes import client

    from ..kubelet import mark_oomkilled

    core: Any = client.CoreV1Api(st.api)
    pods = wait_until(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="app=inventory").items
                               if p.status.phase == "Running"], 30, "inventory pods Running")
    for pod in pods:
        mark_oomkilled(core, NS, pod.metadata.name)
    return f"{len(pods)} inventory pods OOMKilled (status written through the API: lastState OOMKilled, restartCount+1)"


def detect(st: Stack) -> str | None:
    from kubernetes import client

    core: Any = client.CoreV1Api(st.api)
    n = 0
    for p in core.list_namespaced_pod(NS, label_selector="app=inventory").items:
        for cs in p.status.container_statuses or []:
            term = cs.last_state.terminated if cs.last_state else None
            if term is not None and term.reason == "OOMKilled":
                n += 1
    return f"symptom: kubectl describe pod shows OOMKilled on {n} inventory pods (limit 256Mi)" if n else None


def check(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    apps: Any = client.AppsV1Api(st.api)
    dep = apps.read_namespaced_deployment("inventory", NS)
    limit = dep.spec.template.spec.containers[0].resources.limits["memory"]
    change = (obj["status"].get("plan") or {}).get("containers", [{}])[0]

    def new_rs() -> Any:
        for rs in apps.list_namespaced_replica_set(NS, label_selector="app=inventory").items:
            c = rs.spec.template.spec.containers[0]
            want = dep.spec.replicas or 1
            if c.resources.limits.get("memory") == limit and rs.spec.replicas == want \
                    and (rs.status.ready_replicas or 0) >= want:
                return rs
        return None

    rs = wait_until(new_rs, 30, "new inventory ReplicaSet ready")
    return (f"memory limit {change.get('oldLimit')} -> {change.get('newLimit')} (Deployment now {limit}); "
            f"new ReplicaSet {rs.metadata.name} {rs.status.ready_replicas}/{rs.spec.replicas} ready")


SCENARIO = Scenario(
    "oom", "004", "inventory pods OOMKilled", "kubectl apply", "raiseMemoryOnOOM",
    inject, [("symptom", detect)], check, remediation="inventory-oom")
