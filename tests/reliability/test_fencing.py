"""Issue 21: one executor at a time by token, not by clock. Two operator processes on one
namespace (standalone: both act; the resourceVersion-locked intent decides who runs an attempt).

For each action the executor is frozen with SIGSTOP mid-action: it has recorded intent and
confirmed its epoch (the ``after_fence`` fault-injection point, REMEDY_FAULT_INJECT), its write
to the target not yet sent. The other operator sees its heartbeat stay silent for 3 intervals
by its own clock, takes the attempt over (a new epoch), observes the target against the
recorded plan and finishes it. Then SIGCONT: the woken executor sends its write, which its
precondition turns away (a JSON-patch ``test`` on what the plan read) or the receiver
deduplicates (Idempotency-Key); its status write is a compare-and-swap on its stale epoch, so it
never overwrites the successor's outcome, and it logs "fenced out, stopping without writing".

Witnesses the operator does not control: the API server's audit log (effective writes of each
Deployment by the operator's identity) and the HTTP endpoint's own counter of requests it ran.
The observed bug this guards against (before issue 21): the woken executor wrote
``phase: Pending`` over a Succeeded Remediation.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import OPERATOR_USER
from remedy_devenv.demoapp import DemoProcess
from remedy_devenv.kubelet import mark_oomkilled, mark_pods_running
from remedy_devenv.testkit import executor_pid
from tests.fixtures.operator import create_rem, get_rem, make_namespace

from ._util import FINAL, cond, create_secret, make_deployment, record, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(600)]

TOKEN = "fence-cron-token-5b1e"
FENCED = "fenced out, stopping without writing"
SLEEPING = "fault injection: sleeping"


def _cases(demo_url: str) -> dict[str, tuple[dict[str, Any], str | None]]:
    """name -> (spec.action, the Deployment it writes or None for HTTP)."""
    cron = {"url": f"{demo_url}/api/cron/reconcile", "method": "POST",
            "bearerTokenSecretRef": {"name": "cron", "key": "token"}}
    return {
        "scale-delta": ({"scaleWorkload": {"target": {"kind": "Deployment", "name": "scale"}, "delta": 1}}, "scale"),
        "restart": ({"restartWorkload": {"target": {"kind": "Deployment", "name": "restart"}}}, "restart"),
        "rollback": ({"rollbackWorkload": {"target": {"name": "rollback"}}}, "rollback"),
        "memory": ({"raiseMemoryOnOOM": {"target": {"kind": "Deployment", "name": "memory"}, "maxLimit": "1Gi"}}, "memory"),
        "http-key": ({"httpRequest": cron}, None),
        "http-no-key": ({"httpRequest": {**cron, "idempotencyKey": False}}, None),
    }


def _prepare(api: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    make_deployment(api, ns, "scale", replicas=2)
    make_deployment(api, ns, "restart", replicas=0)
    make_deployment(api, ns, "rollback", replicas=0)
    apps.patch_namespaced_deployment("rollback", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:2"}]}}}})
    wait_for(lambda: len(apps.list_namespaced_replica_set(ns, label_selector="app=rollback").items) == 2, 60,
             "two revisions of rollback")
    make_deployment(api, ns, "memory", replicas=1)
    wait_for(lambda: mark_pods_running(core, ns, "app=memory"), 60, "memory pod")
    for pod in core.list_namespaced_pod(ns, label_selector="app=memory").items:
        mark_oomkilled(core, ns, pod.metadata.name)


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/admin/stats", timeout=5) as r:
        return dict(json.load(r))


def test_a_frozen_executor_woken_after_takeover_changes_nothing(control_plane: Any, kube_admin: client.ApiClient,
                                                                operator_factory: Any) -> None:
    ns = make_namespace(kube_admin, "fence")
    demo = DemoProcess("reconcile", args=["--token", TOKEN])
    demo.start()
    env = {"REMEDY_FAULT_INJECT": "after_fence:4", "REMEDY_HEARTBEAT_SECONDS": "1"}
    ops = [operator_factory(env=env, args=["-n", ns]) for _ in range(2)]
    figures: dict[str, Any] = {"cases": {}}
    try:
        create_secret(kube_admin, ns, "cron", {"token": TOKEN})
        _prepare(kube_admin, ns)
        for op in ops:
            op.start()
        for op in ops:
            op.wait_ready()
        by_pid = {op.proc.pid: op for op in ops}

        def log(op: Any) -> str:
            return str(op.log_path.read_text(errors="replace"))

        def run_case(case: str, action: dict[str, Any], deployment: str | None) -> dict[str, Any]:
            marks = {pid: (log(op).count(SLEEPING), log(op).count(FENCED)) for pid, op in by_pid.items()}
            create_rem(kube_admin, ns, case, {"reason": "issue 21 fencing", "action": action},
                       annotations={"remedy.dev/fault-inject": "true"})
            # The executor that won the intent reaches the hook: freeze it there.
            first = wait_for(lambda: executor_pid((get_rem(kube_admin, ns, case).get("status") or {}).get("executor")),
                             60, f"{case}: intent recorded")
            frozen = by_pid[first]
            wait_for(lambda: log(frozen).count(SLEEPING) > marks[first][0], 30, f"{case}: executor at the hook")
            os.kill(first, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                done = wait_for(lambda: (o := get_rem(kube_admin, ns, case)).get("status", {}).get("phase") in FINAL and o,
                                90, f"{case}: the other operator finished the attempt")
            finally:
                os.kill(first, signal.SIGCONT)
            takeover = time.monotonic() - stopped_at
            wait_for(lambda: log(frozen).count(FENCED) > marks[first][1], 60, f"{case}: woken executor fenced out")
            after = get_rem(kube_admin, ns, case)
            successor = executor_pid(done["status"]["executor"])
            assert successor != first and successor in by_pid, done["status"]
            assert after["status"] == done["status"], f"{case}: the woken executor changed status"
            line = next(ln for ln in log(frozen).splitlines()[::-1] if FENCED in ln)
            entry: dict[str, Any] = {
                "phase": done["status"]["phase"], "reason": cond(done, "Completed").get("reason"),
                "epoch": done["status"]["epoch"], "takeoverSeconds": round(takeover, 1), "fencedLogLine": line[line.index(FENCED):][:300],
            }
            if deployment is not None:
                audit = AuditCounter(control_plane.audit_log, OPERATOR_USER, ns)
                audit.settle()
                entry["effectiveWritesOfTarget"] = audit.count("deployments", deployment)
                entry["rejectedWritesOfTarget"] = audit.count("deployments", deployment, effective_only=False) - \
                    entry["effectiveWritesOfTarget"]
            else:
                stats = _stats(demo.url)
                entry["endpointRan"] = stats.get("succeeded", {}).get("POST /api/cron/reconcile", 0)
                entry["endpointReplayed"] = stats.get("replayed", {}).get("POST /api/cron/reconcile", 0)
            return entry

        for case, (action, deployment) in _cases(demo.url).items():
            figures["cases"][case] = run_case(case, action, deployment)
        # The HTTP cases share one endpoint: its counter is cumulative over both.
        http_key, http_no_key = figures["cases"]["http-key"], figures["cases"]["http-no-key"]
        figures["duplicates_audit"] = sum(max(0, c.get("effectiveWritesOfTarget", 1) - 1) for c in figures["cases"].values())
        figures["duplicates_http"] = max(0, http_no_key["endpointRan"] - 2)
        record("fencing", figures)
        for case, c in figures["cases"].items():
            if "effectiveWritesOfTarget" in c:
                assert c["effectiveWritesOfTarget"] == 1, (case, c)
                assert c["phase"] == "Succeeded", (case, c)
        apps = client.AppsV1Api(kube_admin)
        assert apps.read_namespaced_deployment("scale", ns).spec.replicas == 3  # 2 + 1, once
        # With an Idempotency-Key the successor re-sent it and the endpoint ran it once.
        assert http_key["phase"] == "Succeeded" and http_key["endpointRan"] == 1, http_key
        # Without one the successor cannot tell and never re-sends (OutcomeUnknown, escalated);
        # the woken executor's single send is the only run.
        assert http_no_key["reason"] == "OutcomeUnknown" and http_no_key["endpointRan"] == 2, http_no_key
        assert figures["duplicates_audit"] == 0 and figures["duplicates_http"] == 0, figures
        assert all(op.alive for op in ops)
    finally:
        for op in ops:
            if op.proc is not None and op.proc.poll() is None:
                os.kill(op.proc.pid, signal.SIGCONT)
            op.stop()
        demo.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
