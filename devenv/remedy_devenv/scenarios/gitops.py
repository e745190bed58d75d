"""GitOps: a policy and a one-shot Remediation are committed to git; a real Argo CD (built
from the Go module proxy, remedy_devenv.argocd) syncs them; remedy runs the Remediation with
the rights of the GitOps requester the admin mapped the Application to; Argo CD then reports
the Remediation Healthy through remedy's Lua health check, and leaves the scaled Deployment
alone because its Application ignores the fields remedy owns (docs/argocd.md)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from ..argocd import ArgoCD, GitRepo, app_health, app_sync, application, resource_health
from ..demo.stack import NS, Stack, render
from ..demo.support import DemoError, wait_until
from ..node import image_name
from .base import Scenario

APP_WEB, APP_REMEDIES = "demo-web", "demo-remedies"
REQUESTER = "demo-gitops-requester"
# The operator's configuration (the chart's gitops.requesters): who Remediations synced by
# demo-remedies run as. Argo CD's own identity is never used.
OPERATOR_ENV = {"REMEDY_GITOPS_REQUESTERS": f"argocd/{APP_REMEDIES}={REQUESTER}"}
REMEDIATION = "gitops-scale-web"


def _argocd(st: Stack) -> ArgoCD:
    argo: ArgoCD | None = st.scratch.get("argocd")
    if argo is None:
        assert st.cp is not None
        argo = ArgoCD(st.cp, st.state / "argocd")
        st.extra_stops.append(argo.stop)
        argo.start(timeout=180)
        st.scratch["argocd"] = argo
        st.record()
    return argo


def _grant_requester(st: Stack) -> None:
    """Admin setup, not in git: the GitOps requester may scale gitops-web, nothing else."""
    rbac = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": REQUESTER, "namespace": NS},
             "rules": [{"apiGroups": ["remedy.dev"], "resources": ["remediationactions"], "verbs": ["use"],
                        "resourceNames": ["scaleWorkload"]},
                       {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["patch"],
                        "resourceNames": ["gitops-web"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": REQUESTER, "namespace": NS},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": REQUESTER},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": REQUESTER}]}]
    st.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))


def inject(st: Stack) -> str:
    argo = _argocd(st)
    _grant_requester(st)
    docs = [d for d in yaml.safe_load_all(render("gitops", {**st.values(), "WORKLOAD_IMAGE": image_name("memhog")})) if d]
    web = [d for d in docs if d["kind"] == "Deployment"]
    remedies = [d for d in docs if d["kind"] != "Deployment"]
    repo = GitRepo(st.state / "gitops-repo").init()
    rev = repo.commit({"web/gitops-web.yaml": yaml.safe_dump_all(web),
                       "remedies/remedies.yaml": yaml.safe_dump_all(remedies)}, "gitops-web, its policy and a one-shot scale")
    st.scratch["gitops_rev"] = rev
    argo.apply(application(APP_WEB, repo.url, "web", NS, self_heal=True,
                           sync_options=["ServerSideApply=true", "RespectIgnoreDifferences=true"],
                           ignore_differences=[{"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["remedy"]}]))
    # The target first: a Remediation synced before its Deployment exists ends TargetNotFound.
    wait_until(lambda: app_sync(argo.get_app(APP_WEB)) == ("Synced", rev), 90, f"{APP_WEB} synced")
    argo.apply(application(APP_REMEDIES, repo.url, "remedies", NS, self_heal=True, prune=True))
    return (f"committed Deployment gitops-web, RemediationPolicy gitops-web-latency and Remediation {REMEDIATION} "
            f"to {repo.url} ({rev[:8]}); Argo CD Applications {APP_WEB} and {APP_REMEDIES} (Argo CD started in "
            f"{argo.ready_seconds:.0f}s)")


def synced(st: Stack) -> str | None:
    argo: ArgoCD = st.scratch["argocd"]
    app = argo.get_app(APP_REMEDIES)
    status, rev = app_sync(app)
    if status != "Synced" or rev != st.scratch["gitops_rev"]:
        return None
    return f"Argo CD synced {APP_REMEDIES} at {rev[:8]}: policy and Remediation applied by Argo CD's controller"


def check(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    argo: ArgoCD = st.scratch["argocd"]
    apps: Any = client.AppsV1Api(st.api)

    def replicas() -> int:
        return int(apps.read_namespaced_deployment("gitops-web", NS).spec.replicas)

    if replicas() != 2:
        raise DemoError(f"gitops-web has {replicas()} replicas, not 2")
    if (obj.get("status") or {}).get("requestedBy") != REQUESTER:
        raise DemoError(f"ran as {(obj.get('status') or {}).get('requestedBy')}, not the GitOps requester {REQUESTER}")

    def healthy() -> dict[str, Any] | None:
        a = argo.get_app(APP_REMEDIES)
        return a if app_health(a) == "Healthy" else None

    def web_synced() -> dict[str, Any] | None:
        a = argo.get_app(APP_WEB)
        return a if app_sync(a)[0] == "Synced" else None

    app: dict[str, Any] = wait_until(healthy, 60, f"Argo CD reports {APP_REMEDIES} Healthy")
    rem = resource_health(app, "Remediation", REMEDIATION)
    wait_until(web_synced, 60, f"{APP_WEB} Synced with remedy's replicas")
    if replicas() != 2:
        raise DemoError("Argo CD put gitops-web back")
    return (f"ran as {REQUESTER} (requested by Argo CD's controller); Argo CD: {APP_REMEDIES} Healthy "
            f"(Remediation {rem.get('status')}: {str(rem.get('message', ''))[:80]}), {APP_WEB} Synced "
            f"with gitops-web at 2 replicas (ignoreDifferences managedFieldsManagers: [remedy])")


SCENARIO = Scenario(
    "gitops", "GitOps", "policy and one-shot Remediation from git via Argo CD", "git commit -> Argo CD sync",
    "scaleWorkload", inject, [("synced", synced)], check, remediation=REMEDIATION, from_git=True)
