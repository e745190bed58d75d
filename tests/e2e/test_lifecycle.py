"""The Remediation lifecycle on the real control plane with the operator as a child process."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from kubernetes import client

from remedy.api.digest import spec_digest
from remedy_devenv.cluster import ControlPlane
from remedy_devenv.operator import OperatorProcess
from tests.fixtures.helpers import wait_for
from tests.fixtures.operator import condition, create_rem, get_rem, make_namespace, wait_phase

pytestmark = pytest.mark.cluster


def make_deployment(api: client.ApiClient, ns: str, name: str, replicas: int = 2, memory: str = "128Mi") -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "app", "image": "example/app:1", "resources": {"limits": {"memory": memory}, "requests": {"memory": "64Mi"}}}
            ]}},
        },
    })


def replicasets(api: client.ApiClient, ns: str, app: str) -> list[Any]:
    return list(client.AppsV1Api(api).list_namespaced_replica_set(ns, label_selector=f"app={app}").items)


def apply(cp: ControlPlane, ns: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", "-n", ns, "-f", "-", input=manifest, check=False)


BAD_MANIFESTS = {
    "no action": ("spec: {action: {}}", "must set exactly one of"),
    "two actions": (
        "spec: {action: {scaleWorkload: {target: {name: a}, replicas: 1}, restartWorkload: {target: {name: a}}}}",
        "must set exactly one of",
    ),
    "negative replicas": ("spec: {action: {scaleWorkload: {target: {name: a}, replicas: -1}}}", "replicas"),
    "memory factor below 1": ("spec: {action: {raiseMemoryOnOOM: {target: {name: a}, factor: 0.5, maxLimit: 1Gi}}}", "factor"),
    "memory without maxLimit": ("spec: {action: {raiseMemoryOnOOM: {target: {name: a}}}}", "maxLimit"),
    "replicas and delta": ("spec: {action: {scaleWorkload: {target: {name: a}, replicas: 2, delta: 1}}}", "exactly one of replicas or delta"),
    "unknown field": ("spec: {action: {restartWorkload: {target: {name: a}, bogus: 1}}}", "unknown field"),
    "bad duration": ("spec: {timeout: soon, action: {restartWorkload: {target: {name: a}}}}", "timeout"),
    # CEL rules declared on the models (remedy.api: cel / exactly_one_field), one per model that has them.
    "min above max": ("spec: {action: {scaleWorkload: {target: {name: a}, delta: 1, minReplicas: 5, maxReplicas: 2}}}",
                      "minReplicas exceeds maxReplicas"),
    "purge without backend settings": ("spec: {action: {purgeIdempotencyKeys: {backend: http}}}",
                                       "needs http or redis settings"),
    "purge backend mismatch": ("spec: {action: {purgeIdempotencyKeys: {backend: http, redis: {connection: "
                               "{urlSecretRef: {name: r, key: url}}}}}}", "backend http needs purgeIdempotencyKeys.http"),
    "wildcard-only redis pattern": ("spec: {action: {deleteRedisKeys: {connection: {urlSecretRef: {name: r, key: url}}, "
                                    "pattern: '**'}}}", "must name keys"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_schema_rejects_bad_objects_at_apply(control_plane: ControlPlane, crds: None, case: str) -> None:
    body, expected = BAD_MANIFESTS[case]
    manifest = f"apiVersion: remedy.dev/v1alpha1\nkind: Remediation\nmetadata: {{name: bad}}\n{body}\n"
    res = apply(control_plane, "default", manifest)
    assert res.returncode != 0, f"{case} was accepted"
    assert expected in res.stderr, res.stderr


def test_printer_columns(control_plane: ControlPlane, kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web")
    create_rem(kube_admin, namespace, "scale-web", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 3}}})
    wait_phase(kube_admin, namespace, "scale-web", "Succeeded")
    out = control_plane.kubectl("get", "remediations", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "ACTION", "TARGET", "PHASE", "REASON"]
    assert row.split()[:5] == ["scale-web", "scaleWorkload", "Deployment/web", "Succeeded", "Succeeded"]
    dep = client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace)
    assert dep.spec.replicas == 3


def test_dry_run_plans_and_changes_nothing(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=2)
    create_rem(kube_admin, namespace, "dry", {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 5}}})
    obj = wait_phase(kube_admin, namespace, "dry", "Succeeded")
    assert obj["status"]["plan"]["from"] == 2 and obj["status"]["plan"]["to"] == 5
    assert condition(obj, "Executed")["reason"] == "DryRun"
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace).spec.replicas == 2


def test_restart_rolls_a_new_replicaset_via_controller_manager(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "orders")
    wait_for(lambda: len(replicasets(kube_admin, namespace, "orders")) == 1, what="first ReplicaSet")
    create_rem(kube_admin, namespace, "restart-orders", {"action": {"restartWorkload": {"target": {"name": "orders"}}}, "reason": "INC-1"})
    obj = wait_phase(kube_admin, namespace, "restart-orders", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert condition(obj, "Verified")["status"] == "True"
    rs = wait_for(lambda: len(replicasets(kube_admin, namespace, "orders")) == 2 and replicasets(kube_admin, namespace, "orders"),
                  what="second ReplicaSet")
    stamps = {(r.spec.template.metadata.annotations or {}).get("remedy.dev/restarted-by") for r in rs}
    assert obj["metadata"]["uid"] in stamps
    assert obj["status"]["evidence"]["workload"] == "Deployment/orders"
    events = client.CoreV1Api(kube_admin).list_namespaced_event(namespace, field_selector="involvedObject.name=restart-orders")
    reasons = {e.reason for e in events.items}
    assert {"Accepted", "Started"} <= reasons


def test_approval_waits_then_runs_and_records_approver(control_plane: ControlPlane, kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=1)
    create_rem(kube_admin, namespace, "needs-ok", {"approval": {"required": True},
                                                   "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 4}}})
    obj = wait_phase(kube_admin, namespace, "needs-ok", "AwaitingApproval")
    assert condition(obj, "Approved")["status"] == "False"
    time.sleep(1)
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace).spec.replicas == 1
    # The approval names the spec it approves (issue 20): the digest, as `kubectl remedy approve` writes it.
    control_plane.kubectl("annotate", "-n", namespace, "remediation/needs-ok", "remedy.dev/approved-by=admin",
                          f"remedy.dev/approved-spec-digest={spec_digest(obj['spec'])}")
    obj = wait_phase(kube_admin, namespace, "needs-ok", "Succeeded")
    assert obj["status"]["approvedBy"] == "admin"
    assert "admin" in condition(obj, "Approved")["message"]
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace).spec.replicas == 4


def test_missing_target_fails_with_actionable_reason(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    create_rem(kube_admin, namespace, "ghost", {"action": {"restartWorkload": {"target": {"name": "nope"}}}})
    obj = wait_phase(kube_admin, namespace, "ghost", {"Failed"})
    c = condition(obj, "Completed")
    assert c["reason"] == "TargetNotFound" and "Deployment" in c["message"] and "nope" in c["message"]


def test_over_cap_is_refused_not_truncated(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", memory="1Gi")
    pods_oom(kube_admin, namespace, "web")
    create_rem(kube_admin, namespace, "too-much", {"action": {"raiseMemoryOnOOM": {"target": {"name": "web"}, "factor": 4, "maxLimit": "1Gi"}}})
    obj = wait_phase(kube_admin, namespace, "too-much", "Failed")
    assert condition(obj, "Completed")["reason"] == "OverCap"
    dep = client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace)
    assert dep.spec.template.spec.containers[0].resources.limits["memory"] == "1Gi"


def pods_oom(api: client.ApiClient, ns: str, app: str) -> list[str]:
    from remedy_devenv import kubelet

    core = client.CoreV1Api(api)
    # Let the fake kubelet start them first, or its Running write races ours.
    pods = wait_for(lambda: [p for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
                             if p.status.phase == "Running"], what="running pods")
    for pod in pods:
        kubelet.mark_oomkilled(core, ns, pod.metadata.name)
    return [p.metadata.name for p in pods]


def test_raise_memory_on_oom_patches_template(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "inventory", memory="256Mi")
    pods_oom(kube_admin, namespace, "inventory")
    create_rem(kube_admin, namespace, "oom", {"action": {"raiseMemoryOnOOM": {"target": {"name": "inventory"}, "factor": 1.5, "maxLimit": "2Gi"}}})
    obj = wait_phase(kube_admin, namespace, "oom", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    change = obj["status"]["plan"]["containers"][0]
    assert (change["oldLimit"], change["newLimit"]) == ("256Mi", "384Mi")
    assert change["oomKilledPods"]
    dep = client.AppsV1Api(kube_admin).read_namespaced_deployment("inventory", namespace)
    assert dep.spec.template.spec.containers[0].resources.limits["memory"] == "384Mi"


def test_raise_memory_min_step_and_cap(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    """new = max(old x factor, old + minStep), capped at maxLimit (and says so)."""
    make_deployment(kube_admin, namespace, "tiny", memory="100Mi")
    pods_oom(kube_admin, namespace, "tiny")
    create_rem(kube_admin, namespace, "tiny-oom", {"action": {"raiseMemoryOnOOM": {
        "target": {"name": "tiny"}, "factor": 1.2, "minStep": "100Mi", "maxLimit": "150Mi"}}})
    obj = wait_phase(kube_admin, namespace, "tiny-oom", {"Succeeded", "Failed"})
    change = obj["status"]["plan"]["containers"][0]
    assert (change["oldLimit"], change["newLimit"], change["cappedAtMaxLimit"]) == ("100Mi", "150Mi", True)


def test_scale_by_delta_is_clamped(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "inv", replicas=3)
    create_rem(kube_admin, namespace, "scale-out", {"action": {"scaleWorkload": {"target": {"name": "inv"}, "delta": 10, "maxReplicas": 5}}})
    obj = wait_phase(kube_admin, namespace, "scale-out", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded"
    assert (obj["status"]["plan"]["wanted"], obj["status"]["plan"]["to"], obj["status"]["plan"]["clamped"]) == (13, 5, True)
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("inv", namespace).spec.replicas == 5


def test_no_oom_is_skipped(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "calm")
    create_rem(kube_admin, namespace, "calm-oom", {"action": {"raiseMemoryOnOOM": {"target": {"name": "calm"}, "maxLimit": "1Gi"}}})
    obj = wait_phase(kube_admin, namespace, "calm-oom", {"Skipped", "Failed"})
    assert obj["status"]["phase"] == "Skipped" and condition(obj, "Completed")["reason"] == "NoOOMKilled"


def test_rollback_restores_previous_revision(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    apps = client.AppsV1Api(kube_admin)
    make_deployment(kube_admin, namespace, "api")
    wait_for(lambda: len(replicasets(kube_admin, namespace, "api")) == 1, what="rev 1")
    apps.patch_namespaced_deployment("api", namespace, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example/app:2-bad"}]}}}})
    wait_for(lambda: len(replicasets(kube_admin, namespace, "api")) == 2, what="rev 2")
    wait_for(lambda: (apps.read_namespaced_deployment("api", namespace).metadata.annotations or {}).get("deployment.kubernetes.io/revision") == "2", what="dep rev 2")
    create_rem(kube_admin, namespace, "undo", {"action": {"rollbackWorkload": {"target": {"name": "api"}}}})
    obj = wait_phase(kube_admin, namespace, "undo", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert (obj["status"]["plan"]["fromRevision"], obj["status"]["plan"]["toRevision"]) == (2, 1)
    assert apps.read_namespaced_deployment("api", namespace).spec.template.spec.containers[0].image == "example/app:1"


def test_sigkill_mid_action_idempotent_action_resumes_once(kube_admin: client.ApiClient, operator_factory: Any) -> None:
    """SIGKILL after the action ran but before its outcome was recorded: the restarted
    operator waits for the dead executor's heartbeat to go stale, then re-applies the
    recorded plan, which for a restart is a no-op (same stamp)."""
    namespace = make_namespace(kube_admin, "k")
    op = operator_factory(env={"REMEDY_FAULT_INJECT": "after_action:60"}, args=["-n", namespace]).start()
    op.wait_ready()
    make_deployment(kube_admin, namespace, "outbox")
    wait_for(lambda: len(replicasets(kube_admin, namespace, "outbox")) == 1, what="rev 1")
    create_rem(kube_admin, namespace, "r1", {"action": {"restartWorkload": {"target": {"name": "outbox"}}}},
               annotations={"remedy.dev/fault-inject": "true"})
    wait_phase(kube_admin, namespace, "r1", "Running")
    wait_for(lambda: len(replicasets(kube_admin, namespace, "outbox")) == 2, what="restart applied")
    op.kill()
    assert get_rem(kube_admin, namespace, "r1")["status"]["phase"] == "Running"
    op.env["REMEDY_FAULT_INJECT"] = ""
    op.start()
    obj = wait_phase(kube_admin, namespace, "r1", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["attempts"] == 1
    assert condition(obj, "Executed")["status"] == "True"
    time.sleep(2)
    assert len(replicasets(kube_admin, namespace, "outbox")) == 2, "restart was applied twice"
    op.stop()


@pytest.mark.parametrize("keyed", [True, False], ids=["idempotency-key", "no-idempotency-support"])
def test_sigkill_mid_http_call_is_resent_only_with_an_idempotency_key(kube_admin: client.ApiClient, operator_factory: Any,
                                                                      keyed: bool) -> None:
    """The reconcile webhook (runbook 002) is not idempotent by itself. After a SIGKILL between
    the call and the outcome record, the restarted operator observes the attempt: with the
    Idempotency-Key (default) it re-sends the recorded request, the service answers from its
    record and runs nothing (its own counters are the witness), and the Remediation ends
    Succeeded; an endpoint declared without idempotency support is never called again and
    ends OutcomeUnknown with an escalation Event. Messages say what happened (the executor
    stopped), never a guess."""
    import base64
    import json
    import urllib.request

    from remedy_devenv.demoapp import DemoProcess

    svc = DemoProcess("reconcile", args=["--token", "s3cret-cron"])
    svc.start()
    try:
        namespace = make_namespace(kube_admin, "k")
        client.CoreV1Api(kube_admin).create_namespaced_secret(namespace, {
            "metadata": {"name": "cron"}, "data": {"token": base64.b64encode(b"s3cret-cron").decode()}})
        op = operator_factory(env={"REMEDY_FAULT_INJECT": "after_action:60"}, args=["-n", namespace]).start()
        op.wait_ready()
        create_rem(kube_admin, namespace, "reconcile", {"action": {"httpRequest": {
            "url": f"{svc.url}/api/cron/reconcile", "method": "POST", "idempotencyKey": keyed,
            "bearerTokenSecretRef": {"name": "cron", "key": "token"}}}},
            annotations={"remedy.dev/fault-inject": "true"})
        wait_phase(kube_admin, namespace, "reconcile", "Running")

        def stats() -> dict[str, Any]:
            with urllib.request.urlopen(f"{svc.url}/admin/stats", timeout=5) as r:
                out: dict[str, Any] = json.load(r)
            return out

        def runs() -> int:
            return int(stats().get("succeeded", {}).get("POST /api/cron/reconcile", 0))

        wait_for(lambda: runs() == 1, what="reconcile called")
        op.kill()
        op.env["REMEDY_FAULT_INJECT"] = ""
        op.start()
        obj = wait_phase(kube_admin, namespace, "reconcile", {"Succeeded", "Failed"})
        time.sleep(2)
        assert runs() == 1, "the reconcile ran twice"
        events = client.CoreV1Api(kube_admin).list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={obj['metadata']['uid']}").items
        notes = {e.reason: e.message or "" for e in events}
        assert "stopped during attempt" in notes["OutcomeUnknown"] and "operator restarted" not in json.dumps(notes)
        if keyed:
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
            assert stats()["replayed"]["POST /api/cron/reconcile"] == 1  # the re-send, answered from the record
            assert "ReApplying" in notes
        else:
            assert obj["status"]["phase"] == "Failed"
            assert condition(obj, "Completed")["reason"] == "OutcomeUnknown"
            assert condition(obj, "Executed")["status"] == "Unknown"
            assert "EscalationRequired" in notes
            assert "replayed" not in stats() or not stats()["replayed"]
        assert "s3cret-cron" not in json.dumps(obj)
        op.stop()
    finally:
        svc.stop()
