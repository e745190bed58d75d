"""remedy on a control plane without MutatingAdmissionPolicy (issue 20), and the operator's own
check that its identity checks are in force.

Kubernetes 1.34/1.35 do not serve MutatingAdmissionPolicy by default. This module starts its
own control plane with the feature gate off and admissionregistration.k8s.io/v1beta1 not
served, applies deploy/admission/validating alone, and runs the operator against it, with only
the shipped ClusterRoles (deploy/rbac-users) for people:

- `kubectl remedy create/apply` writes the requester, so a Remediation runs; a forged requester,
  a plain `kubectl apply` without one (with a message saying what to do) and a spec change that
  keeps someone else's requester are refused by the API server; policy edits need the editor's
  stamp; approvals with `kubectl remedy approve` carry the approver's groups.
- with the policies deleted the operator runs nothing: the forged Remediation waits with
  AdmissionChecks=False, and after the policies return it ends Failed instead of running.
Witnesses: the API server's refusals, the Deployment as the API server stores it, and the audit
log's count of the operator's writes to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from remedy_devenv import admission
from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import OPERATOR_USER, ControlPlane
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.testkit import free_port
from tests.fixtures.cluster import api_client_for, start_control_plane
from tests.fixtures.helpers import make_deployment, results_dir, wait_for
from tests.fixtures.operator import GROUP, VERSION, condition, get_rem, install_remedy_api, wait_phase
from tests.security.conftest import bind, kubectl_remedy

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PREFIX = "vo"
RESULTS: dict[str, Any] = {}


class Stack:
    def __init__(self, cp: ControlPlane, api: client.ApiClient, op: OperatorProcess, metrics: str) -> None:
        self.cp, self.api, self.op, self.metrics = cp, api, op, metrics

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics, timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or
                   line.startswith(name + "{"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cp = start_control_plane(tmp_path_factory, "validating-only", mutating_admission=False)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cp.admin_kubeconfig)
    op: OperatorProcess | None = None
    try:
        install_remedy_api(cp, mode="validating")
        cp.kubectl("apply", "-f", str(REPO / "deploy/rbac-users/roles.yaml"))
        metrics = free_port()
        op = OperatorProcess(cp.user_kubeconfig(OPERATOR_USER), tmp_path_factory.mktemp("vo-operator") / "operator.log",
                             env={"REMEDY_METRICS_PORT": str(metrics), "REMEDY_WEBHOOK_PORT": "0",
                                  "REMEDY_HEARTBEAT_SECONDS": "1", "REMEDY_ADMISSION_PROBE_SECONDS": "2"},
                             args=["-n", f"{PREFIX}-*"]).start()
        op.wait_ready(timeout=60)
        api = api_client_for(cp.admin_kubeconfig)
        yield Stack(cp, api, op, f"http://127.0.0.1:{metrics}/metrics")
    finally:
        if op is not None:
            op.stop()
        cp.stop()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        # A partial run (-k) updates only the figures it measured.
        path = results_dir() / "security-validating-only.json"
        merged = {**(json.loads(path.read_text()) if path.exists() else {}), **RESULTS}
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def ns(stack: Stack) -> Iterator[str]:
    name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(stack.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    client.CoreV1Api(stack.api).delete_namespace(name)


def grant(cp: ControlPlane, ns: str, user: str, verbs: str, resource: str, name: str | None = None) -> None:
    role = f"{user}-{verbs.replace(',', '-')}-{resource.split('.')[0]}"[:63]
    cp.kubectl("-n", ns, "create", "role", role, f"--verb={verbs}", f"--resource={resource}",
               *([f"--resource-name={name}"] if name else []))
    cp.kubectl("-n", ns, "create", "rolebinding", role, f"--role={role}", f"--user={user}")


def kubectl_as(cp: ControlPlane, user: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(*args, kubeconfig=cp.user_kubeconfig(user), check=False, input=stdin)


def manifest(kind: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> str:
    return yaml.safe_dump({"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                           "metadata": {"name": name, **({"annotations": annotations} if annotations else {})},
                           "spec": spec})


def stored_deployment(api: client.ApiClient, ns: str, name: str) -> tuple[int, dict[str, str]]:
    d = client.AppsV1Api(api).read_namespaced_deployment(name, ns)
    return d.metadata.generation, dict(d.spec.template.metadata.annotations or {})


RESTART = {"action": {"restartWorkload": {"target": {"name": "web"}}}}


def test_the_control_plane_serves_no_mutating_admission_policy(stack: Stack, tmp_path: Path) -> None:
    cp = stack.cp
    served = cp.kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name").stdout.split()
    assert "validatingadmissionpolicies.admissionregistration.k8s.io" in served
    assert not [r for r in served if r.startswith("mutatingadmissionpolicies")], served
    res = cp.kubectl("apply", "-f", str(REPO / "deploy/admission/mutating/policies.yaml"), check=False)
    assert res.returncode != 0 and "MutatingAdmissionPolicy" in res.stderr
    # The kustomize component drops the mutating policy from deploy/base and keeps the checks.
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "deploy/base", tmp_path)],
        "components": [os.path.relpath(REPO / "deploy/admission/validating-only", tmp_path)]}))
    kinds = [d["kind"] for d in yaml.safe_load_all(cp.kubectl("kustomize", str(tmp_path)).stdout) if d]
    assert kinds.count("ValidatingAdmissionPolicy") == 2 and "MutatingAdmissionPolicy" not in kinds
    assert "MutatingAdmissionPolicyBinding" not in kinds and "Deployment" in kinds
    # The chart: validatingOnly applies here (server-side dry run), the default mode does not.
    from tests.fixtures.chart import render

    for mode, applies in (("validatingOnly", True), ("mutating", False)):
        policies = [d for d in render(f"admission.mode={mode}") if "AdmissionPolicy" in d["kind"]]
        res = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(policies), check=False)
        assert (res.returncode == 0) == applies, (mode, res.stderr)
    RESULTS["mutating_admission_policy_served"] = False


def test_kubectl_remedy_records_the_requester_and_forgeries_are_refused(stack: Stack, ns: str) -> None:
    cp, api = stack.cp, stack.api
    make_deployment(api, ns, "web", replicas=1)
    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    grant(cp, ns, "alice", "patch", "deployments.apps", "web")
    before = stored_deployment(api, ns, "web")
    audit = AuditCounter(cp.audit_log, OPERATOR_USER, ns)

    # Plain kubectl apply, no annotation: refused, and the message says what to do instead.
    plain = kubectl_as(cp, "alice", "-n", ns, "apply", "-f", "-", stdin=manifest("Remediation", "plain", RESTART))
    assert plain.returncode != 0, plain.stdout
    assert "kubectl remedy apply -f FILE" in plain.stderr and "remedy.dev/requested-by=alice" in plain.stderr, plain.stderr
    assert "remedy.dev/requested-by-groups=remedy-users,system:authenticated" in plain.stderr, plain.stderr
    # Someone else's name: refused, naming who she is.
    forged = kubectl_as(cp, "alice", "-n", ns, "apply", "-f", "-", stdin=manifest("Remediation", "forged", RESTART, {
        "remedy.dev/requested-by": "admin", "remedy.dev/requested-by-groups": "system:masters,system:authenticated"}))
    assert forged.returncode != 0 and "they must be alice (your own identity)" in forged.stderr, forged.stderr
    # Her own groups left out: refused too (the groups are part of what the operator checks).
    partial = kubectl_as(cp, "alice", "-n", ns, "create", "-f", "-", stdin=manifest("Remediation", "partial", RESTART, {
        "remedy.dev/requested-by": "alice"}))
    assert partial.returncode != 0 and "recorded by the API server" in partial.stderr, partial.stderr
    assert client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, "remediations")["items"] == []

    # apply (create if absent) with nothing but remedy:requester's create.
    made = kubectl_remedy(cp, "alice", "apply", "-n", ns, "-f", "-", stdin=manifest("Remediation", "restart-web", RESTART))
    assert made.returncode == 0, made.stderr
    assert "remediation.remedy.dev/restart-web created (requested by alice)" in made.stdout
    obj = wait_phase(api, ns, "restart-web", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["metadata"]["annotations"]["remedy.dev/requested-by-groups"] == "remedy-users,system:authenticated"
    assert obj["status"]["requestedBy"] == "alice"
    after = stored_deployment(api, ns, "web")
    assert after[0] > before[0] and after[1] != before[1], "the restart reached the stored Deployment"
    audit.settle()
    assert audit.count("deployments", "web") >= 1
    RESULTS["kubectl_remedy_apply_runs"] = obj["status"]["phase"]
    RESULTS["plain_apply_refused_naming_kubectl_remedy_apply"] = True  # asserted above


def test_a_spec_change_needs_the_changers_own_stamp(stack: Stack, ns: str) -> None:
    cp, api = stack.cp, stack.api
    bind(cp, ns, "alice", "remedy:requester", "remedy:approver", "remedy:action:notify")
    bind(cp, ns, "bob", "remedy:requester", "remedy:approver", "remedy:action:notify")
    spec = {"approval": {"required": True}, "action": {"notify": {"message": "checkout degraded"}}}
    assert kubectl_remedy(cp, "alice", "create", "-n", ns, "-f", "-", stdin=manifest("Remediation", "page", spec)).returncode == 0
    wait_phase(api, ns, "page", "AwaitingApproval")

    # bob changes the spec and keeps alice's requester: accepted today with the mutating policy
    # gone (the issue); refused now, since the changed spec would run with alice's rights.
    sneaky = kubectl_as(cp, "bob", "-n", ns, "patch", "remediation/page", "--type=merge",
                        "-p", '{"spec":{"action":{"notify":{"message":"something else"}}}}')
    assert sneaky.returncode != 0 and "they must be bob (your own identity)" in sneaky.stderr, sneaky.stderr
    stored = get_rem(api, ns, "page")
    assert stored["spec"]["action"]["notify"]["message"] == "checkout degraded"
    assert stored["metadata"]["annotations"]["remedy.dev/requested-by"] == "alice"

    # With kubectl remedy apply the change is his, recorded as such.
    changed = {**spec, "action": {"notify": {"message": "checkout degraded, bob's wording"}}}
    res = kubectl_remedy(cp, "bob", "apply", "-n", ns, "-f", "-", stdin=manifest("Remediation", "page", changed))
    assert res.returncode == 0 and "configured (requested by bob)" in res.stdout, res.stdout + res.stderr
    # Re-applying the same file changes no spec and keeps the recorded requester.
    again = kubectl_remedy(cp, "alice", "apply", "-n", ns, "-f", "-", stdin=manifest("Remediation", "page", changed))
    assert again.returncode == 0 and "unchanged (requested by bob)" in again.stdout, again.stdout + again.stderr

    # Approving needs the approver's groups too: kubectl remedy approve writes them.
    approve = kubectl_remedy(cp, "alice", "approve", "page", "-n", ns)
    assert approve.returncode == 0, approve.stderr
    obj = wait_phase(api, ns, "page", {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["metadata"]["annotations"]["remedy.dev/requested-by"] == "bob"
    assert obj["metadata"]["annotations"]["remedy.dev/approved-by-groups"] == "remedy-users,system:authenticated"
    RESULTS["spec_change_keeping_requester_refused"] = True


def test_a_policy_edit_makes_the_editor_its_author(stack: Stack, ns: str) -> None:
    cp, api = stack.cp, stack.api
    spec = {"paused": True, "trigger": {"alert": {"alertname": "VoWebDown"}}, "template": RESTART}
    assert kubectl_remedy(cp, "admin", "apply", "-n", ns, "-f", "-",
                          stdin=manifest("RemediationPolicy", "restart-web", spec)).returncode == 0
    bind(cp, ns, "bob", "remedy:requester")
    grant(cp, ns, "bob", "get,list,patch", "remediationpolicies.remedy.dev")

    def author() -> str:
        pol = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", "restart-web")
        return str(pol["metadata"]["annotations"]["remedy.dev/requested-by"])

    assert author() == "admin"
    edit = kubectl_as(cp, "bob", "-n", ns, "patch", "remediationpolicy/restart-web", "--type=merge",
                      "-p", '{"spec":{"template":{"reason":"edited by bob"}}}')
    assert edit.returncode != 0 and "they must be bob" in edit.stderr, edit.stderr
    assert author() == "admin"
    assert kubectl_remedy(cp, "bob", "resume", "restart-web", "-n", ns).returncode == 0  # pausing is not authoring
    assert author() == "admin"
    edited = {**spec, "paused": False, "template": {**RESTART, "reason": "edited by bob"}}
    res = kubectl_remedy(cp, "bob", "apply", "-n", ns, "-f", "-", stdin=manifest("RemediationPolicy", "restart-web", edited))
    assert res.returncode == 0, res.stderr
    assert author() == "bob"


def test_without_the_checks_the_operator_runs_nothing(stack: Stack, ns: str) -> None:
    """Policies deleted: a forged Remediation is admitted by the API server but not run; once
    the policies are back it ends Failed (its claims were never checked); new ones run again."""
    cp, api = stack.cp, stack.api
    make_deployment(api, ns, "web", replicas=1)
    bind(cp, ns, "alice", "remedy:requester", "remedy:action:restartWorkload")
    before = stored_deployment(api, ns, "web")
    audit = AuditCounter(cp.audit_log, OPERATOR_USER, ns)
    assert stack.metric("remedy_admission_checks_in_force") == 1
    admission.uninstall(cp)
    try:
        # The probe (every 2 s here) notices before anything is created: a Remediation admitted
        # in between would be run on its unchecked claims. That gap is the residual risk the
        # probe interval bounds (docs/security.md).
        wait_for(lambda: stack.metric("remedy_admission_checks_in_force") == 0, timeout=20, what="probe sees no checks")
        forged = kubectl_as(cp, "alice", "-n", ns, "create", "-f", "-", stdin=manifest("Remediation", "forged", RESTART, {
            "remedy.dev/requested-by": "admin", "remedy.dev/requested-by-groups": "system:masters,system:authenticated"}))
        assert forged.returncode == 0, "without the policies the API server admits anything: " + forged.stderr
        held = wait_for(lambda: next((c for c in (get_rem(api, ns, "forged").get("status") or {}).get("conditions") or []
                                      if c["type"] == "AdmissionChecks" and c["status"] == "False"), None),
                        timeout=30, what="AdmissionChecks=False on the forged Remediation")
        assert held["reason"] == "AdmissionNotInForce" and "was admitted" in held["message"], held
        # Events are posted after the status write (the recorder does not block the pass):
        # wait for it rather than read once.
        def held_events() -> list[str]:
            events = client.CoreV1Api(api).list_namespaced_event(ns, field_selector="involvedObject.name=forged").items
            return [e.type for e in events if e.reason == "AdmissionNotInForce"]

        wait_for(held_events, timeout=30, what="the AdmissionNotInForce Event")
        assert held_events() == ["Warning"]
        assert stack.metric("remedy_admission_checks_in_force") == 0
        assert stack.metric("remedy_admission_held_total") >= 1
        assert "admission checks NOT in force" in stack.op.log_path.read_text()
        # Nothing was done: several probe rounds later the phase never moved and the stored
        # Deployment is as it was, and the API server saw no write from the operator to it.
        time.sleep(5)
        assert (get_rem(api, ns, "forged").get("status") or {}).get("phase") in (None, "Pending")
    finally:
        admission.install(cp, mode="validating")
    obj = wait_phase(api, ns, "forged", {"Succeeded", "Failed"}, timeout=30)
    done = condition(obj, "Completed")
    assert (obj["status"]["phase"], done["reason"]) == ("Failed", "AdmissionNotInForce"), obj["status"]
    assert "create a new Remediation" in done["message"]
    audit.settle()
    assert stored_deployment(api, ns, "web") == before
    assert audit.count("deployments", "web", effective_only=False) == 0
    assert stack.metric("remedy_admission_checks_in_force") == 1

    # Control: with the checks back, a Remediation alice really asked for runs (and is refused
    # for her own lack of rights, not for the checks).
    assert kubectl_remedy(cp, "alice", "create", "-n", ns, "-f", "-",
                          stdin=manifest("Remediation", "honest", RESTART)).returncode == 0
    obj = wait_phase(api, ns, "honest", {"Succeeded", "Failed"})
    assert condition(obj, "Completed")["reason"] == "RequesterForbidden", obj["status"]
    assert stored_deployment(api, ns, "web") == before
    RESULTS["without_checks"] = {"forged_held_reason": held["reason"], "forged_final_reason": done["reason"],
                                 "operator_writes_to_deployment": audit.count("deployments", "web", effective_only=False)}
