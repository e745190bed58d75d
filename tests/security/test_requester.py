"""No confused deputy, unforgeable approvals: the done-when of issue 13 on the real control plane.

alice (group remedy-users) may create Remediations in her namespace and run some actions, but
may not read the Secret gateway-admin nor patch the Deployment web. The operator itself may do
both. Every test asserts on a witness the operator does not control: the receiving endpoint's
request counter, the Deployment as the API server stores it, the API server's own refusal.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.cluster import ControlPlane
from tests.fixtures.helpers import wait_for
from tests.fixtures.operator import GROUP, VERSION, condition, create_rem, get_rem, wait_phase
from tests.security.conftest import Endpoint, SecOperator, bind

REPO = Path(__file__).resolve().parents[2]
TOKEN = "demo-admin-token-Q7"


def events(api: client.ApiClient, ns: str, name: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items)


def event_with(api: client.ApiClient, ns: str, name: str, reason: str) -> Any:
    return wait_for(lambda: next((e for e in events(api, ns, name) if e.reason == reason), None), timeout=20,
                    what=f"Event {reason} on {name}")


def secret(api: client.ApiClient, ns: str, name: str, key: str, value: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(ns, {"metadata": {"name": name},
                                                        "data": {key: base64.b64encode(value.encode()).decode()}})


def deployment(api: client.ApiClient, ns: str, name: str) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}})


def as_user(cp: ControlPlane, user: str) -> client.ApiClient:
    from tests.fixtures.cluster import user_client

    return user_client(cp, user)


def test_alice_cannot_exfiltrate_a_secret_she_cannot_read(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                          sec_operator: SecOperator, ns: str, endpoint: Endpoint) -> None:
    cp = control_plane
    secret(kube_admin, ns, "gateway-admin", "token", TOKEN)
    bind(cp, ns, "alice", "remedy:requester", "remedy:action:httpRequest")
    alice = as_user(cp, "alice")
    assert cp.kubectl("auth", "can-i", "get", "secret/gateway-admin", "-n", ns, "--as", "alice",
                      check=False).stdout.strip() == "no"
    spec = {"action": {"httpRequest": {"url": f"{endpoint.url}/steal", "method": "POST",
                                       "bearerTokenSecretRef": {"name": "gateway-admin", "key": "token"}}}}
    created = create_rem(alice, ns, "exfil", spec)
    assert created["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"
    obj = wait_phase(kube_admin, ns, "exfil", {"Succeeded", "Failed"})
    done = condition(obj, "Completed")
    assert (obj["status"]["phase"], done["reason"]) == ("Failed", "RequesterForbidden"), obj["status"]
    assert 'may not get secrets "gateway-admin"' in done["message"] and "alice" in done["message"]
    assert obj["status"]["requestedBy"] == "alice"
    ev = event_with(kube_admin, ns, "exfil", "RequesterForbidden")
    assert ev.type == "Warning" and "gateway-admin" in ev.message
    # The witness: nothing reached the endpoint, and the token appears nowhere.
    time.sleep(1)
    assert endpoint.requests == []
    assert TOKEN not in json.dumps(obj) and TOKEN not in sec_operator.log_path.read_text()

    # Control: once alice may read that one Secret, the same request goes out (the endpoint is
    # allowlisted, so the test above failed for the right reason and the witness can count).
    cp.kubectl("-n", ns, "create", "role", "read-gateway-admin", "--verb=get", "--resource=secrets",
               "--resource-name=gateway-admin")
    cp.kubectl("-n", ns, "create", "rolebinding", "alice-read-gateway-admin", "--role=read-gateway-admin", "--user=alice")
    create_rem(alice, ns, "allowed", spec)
    obj = wait_phase(kube_admin, ns, "allowed", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert [r["auth"] for r in endpoint.requests] == [f"Bearer {TOKEN}"]


def test_alice_cannot_restart_a_deployment_she_cannot_patch(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                           sec_operator: SecOperator, ns: str) -> None:
    cp = control_plane
    deployment(kube_admin, ns, "web")
    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    alice = as_user(cp, "alice")
    apps = client.AppsV1Api(kube_admin)
    before = apps.read_namespaced_deployment("web", ns)
    create_rem(alice, ns, "restart-web", {"action": {"restartWorkload": {"target": {"name": "web"}}}})
    obj = wait_phase(kube_admin, ns, "restart-web", {"Succeeded", "Failed"})
    done = condition(obj, "Completed")
    assert (obj["status"]["phase"], done["reason"]) == ("Failed", "RequesterForbidden"), obj["status"]
    assert 'may not patch deployments.apps "web"' in done["message"]
    assert event_with(kube_admin, ns, "restart-web", "RequesterForbidden").type == "Warning"
    after = apps.read_namespaced_deployment("web", ns)
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template.metadata.annotations == before.spec.template.metadata.annotations

    # An action family alice was not granted is refused by name, separately from the target.
    create_rem(alice, ns, "scale-web", {"action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 3}}})
    obj = wait_phase(kube_admin, ns, "scale-web", {"Succeeded", "Failed"})
    assert condition(obj, "Completed")["reason"] == "RequesterForbidden"
    assert 'may not use remediationactions.remedy.dev "scaleWorkload"' in condition(obj, "Completed")["message"]
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1

    # Control: with patch on that Deployment the same restart runs (as the operator, for alice).
    cp.kubectl("-n", ns, "create", "role", "patch-web", "--verb=patch", "--resource=deployments.apps", "--resource-name=web")
    cp.kubectl("-n", ns, "create", "rolebinding", "alice-patch-web", "--role=patch-web", "--user=alice")
    create_rem(alice, ns, "restart-web-ok", {"action": {"restartWorkload": {"target": {"name": "web"}}}})
    obj = wait_phase(kube_admin, ns, "restart-web-ok", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert apps.read_namespaced_deployment("web", ns).metadata.generation > before.metadata.generation


def kubectl_remedy(cp: ControlPlane, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The kubectl plugin, unchanged, run as `user` (via the plugin mechanism of the built kubectl)."""
    assert cp.bin_dir is not None
    env = dict(os.environ, KUBECONFIG=str(cp.user_kubeconfig(user)),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), str(cp.bin_dir), os.environ.get("PATH", "")]))
    return subprocess.run([str(cp.bin_dir / "kubectl"), "remedy", *args], capture_output=True, text=True, env=env, timeout=60)


def test_four_eyes_and_forged_approvers(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                        sec_operator: SecOperator, ns: str) -> None:
    cp = control_plane
    bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:notify")
    bind(cp, ns, "bob", "remedy:approver")
    alice = as_user(cp, "alice")
    create_rem(alice, ns, "page", {"approval": {"required": True, "fourEyes": True},
                                   "action": {"notify": {"message": "checkout degraded"}}})
    wait_phase(kube_admin, ns, "page", "AwaitingApproval")

    # alice approving her own Remediation: refused by the API server (the plugin is unchanged).
    own = kubectl_remedy(cp, "alice", "approve", "page", "-n", ns)
    assert own.returncode != 0 and "fourEyes" in own.stderr and "alice requested this Remediation" in own.stderr, own
    # bob writing someone else's name: refused by the API server, naming who he really is.
    forged = cp.kubectl("-n", ns, "annotate", "remediation/page", "remedy.dev/approved-by=carol",
                        kubeconfig=cp.user_kubeconfig("bob"), check=False)
    assert forged.returncode != 0 and "you are bob, not carol" in forged.stderr, forged.stderr
    forged_spec = cp.kubectl("-n", ns, "patch", "remediation/page", "--type=merge",
                             "-p", '{"spec":{"approval":{"approvedBy":"carol"}}}', kubeconfig=cp.user_kubeconfig("bob"),
                             check=False)
    assert forged_spec.returncode != 0 and "you are bob, not carol" in forged_spec.stderr
    # Nor can anyone rewrite who asked.
    rewrite = cp.kubectl("-n", ns, "annotate", "--overwrite", "remediation/page", "remedy.dev/requested-by=bob",
                         kubeconfig=cp.user_kubeconfig("bob"), check=False)
    assert rewrite.returncode != 0 and "recorded by the API server" in rewrite.stderr
    assert get_rem(kube_admin, ns, "page")["status"]["phase"] == "AwaitingApproval"

    # bob approves as himself with the plugin: it runs, recorded with bob's groups.
    ok = kubectl_remedy(cp, "bob", "approve", "page", "-n", ns)
    assert ok.returncode == 0, ok.stderr
    obj = wait_phase(kube_admin, ns, "page", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["metadata"]["annotations"]["remedy.dev/approved-by-groups"] == "remedy-viewers,system:authenticated"
    assert [(a["user"], a["accepted"]) for a in obj["status"]["approvals"]] == [("bob", True)]
    assert obj["status"]["approvedBy"] == "bob" and obj["status"]["requestedBy"] == "alice"
    # What was approved is what runs: the spec of an approved object is frozen by the API server.
    for user in ("alice", "bob"):
        changed = cp.kubectl("-n", ns, "patch", "remediation/page", "--type=merge", "-p", '{"spec":{"reason":"other"}}',
                             kubeconfig=cp.user_kubeconfig(user), check=False)
        assert changed.returncode != 0 and "spec of an approved object cannot change" in changed.stderr, changed.stderr


def test_approvers_mode_all_and_expiry(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                       sec_operator: SecOperator, ns: str) -> None:
    cp = control_plane
    bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:notify")
    bind(cp, ns, "bob", "remedy:approver")
    alice = as_user(cp, "alice")
    create_rem(alice, ns, "two-keys", {"approval": {"approvers": [{"kind": "User", "name": "admin"},
                                                                  {"kind": "Group", "name": "remedy-viewers"}],
                                                    "mode": "all"},
                                       "action": {"notify": {"message": "needs both"}}})
    wait_phase(kube_admin, ns, "two-keys", "AwaitingApproval")
    # alice is neither listed nor in the group: recorded, does not count.
    assert kubectl_remedy(cp, "alice", "approve", "two-keys", "-n", ns).returncode == 0
    obj = wait_for(lambda: (lambda o: o if o["status"].get("approvals") else None)(get_rem(kube_admin, ns, "two-keys")),
                   what="alice's approval recorded")
    assert obj["status"]["approvals"][0]["accepted"] is False and "NotAnApprover" in obj["status"]["approvals"][0]["reason"]
    event_with(kube_admin, ns, "two-keys", "ApprovalRejected")
    assert kubectl_remedy(cp, "bob", "approve", "two-keys", "-n", ns).returncode == 0
    wait_for(lambda: len(get_rem(kube_admin, ns, "two-keys")["status"].get("approvals") or []) == 2, what="bob recorded")
    assert get_rem(kube_admin, ns, "two-keys")["status"]["phase"] == "AwaitingApproval"  # admin still missing
    cp.kubectl("-n", ns, "annotate", "--overwrite", "remediation/two-keys", "remedy.dev/approved-by=admin")
    obj = wait_phase(kube_admin, ns, "two-keys", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert {a["user"] for a in obj["status"]["approvals"] if a["accepted"]} == {"bob", "admin"}

    create_rem(alice, ns, "too-late", {"approval": {"required": True, "expiresAfter": "3s"},
                                       "action": {"notify": {"message": "nobody approves"}}})
    obj = wait_phase(kube_admin, ns, "too-late", {"Skipped", "Succeeded", "Failed"}, timeout=30)
    assert (obj["status"]["phase"], condition(obj, "Completed")["reason"]) == ("Skipped", "ApprovalExpired")


def test_destinations_outside_the_allowlist_are_refused_before_any_secret(
        control_plane: ControlPlane, kube_admin: client.ApiClient, sec_operator: SecOperator, ns: str) -> None:
    # The Secret does not exist: had it been read first, the reason would be SecretNotFound.
    for name, url in (("metadata", "http://169.254.169.254/latest/meta-data/"),
                      ("private", "http://10.255.0.1:8080/hook"),
                      ("unresolvable", "http://no-such-host.invalid/hook")):
        create_rem(kube_admin, ns, name, {"action": {"httpRequest": {
            "url": url, "bearerTokenSecretRef": {"name": "absent", "key": "token"}}}})
        obj = wait_phase(kube_admin, ns, name, {"Succeeded", "Failed"})
        done = condition(obj, "Completed")
        assert (obj["status"]["phase"], done["reason"]) == ("Failed", "DestinationNotAllowed"), obj["status"]
        assert ("egress allowlist" in done["message"] or "does not resolve" in done["message"]
                or "link-local / cloud metadata address, never allowed" in done["message"]), done["message"]
        assert event_with(kube_admin, ns, name, "DestinationNotAllowed").type == "Warning"

    # A destination the spec does not show (a webhook URL kept in a Secret, a sink's built-in
    # default URL) is checked when the request is made: refused before anything is sent.
    secret(kube_admin, ns, "hook-url", "url", "http://10.255.0.1:8080/services/T0/B0/x")
    create_rem(kube_admin, ns, "sink-from-secret", {"action": {"notify": {
        "message": "hi", "sink": {"format": "generic", "urlSecretRef": {"name": "hook-url", "key": "url"}}}}})
    obj = wait_phase(kube_admin, ns, "sink-from-secret", {"Succeeded", "Failed"})
    assert condition(obj, "Completed")["reason"] == "DestinationNotAllowed", obj["status"]
    message = condition(obj, "Completed")["message"]
    # The URL came from a Secret, so it is redacted even in the refusal.
    assert "nothing was sent" in message and "10.255.0.1" not in message and "<redacted>" in message, message


def test_policy_children_act_for_the_policy_author_only(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                        sec_operator: SecOperator, ns: str) -> None:
    cp = control_plane
    deployment(kube_admin, ns, "web")
    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    alice = as_user(cp, "alice")
    policy = client.CustomObjectsApi(alice).create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": "restart-web"},
        "spec": {"paused": True, "trigger": {"alert": {"alertname": "WebDown"}},
                 "template": {"action": {"restartWorkload": {"target": {"name": "web"}}}}}})
    assert policy["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "name": "restart-web",
             "uid": policy["metadata"]["uid"], "controller": True}

    # alice cannot smuggle another requester onto a "child": the API server stamps her own name.
    forged = client.CustomObjectsApi(alice).create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
        "metadata": {"name": "fake-child", "ownerReferences": [owner],
                     "annotations": {"remedy.dev/requested-by": "admin", "remedy.dev/requested-by-groups": "system:masters"}},
        "spec": {"action": {"restartWorkload": {"target": {"name": "web"}}}}})
    assert forged["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"
    # The operator's identity (trusted) creates children on the author's behalf; the operator
    # still checks the value against the owning policy and the author's RBAC before acting.
    child = create_rem(kube_admin, ns, "child", {"action": {"restartWorkload": {"target": {"name": "web"}}}},
                       annotations={"remedy.dev/requested-by": "alice",
                                    "remedy.dev/requested-by-groups": "remedy-users,system:authenticated"})
    assert child["metadata"]["annotations"]["remedy.dev/requested-by"] == "admin"  # not a child: stamped
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
            "metadata": {"name": "real-child", "ownerReferences": [owner],
                         "annotations": {"remedy.dev/requested-by": "alice",
                                         "remedy.dev/requested-by-groups": "remedy-users,system:authenticated"}},
            "spec": {"action": {"restartWorkload": {"target": {"name": "web"}}}}}
    made = client.CustomObjectsApi(kube_admin).create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)
    assert made["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"
    obj = wait_phase(kube_admin, ns, "real-child", {"Succeeded", "Failed"})
    assert condition(obj, "Completed")["reason"] == "RequesterForbidden"
    assert 'alice' in condition(obj, "Completed")["message"] and 'deployments.apps "web"' in condition(obj, "Completed")["message"]
    # A trusted creator claiming a different author than the policy recorded is refused too.
    body["metadata"] = {**body["metadata"], "name": "mismatched-child",
                        "annotations": {"remedy.dev/requested-by": "bob", "remedy.dev/requested-by-groups": ""}}
    client.CustomObjectsApi(kube_admin).create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)
    obj = wait_phase(kube_admin, ns, "mismatched-child", {"Succeeded", "Failed"})
    assert condition(obj, "Completed")["reason"] == "RequesterForbidden"
    assert "does not match the author of RemediationPolicy" in condition(obj, "Completed")["message"]
    for name in ("fake-child", "child"):
        wait_phase(kube_admin, ns, name, {"Succeeded", "Failed"})

    # Pausing is not authoring: bob (may patch policies) pauses and resumes with the plugin and
    # alice stays the author; editing the template makes bob the author its children act for.
    cp.kubectl("-n", ns, "create", "role", "edit-policies", "--verb=get,list,patch", "--resource=remediationpolicies.remedy.dev")
    cp.kubectl("-n", ns, "create", "rolebinding", "bob-edit-policies", "--role=edit-policies", "--user=bob")

    def author() -> str:
        pol = client.CustomObjectsApi(kube_admin).get_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies",
                                                                               "restart-web")
        return str(pol["metadata"]["annotations"]["remedy.dev/requested-by"])

    for verb in ("resume", "pause"):
        res = kubectl_remedy(cp, "bob", verb, "restart-web", "-n", ns)
        assert res.returncode == 0, res.stderr
        assert author() == "alice"
    cp.kubectl("-n", ns, "patch", "remediationpolicy/restart-web", "--type=merge",
               "-p", '{"spec":{"template":{"reason":"edited by bob"}}}', kubeconfig=cp.user_kubeconfig("bob"))
    assert author() == "bob"


@pytest.mark.parametrize("pattern", ["*", "**", "?*", " ", ""])
def test_wildcard_only_redis_patterns_are_refused_at_apply(kube_admin: client.ApiClient, sec_operator: SecOperator,
                                                           ns: str, pattern: str) -> None:
    with pytest.raises(client.ApiException) as err:
        create_rem(kube_admin, ns, "wide", {"action": {"deleteRedisKeys": {
            "connection": {"urlSecretRef": {"name": "redis", "key": "url"}}, "pattern": pattern, "allowWideMatch": True}}})
    assert err.value.status == 422
    assert "deleteRedisKeys.pattern" in err.value.body or "should be at least 1" in err.value.body
