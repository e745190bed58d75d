"""No confused deputy, unforgeable approvals: the done-when of issue 13 on the real control plane.

alice (group remedy-users) may create Remediations in her namespace and run some actions, but
may not read the Secret gateway-admin nor patch the Deployment web. The operator itself may do
both. Every test asserts on a witness the operator does not control: the receiving endpoint's
request counter, the Deployment as the API server stores it, the API server's own refusal.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.cluster import ControlPlane
from tests.fixtures.helpers import wait_for
from tests.fixtures.operator import GROUP, VERSION, condition, create_rem, get_rem, wait_phase
from tests.security.conftest import Endpoint, SecOperator, bind, kubectl_remedy

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
        assert "egress allowlist" in done["message"] or "does not resolve" in done["message"]
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


# --- issue 20: nothing a requester writes after review, and no label anyone can set, widens what the operator does


def test_remedys_own_labels_and_annotations_are_the_operators_alone(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                                    sec_operator: SecOperator, ns: str) -> None:
    """alice copies the labels of an admin policy's escalating child onto her own Remediation
    (the observed attack: the operator then escalated as the admin). The API server refuses
    every remedy.dev/ label and operator annotation from anyone but the operator."""
    cp = control_plane
    deployment(kube_admin, ns, "web")
    bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:restartWorkload")
    alice = as_user(cp, "alice")
    custom = client.CustomObjectsApi(alice)
    spec = {"action": {"restartWorkload": {"target": {"name": "web"}}}}
    forgeries = {
        "labels": ({"remedy.dev/policy": "scale-web", "remedy.dev/firing": "abc123", "remedy.dev/escalation-step": "0"}, {}),
        "target hash": ({"remedy.dev/target-hash": "f00"}, {}),
        "silence": ({}, {"remedy.dev/silence": '{"matchers": [{"name": "alertname", "value": ".*", "isRegex": true}]}'}),
        "episode and alert labels": ({}, {"remedy.dev/episode": "3", "remedy.dev/alert-labels": '{"alertname": "WebDown"}'}),
        "mode": ({}, {"remedy.dev/mode": "auto"}),
    }
    refused: dict[str, str] = {}
    for what, (labels, anns) in forgeries.items():
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
                "metadata": {"name": "forged", "labels": labels, "annotations": anns}, "spec": spec}
        with pytest.raises(client.ApiException) as err:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)
        assert err.value.status == 403, what
        message = json.loads(err.value.body)["message"]
        assert "written by the remedy operator only" in message, message
        assert all(k in message for k in [*labels, *anns]), (what, message)
        refused[what] = message
    # Added later to her own Remediation (she may patch it as an approver): refused too.
    create_rem(alice, ns, "mine", {"approval": {"required": True}, **spec})
    relabel = cp.kubectl("-n", ns, "label", "remediation/mine", "remedy.dev/policy=scale-web",
                         kubeconfig=cp.user_kubeconfig("alice"), check=False)
    assert relabel.returncode != 0 and "remedy.dev/policy" in relabel.stderr, relabel.stderr
    silence = cp.kubectl("-n", ns, "annotate", "remediation/mine", "remedy.dev/silence-id=x",
                         kubeconfig=cp.user_kubeconfig("alice"), check=False)
    assert silence.returncode != 0 and "written by the remedy operator only" in silence.stderr
    # The witness: no object carries a policy label; the operator's identity (and
    # system:masters, who can delete the policies anyway) still may write them.
    labelled = client.CustomObjectsApi(kube_admin).list_namespaced_custom_object(
        GROUP, VERSION, ns, "remediations", label_selector="remedy.dev/policy")["items"]
    assert labelled == []
    cp.kubectl("-n", ns, "label", "remediation/mine", "remedy.dev/policy=scale-web")
    # What people write is untouched: approving and resuming keep working (other tests).
    write_results("security-forged-labels.json", {"forgeries_refused": sorted(refused), "forgeries_admitted": [],
                                                  "objects_with_policy_label": len(labelled)})


def write_results(name: str, data: dict[str, Any]) -> None:
    from tests.fixtures.helpers import results_dir

    (results_dir() / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class SlowEndpoint:
    """A loopback HTTP server that holds each request until released (at most 20 s), so a
    Remediation stays Running; counts requests per path."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        self.release = threading.Event()
        ep = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                ep.paths.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ep.release.wait(20)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_the_spec_is_frozen_once_remedy_has_started(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                    sec_operator: SecOperator, ns: str) -> None:
    """The observed attack: a running httpRequest's spec edited to another URL and a Secret the
    requester may not read. The API server refuses the edit once the phase left Pending/AwaitingApproval."""
    cp = control_plane
    secret(kube_admin, ns, "mine", "token", "alice-token")
    secret(kube_admin, ns, "gateway-admin", "token", TOKEN)
    bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:httpRequest")
    cp.kubectl("-n", ns, "create", "role", "read-mine", "--verb=get", "--resource=secrets", "--resource-name=mine")
    cp.kubectl("-n", ns, "create", "rolebinding", "alice-read-mine", "--role=read-mine", "--user=alice")
    slow = SlowEndpoint()
    try:
        create_rem(as_user(cp, "alice"), ns, "call", {"action": {"httpRequest": {
            "url": f"{slow.url}/mine", "method": "POST", "bearerTokenSecretRef": {"name": "mine", "key": "token"}}}})
        wait_for(lambda: slow.paths, timeout=30, what="the request in flight")
        assert get_rem(kube_admin, ns, "call")["status"]["phase"] == "Running"
        steal = {"url": f"{slow.url}/steal", "bearerTokenSecretRef": {"name": "gateway-admin", "key": "token"}}
        edits = {"alice": json.dumps({"spec": {"action": {"httpRequest": steal}}}),
                 "admin": json.dumps({"spec": {"reason": "a note"}})}
        for user, patch in edits.items():
            res = cp.kubectl("-n", ns, "patch", "remediation/call", "--type=merge", "-p", patch,
                             kubeconfig=cp.user_kubeconfig(user), check=False)
            assert res.returncode != 0, (user, res.stdout)
            assert "frozen once remedy has started on it (phase Running)" in res.stderr, res.stderr
            assert "create a new Remediation" in res.stderr
        slow.release.set()
        obj = wait_phase(kube_admin, ns, "call", {"Succeeded", "Failed"})
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        assert obj["spec"]["action"]["httpRequest"]["url"] == f"{slow.url}/mine"
        # The witness: the receiving endpoint saw only the original request, never /steal.
        time.sleep(1)
        assert slow.paths == ["/mine"]
        # Finished: still frozen.
        done = cp.kubectl("-n", ns, "patch", "remediation/call", "--type=merge", "-p", '{"spec":{"reason":"later"}}',
                          check=False)
        assert done.returncode != 0 and "(phase Succeeded)" in done.stderr, done.stderr
    finally:
        slow.stop()


def fire(sec: SecOperator, alertname: str, fp: str) -> None:
    from tests.fixtures.helpers import alert, alert_payload, http_json

    code, body = http_json("POST", sec.webhook_url, alert_payload([alert(fp, alertname=alertname)]), token=sec.webhook_token)
    assert code == 200, body


def children(api: client.ApiClient, ns: str, policy: str) -> list[dict[str, Any]]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, ns, "remediations", label_selector=f"remedy.dev/policy={policy}")["items"]
    return sorted(items, key=lambda o: o["metadata"]["creationTimestamp"] + o["metadata"]["name"])


def test_a_policy_edit_makes_the_editor_its_author(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                   sec_operator: SecOperator, ns: str) -> None:
    """Issue 20, policy edits: whoever changes a policy's trigger, template or escalation becomes
    the author its children act for. The admin's policy restarts web; after alice (who may edit
    policies but not patch web) edits its template, its next child runs with her rights and ends
    RequesterForbidden instead of borrowing the admin's."""
    cp = control_plane
    deployment(kube_admin, ns, "web")
    alertname = f"WebDown{ns.replace('-', '')}"
    client.CustomObjectsApi(kube_admin).create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": "restart-web"},
        "spec": {"trigger": {"alert": {"alertname": alertname}}, "guards": {"cooldown": "0s"},
                 "template": {"action": {"restartWorkload": {"target": {"name": "web"}}}}}})
    apps = client.AppsV1Api(kube_admin)
    before = apps.read_namespaced_deployment("web", ns)

    def ready() -> bool:
        pol = client.CustomObjectsApi(kube_admin).get_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", "restart-web")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (pol.get("status") or {}).get("conditions") or [])

    wait_for(ready, timeout=30, what="the policy Ready (indexed by the operator)")
    fire(sec_operator, alertname, "first")
    first = wait_for(lambda: children(kube_admin, ns, "restart-web"), timeout=30, what="the admin's child")[0]
    obj = wait_phase(kube_admin, ns, first["metadata"]["name"], {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["requestedBy"] == "admin", obj["status"]
    restarted = apps.read_namespaced_deployment("web", ns)
    assert restarted.metadata.generation > before.metadata.generation

    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    cp.kubectl("-n", ns, "create", "role", "edit-policies", "--verb=get,list,patch", "--resource=remediationpolicies.remedy.dev")
    cp.kubectl("-n", ns, "create", "rolebinding", "alice-edit-policies", "--role=edit-policies", "--user=alice")
    cp.kubectl("-n", ns, "patch", "remediationpolicy/restart-web", "--type=merge",
               "-p", '{"spec":{"template":{"reason":"edited by alice"}}}', kubeconfig=cp.user_kubeconfig("alice"))
    policy = client.CustomObjectsApi(kube_admin).get_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", "restart-web")
    assert policy["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"

    fire(sec_operator, alertname, "second")
    second = wait_for(lambda: [c for c in children(kube_admin, ns, "restart-web") if c["metadata"]["name"] != first["metadata"]["name"]],
                      timeout=30, what="the child after alice's edit")[0]
    assert second["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"
    obj = wait_phase(kube_admin, ns, second["metadata"]["name"], {"Succeeded", "Failed"})
    done = condition(obj, "Completed")
    assert (obj["status"]["phase"], done["reason"]) == ("Failed", "RequesterForbidden"), obj["status"]
    assert "alice" in done["message"] and 'deployments.apps "web"' in done["message"]
    after = apps.read_namespaced_deployment("web", ns)
    assert after.metadata.generation == restarted.metadata.generation
    assert after.spec.template.metadata.annotations == restarted.spec.template.metadata.annotations


def test_an_approval_through_the_spec_freezes_it_too(control_plane: ControlPlane, kube_admin: client.ApiClient) -> None:
    """The observed case: bob approves with spec.approval.approvedBy, alice then edits what runs
    before the operator gets to it. The API server refuses the edit once an approval is recorded
    either way (annotation or spec). A namespace no operator watches keeps the object before
    any phase, so only the approval rule can refuse."""
    cp = control_plane
    ns = f"s20a-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube_admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:notify")
        bind(cp, ns, "bob", "remedy:approver")
        create_rem(as_user(cp, "alice"), ns, "page", {"approval": {"required": True},
                                                      "action": {"notify": {"message": "checkout degraded"}}})

        def edit(user: str, patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
            return cp.kubectl("-n", ns, "patch", "remediation/page", "--type=merge", "-p", json.dumps(patch),
                              kubeconfig=cp.user_kubeconfig(user), check=False)

        # Not approved yet: alice may still change what she asks for.
        assert edit("alice", {"spec": {"action": {"notify": {"message": "checkout degraded (v2)"}}}}).returncode == 0
        assert edit("bob", {"spec": {"approval": {"approvedBy": "bob"}}}).returncode == 0
        late = edit("alice", {"spec": {"action": {"notify": {"message": "something bob never saw"}}}})
        assert late.returncode != 0 and "the spec of an approved object cannot change" in late.stderr, late.stderr
        stored = get_rem(kube_admin, ns, "page")
        assert stored["spec"]["action"]["notify"]["message"] == "checkout degraded (v2)"
        assert "phase" not in (stored.get("status") or {}), "no operator touched it: the refusal is admission's"
    finally:
        client.CoreV1Api(kube_admin).delete_namespace(ns)
