"""HA: two operator replicas in one kopf peering (KopfPeering, namespaced), different
priorities. The high-priority one runs everything; the other stays paused. SIGKILL the active
one mid-action: the standby takes over within a bounded time, and nothing runs twice.

Takeover time is bounded by kopf's peering lifetime (settings.peering.lifetime, which remedy
sets from REMEDY_PEERING_LIFETIME; kopf's default is 60 s): the standby un-pauses when the dead
peer's keep-alive expires, then the engine's stale-heartbeat check (3 x 1s here) lets it resume
the orphaned attempt. The recorded lease is what the peers wrote into the KopfPeering;
duplicates are counted from the apiserver's audit log and the demo's own counter.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import OPERATOR_USER
from remedy_devenv.demoapp import DemoProcess
from remedy_devenv.testkit import executor_pid
from tests.fixtures.operator import REPO, create_rem, get_rem, make_namespace, wait_phase

from ._util import FINAL, cond, create_secret, make_deployment, record, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(300)]

TAKEOVER_BOUND = 90.0  # kopf peering lifetime 60s + keep-alive jitter + handler time
TOKEN = "ha-cron-token-91c2"


def test_standby_takes_over_after_sigkill_without_double_execution(control_plane: Any, kube_admin: client.ApiClient,
                                                                  operator_factory: Any) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "charts" / "remedy" / "crds" / "kopf.dev_peerings.yaml"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/kopfpeerings.kopf.dev")
    ns = make_namespace(kube_admin, "ha")
    control_plane.kubectl("apply", "-n", ns, "-f", "-",
                          input="apiVersion: kopf.dev/v1\nkind: KopfPeering\nmetadata: {name: remedy-ha}\n")
    demo = DemoProcess("reconcile", args=["--token", TOKEN])
    demo.start()
    env = {"REMEDY_FAULT_INJECT": "after_action:30", "REMEDY_HEARTBEAT_SECONDS": "1"}
    active = operator_factory(env=env, args=["-n", ns, "--peering", "remedy-ha", "--priority", "100"])
    standby = operator_factory(env=env, args=["-n", ns, "--peering", "remedy-ha", "--priority", "10"])
    try:
        create_secret(kube_admin, ns, "cron", {"token": TOKEN})
        make_deployment(kube_admin, ns, "web")
        active.start()
        active.wait_ready()
        standby.start()
        standby.wait_ready()
        # kopf starts a peered operator paused and logs "Resuming operations" only once no
        # higher-priority peer is alive: the standby must stay silent while the active one lives.
        wait_for(lambda: "Resuming operations" in active.log_path.read_text(errors="replace"), 60, "active replica resumed")
        time.sleep(3)
        assert "Resuming operations" not in standby.log_path.read_text(errors="replace")

        create_rem(kube_admin, ns, "before", {"action": {"notify": {"message": "who runs me?"}}})
        obj = wait_phase(kube_admin, ns, "before", {"Succeeded", "Failed"}, timeout=60)
        assert executor_pid(obj["status"].get("executor")) == active.proc.pid, obj["status"].get("executor")

        # Two attempts in flight on the active replica, both past their side effect.
        create_rem(kube_admin, ns, "restart", {"action": {"restartWorkload": {"target": {"name": "web"}}}},
                   annotations={"remedy.dev/fault-inject": "true"})
        create_rem(kube_admin, ns, "cron", {"action": {"httpRequest": {
            "url": f"{demo.url}/api/cron/reconcile", "method": "POST",
            "bearerTokenSecretRef": {"name": "cron", "key": "token"}}}}, annotations={"remedy.dev/fault-inject": "true"})

        def calls() -> int:
            with urllib.request.urlopen(f"{demo.url}/admin/stats", timeout=5) as r:
                return int(json.load(r).get("succeeded", {}).get("POST /api/cron/reconcile", 0))

        apps = client.AppsV1Api(kube_admin)
        wait_for(lambda: calls() == 1 and apps.read_namespaced_deployment("web", ns).metadata.generation == 2, 60,
                 "both side effects applied by the active replica")
        # The lease as the peers themselves advertise it in the KopfPeering (not the test's guess).
        peering = client.CustomObjectsApi(kube_admin).get_namespaced_custom_object(
            "kopf.dev", "v1", ns, "kopfpeerings", "remedy-ha")
        lifetimes = sorted({int(p["lifetime"]) for p in (peering.get("status") or {}).values()
                            if isinstance(p, dict) and "lifetime" in p})
        active_pid = active.proc.pid
        active.kill()
        killed_at = time.monotonic()
        create_rem(kube_admin, ns, "after", {"action": {"notify": {"message": "standby, your turn"}}})
        wait_for(lambda: "Resuming operations" in standby.log_path.read_text(errors="replace"), TAKEOVER_BOUND + 30,
                 "standby resumed")
        resumed = time.monotonic() - killed_at
        obj = wait_phase(kube_admin, ns, "after", {"Succeeded", "Failed"}, timeout=60)
        takeover = time.monotonic() - killed_at
        assert executor_pid(obj["status"].get("executor")) == standby.proc.pid

        created = ["before", "restart", "cron", "after"]
        # Bounded wait, then count: "lost" is what is not final by then (it can be non-zero).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                (get_rem(kube_admin, ns, n).get("status") or {}).get("phase") in FINAL for n in created):
            time.sleep(0.5)
        finals = {n: get_rem(kube_admin, ns, n) for n in created}
        lost = sum(1 for o in finals.values() if (o.get("status") or {}).get("phase") not in FINAL)
        restart, cron = finals["restart"], finals["cron"]
        audit = AuditCounter(control_plane.audit_log, OPERATOR_USER, ns)
        audit.settle()
        figures = {
            "replicas": 2, "priorities": [100, 10], "kills": 1, "standbyResumedSeconds": round(resumed, 1), "takeoverSeconds": round(takeover, 1),
            "takeoverBoundSeconds": TAKEOVER_BOUND, "peeringLifetimeSeconds": lifetimes,
            "restart": [(restart.get("status") or {}).get("phase"), cond(restart, "Completed").get("reason")],
            "cron": [(cron.get("status") or {}).get("phase"), cond(cron, "Completed").get("reason")],
            "deploymentSpecChanges": int(apps.read_namespaced_deployment("web", ns).metadata.generation) - 1,
            "auditPatchesOfTarget": audit.count("deployments", "web"),
            "reconcileCalls": calls(), "created": len(created), "lost": lost,
        }
        figures["duplicates_audit"] = max(0, figures["auditPatchesOfTarget"] - 1)
        figures["duplicates_http"] = max(0, figures["reconcileCalls"] - 1)
        record("ha", figures)
        assert lost == 0, {n: o.get("status") for n, o in finals.items()}
        assert takeover < TAKEOVER_BOUND
        assert restart["status"]["phase"] == "Succeeded", restart["status"]
        assert executor_pid(restart["status"]["executor"]) == standby.proc.pid != active_pid
        # The orphaned non-idempotent POST carries an Idempotency-Key derived from the uid, so
        # the standby may repeat it: it ends Succeeded and the service ran it exactly once.
        assert cron["status"]["phase"] == "Succeeded", cron["status"]
        assert figures["reconcileCalls"] == 1, figures
        assert figures["duplicates_audit"] == 0 and figures["duplicates_http"] == 0, figures
        assert standby.alive
    finally:
        active.stop()
        standby.stop()
        demo.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
