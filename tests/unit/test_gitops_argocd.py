"""The rules behind "never a silent undo" and "identity through GitOps", without a cluster:
which Application tracks an object, whether it will revert remedy's change, whose rights a
Remediation applied by Argo CD runs with, and that git approvals never count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from remedy.api.digest import spec_digest
from remedy.api.remediation import Approval
from remedy.base.errors import PermanentError, RetryableError
from remedy.clients.access_review import Requester
from remedy.lifecycle.approval import evaluate
from remedy.lifecycle.gitops_apps import AmbiguousTrackingError, forecast, manages, tracking
from remedy.lifecycle.gitops_identity import GitOpsConfig, gitops_requester
from remedy.lifecycle.gitops_once import digest, record_name, tracked_by_argo

ARGO = "system:serviceaccount:argocd:argocd-application-controller"


def app(self_heal: bool = True, automated: bool = True, ignore: list[dict[str, Any]] | None = None,
        options: list[str] | None = None, resources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    policy: dict[str, Any] = {"syncOptions": options or []}
    if automated:
        policy["automated"] = {"selfHeal": self_heal}
    return {"metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {"syncPolicy": policy, "ignoreDifferences": ignore or []},
            "status": {"resources": resources or []}}


def test_tracking_annotation_label_and_namespaced_apps() -> None:
    assert tracking({"annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web"}}, "argocd") == ("argocd", "shop")
    assert tracking({"annotations": {"argocd.argoproj.io/tracking-id": "team_shop:apps/Deployment:shop/web"}}, "argocd") == ("team", "shop")
    assert tracking({"labels": {"app.kubernetes.io/instance": "shop"}}, "argocd") == ("argocd", "shop")
    assert tracking({}, "argocd") is None


def test_disagreeing_annotation_and_label_are_refused() -> None:
    # Argo CD writes one of them; the other came from the manifest and must not pick the app.
    meta = {"annotations": {"argocd.argoproj.io/tracking-id": "shop:remedy.dev/Remediation:shop/r"},
            "labels": {"app.kubernetes.io/instance": "platform-admin"}}
    with pytest.raises(AmbiguousTrackingError):
        tracking(meta, "argocd")


@pytest.mark.parametrize(("application", "reverts"), [
    (app(), "selfHeal"),
    (app(self_heal=False), "nextSync"),
    (app(automated=False), "manualSync"),
    (app(ignore=[{"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["remedy"]}]), "nextSync"),
    (app(ignore=[{"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["remedy"]}],
         options=["RespectIgnoreDifferences=true"]), "never"),
    (app(ignore=[{"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}],
         options=["RespectIgnoreDifferences=true"]), "never"),
    # An entry for another workload, or another field, does not help.
    (app(ignore=[{"group": "apps", "kind": "Deployment", "name": "other", "jsonPointers": ["/spec/replicas"]}],
         options=["RespectIgnoreDifferences=true"]), "selfHeal"),
    (app(ignore=[{"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/template"]}],
         options=["RespectIgnoreDifferences=true"]), "selfHeal"),
    (app(ignore=[{"group": "apps", "kind": "Deployment", "jqPathExpressions": [".spec.replicas"]}]), "unknown"),
])
def test_forecast_for_scale(application: dict[str, Any], reverts: str) -> None:
    fc = forecast(application, "apps", "Deployment", "shop", "web", "scaleWorkload")
    assert fc.reverts == reverts, fc.message
    assert fc.application == "argocd/shop" and "argocd/shop" in fc.message
    assert fc.certain == (reverts == "selfHeal")


def test_automated_disabled_explicitly_is_manual() -> None:
    a = app()
    a["spec"]["syncPolicy"]["automated"]["enabled"] = False
    assert forecast(a, "apps", "Deployment", "shop", "web", "scaleWorkload").reverts == "manualSync"


def rem(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        created: str = "2020-01-01T00:00:00Z") -> dict[str, Any]:
    return {"kind": "Remediation", "metadata": {"name": "r", "namespace": "shop", "uid": "u1",
                                                "creationTimestamp": created,
                                                "annotations": annotations or {}, "labels": labels or {}},
            "spec": {"action": {"notify": {"message": "x"}}}}


class Apps:
    def __init__(self, application: dict[str, Any] | None) -> None:
        self.app = application

    async def application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.app


LISTED = [{"group": "remedy.dev", "kind": "Remediation", "namespace": "shop", "name": "r"}]


def run_requester(cfg: GitOpsConfig, apps: Apps, obj: dict[str, Any]) -> Requester:
    return asyncio.run(gitops_requester(cfg, apps, Requester(ARGO), obj, obj))  # type: ignore[arg-type]


def test_argo_requester_is_replaced_by_the_mapped_identity() -> None:
    cfg = GitOpsConfig(controllers=frozenset({ARGO}), requesters={"argocd/shop": "gitops-shop"})
    who = run_requester(cfg, Apps(app(resources=LISTED)), rem(labels={"app.kubernetes.io/instance": "shop"}))
    assert who == Requester("gitops-shop", ())


@pytest.mark.parametrize(("requesters", "obj", "application", "why"), [
    ({}, rem(labels={"app.kubernetes.io/instance": "shop"}), app(resources=LISTED), "no GitOps requester"),
    ({"argocd/shop": "g"}, rem(), app(resources=LISTED), "carries no Argo CD tracking"),
    ({"argocd/shop": "g"}, rem(labels={"app.kubernetes.io/instance": "shop"}), None, "does not exist"),
    # A manifest naming another (mapped) Application it does not belong to borrows nothing.
    ({"argocd/shop": "g"}, rem(labels={"app.kubernetes.io/instance": "shop"}), app(resources=[]), "does not list it"),
    ({"argocd/shop": "g"}, rem(annotations={"argocd.argoproj.io/tracking-id": "other:remedy.dev/Remediation:shop/r"},
                               labels={"app.kubernetes.io/instance": "shop"}), app(resources=LISTED), "names Application"),
])
def test_argo_rights_are_never_used(requesters: dict[str, str], obj: dict[str, Any],
                                    application: dict[str, Any] | None, why: str) -> None:
    cfg = GitOpsConfig(controllers=frozenset({ARGO}), requesters=requesters)
    with pytest.raises(PermanentError) as err:
        run_requester(cfg, Apps(application), obj)
    assert err.value.reason == "RequesterForbidden" and why in err.value.message
    assert "never runs anything with the GitOps controller's own rights" in err.value.message


def test_a_fresh_object_waits_for_argo_to_list_it() -> None:
    cfg = GitOpsConfig(controllers=frozenset({ARGO}), requesters={"argocd/shop": "g"})
    from remedy.api.common import now_rfc3339
    with pytest.raises(RetryableError):
        run_requester(cfg, Apps(app(resources=[])), rem(labels={"app.kubernetes.io/instance": "shop"}, created=now_rfc3339()))


def test_git_approvals_never_count() -> None:
    cfg = GitOpsConfig(controllers=frozenset({ARGO}), requesters={})
    obj = rem(annotations={"remedy.dev/approved-by": ARGO})
    gate = evaluate(obj, Approval(required=True), False, Requester("alice"), [], gitops=cfg)
    assert not gate.approved
    assert gate.records[0]["accepted"] is False and gate.records[0]["reason"].startswith("GitOpsApproval")
    person = rem(annotations={"remedy.dev/approved-by": "bob"})
    # A person's approval names the spec it approved (issue 20: approvals are bound to a digest).
    person["metadata"]["annotations"]["remedy.dev/approved-spec-digest"] = spec_digest(person["spec"])
    assert evaluate(person, Approval(required=True), False, Requester("alice"), [], gitops=cfg).approved


def test_run_once_record_is_per_name_and_spec() -> None:
    a, b = rem(labels={"app.kubernetes.io/instance": "shop"}), rem(labels={"app.kubernetes.io/instance": "shop"})
    b["metadata"]["uid"] = "u2"  # re-created: new uid, same name and spec -> same record
    assert record_name(a) == record_name(b) and len(record_name(a)) <= 63
    b["spec"]["reason"] = "INC-2"
    assert digest(a) != digest(b)
    assert tracked_by_argo(a) and not tracked_by_argo(rem())
    child = rem(labels={"app.kubernetes.io/instance": "shop"})
    child["metadata"]["ownerReferences"] = [{"kind": "RemediationPolicy", "name": "p", "controller": True}]
    assert not tracked_by_argo(child)


def test_manages_matches_group_kind_namespace_name() -> None:
    a = app(resources=LISTED)
    assert manages(a, "remedy.dev", "Remediation", "shop", "r")
    assert not manages(a, "remedy.dev", "Remediation", "other", "r")
    assert not manages(a, "remedy.dev", "RemediationPolicy", "shop", "r")


def test_a_refused_child_pauses_its_policy_like_a_reverted_one() -> None:
    from remedy.lifecycle.gitops import reverted_since

    def child(reason: str, at: str) -> dict[str, Any]:
        return {"metadata": {"name": reason}, "status": {"completedAt": at, "conditions": [
            {"type": "Completed", "status": "True", "reason": reason}]}}
    assert reverted_since([child("GitOpsWouldRevert", "2026-01-01T00:00:01Z")], None) is not None
    assert reverted_since([child("RevertedByGitOps", "2026-01-01T00:00:01Z")], None) is not None
    assert reverted_since([child("VerificationFailed", "2026-01-01T00:00:01Z")], None) is None
    assert reverted_since([child("GitOpsWouldRevert", "2026-01-01T00:00:01Z")], "2026-01-01T00:00:02Z") is None


def test_a_policy_child_runs_as_the_requester_of_the_policys_application() -> None:
    """A policy Argo CD synced from git: its children carry Argo CD's identity (copied from the
    policy); the Guard resolves the Application from the policy's tracking, not the child's."""
    from remedy.lifecycle.authz import Guard

    stamp = {"remedy.dev/requested-by": ARGO, "remedy.dev/requested-by-groups": "system:serviceaccounts"}
    policy = {"kind": "RemediationPolicy", "metadata": {"name": "p", "namespace": "shop", "annotations": stamp,
                                                        "labels": {"app.kubernetes.io/instance": "shop"}}}
    child = {"kind": "Remediation", "metadata": {"name": "p-1", "namespace": "shop", "annotations": stamp,
                                                 "ownerReferences": [{"kind": "RemediationPolicy", "name": "p", "controller": True}]}}

    class Objects:
        async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
            return policy if (plural, name) == ("remediationpolicies", "p") else None

    listed = [{"group": "remedy.dev", "kind": "RemediationPolicy", "namespace": "shop", "name": "p"}]
    cfg = GitOpsConfig(controllers=frozenset({ARGO}), requesters={"argocd/shop": "gitops-shop"})
    guard = Guard(reviewer=None, egress=None, objects=Objects(), gitops=cfg, apps=Apps(app(resources=listed)))  # type: ignore[arg-type]
    assert asyncio.run(guard.requester(child)).username == "gitops-shop"
    # The same child whose policy the Application does not list gets nothing run.
    guard.apps = Apps(app(resources=LISTED))  # type: ignore[assignment]
    with pytest.raises(PermanentError, match="does not list it"):
        asyncio.run(guard.requester(child))
