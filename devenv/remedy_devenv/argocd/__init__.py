"""Argo CD outside containers, on loopback, against the local control plane.

Why: remedy claims to work with GitOps, so it is tested against a real Argo CD (v3.2.11,
built from the Go module proxy by scripts/build-argocd), not a stand-in: the
application-controller and the repo-server run as local processes with
``ARGOCD_FAKE_IN_CLUSTER=true`` (as upstream's own Procfile does), a Redis from
remedy_devenv.services, and Applications whose source is a local git repository (file://).

    argo = ArgoCD(control_plane, state_dir).start()    # installs CRDs + config, starts processes
    repo = GitRepo(tmp / "repo").init()
    repo.commit({"app/deploy.yaml": "..."}, "add app")
    argo.apply_application(application("shop", repo.url, "app", "shop", self_heal=True))
    argo.wait_app("shop", synced_and_healthy)
    argo.stop()

Modules: ``install`` (CRDs from the module cache, argocd namespace, configmaps, secret,
AppProject, the controller's ServiceAccount), ``processes`` (repo-server, controller),
``gitrepo`` (the file:// source), ``apps`` (Application manifests and status reads).
"""

from __future__ import annotations

from .apps import app_health, app_sync, application, last_operation, resource_health
from .gitrepo import GitRepo
from .install import CONTROLLER_USER, NAMESPACE, ArgoCDError, crd_dir, locate_binary
from .processes import ArgoCD

__all__ = ["CONTROLLER_USER", "NAMESPACE", "ArgoCD", "ArgoCDError", "GitRepo", "app_health", "app_sync",
           "application", "crd_dir", "last_operation", "locate_binary", "resource_health"]
