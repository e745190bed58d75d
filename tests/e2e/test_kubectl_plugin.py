"""`kubectl remedy` against the real control plane with the operator running.

The plugin runs as a subprocess (the installed console script) so exit codes and stderr are
the ones a person sees; one test goes through the built kubectl to prove plugin discovery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from remedy_devenv.cluster import ControlPlane, locate_binaries
from remedy_devenv.operator import OperatorProcess
from tests.fixtures.helpers import make_deployment, wait_for
from tests.fixtures.operator import GROUP, VERSION, condition, create_rem, get_rem, wait_phase

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PLUGIN = Path(sys.executable).parent / "kubectl-remedy"
if not PLUGIN.exists():
    PLUGIN = REPO / ".venv" / "bin" / "kubectl-remedy"


def remedy(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cp.admin_kubeconfig)}
    return subprocess.run([str(PLUGIN), *args], capture_output=True, text=True, timeout=60, env=env)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res.stdout


def create_policy(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name},
            "spec": {"trigger": {"alert": {"alertname": f"NeverFires{uuid.uuid4().hex[:6]}"}},
                     "template": {"action": {"restartWorkload": {"target": {"name": "web"}}}}}}
    obj = client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", body)
    assert isinstance(obj, dict)
    return obj


def get_policy(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return get_rem(api, ns, name, plural="remediationpolicies")


def test_list_table_json_and_all_namespaces(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                            operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=2)
    create_rem(kube_admin, namespace, "dry-scale", {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 5}}})
    wait_phase(kube_admin, namespace, "dry-scale", "Succeeded")

    header, row = ok(remedy(control_plane, "list", "-n", namespace)).splitlines()[:2]
    assert header.split() == ["NAME", "ACTION", "TARGET", "PHASE", "REASON", "AGE"]
    assert row.split()[:5] == ["dry-scale", "scaleWorkload", "Deployment/web", "Succeeded", "DryRun"]

    doc = json.loads(ok(remedy(control_plane, "list", "-n", namespace, "-o", "json")))
    assert doc["kind"] == "List"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["dry-scale"]
    assert doc["items"][0]["status"]["plan"]["to"] == 5

    doc = yaml.safe_load(ok(remedy(control_plane, "list", "-n", namespace, "-o", "yaml")))
    assert doc["items"][0]["status"]["phase"] == "Succeeded"

    wide = ok(remedy(control_plane, "list", "-n", namespace, "-o", "wide")).splitlines()[0].split()
    assert wide[:6] == ["NAME", "ACTION", "TARGET", "PHASE", "REASON", "AGE"] and "APPROVED-BY" in wide

    out = ok(remedy(control_plane, "list", "-A"))
    assert out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [namespace, "dry-scale"] for line in out.splitlines()[1:])
    all_json = json.loads(ok(remedy(control_plane, "-A", "list", "-o", "json")))  # global flags before the command too
    assert (namespace, "dry-scale") in {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in all_json["items"]}

    bad = remedy(control_plane, "list", "-n", namespace, "-o", "xml")
    assert bad.returncode == 1 and "output format" in bad.stderr


def test_kubectl_discovers_the_plugin(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                      operator: OperatorProcess, namespace: str) -> None:
    create_rem(kube_admin, namespace, "ghost", {"action": {"restartWorkload": {"target": {"name": "nope"}}}})
    wait_phase(kube_admin, namespace, "ghost", "Failed")
    kubectl = locate_binaries() / "kubectl"
    env = {**os.environ, "KUBECONFIG": str(control_plane.admin_kubeconfig),
           "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run([str(kubectl), "remedy", "list", "-A"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    assert rows[0][:2] == ["NAMESPACE", "NAME"]
    assert [namespace, "ghost", "restartWorkload", "Deployment/nope", "Failed", "TargetNotFound"] in [r[:6] for r in rows]
    plugins = subprocess.run([str(kubectl), "plugin", "list"], capture_output=True, text=True, timeout=60, env=env)
    assert "kubectl-remedy" in plugins.stdout
    missing = subprocess.run([str(kubectl), "remedy", "describe", "-n", namespace, "nope"], capture_output=True,
                             text=True, timeout=60, env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_approve_describe_and_report(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                     operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=1)
    create_rem(kube_admin, namespace, "needs-ok", {"approval": {"required": True}, "reason": "INC-42 checkout latency",
                                                   "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 3}}})
    wait_phase(kube_admin, namespace, "needs-ok", "AwaitingApproval")
    assert "AwaitingApproval" in ok(remedy(control_plane, "list", "-n", namespace))

    out = ok(remedy(control_plane, "approve", "needs-ok", "-n", namespace, "--by", "admin"))
    assert "approved by admin" in out
    obj = wait_phase(kube_admin, namespace, "needs-ok", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["approvedBy"] == "admin"
    assert obj["metadata"]["annotations"]["remedy.dev/approved-by"] == "admin"
    assert "admin" in condition(obj, "Approved")["message"]
    assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web", namespace).spec.replicas == 3

    again = remedy(control_plane, "approve", "needs-ok", "-n", namespace, "--by", "mallory")
    assert again.returncode == 1
    assert "Succeeded" in again.stderr and "not AwaitingApproval" in again.stderr and again.stdout == ""
    assert get_rem(kube_admin, namespace, "needs-ok")["metadata"]["annotations"]["remedy.dev/approved-by"] == "admin"

    # Events are posted asynchronously by kopf: wait until describe's timeline shows them.
    described = wait_for(lambda: (lambda o: o if "Started" in o and "Accepted" in o else None)(
        ok(remedy(control_plane, "describe", "needs-ok", "-n", namespace))), what="events in describe")
    assert "Phase:              Succeeded" in described
    assert "Approved By:        admin" in described
    for section in ("Plan:", "Result:", "Evidence:", "Conditions:", "Timeline:"):
        assert f"\n{section}\n" in described
    plan = described.split("\nPlan:\n", 1)[1].split("\nResult:\n", 1)[0]
    assert "from: 1" in plan and "to: 3" in plan
    timeline = described.split("\nTimeline:\n", 1)[1].splitlines()
    assert timeline[0].split() == ["TIME", "SOURCE", "WHAT"]
    whats = timeline[1:]
    assert "Remediation created" in whats[0]
    idx = {key: next(i for i, line in enumerate(whats) if key in line)
           for key in ("Remediation created", "AwaitingApproval", "execution started", "completed: Succeeded")}
    assert idx["Remediation created"] <= idx["AwaitingApproval"] <= idx["execution started"] <= idx["completed: Succeeded"]
    times = [" ".join(line.split()[:2]) for line in whats]
    assert times == sorted(times), "timeline is not sorted by time"

    as_json = json.loads(ok(remedy(control_plane, "describe", "needs-ok", "-n", namespace, "-o", "json")))
    assert as_json["object"]["metadata"]["name"] == "needs-ok" and as_json["timeline"]

    report = ok(remedy(control_plane, "report", "needs-ok", "-n", namespace))
    assert report.startswith(f"# Incident report: {namespace}/needs-ok\n")
    for section in ("## Summary", "## Timeline", "## Plan", "## Evidence", "## Outcome", "## Root cause", "## Action items"):
        assert f"\n{section}\n" in report, section
    assert "| Approved by | admin |" in report
    assert "| Incident / reason | INC-42 checkout latency |" in report
    assert "**Succeeded**" in report
    tl = report.split("\n## Timeline\n", 1)[1].split("\n## Plan\n", 1)[0]
    assert "| Time | Source | What happened |" in tl and "Remediation created" in tl and "event" in tl
    assert "```yaml\n" in report.split("\n## Plan\n", 1)[1]


def test_approve_defaults_to_kubeconfig_user(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                             operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=1)
    create_rem(kube_admin, namespace, "default-approver", {"approval": {"required": True}, "dryRun": True,
                                                           "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}})
    wait_phase(kube_admin, namespace, "default-approver", "AwaitingApproval")
    ok(remedy(control_plane, "approve", "default-approver", "--namespace", namespace))
    kubeconfig = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    current = next(c for c in kubeconfig["contexts"] if c["name"] == kubeconfig["current-context"])
    user = current["context"]["user"]
    obj = wait_phase(kube_admin, namespace, "default-approver", {"Succeeded", "Failed"})
    assert obj["metadata"]["annotations"]["remedy.dev/approved-by"] == user
    # A dry run records the approver in the Approved condition (status.approvedBy is set with the intent record).
    # ... with the digest of the spec the approval is bound to (issue 20).
    digest = obj["metadata"]["annotations"]["remedy.dev/approved-spec-digest"]
    assert condition(obj, "Approved")["message"] == f"approved by {user} (spec {digest[:19]})"


def test_pause_and_resume_patch_policy_spec(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                            operator: OperatorProcess, namespace: str) -> None:
    create_policy(kube_admin, namespace, "restart-web")
    gen = get_policy(kube_admin, namespace, "restart-web")["metadata"]["generation"]

    out = ok(remedy(control_plane, "pause", "restart-web", "-n", namespace))
    assert "restart-web paused" in out
    pol = get_policy(kube_admin, namespace, "restart-web")
    assert pol["spec"]["paused"] is True and pol["metadata"]["generation"] > gen

    out = ok(remedy(control_plane, "resume", "restart-web", "-n", namespace))
    assert "restart-web resumed" in out
    pol = get_policy(kube_admin, namespace, "restart-web")
    assert pol["spec"]["paused"] is False
    first = pol["metadata"]["annotations"]["remedy.dev/resumed-at"]
    assert first.endswith("Z")

    # Resuming an already unpaused policy (a self-pause) still changes the object.
    time.sleep(1.1)
    ok(remedy(control_plane, "resume", "restart-web", "-n", namespace))
    assert get_policy(kube_admin, namespace, "restart-web")["metadata"]["annotations"]["remedy.dev/resumed-at"] > first

    missing = remedy(control_plane, "pause", "no-such-policy", "-n", namespace)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_history_lists_children_by_label(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                         operator: OperatorProcess, namespace: str) -> None:
    make_deployment(kube_admin, namespace, "web", replicas=1)
    create_policy(kube_admin, namespace, "web-policy")
    custom = client.CustomObjectsApi(kube_admin)
    uid = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "remediationpolicies", "web-policy")["metadata"]["uid"]

    def child(name: str, spec: dict[str, Any], policy: str | None, owned: bool = True) -> None:
        # A child as the operator makes it: label, controller reference, the policy author as
        # requester (admin created both, so the API server stamps the same name on each).
        labels = {"remedy.dev/policy": policy} if policy else {}
        owner = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "name": "web-policy", "uid": uid,
                  "controller": True}] if policy == "web-policy" and owned else []
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediations", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
            "metadata": {"name": name, "labels": labels, "ownerReferences": owner}, "spec": spec})

    # Names sort opposite to creation order, so the output proves sorting by creation time.
    child("zz-first", {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}}, "web-policy")
    time.sleep(1.1)
    child("aa-second", {"action": {"restartWorkload": {"target": {"name": "missing"}}}}, "web-policy")
    child("not-a-child", {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}}, None)
    child("other-policy", {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}}, "other")
    child("label-only", {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}},
          "web-policy", owned=False)
    wait_phase(kube_admin, namespace, "zz-first", "Succeeded")
    wait_phase(kube_admin, namespace, "aa-second", "Failed")

    out = ok(remedy(control_plane, "history", "web-policy", "-n", namespace))
    assert f"Policy:     {namespace}/web-policy" in out
    assert "Counters:" in out and "Remediations (2):" in out
    assert "not-a-child" not in out and "other-policy" not in out
    # A label alone does not make a child (issue 20): listed apart, not in the table.
    assert "Labelled with this policy but not its children, not counted (1): label-only" in out
    table = out.split("Remediations (2):\n", 1)[1].splitlines()
    assert table[0].split() == ["CREATED", "NAME", "ACTION", "TARGET", "PHASE", "REASON", "DURATION", "MODE", "OUTCOME"]
    assert [r.split()[2] for r in table[1:3]] == ["zz-first", "aa-second"]
    assert table[1].split()[5:7] == ["Succeeded", "DryRun"]
    assert table[2].split()[5:7] == ["Failed", "TargetNotFound"]

    doc = json.loads(ok(remedy(control_plane, "history", "web-policy", "-n", namespace, "-o", "json")))
    assert [r["name"] for r in doc["remediations"]] == ["zz-first", "aa-second"]
    assert [r["phase"] for r in doc["remediations"]] == ["Succeeded", "Failed"]
    assert doc["remediations"][1]["reason"] == "TargetNotFound"
    assert doc["notChildren"] == ["label-only"]
    assert isinstance(doc["counters"], dict)


@pytest.mark.parametrize("command", ["describe", "approve", "report", "history", "resume"])
def test_unknown_name_exits_1(control_plane: ControlPlane, crds: None, namespace: str, command: str) -> None:
    res = remedy(control_plane, command, "does-not-exist", "-n", namespace)
    assert res.returncode == 1
    assert "not found" in res.stderr and "does-not-exist" in res.stderr
    assert res.stdout == ""


def test_bad_kubeconfig_exits_1(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing")}
    res = subprocess.run([str(PLUGIN), "list"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1 and res.stderr.startswith("error:")
