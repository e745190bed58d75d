"""Attribution of a revert to Argo CD: tracking annotation/label, the last spec writer from
managedFields, and which finished child pauses a policy."""

from __future__ import annotations

from remedy.engine import gitops


def test_application_from_annotation_tracking_then_label_tracking() -> None:
    assert gitops.argo_application({"annotations": {gitops.ARGO_TRACKING_ANNOTATION: "shop-web:apps/Deployment:shop/web"}}) == "shop-web"
    assert gitops.argo_application({"labels": {gitops.ARGO_TRACKING_LABEL: "shop"}}) == "shop"
    assert gitops.argo_application({"labels": {"app": "web"}}) is None


def test_last_writer_ignores_remedy_and_status_writers() -> None:
    meta = {"managed_fields": [
        {"manager": "argocd-controller", "time": "2026-11-30T10:00:00Z", "fields_v1": {"f:spec": {}}},
        {"manager": "remedy", "time": "2026-11-30T10:01:00Z", "fields_v1": {"f:spec": {}}},
        {"manager": "kube-controller-manager", "time": "2026-11-30T10:02:00Z", "subresource": "status", "fields_v1": {"f:status": {}}},
    ]}
    assert gitops.last_writer(meta) == "argocd-controller"
    assert gitops.last_writer({}) is None


def _child(name: str, reason: str, done: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"phase": "Failed", "completedAt": done,
                                                   "conditions": [{"type": "Completed", "status": "True", "reason": reason}]}}


def test_reverted_since_respects_resume() -> None:
    finals = [_child("a", "RevertedByGitOps", "2026-11-30T10:00:00Z"), _child("b", "TargetNotFound", "2026-11-30T10:01:00Z")]
    assert gitops.reverted_since(finals, None)["metadata"]["name"] == "a"  # type: ignore[index]
    assert gitops.reverted_since(finals, "2026-11-30T10:00:30Z") is None  # resumed after it
