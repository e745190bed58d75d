"""The operator as production runs it, installed by Argo CD (issue 22, item 2): its image
(built here as OCI, remedy_devenv.operator_image) runs as a pod on the real node
(containerd + kubelet), from charts/remedy, which an Argo CD Application syncs from a local
git repository: ServiceAccount, RBAC, admission policies, webhook Service and metrics as the
chart renders them. The proof that the pod is the operator: a Remediation in a watched
namespace succeeds, and the API server's audit log attributes the write to the chart's
ServiceAccount, not to any identity of the test.

Development-cluster settings (values the chart documents as such): the local API server
listens on 127.0.0.1 only and there is no kube-proxy, so the pod uses the node's network
(``hostNetwork: true``, ``listenAddress: 127.0.0.1``, KUBERNETES_SERVICE_HOST/PORT pointing
at the API server), and the image is imported into containerd (``pullPolicy: Never``).
Needs root (the real node).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from remedy_devenv import operator_image
from remedy_devenv.argocd import ArgoCD, GitRepo, app_health, app_sync
from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import ControlPlane
from remedy_devenv.node import Node, image_name
from remedy_devenv.testkit import free_ports, wait_for
from tests.fixtures.operator import condition, make_namespace, wait_phase

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
OPERATOR_SA = "system:serviceaccount:remedy-system:remedy"


@pytest.fixture(scope="module")
def installed(node_cluster: ControlPlane, node_admin: client.ApiClient, node: Node,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cp = node_cluster
    ns = make_namespace(node_admin, "chart")  # watched (namespaced mode: exists before install)
    image, archive = operator_image.build()
    node.import_image(archive)
    state = tmp_path_factory.mktemp("argocd-chart")
    argo = ArgoCD(cp, state / "argocd").start(timeout=180)
    repo = GitRepo(state / "repo").init()
    shutil.copytree(REPO / "charts" / "remedy", repo.path / "remedy")
    repo.git("add", "remedy")
    repo.git("commit", "-q", "-m", "remedy chart")
    webhook, metrics, liveness = free_ports(3)
    repository, tag = image.rsplit(":", 1)
    values = {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}, "replicaCount": 1,
              "peering": {"randomPriority": False}, "watch": {"mode": "namespaced", "namespaces": [ns]},
              "hostNetwork": True, "listenAddress": "127.0.0.1", "gitops": {"argocdNamespace": "argocd"},
              "webhook": {"port": webhook}, "metrics": {"port": metrics}, "liveness": {"port": liveness},
              "extraEnv": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                           {"name": "KUBERNETES_SERVICE_PORT", "value": str(cp.apiserver_port)}]}
    argo.apply({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "remedy", "namespace": "argocd"},
                "spec": {"project": "default",
                         "source": {"repoURL": repo.url, "targetRevision": "main", "path": "remedy",
                                    "helm": {"releaseName": "remedy", "valuesObject": values}},
                         "destination": {"server": "https://kubernetes.default.svc", "namespace": "remedy-system"},
                         "syncPolicy": {"automated": {"selfHeal": True},
                                        "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}}})
    yield {"cp": cp, "api": node_admin, "argo": argo, "ns": ns, "metrics": metrics, "webhook": webhook, "image": image}
    cp.kubectl("-n", "argocd", "delete", "applications.argoproj.io", "remedy", "--wait=false")
    cp.kubectl("-n", "remedy-system", "delete", "deployment", "remedy", "--ignore-not-found", "--wait=true", check=False)
    argo.stop()
    client.CoreV1Api(node_admin).delete_namespace(ns)


def test_argocd_installs_the_chart_and_the_pod_is_the_operator(installed: dict[str, Any]) -> None:
    cp: ControlPlane = installed["cp"]
    api: client.ApiClient = installed["api"]
    argo: ArgoCD = installed["argo"]
    ns: str = installed["ns"]
    app = argo.wait_app("remedy", lambda a: app_sync(a)[0] == "Synced" and app_health(a) == "Healthy", 240,
                        "chart synced and Healthy")
    kinds = {(r["kind"], r.get("namespace", "")) for r in app["status"]["resources"]}
    for want in [("ServiceAccount", "remedy-system"), ("Deployment", "remedy-system"), ("Service", "remedy-system"),
                 ("Role", ns), ("RoleBinding", ns), ("KopfPeering", ns), ("ValidatingAdmissionPolicy", ""),
                 ("MutatingAdmissionPolicy", ""), ("CustomResourceDefinition", ""), ("Role", "argocd")]:
        assert want in kinds, (want, sorted(kinds))
    pods = client.CoreV1Api(api).list_namespaced_pod("remedy-system").items
    assert len(pods) == 1 and pods[0].spec.node_name and pods[0].status.phase == "Running"
    container = pods[0].spec.containers[0]
    assert container.image == installed["image"] and pods[0].spec.service_account_name == "remedy"
    assert pods[0].spec.security_context.run_as_user == 10001 and container.security_context.read_only_root_filesystem

    # The pod acts: a Remediation in the watched namespace, witnessed by the audit log.
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "c", "image": image_name("pause"), "imagePullPolicy": "Never"}]}}}}
    cp.kubectl("apply", "-f", "-", input=json.dumps(deploy))
    rem = {"apiVersion": "remedy.dev/v1alpha1", "kind": "Remediation", "metadata": {"name": "scale-web", "namespace": ns},
           "spec": {"reason": "issue 22: the operator pod acts", "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 2}}}}
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(rem))
    try:
        wait_for(lambda: (client.CustomObjectsApi(api).get_namespaced_custom_object(
            "remedy.dev", "v1alpha1", ns, "remediations", "scale-web").get("status") or {}).get("phase"), 120,
            "the operator pod observes it")
    except AssertionError as exc:
        logs = cp.kubectl("-n", "remedy-system", "logs", "deployment/remedy", "--tail=40", check=False)
        raise AssertionError(f"{exc}\noperator pod log:\n{logs.stdout[-6000:]}{logs.stderr[-2000:]}") from None
    done = wait_phase(api, ns, "scale-web", {"Succeeded", "Failed"}, timeout=120)
    assert done["status"]["phase"] == "Succeeded", condition(done, "Completed")
    audit = AuditCounter(cp.audit_log, OPERATOR_SA, ns)
    audit.settle()
    assert audit.count("deployments", "web") == 1, "the chart's ServiceAccount made the write"

    # Metrics as in production, on the address the chart was told (loopback, host network).
    with urllib.request.urlopen(f"http://127.0.0.1:{installed['metrics']}/metrics", timeout=5) as resp:
        assert b"remedy_" in resp.read()
