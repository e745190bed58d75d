"""What Argo CD needs in the cluster before its processes start, installed with kubectl.

Why separate: these objects are the cluster-side half of an Argo CD install (the manifests
of upstream's install.yaml minus the Deployments), and both the test fixture and the demo
need exactly the same set:

- the Application and AppProject CRDs, read at run time from the argo-cd module source in the
  Go module cache (nothing of Argo CD is committed here);
- namespace ``argocd`` with ``argocd-cm`` (remedy's health checks from
  deploy/argocd/argocd-cm-patch.yaml merged in), ``argocd-rbac-cm`` and ``argocd-secret``,
  each labelled ``app.kubernetes.io/part-of: argocd`` as Argo CD requires;
- the AppProject ``default``;
- the ServiceAccount the controller runs as, bound to cluster-admin like upstream's
  argocd-application-controller, so the API server (and its audit log) sees Argo CD's writes
  under its own name, ``system:serviceaccount:argocd:argocd-application-controller``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from ..cluster import REPO, ControlPlane

VERSION = os.environ.get("REMEDY_ARGOCD_VERSION", "v3.2.11")
MODULE = "github.com/argoproj/argo-cd/v3"
NAMESPACE = "argocd"
CONTROLLER_SA = "argocd-application-controller"
CONTROLLER_USER = f"system:serviceaccount:{NAMESPACE}:{CONTROLLER_SA}"
CACHE = Path(os.environ.get("REMEDY_CACHE") or Path.home() / ".cache" / "remedy")
CM_PATCH = REPO / "deploy" / "argocd" / "argocd-cm-patch.yaml"
PART_OF = {"app.kubernetes.io/part-of": "argocd"}


class ArgoCDError(RuntimeError):
    pass


def locate_binary() -> Path:
    """The multi-call binary scripts/build-argocd built (REMEDY_ARGOCD_BIN overrides)."""
    path = Path(os.environ.get("REMEDY_ARGOCD_BIN") or CACHE / f"argocd-{VERSION}" / "argocd")
    if not path.is_file():
        raise ArgoCDError(f"{path} missing: run scripts/build-argocd (about 5 minutes cold)")
    return path


def crd_dir() -> Path:
    """manifests/crds of the argo-cd module source the binary was built from."""
    modcache = Path(os.environ.get("GOMODCACHE") or CACHE / "gomodcache")
    path = modcache / "github.com" / "argoproj" / "argo-cd" / f"v3@{VERSION}" / "manifests" / "crds"
    if not path.is_dir():
        raise ArgoCDError(f"{path} missing: scripts/build-argocd downloads the module source")
    return path


def _object(kind: str, name: str, *, api: str = "v1", data: dict[str, str] | None = None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": api, "kind": kind,
                           "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(PART_OF)}}
    if data is not None:
        obj["data" if kind != "Secret" else "stringData"] = data
    obj.update(extra or {})
    return obj


def argocd_cm(settings: dict[str, str] | None = None) -> dict[str, Any]:
    """argocd-cm with remedy's health checks (the committed patch, byte for byte) + settings."""
    patch = yaml.safe_load(CM_PATCH.read_text())
    data = {**patch["data"], **(settings or {})}
    return _object("ConfigMap", "argocd-cm", data=data)


def install(cp: ControlPlane, cm_settings: dict[str, str] | None = None, timeout: float = 60.0) -> None:
    """Idempotent: apply everything and wait until the CRDs serve."""
    crds = crd_dir()
    for name in ("application-crd.yaml", "appproject-crd.yaml"):
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds / name))
    deadline = time.monotonic() + timeout
    while True:  # `kubectl wait` errors instead of waiting while a fresh CRD has no conditions
        res = cp.kubectl("wait", "--for=condition=Established", "--timeout=20s",
                         "crd/applications.argoproj.io", "crd/appprojects.argoproj.io", check=False)
        if res.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise ArgoCDError(f"Argo CD CRDs not established: {res.stderr}")
        time.sleep(0.5)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        argocd_cm(cm_settings),
        _object("ConfigMap", "argocd-rbac-cm", data={}),
        _object("ConfigMap", "argocd-cmd-params-cm", data={}),
        _object("ServiceAccount", CONTROLLER_SA),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "argocd-application-controller", "labels": dict(PART_OF)},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": NAMESPACE}]},
        _object("AppProject", "default", api="argoproj.io/v1alpha1", extra={"spec": {
            "sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}]}}),
    ]
    body = "\n---\n".join(json.dumps(o) for o in objects)
    cp.kubectl("apply", "-f", "-", input=body)
    # The secret key signs Argo CD's tokens: generated once, never overwritten (create, not apply).
    if cp.kubectl("-n", NAMESPACE, "get", "secret", "argocd-secret", check=False).returncode != 0:
        secret = _object("Secret", "argocd-secret", data={"server.secretkey": secrets.token_urlsafe(32)})
        cp.kubectl("create", "-f", "-", input=json.dumps(secret))


def set_cm(cp: ControlPlane, settings: dict[str, str | None]) -> None:
    """Merge settings into argocd-cm (None deletes a key); Argo CD reloads it without restart."""
    cp.kubectl("-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--type", "merge",
               "-p", json.dumps({"data": settings}))


def git_available() -> bool:
    return subprocess.run(["git", "--version"], capture_output=True).returncode == 0
