"""Application manifests and the bits of Application status the tests and the demo read.

Why: an Application's status is deep and version-dependent (sync.status, health.status,
operationState, resources[].health); reading it in one place keeps the tests readable and
makes a change in Argo CD's status shape a one-line fix.
"""

from __future__ import annotations

from typing import Any

from .install import NAMESPACE


def application(name: str, repo_url: str, path: str, dest_namespace: str | None = None, *,
                automated: bool = True, self_heal: bool = False, prune: bool = False,
                sync_options: list[str] | None = None, ignore_differences: list[dict[str, Any]] | None = None,
                annotations: dict[str, str] | None = None, recurse: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "project": "default",
        "source": {"repoURL": repo_url, "targetRevision": "main", "path": path,
                   "directory": {"recurse": recurse}},
        "destination": {"server": "https://kubernetes.default.svc",
                        **({"namespace": dest_namespace} if dest_namespace else {})},
        "syncPolicy": {"syncOptions": sync_options or []},
    }
    if automated:
        spec["syncPolicy"]["automated"] = {"selfHeal": self_heal, "prune": prune}
    if ignore_differences:
        spec["ignoreDifferences"] = ignore_differences
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations or {}},
            "spec": spec}


def app_sync(app: dict[str, Any]) -> tuple[str, str]:
    """(sync status, revision) e.g. ("Synced", "3f2a...")."""
    sync = (app.get("status") or {}).get("sync") or {}
    return str(sync.get("status") or ""), str(sync.get("revision") or "")


def app_health(app: dict[str, Any]) -> str:
    return str(((app.get("status") or {}).get("health") or {}).get("status") or "")


def resource_health(app: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """The health Argo CD computed for one managed resource ({} when not (yet) known)."""
    for res in (app.get("status") or {}).get("resources") or []:
        if res.get("kind") == kind and res.get("name") == name:
            return dict(res.get("health") or {})
    return {}


def last_operation(app: dict[str, Any]) -> dict[str, Any]:
    return dict((app.get("status") or {}).get("operationState") or {})


def synced_at(app: dict[str, Any], revision: str) -> bool:
    status, rev = app_sync(app)
    return status == "Synced" and rev == revision
