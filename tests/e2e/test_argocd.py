"""GitOps for real (issue 22): a real Argo CD (v3.2.11, built from the module proxy) syncs
remedy objects and workloads from a local git repository into the test control plane, and
remedy's operator acts on them.

Witnesses the operator does not control: Argo CD's own Application status (sync status,
operation state, per-resource health computed by remedy's Lua in Argo CD's Lua runtime) and
the API server's audit log (remedy_devenv.audit) counting the operator's and Argo CD's writes.

- remedy objects from git: health Suspended -> Healthy / Degraded as Argo CD computes it; a
  one-shot Remediation acts once whatever Argo CD does afterwards (re-sync, hard refresh,
  Replace=true, prune and re-create);
- identity: a Remediation Argo CD applies runs with the rights of the GitOps requester the
  admin mapped its Application to, never Argo CD's; unmapped Applications get nothing run;
  approvals committed to git do not count;
- self-heal: remedy forecasts the revert and refuses; told to act anyway it is reverted and
  ends Failed/RevertedByGitOps; with the documented ignoreDifferences it succeeds and Argo CD
  leaves the change alone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client

from remedy.api.digest import spec_digest
from remedy_devenv.argocd import CONTROLLER_USER, ArgoCD, GitRepo, app_health, app_sync, application, resource_health
from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import OPERATOR_USER, ControlPlane
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.testkit import alert, alert_payload, free_port, http_json, wait_for
from tests.fixtures.helpers import results_dir
from tests.fixtures.operator import condition, get_rem, make_namespace, wait_phase

pytestmark = pytest.mark.cluster
REQUESTER = "gitops-requester"  # an ordinary identity; RBAC decides what it may do
APP_REMEDIES, APP_WEB, APP_UNMAPPED = "t22-remedies", "t22-web", "t22-unmapped"
# What each case observed, written to REMEDY_RESULTS_DIR/argocd.json when the module ends;
# docs/argocd.md's table is generated from the committed copy (bench/render.py).
OBSERVED: dict[str, dict[str, dict[str, Any]]] = {}
WEBHOOK_TOKEN = "argo-webhook-token"
REQUESTERS = f"argocd/{APP_REMEDIES}={REQUESTER},argocd/{APP_WEB}={REQUESTER}"


def record(section: str, case: str, **figures: Any) -> None:
    OBSERVED.setdefault(section, {})[case] = figures


@dataclass
class Env:
    cp: ControlPlane
    api: client.ApiClient
    argo: ArgoCD
    op: OperatorProcess
    ns: str
    repo: GitRepo
    webhook: str

    def rem(self, name: str) -> dict[str, Any]:
        return get_rem(self.api, self.ns, name)

    def synced_rem(self, name: str, timeout: float = 90) -> dict[str, Any]:
        """Wait until Argo CD created it, then until it is final."""
        wait_for(lambda: self.exists(name), timeout, f"Argo CD to create {name}")
        return wait_phase(self.api, self.ns, name, {"Succeeded", "Failed", "Skipped"}, timeout=timeout)

    def exists(self, name: str) -> bool:
        return bool(client.CustomObjectsApi(self.api).list_namespaced_custom_object(
            "remedy.dev", "v1alpha1", self.ns, "remediations", field_selector=f"metadata.name={name}")["items"])

    def operator_writes(self, name: str) -> int:
        return AuditCounter(self.cp.audit_log, OPERATOR_USER, self.ns).count("deployments", name)

    def argo_writes(self, name: str) -> int:
        return AuditCounter(self.cp.audit_log, CONTROLLER_USER, self.ns).count("deployments", name)

    def replicas(self, name: str) -> int:
        return int(client.AppsV1Api(self.api).read_namespaced_deployment(name, self.ns).spec.replicas)


@pytest.fixture(scope="module")
def env(control_plane: ControlPlane, kube_admin: client.ApiClient, argocd: ArgoCD, operator_factory: Callable[..., OperatorProcess],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ns = make_namespace(kube_admin, "argo")
    grant_requester(control_plane, ns)
    token_file = tmp_path_factory.mktemp("argo-webhook") / "token"
    token_file.write_text(WEBHOOK_TOKEN + "\n")
    port = free_port()
    op = operator_factory(args=["-n", ns], env={
        "REMEDY_WEBHOOK_PORT": str(port), "REMEDY_WEBHOOK_TOKEN_FILE": str(token_file),
        "REMEDY_GITOPS_REQUESTERS": REQUESTERS}).start()
    op.wait_ready()
    repo = GitRepo(tmp_path_factory.mktemp("argo-repo") / "repo").init()
    wait_for(lambda: http_json("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200, 20, "webhook up")
    yield Env(control_plane, kube_admin, argocd, op, ns, repo, f"http://127.0.0.1:{port}/alertmanager")
    if OBSERVED:
        doc = {"test": "tests/e2e/test_argocd.py", "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "argocdVersion": "v3.2.11", "argocdStartSeconds": round(argocd.ready_seconds, 1),
               "witness": "Argo CD's Application status and the apiserver audit log (writes by user)", **OBSERVED}
        (results_dir() / "argocd.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    for name in (APP_REMEDIES, APP_WEB, APP_UNMAPPED):
        control_plane.kubectl("-n", "argocd", "delete", "applications.argoproj.io", name, "--ignore-not-found", "--wait=false")
    op.stop()
    client.CoreV1Api(kube_admin).delete_namespace(ns)


def grant_requester(cp: ControlPlane, ns: str) -> None:
    """The GitOps requester may scale Deployments in this namespace, nothing else."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "gitops-requester", "namespace": ns},
            "rules": [{"apiGroups": ["remedy.dev"], "resources": ["remediationactions"], "verbs": ["use"],
                       "resourceNames": ["scaleWorkload"]},
                      {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["patch"],
                       "resourceNames": ["web", "api"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "gitops-requester", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gitops-requester"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": REQUESTER}]}
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}))


def deployment_yaml(ns: str, name: str, replicas: int) -> str:
    return yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
                           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                    "template": {"metadata": {"labels": {"app": name}},
                                                 "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}})


def remediation_yaml(ns: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> str:
    return yaml.safe_dump({"apiVersion": "remedy.dev/v1alpha1", "kind": "Remediation",
                           "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}}, "spec": spec})


def scale(name: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return {"reason": "INC-22: scale from git", "action": {"scaleWorkload": {"target": {"name": name}, "replicas": replicas}}, **extra}


def synced_to(rev: str) -> Callable[[dict[str, Any]], bool]:
    return lambda app: app_sync(app) == ("Synced", rev)


def health_of(kind: str, name: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda app: resource_health(app, kind, name).get("status") == status


def sync_and_wait(e: Env, app: str, *, prune: bool = False, options: list[str] | None = None) -> dict[str, Any]:
    """A sync operation (as `argocd app sync` starts it) and its successful end."""
    before = ((e.argo.get_app(app).get("status") or {}).get("operationState") or {}).get("startedAt")
    e.argo.sync(app, prune=prune, options=options)

    def done(a: dict[str, Any]) -> bool:
        op = (a.get("status") or {}).get("operationState") or {}
        return op.get("startedAt") != before and op.get("phase") in ("Succeeded", "Failed", "Error") and "operation" not in a
    app_obj = e.argo.wait_app(app, done, 90, "sync operation finished")
    return dict(app_obj["status"]["operationState"])


# --- remedy objects from git ----------------------------------------------------------------

def approve(e: Env, name: str) -> None:
    """What `kubectl remedy approve` writes, as admin: the approver and the digest of the spec
    approved (issue 20: an approval approves one exact spec)."""
    spec = e.rem(name)["spec"]
    e.cp.kubectl("-n", e.ns, "annotate", "remediation", name, "remedy.dev/approved-by=admin",
                 f"remedy.dev/approved-spec-digest={spec_digest(spec)}")


def test_remedy_objects_from_git_health_and_run_once(env: Env) -> None:
    e = env
    e.cp.kubectl("apply", "-f", "-", input=deployment_yaml(e.ns, "web", 1))  # not in git: only the target
    rev = e.repo.commit({
        "remedies/scale-web.yaml": remediation_yaml(e.ns, "scale-web", scale("web", 2, approval={"required": True})),
        "remedies/scale-missing.yaml": remediation_yaml(e.ns, "scale-missing", scale("nothing-here", 2)),
        # An approval committed to git is applied by Argo CD's identity: it must not count.
        "remedies/scale-api.yaml": remediation_yaml(e.ns, "scale-api", scale("api", 2, approval={"required": True}),
                                                    {"remedy.dev/approved-by": CONTROLLER_USER}),
    }, "remediations")
    e.argo.apply(application(APP_REMEDIES, e.repo.url, "remedies", e.ns, self_heal=True, prune=True))
    app = e.argo.wait_app(APP_REMEDIES, lambda a: synced_to(rev)(a) and health_of("Remediation", "scale-web", "Suspended")(a)
                          and health_of("Remediation", "scale-missing", "Degraded")(a), 120, "synced; Suspended and Degraded")
    assert "Awaiting approval" in resource_health(app, "Remediation", "scale-web")["message"]
    # The Degraded message is the Lua's: the failing condition and why.
    assert resource_health(app, "Remediation", "scale-missing")["message"].startswith("Failed: ")
    assert app_health(app) == "Degraded"
    api = e.rem("scale-api")
    assert api["status"]["phase"] == "AwaitingApproval"
    assert [(r["user"], r["accepted"]) for r in api["status"]["approvals"]] == [(CONTROLLER_USER, False)]
    assert api["status"]["approvals"][0]["reason"].startswith("GitOpsApproval")

    # A person approves (kubectl remedy approve writes this annotation as the user the API server saw).
    approve(e, "scale-web")
    done = wait_phase(e.api, e.ns, "scale-web", {"Succeeded", "Failed"}, timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    assert e.replicas("web") == 2
    assert done["metadata"]["annotations"]["remedy.dev/requested-by"] == CONTROLLER_USER
    assert done["status"]["requestedBy"] == REQUESTER, "ran with the mapped requester's rights, not Argo CD's"
    app = e.argo.wait_app(APP_REMEDIES, health_of("Remediation", "scale-web", "Healthy"), 60, "scale-web Healthy in Argo CD")
    assert resource_health(app, "Remediation", "scale-web")["message"].startswith("Succeeded: ")
    uid = done["metadata"]["uid"]
    AuditCounter(e.cp.audit_log, OPERATOR_USER, e.ns).settle()
    assert e.operator_writes("web") == 1
    run = "one-shot Remediation from git"
    record(run, "1 first sync, approved by a person", argoCD="Synced; Suspended -> Healthy",
           phase="Succeeded", operatorWritesToTarget=1)

    def unchanged(case: str, argo_phase: str) -> None:
        obj = e.rem("scale-web")
        assert obj["status"]["phase"] == "Succeeded" and obj["metadata"]["uid"] == uid, (case, obj["status"])
        AuditCounter(e.cp.audit_log, OPERATOR_USER, e.ns).settle()
        assert e.operator_writes("web") == 1, case
        record(run, case, argoCD=argo_phase, phase="Succeeded (same object)", operatorWritesToTarget=1)

    # Nothing Argo CD does to a finished one-shot Remediation runs it again.
    assert sync_and_wait(e, APP_REMEDIES)["phase"] == "Succeeded"
    unchanged("2 re-sync", "sync Succeeded")
    e.argo.refresh(APP_REMEDIES, hard=True)
    e.argo.wait_app(APP_REMEDIES, lambda a: "argocd.argoproj.io/refresh" not in a["metadata"].get("annotations", {}), 60, "refreshed")
    unchanged("3 hard refresh", "refreshed")
    # Replace=true (kubectl replace: a PUT without the API-server-recorded requester/approver
    # annotations) is refused by remedy's admission policy: nothing is replaced, nothing runs.
    replaced = sync_and_wait(e, APP_REMEDIES, options=["Replace=true"])
    assert replaced["phase"] == "Failed" and "remedy-identity" in replaced["message"], replaced
    unchanged("4 sync with Replace=true", "sync Failed: remedy-identity admission policy denies the replace")
    # Prune: removed from git, Argo CD deletes it; nothing runs for a deletion.
    rev = e.repo.commit({"remedies/scale-web.yaml": None}, "drop scale-web")
    e.argo.refresh(APP_REMEDIES)
    e.argo.wait_app(APP_REMEDIES, synced_to(rev), 90, "pruned")
    wait_for(lambda: not e.exists("scale-web"), 60, "scale-web pruned")
    # Re-created from git with the same name and spec: a new object, never a second run.
    e.cp.kubectl("scale", "-n", e.ns, "deployment/web", "--replicas=1")
    rev = e.repo.commit({"remedies/scale-web.yaml": remediation_yaml(e.ns, "scale-web", scale("web", 2, approval={"required": True}))},
                        "scale-web again")
    e.argo.refresh(APP_REMEDIES)
    e.argo.wait_app(APP_REMEDIES, synced_to(rev), 90, "re-created")
    recreated = wait_for(lambda: (o := e.rem("scale-web"))["metadata"]["uid"] != uid and o, 30, "re-created object")
    approve(e, "scale-web")
    again = wait_phase(e.api, e.ns, "scale-web", {"Succeeded", "Failed", "Skipped"}, timeout=60)
    assert recreated["metadata"]["uid"] == again["metadata"]["uid"]
    assert again["status"]["phase"] == "Skipped" and condition(again, "Completed")["reason"] == "AlreadyRan", again["status"]
    assert uid in condition(again, "Completed")["message"]
    AuditCounter(e.cp.audit_log, OPERATOR_USER, e.ns).settle()
    assert e.operator_writes("web") == 1 and e.replicas("web") == 1, "the one-shot Remediation acted exactly once"
    record(run, "5 pruned (removed from git), then committed again", argoCD="pruned, re-created",
           phase="Skipped/AlreadyRan (new object)", operatorWritesToTarget=1)
    e.argo.wait_app(APP_REMEDIES, health_of("Remediation", "scale-web", "Healthy"), 60, "Skipped shows Healthy")


def test_progressing_until_remedy_observes_then_healthy(env: Env, kube_admin: client.ApiClient,
                                                       operator_factory: Callable[..., OperatorProcess]) -> None:
    """One object through Progressing -> Healthy in Argo CD: synced into a namespace no operator
    watches yet, it stays Progressing ("Waiting for remedy to observe", remedy's Lua); once an
    operator watches that namespace it runs and Argo CD shows it Healthy."""
    e = env
    late = make_namespace(kube_admin, "argo-late")
    try:
        grant_requester(e.cp, late)
        e.cp.kubectl("apply", "-f", "-", input=deployment_yaml(late, "web", 1))
        rev = e.repo.commit({"remedies/late.yaml": remediation_yaml(late, "late-scale", scale("web", 2))}, "late-scale")
        e.argo.refresh(APP_REMEDIES)
        app = e.argo.wait_app(APP_REMEDIES, lambda a: synced_to(rev)(a) and health_of("Remediation", "late-scale", "Progressing")(a),
                              90, "late-scale Progressing")
        assert resource_health(app, "Remediation", "late-scale")["message"] == "Waiting for remedy to observe"
        op = operator_factory(args=["-n", late], env={"REMEDY_GITOPS_REQUESTERS": REQUESTERS}).start()
        try:
            op.wait_ready()
            app = e.argo.wait_app(APP_REMEDIES, health_of("Remediation", "late-scale", "Healthy"), 90, "late-scale Healthy")
            assert resource_health(app, "Remediation", "late-scale")["message"].startswith("Succeeded: ")
            assert int(client.AppsV1Api(e.api).read_namespaced_deployment("web", late).spec.replicas) == 2
            audit = AuditCounter(e.cp.audit_log, OPERATOR_USER, late)
            audit.settle()
            assert audit.count("deployments", "web") == 1
        finally:
            op.stop()
        record("one-shot Remediation from git", "0 synced before any operator watches, then watched",
               argoCD="Progressing (Waiting for remedy to observe) -> Healthy", phase="Succeeded", operatorWritesToTarget=1)
    finally:
        e.repo.commit({"remedies/late.yaml": None}, "drop late-scale")
        client.CoreV1Api(kube_admin).delete_namespace(late)


def test_argo_rights_are_never_borrowed(env: Env) -> None:
    """Whoever pushes to a repository an unmapped Application syncs gets nothing run, although
    Argo CD's controller (cluster-admin) applied it; a mapped Application runs with its
    requester's rights only (here: no right to scale `db`)."""
    e = env
    e.cp.kubectl("apply", "-f", "-", input=deployment_yaml(e.ns, "db", 1))
    rev = e.repo.commit({"unmapped/scale-db.yaml": remediation_yaml(e.ns, "unmapped-db", scale("db", 3)),
                         "remedies/mapped-db.yaml": remediation_yaml(e.ns, "mapped-db", scale("db", 3))}, "scale db twice")
    e.argo.apply(application(APP_UNMAPPED, e.repo.url, "unmapped", e.ns))
    e.argo.refresh(APP_REMEDIES)
    e.argo.wait_app(APP_UNMAPPED, synced_to(rev), 90, "unmapped synced")
    unmapped = e.synced_rem("unmapped-db")
    assert condition(unmapped, "Completed")["reason"] == "RequesterForbidden", unmapped["status"]
    assert f"Application argocd/{APP_UNMAPPED}, which has no GitOps requester" in unmapped["status"]["message"]
    assert unmapped["metadata"]["annotations"]["remedy.dev/requested-by"] == CONTROLLER_USER
    mapped = e.synced_rem("mapped-db")
    assert condition(mapped, "Completed")["reason"] == "RequesterForbidden", mapped["status"]
    assert f"requester {REQUESTER} may not" in mapped["status"]["message"]
    AuditCounter(e.cp.audit_log, OPERATOR_USER, e.ns).settle()
    assert e.operator_writes("db") == 0 and e.replicas("db") == 1
    ident = "identity through GitOps"
    record(ident, "Application without a GitOps requester", phase="Failed/RequesterForbidden", operatorWritesToTarget=0)
    record(ident, "mapped requester lacking RBAC on the target", phase="Failed/RequesterForbidden", operatorWritesToTarget=0)
    record(ident, "approval committed to git", phase="AwaitingApproval (approval not counted)", operatorWritesToTarget=0)


# --- self-heal meets remedy -------------------------------------------------------------------

def deploy_web_app(e: Env, **app_options: Any) -> str:
    rev = e.repo.commit({"web/api.yaml": deployment_yaml(e.ns, "api", 1)}, "api deployment")
    e.argo.apply(application(APP_WEB, e.repo.url, "web", e.ns, self_heal=True, **app_options))
    e.argo.refresh(APP_WEB)
    e.argo.wait_app(APP_WEB, synced_to(rev), 90, "api synced")
    return rev


def apply_rem(e: Env, name: str, spec: dict[str, Any]) -> None:
    e.cp.kubectl("apply", "-f", "-", input=remediation_yaml(e.ns, name, spec))


def test_self_heal_forecast_refuse_act_reverted_and_documented_config(env: Env) -> None:
    e = env
    deploy_web_app(e)
    # 1. Default: the revert is certain, so remedy says so and does not act.
    apply_rem(e, "api-refused", scale("api", 3))
    refused = wait_phase(e.api, e.ns, "api-refused", {"Succeeded", "Failed"}, timeout=60)
    assert condition(refused, "Completed")["reason"] == "GitOpsWouldRevert", refused["status"]
    gitops = condition(refused, "GitOps")
    assert (gitops["status"], gitops["reason"]) == ("False", "WillBeReverted") and f"argocd/{APP_WEB}" in gitops["message"]
    assert e.operator_writes("api") == 0
    heal = "self-heal (automated sync, selfHeal)"
    record(heal, "1 default (onRevertExpected Refuse)", phase="Failed/GitOpsWouldRevert", operatorWritesToTarget=0,
           argoWritesAfter=0, replicasAfter=1)

    # 2. Told to act anyway: Argo CD's self-heal puts it back; remedy ends RevertedByGitOps.
    argo_before = e.argo_writes("api")
    apply_rem(e, "api-act", scale("api", 3, gitops={"onRevertExpected": "Act", "watchFor": "60s"}))
    reverted = wait_phase(e.api, e.ns, "api-act", {"Succeeded", "Failed"}, timeout=90)
    completed = condition(reverted, "Completed")
    assert (reverted["status"]["phase"], completed["reason"]) == ("Failed", "RevertedByGitOps"), reverted["status"]
    assert f"Application {APP_WEB!r}" in completed["message"]
    AuditCounter(e.cp.audit_log, CONTROLLER_USER, e.ns).settle()
    assert e.operator_writes("api") == 1 and e.argo_writes("api") > argo_before, "remedy wrote once, Argo CD wrote it back"
    app = e.argo.wait_app(APP_WEB, lambda a: app_sync(a)[0] == "Synced", 60, "self-healed")
    op = app["status"]["operationState"]
    assert op["operation"]["initiatedBy"].get("automated") is True and op["phase"] == "Succeeded", op
    assert e.replicas("api") == 1
    record(heal, "2 onRevertExpected Act", phase="Failed/RevertedByGitOps", operatorWritesToTarget=1,
           argoWritesAfter=e.argo_writes("api") - argo_before, replicasAfter=1)

    # 2b. The same from a policy: its child is reverted, the policy pauses, the next firing is blocked.
    policy = {"apiVersion": "remedy.dev/v1alpha1", "kind": "RemediationPolicy", "metadata": {"name": "api-latency", "namespace": e.ns},
              "spec": {"trigger": {"alert": {"alertname": "ApiLatency"}},
                       "template": {"action": {"scaleWorkload": {"target": {"name": "api"}, "replicas": 3}},
                                    "gitops": {"onRevertExpected": "Act", "watchFor": "60s"}},
                       "guards": {"cooldown": "0s", "pauseAfterFailures": 10}}}
    e.cp.kubectl("apply", "-f", "-", input=json.dumps(policy))
    wait_for(lambda: policy_condition(e, "api-latency", "Ready").get("status") == "True", 30, "policy Ready")
    assert fire(e, "ApiLatency", "2026-12-05T10:00:00Z") == {"created": 1}
    child = wait_for(lambda: children(e, "api-latency"), 20, "child")[0]["metadata"]["name"]
    done = wait_phase(e.api, e.ns, child, {"Succeeded", "Failed"}, timeout=90)
    assert condition(done, "Completed")["reason"] == "RevertedByGitOps", done["status"]
    paused = wait_for(lambda: policy_condition(e, "api-latency", "Paused").get("status") == "True"
                      and policy_condition(e, "api-latency", "Paused"), 30, "policy paused")
    assert paused["reason"] == "RevertedByGitOps" and child in paused["message"]
    assert fire(e, "ApiLatency", "2026-12-05T10:05:00Z") == {"blocked:paused": 1}
    assert e.operator_writes("api") == 2 and e.replicas("api") == 1
    record(heal, "2b a policy's child (onRevertExpected Act)", phase="Failed/RevertedByGitOps; policy Paused, next firing blocked",
           operatorWritesToTarget=1, argoWritesAfter="self-heal", replicasAfter=1)

    # 3. The documented configuration: Argo CD leaves remedy's field alone, remedy succeeds.
    deploy_web_app(e, sync_options=["ServerSideApply=true", "RespectIgnoreDifferences=true"],
                   ignore_differences=[{"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["remedy"]}])
    AuditCounter(e.cp.audit_log, CONTROLLER_USER, e.ns).settle()
    argo_documented, operator_documented = e.argo_writes("api"), e.operator_writes("api")
    apply_rem(e, "api-stands", scale("api", 3, gitops={"watchFor": "20s"}))
    wait_phase(e.api, e.ns, "api-stands", "Verifying", timeout=60)
    stands = wait_phase(e.api, e.ns, "api-stands", {"Succeeded", "Failed"}, timeout=90)
    assert stands["status"]["phase"] == "Succeeded", stands["status"]
    assert condition(stands, "GitOps")["reason"] == "ChangeStands"
    app = e.argo.get_app(APP_WEB)
    assert app_sync(app)[0] == "Synced", "Argo CD ignores the field remedy owns"
    assert e.replicas("api") == 3
    ops_after = app["status"]["operationState"]["startedAt"]
    e.argo.refresh(APP_WEB, hard=True)
    e.argo.wait_app(APP_WEB, lambda a: "argocd.argoproj.io/refresh" not in a["metadata"].get("annotations", {}), 60, "refreshed")
    time_synced = e.argo.get_app(APP_WEB)
    assert app_sync(time_synced)[0] == "Synced" and time_synced["status"]["operationState"]["startedAt"] == ops_after
    assert e.replicas("api") == 3, "still remedy's value after a hard refresh"
    AuditCounter(e.cp.audit_log, CONTROLLER_USER, e.ns).settle()
    assert e.argo_writes("api") == argo_documented, "Argo CD wrote nothing to the Deployment after remedy's scale"
    assert e.operator_writes("api") == operator_documented + 1
    record(heal, "3 ignoreDifferences managedFieldsManagers [remedy] + RespectIgnoreDifferences", phase="Succeeded",
           operatorWritesToTarget=1, argoWritesAfter=0, replicasAfter=3)


def test_harness_listens_on_loopback_only(argocd: ArgoCD) -> None:
    pids = [p.pid() for p in (argocd.controller, argocd.repo_server, argocd.redis) if p is not None]
    assert all(pids)
    listening = listening_addresses({pid for pid in pids if pid})
    assert listening, "no listening sockets found"
    assert all(addr.startswith(("127.0.0.1:", "[::1]:")) for addr in listening), listening


def listening_addresses(pids: set[int]) -> list[str]:
    """host:port of every TCP socket in LISTEN state owned by these pids (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:
                    continue
                host, port = cols[1].split(":")
                if v6:
                    out.append(("[::1]" if host == "0" * 24 + "01000000" else f"[{host}]") + f":{int(port, 16)}")
                else:
                    out.append(".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)) + f":{int(port, 16)}")
    return out



def policy_condition(e: Env, name: str, type_: str) -> dict[str, Any]:
    pol = client.CustomObjectsApi(e.api).get_namespaced_custom_object("remedy.dev", "v1alpha1", e.ns, "remediationpolicies", name)
    return next((dict(c) for c in (pol.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def children(e: Env, policy: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(e.api).list_namespaced_custom_object(
        "remedy.dev", "v1alpha1", e.ns, "remediations", label_selector=f"remedy.dev/policy={policy}")["items"]
    return items


def fire(e: Env, alertname: str, starts: str) -> dict[str, int]:
    code, body = http_json("POST", e.webhook, alert_payload([alert(f"{alertname}-fp", starts=starts, alertname=alertname)]),
                           token=WEBHOOK_TOKEN)
    assert code == 200, body
    return dict(body["outcomes"])
