"""Runbook 003 (high error rate after a deployment: roll back) on the real node: a payments
release whose process exits on start (exit code 3; the kubelet reports the termination and
restart counts, then CrashLoopBackOff); rollbackWorkload restores the previous revision's
template and the Deployment (strategy Recreate) runs a new pod of it, which stays up.

Shown from real pod status only. The payments HTTP service the other scenarios call is the
local process; this scenario is about the Deployment's pods."""

from __future__ import annotations

import time
from typing import Any

from ..demo.stack import NS, Stack
from ..demo.support import DemoError, wait_until
from .base import Scenario

BAD_EXIT = 3


def _pods(st: Stack) -> list[Any]:
    from kubernetes import client

    core: Any = client.CoreV1Api(st.api)
    return [p for p in core.list_namespaced_pod(NS, label_selector="app=payments").items
            if p.metadata.deletion_timestamp is None]


def inject(st: Stack) -> str:
    from kubernetes import client

    good = wait_until(lambda: [p for p in _pods(st) if p.status.phase == "Running"], 30, "a payments pod running")[0]
    st.scratch["payments_good"] = (good.metadata.uid, good.metadata.labels["pod-template-hash"])
    client.AppsV1Api(st.api).patch_namespaced_deployment("payments", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "payments", "args": ["--exit", str(BAD_EXIT)]}]}}}})
    return f"payments release 2 rolled out (Recreate): its process exits with status {BAD_EXIT} on start"


def detect(st: Stack) -> str | None:
    _, good_hash = st.scratch["payments_good"]
    for p in _pods(st):
        if p.metadata.labels.get("pod-template-hash") == good_hash:
            continue
        for cs in p.status.container_statuses or []:
            term = cs.last_state.terminated if cs.last_state else None
            if term is not None and term.exit_code == BAD_EXIT and cs.restart_count >= 1:
                waiting = cs.state.waiting.reason if cs.state and cs.state.waiting else "restarting"
                return (f"kubelet: pod {p.metadata.name} (new release) exited {term.exit_code} ({term.reason}), "
                        f"restartCount {cs.restart_count}, {waiting}; no payments pod Running")
    return None


def check(st: Stack, obj: dict[str, Any]) -> str:
    good_uid, good_hash = st.scratch["payments_good"]
    plan = obj["status"].get("plan") or {}

    def back() -> Any:
        pods = _pods(st)
        if len(pods) != 1:
            return None
        p = pods[0]
        cs = (p.status.container_statuses or [None])[0]
        ok = (p.metadata.labels.get("pod-template-hash") == good_hash and cs is not None and cs.ready
              and cs.state.running is not None)
        return p if ok else None

    pod = wait_until(back, 60, "a payments pod of the restored revision running (and only it)")
    if pod.metadata.uid == good_uid:
        raise DemoError("the old pod survived: expected a new one")
    cs = pod.status.container_statuses[0]
    time.sleep(3)
    again = next((p for p in _pods(st) if p.metadata.uid == pod.metadata.uid), None)
    now = again.status.container_statuses[0] if again is not None else None
    if now is None or now.state.running is None or (now.container_id, now.restart_count) != (cs.container_id, cs.restart_count):
        raise DemoError(f"payments pod {pod.metadata.name} did not stay up")
    return (f"revision {plan.get('fromRevision')} -> {plan.get('toRevision')}: new pod {pod.metadata.name} "
            f"(template {good_hash}, args {pod.spec.containers[0].args}) Running, restarts {cs.restart_count}, for 3s+")


SCENARIO = Scenario(
    "bad-release", "003", "payments release crashes on start (real node)", "kubectl apply", "rollbackWorkload",
    inject, [("symptom", detect)], check, remediation="payments-rollback")
