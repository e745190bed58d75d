"""Not fighting Argo CD, on the real apiserver: a Deployment applied by the field manager
Argo CD uses (argocd-controller, server-side apply) and carrying its tracking annotation is
scaled by a policy; while the Remediation verifies, a second server-side apply by
argocd-controller (what self-heal does) restores the old replica count. The Remediation must
end Failed/RevertedByGitOps naming the Application, the policy must pause itself with that
reason and not re-apply, and the apiserver's managedFields show who changed what."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.services import PrometheusServer
from tests.fixtures.helpers import http_json, wait_for
from tests.fixtures.operator import GROUP, VERSION, WebhookOperator, condition, make_namespace, wait_phase

pytestmark = pytest.mark.cluster
APP = "shop-web"


@dataclass
class Stack:
    ns: str
    op: OperatorProcess
    webhook: str
    token: str
    api: client.ApiClient
    cp: ControlPlane


@pytest.fixture(scope="module")
def stack(control_plane: ControlPlane, kube_admin: client.ApiClient, webhook_operator: Callable[..., WebhookOperator],
          prometheus_server: PrometheusServer) -> Iterator[Stack]:
    ns = make_namespace(kube_admin, "gitops")
    hook = webhook_operator(ns, token="gitops-token", env={"REMEDY_PROMETHEUS_URL": prometheus_server.url})
    yield Stack(ns, hook.op, hook.url, hook.token, kube_admin, control_plane)
    hook.stop()


def argo_apply(s: Stack, name: str, replicas: int, tracked: bool) -> None:
    """What Argo CD's sync (and self-heal) does with ServerSideApply=true."""
    ann = {"argocd.argoproj.io/tracking-id": f"{APP}:apps/Deployment:{s.ns}/{name}"} if tracked else {}
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": s.ns, "annotations": ann},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}}
    s.cp.kubectl("apply", "--server-side", "--field-manager=argocd-controller", "--force-conflicts", "-f", "-", input=json.dumps(manifest))


def replicas(s: Stack, name: str) -> int:
    return int(client.AppsV1Api(s.api).read_namespaced_deployment(name, s.ns).spec.replicas)


def managers_of_replicas(s: Stack, name: str) -> list[str]:
    out = s.cp.kubectl("get", "deployment", name, "-n", s.ns, "-o", "json", "--show-managed-fields").stdout
    return [m["manager"] for m in json.loads(out)["metadata"]["managedFields"]
            if "f:replicas" in json.dumps(m.get("fieldsV1", {}).get("f:spec", {}))]


def policy_for(s: Stack, name: str, timeout: str) -> None:
    client.CustomObjectsApi(s.api).create_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name},
        "spec": {"trigger": {"alert": {"alertname": name}},
                 "template": {"action": {"scaleWorkload": {"target": {"name": name}, "replicas": 3, "maxReplicas": 5}}},
                 # a verification that keeps running (never empty) so the revert happens during it
                 "verify": {"promql": "vector(1) > 0", "timeout": timeout, "interval": "1s"},
                 "guards": {"cooldown": "0s", "pauseAfterFailures": 10}}})
    wait_for(lambda: (get_policy(s, name).get("status") or {}).get("observedGeneration"), 20, "policy evaluated")


def get_policy(s: Stack, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(s.api).get_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", name)
    return obj


def fire(s: Stack, name: str, starts: str) -> dict[str, int]:
    alert = {"status": "firing", "labels": {"alertname": name}, "annotations": {}, "startsAt": starts,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": f"{name}-fp"}
    code, body = http_json("POST", s.webhook, {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
                                               "receiver": "remedy", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                                               "externalURL": "http://am", "alerts": [alert]}, token=s.token)
    assert code == 200, body
    return dict(body["outcomes"])


def child_of(s: Stack, policy: str) -> str:
    items = wait_for(lambda: client.CustomObjectsApi(s.api).list_namespaced_custom_object(
        GROUP, VERSION, s.ns, "remediations", label_selector=f"remedy.dev/policy={policy}")["items"], 10, "child")
    return str(items[0]["metadata"]["name"])


def test_argo_self_heal_revert_ends_reverted_by_gitops_and_pauses_the_policy(stack: Stack) -> None:
    s = stack
    argo_apply(s, "web", 1, tracked=True)
    policy_for(s, "web", "30s")
    assert fire(s, "web", "2026-11-30T10:00:00Z") == {"created": 1}
    child = child_of(s, "web")
    wait_phase(s.api, s.ns, child, "Verifying", timeout=20)
    assert replicas(s, "web") == 3
    assert "remedy" in managers_of_replicas(s, "web"), "remedy's change is visible in managedFields"
    argo_apply(s, "web", 1, tracked=True)  # self-heal
    done = wait_phase(s.api, s.ns, child, {"Failed", "Succeeded"}, timeout=20)
    completed = condition(done, "Completed")
    assert done["status"]["phase"] == "Failed" and completed["reason"] == "RevertedByGitOps", done["status"]
    assert f"Application '{APP}'" in completed["message"] and "argocd-controller" in completed["message"]
    assert managers_of_replicas(s, "web") == ["argocd-controller"], "the revert took the field back"
    paused = wait_for(lambda: [c for c in (get_policy(s, "web").get("status") or {}).get("conditions") or []
                               if c["type"] == "Paused" and c["status"] == "True"], 15, "policy paused")[0]
    assert paused["reason"] == "RevertedByGitOps" and child in paused["message"]
    # The next firing of the same alert is not re-applied against Git.
    assert fire(s, "web", "2026-11-30T10:05:00Z") == {"blocked:paused": 1}
    assert replicas(s, "web") == 1
    # A person resumes it (kubectl remedy resume): firings create again.
    client.CustomObjectsApi(s.api).patch_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", "web", {
        "metadata": {"annotations": {"remedy.dev/resumed-at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))}}})
    wait_for(lambda: [c for c in get_policy(s, "web")["status"]["conditions"] if c["type"] == "Paused" and c["status"] == "False"],
             15, "resumed")


def test_a_revert_on_an_untracked_workload_is_not_attributed_to_gitops(stack: Stack) -> None:
    s = stack
    argo_apply(s, "plain", 1, tracked=False)
    policy_for(s, "plain", "6s")
    fire(s, "plain", "2026-11-30T10:00:00Z")
    child = child_of(s, "plain")
    wait_phase(s.api, s.ns, child, "Verifying", timeout=20)
    argo_apply(s, "plain", 1, tracked=False)
    done = wait_phase(s.api, s.ns, child, {"Failed", "Succeeded"}, timeout=30)
    assert condition(done, "Completed")["reason"] == "VerificationFailed", done["status"]
    pol = get_policy(s, "plain")
    assert not [c for c in pol["status"]["conditions"] if c["type"] == "Paused" and c["reason"] == "RevertedByGitOps"]
