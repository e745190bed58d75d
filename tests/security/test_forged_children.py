"""Issue 20 on the real control plane, engine half: forged policy children, review at use, the
approval digest, each next to the admission check in front of it.

alice holds only the shipped ``remedy:requester`` and ``remedy:action:restartWorkload``
ClusterRoles (deploy/rbac-users) in her namespace. The admin's RemediationPolicy has an
``escalate`` step that scales the Deployment ``admin-only`` to 0, a silence, and pauses
itself after one failure. alice's copy of its labels, controller ownerReference and a silence
annotation is refused by the API server; the same object created on her behalf by the one
identity admission lets do that (cluster admin) shows the engine half: it is not the policy's
child, so it changes nothing.

Witnesses the operator does not control: the Deployment as the API server stores it, the list
of Remediations (no ``forged-e1``), Alertmanager's own silence list, the receiving endpoints'
counters, and the policy status the operator wrote for the admin's real children (a real
firing is created and counted, so the refresh that would have counted the forged child did run).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.services import AlertmanagerServer
from tests.fixtures.helpers import alert, alert_payload, http_json, results_dir, wait_for
from tests.fixtures.operator import (
    GROUP,
    VERSION,
    WebhookOperator,
    condition,
    create_rem,
    get_rem,
    make_namespace,
    wait_phase,
)
from tests.security.conftest import bind
from tests.security.test_requester import as_user, deployment, event_with

pytestmark = pytest.mark.cluster

POLICY = "admin-policy"
ALERT = "ForgeDown"


@dataclass
class Stack:
    ns: str
    op: WebhookOperator
    am: AlertmanagerServer


@pytest.fixture
def stack(kube_admin: client.ApiClient, webhook_operator: Callable[..., WebhookOperator], user_roles: None,
          alertmanager_server: AlertmanagerServer) -> Iterator[Stack]:
    ns = make_namespace(kube_admin, "s20")
    op = webhook_operator(ns, env={"REMEDY_ALERTMANAGER_URL": alertmanager_server.url})
    yield Stack(ns, op, alertmanager_server)
    op.stop()
    client.CoreV1Api(kube_admin).delete_namespace(ns)


def _policy(api: client.ApiClient, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "remediationpolicies", POLICY)
    return obj


def _fire(s: Stack, fp: str, starts: str) -> dict[str, int]:
    code, body = http_json("POST", s.op.url, alert_payload([alert(fp, starts=starts, alertname=ALERT, instance=fp)]),
                           token=s.op.token)
    assert code == 200, body
    return dict(body["outcomes"])


def _remediations(api: client.ApiClient, ns: str) -> dict[str, dict[str, Any]]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, "remediations")["items"]
    return {o["metadata"]["name"]: o for o in items}


def _silences(s: Stack) -> list[dict[str, Any]]:
    code, body = http_json("GET", f"{s.am.url}/api/v2/silences")
    assert code == 200
    return [x for x in body if f"{s.ns}/" in str(x.get("comment", ""))]


def test_a_forged_child_changes_no_policy_state(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                stack: Stack) -> None:
    cp, ns = control_plane, stack.ns
    deployment(kube_admin, ns, "admin-only")
    apps = client.AppsV1Api(kube_admin)
    before = apps.read_namespaced_deployment("admin-only", ns)
    client.CustomObjectsApi(kube_admin).create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": POLICY},
        "spec": {"trigger": {"alert": {"alertname": ALERT}},
                 "template": {"action": {"notify": {"message": "{{ labels.instance }} is down"}}},
                 "guards": {"cooldown": "0s", "maxPerHour": 100, "maxConcurrent": 100, "pauseAfterFailures": 1},
                 "silence": {"matchers": [{"name": "alertname", "value": ALERT}], "duration": "10m"},
                 "escalate": [{"after": "0s", "action": {"scaleWorkload": {"target": {"name": "admin-only"},
                                                                           "replicas": 0}}}]}})
    policy = wait_for(lambda: (p := _policy(kube_admin, ns)).get("status", {}).get("observedGeneration") and p,
                      20, "policy evaluated")
    author = policy["metadata"]["annotations"]["remedy.dev/requested-by"]

    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    alice = as_user(cp, "alice")
    forged_silence = json.dumps({"matchers": [{"name": "severity", "value": ".*", "isRegex": True}],
                                 "durationSeconds": 3600, "comment": "forged"})
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
            "metadata": {"name": "forged",
                         "labels": {"remedy.dev/policy": POLICY, "remedy.dev/firing": "forged",
                                    "remedy.dev/escalation-step": "0"},
                         "annotations": {"remedy.dev/silence": forged_silence},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy",
                                              "name": POLICY, "uid": policy["metadata"]["uid"], "controller": True}]},
            "spec": {"action": {"restartWorkload": {"target": {"name": "admin-only"}}}}}
    # The admission half: alice cannot create it (remedy's labels and annotations are the operator's).
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(alice).create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)
    assert refused.value.status == 403 and "remedy.dev/policy" in str(refused.value.body), refused.value.body
    # The engine half, as if that check were bypassed: the same object on alice's behalf, created
    # by the one identity admission lets write remedy's labels and someone else's name onto a
    # policy's child (cluster admin; the operator's own ServiceAccount could too). The requester
    # the API server records is alice, not the policy's author: the operator must not treat it
    # as the policy's child.
    body["metadata"]["annotations"].update({"remedy.dev/requested-by": "alice",
                                            "remedy.dev/requested-by-groups": "remedy-users,system:authenticated"})
    created = client.CustomObjectsApi(kube_admin).create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)
    assert created["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice" != author
    forged = wait_phase(kube_admin, ns, "forged", {"Succeeded", "Failed", "Skipped"})
    assert condition(forged, "Completed")["reason"] == "RequesterForbidden", forged["status"]
    event_with(kube_admin, ns, "forged", "SilenceRefused")

    # Two real firings of the admin's policy, each run to the end and counted: a forged failure
    # counted would have paused the policy (pauseAfterFailures: 1) and blocked them. The refresh
    # that counts the second one runs after the first refresh's escalation pass has finished.
    for n, fp in enumerate(("real-1", "real-2"), start=1):
        assert _fire(stack, fp, f"2026-12-05T10:00:0{n}Z") == {"created": 1}
        wait_for(lambda n=n: (_policy(kube_admin, ns).get("status") or {}).get("counters", {}).get("succeeded") == n,
                 60, f"real child {n} counted")
    status = _policy(kube_admin, ns)["status"]
    paused = next(c for c in status["conditions"] if c["type"] == "Paused")
    names = set(_remediations(kube_admin, ns))
    after = apps.read_namespaced_deployment("admin-only", ns)
    silences = _silences(stack)
    figures = {
        "forgedChildReason": condition(forged, "Completed")["reason"],
        "escalationChildCreated": "forged-e1" in names,
        "policyConsecutiveFailures": status["consecutiveFailures"], "policyPaused": paused["status"],
        "trackRecordFailed": status["trackRecord"]["failed"], "trackRecordRuns": status["trackRecord"]["runs"],
        "adminOnlyReplicas": [before.spec.replicas, after.spec.replicas],
        "adminOnlyGeneration": [before.metadata.generation, after.metadata.generation],
        "silencesForForgedChild": len([x for x in silences if f"{ns}/forged " in x.get("comment", "")]),
    }
    (results_dir() / "forged_children.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    assert "forged-e1" not in names, "the escalation child of a forged child was created"
    assert (after.spec.replicas, after.metadata.generation) == (before.spec.replicas, before.metadata.generation)
    assert status["consecutiveFailures"] == 0 and paused["status"] == "False", status
    assert status["trackRecord"]["failed"] == 0 and status["trackRecord"]["runs"] == 2, status["trackRecord"]
    assert figures["silencesForForgedChild"] == 0, silences
    # Control: the real children did get their silence (so Alertmanager is the right witness).
    real = [n for n, o in _remediations(kube_admin, ns).items()
            if (o["metadata"].get("labels") or {}).get("remedy.dev/policy") == POLICY and n != "forged"]
    assert len(real) == 2
    assert any(f"{ns}/{r} " in str(x.get("comment", "")) for r in real for x in _silences(stack))


def test_rights_removed_between_plan_and_act_refuse_the_run(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                            stack: Stack) -> None:
    """With approval required alice's restart waits; her RoleBinding is removed; then it is
    approved: RequesterForbidden, and the Deployment as stored is unchanged."""
    cp, ns = control_plane, stack.ns
    deployment(kube_admin, ns, "web")
    cp.kubectl("-n", ns, "create", "role", "patch-web", "--verb=patch", "--resource=deployments.apps",
               "--resource-name=web")
    cp.kubectl("-n", ns, "create", "rolebinding", "alice-patch-web", "--role=patch-web", "--user=alice")
    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    alice = as_user(cp, "alice")
    apps = client.AppsV1Api(kube_admin)
    before = apps.read_namespaced_deployment("web", ns)
    create_rem(alice, ns, "restart-web", {"action": {"restartWorkload": {"target": {"name": "web"}}},
                                          "approval": {"required": True}})
    waiting = wait_phase(kube_admin, ns, "restart-web", "AwaitingApproval")
    cp.kubectl("-n", ns, "delete", "rolebinding", "alice-patch-web")
    digest = waiting["status"]["message"].rsplit("spec digest ", 1)[1].strip()
    client.CustomObjectsApi(kube_admin).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "remediations", "restart-web",
        {"metadata": {"annotations": {"remedy.dev/approved-by": "admin", "remedy.dev/approved-spec-digest": digest}}})
    done = wait_phase(kube_admin, ns, "restart-web", {"Succeeded", "Failed"})
    assert condition(done, "Approved")["status"] == "True", done["status"]
    assert condition(done, "Completed")["reason"] == "RequesterForbidden", done["status"]
    assert 'may not patch deployments.apps "web"' in condition(done, "Completed")["message"]
    after = apps.read_namespaced_deployment("web", ns)
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template.metadata.annotations == before.spec.template.metadata.annotations
    assert "plan" not in done["status"] or not done["status"]["plan"], "planned for a requester without the right"

    # Control: with the binding back, a new Remediation runs (the refusal above was the binding).
    cp.kubectl("-n", ns, "create", "rolebinding", "alice-patch-web", "--role=patch-web", "--user=alice")
    create_rem(alice, ns, "restart-web-2", {"action": {"restartWorkload": {"target": {"name": "web"}}}})
    assert wait_phase(kube_admin, ns, "restart-web-2", {"Succeeded", "Failed"})["status"]["phase"] == "Succeeded"
    assert apps.read_namespaced_deployment("web", ns).metadata.generation > before.metadata.generation
    assert get_rem(kube_admin, ns, "restart-web")["status"]["phase"] == "Failed"


def test_a_spec_edit_while_running_never_reaches_the_operator(control_plane: ControlPlane,
                                                              kube_admin: client.ApiClient,
                                                              operator_factory: Any, user_roles: None) -> None:
    """The observed case: alice starts an httpRequest, the operator dies after recording its
    intent, alice points the running spec at another URL, the operator restarts. The API
    server refuses the edit (admission freezes a started spec), and the restarted operator
    re-sends the recorded request to the first endpoint only: the second endpoint's counter is
    the witness. Without admission the lifecycle refuses the edited spec itself (Failed/
    SpecChanged, tests/unit/test_spec_binding.py)."""
    from tests.security.conftest import Endpoint
    from tests.security.test_requester import secret

    cp = control_plane
    ns = make_namespace(kube_admin, "s20")
    first, second = Endpoint().start(), Endpoint().start()
    op = operator_factory(env={"REMEDY_FAULT_INJECT": "after_intent:60"}, args=["-n", ns])
    try:
        secret(kube_admin, ns, "alice-token", "token", "alice-token-value-31")
        cp.kubectl("-n", ns, "create", "role", "read-alice-token", "--verb=get", "--resource=secrets",
                   "--resource-name=alice-token")
        cp.kubectl("-n", ns, "create", "rolebinding", "alice-read", "--role=read-alice-token", "--user=alice")
        # As in the issue: requester, approver (patch on Remediations) and the httpRequest action.
        bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:httpRequest")
        alice = as_user(cp, "alice")
        call = {"method": "POST", "bearerTokenSecretRef": {"name": "alice-token", "key": "token"}}
        create_rem(alice, ns, "call", {"action": {"httpRequest": {"url": f"{first.url}/hook", **call}}})
        # The test's fault injection (the operator dies after recording intent) is an operator-only
        # annotation: the admin sets it, before the operator first sees the object.
        cp.kubectl("-n", ns, "annotate", "remediation/call", "remedy.dev/fault-inject=true")
        op.start().wait_ready(timeout=60)
        running = wait_phase(kube_admin, ns, "call", "Running")
        op.kill()
        with pytest.raises(ApiException) as refused:
            client.CustomObjectsApi(alice).patch_namespaced_custom_object(
                GROUP, VERSION, ns, "remediations", "call",
                {"spec": {"action": {"httpRequest": {"url": f"{second.url}/elsewhere", **call}}}})
        assert refused.value.status == 403 and "frozen" in str(refused.value.body), refused.value.body
        op.env["REMEDY_FAULT_INJECT"] = ""
        op.start()
        done = wait_phase(kube_admin, ns, "call", {"Succeeded", "Failed"}, timeout=60)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["specDigest"] == running["status"]["specDigest"]
        assert second.requests == [], "the edited spec was sent"
        assert [r["path"] for r in first.requests] == ["/hook"]
    finally:
        op.stop()
        first.stop()
        second.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)


def test_only_the_approver_writes_the_approved_spec_digest(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                            operator_factory: Any, user_roles: None) -> None:
    """bob marks alice's notify approved with a bare `kubectl annotate approved-by=bob` (no
    digest: it does not count); alice then tries to complete his approval with a digest of
    her choosing. The API server refuses (only the approver writes the digest), the operator
    keeps the Remediation waiting (NoSpecDigest), and the webhook endpoint receives nothing.
    Control: `kubectl remedy approve` as bob writes both and the notify is sent once."""
    from remedy.api.digest import spec_digest
    from tests.security.conftest import Endpoint, kubectl_remedy

    cp = control_plane
    ns = make_namespace(kube_admin, "s20")
    hook = Endpoint().start()
    op = operator_factory(args=["-n", ns]).start()
    try:
        op.wait_ready(timeout=60)
        bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:notify")
        bind(cp, ns, "bob", "remedy:approver")
        alice = as_user(cp, "alice")
        create_rem(alice, ns, "page", {"action": {"notify": {"message": "page", "webhook": {"url": f"{hook.url}/hook"}}},
                                       "approval": {"required": True}})
        waiting = wait_phase(kube_admin, ns, "page", "AwaitingApproval")
        bare = cp.kubectl("-n", ns, "annotate", "remediation/page", "remedy.dev/approved-by=bob",
                          kubeconfig=cp.user_kubeconfig("bob"), check=False)
        assert bare.returncode == 0, bare.stderr
        with pytest.raises(ApiException) as refused:
            client.CustomObjectsApi(alice).patch_namespaced_custom_object(
                GROUP, VERSION, ns, "remediations", "page",
                {"metadata": {"annotations": {"remedy.dev/approved-spec-digest": spec_digest(waiting["spec"])}}})
        assert refused.value.status == 403 and "only the approver writes it" in str(refused.value.body)
        obj = wait_for(lambda: (o := get_rem(kube_admin, ns, "page")).get("status", {}).get("approvals") and o,
                       30, "bob's bare approval recorded")
        rec = obj["status"]["approvals"][0]
        assert (rec["user"], rec["accepted"]) == ("bob", False) and rec["reason"].startswith("NoSpecDigest"), rec
        assert obj["status"]["phase"] == "AwaitingApproval" and hook.requests == []

        approved = kubectl_remedy(cp, "bob", "approve", "page", "-n", ns)
        assert approved.returncode == 0, approved.stderr
        done = wait_phase(kube_admin, ns, "page", {"Succeeded", "Failed"})
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["metadata"]["annotations"]["remedy.dev/approved-spec-digest"] == spec_digest(done["spec"])
        assert len(hook.requests) == 1
    finally:
        op.stop()
        hook.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
