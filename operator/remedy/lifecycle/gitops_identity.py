"""Identity through GitOps: whose rights a Remediation applied by Argo CD runs with.

Why: the API server stamps the requester of a Remediation (lifecycle/authz.py). When Argo CD
syncs one from git, that requester is Argo CD's application controller, which usually holds
cluster-admin. Running with its rights would hand them to anyone who can push to the
repository. So a requester that is a configured GitOps controller identity is never used:

- the Remediation (or, for a policy's child, the policy) must be tracked by an Application,
  that Application's own status must list the object (Argo CD writes it; a manifest cannot),
  and the admin must have mapped the Application to a *GitOps requester* in the operator's
  configuration (``REMEDY_GITOPS_REQUESTERS``, chart value ``gitops.requesters``), an
  ordinary RBAC-bound identity whose rights the action then runs with;
- anything else ends Failed/RequesterForbidden naming the Application and what to configure;
- approvals by a GitOps controller identity never count: an approval is a person's decision,
  given with ``kubectl remedy approve``, not a line in a commit.

The mapping lives in operator configuration, not on the Application, because Argo CD users
who may edit an Application (its annotations included) are not necessarily cluster admins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..base.constants import GROUP
from ..base.errors import PermanentError, RetryableError, TargetNotFoundError
from ..base.rfc3339 import age_seconds
from ..clients.access_review import Requester
from .gitops_apps import APPS_GROUP, APPS_PLURAL, APPS_VERSION, AmbiguousTrackingError, manages, tracking

DEFAULT_CONTROLLERS = "system:serviceaccount:argocd:argocd-application-controller"
REASON = "RequesterForbidden"
# How long after creation an object may wait for Argo CD to list it in the Application's status.
LISTING_GRACE_SECONDS = 120.0


def _parse_requesters(text: str) -> dict[str, str]:
    """``argocd/shop=system:serviceaccount:shop:gitops-requester,argocd/web=alice``."""
    out: dict[str, str] = {}
    for item in text.split(","):
        app, sep, user = item.strip().partition("=")
        if sep and app.strip() and user.strip():
            out[app.strip()] = user.strip()
    return out


@dataclass
class GitOpsConfig:
    controllers: frozenset[str] = field(default_factory=lambda: frozenset(
        u.strip() for u in os.environ.get("REMEDY_GITOPS_CONTROLLERS", DEFAULT_CONTROLLERS).split(",") if u.strip()))
    requesters: dict[str, str] = field(default_factory=lambda: _parse_requesters(
        os.environ.get("REMEDY_GITOPS_REQUESTERS", "")))
    apps_namespace: str = field(default_factory=lambda: os.environ.get("REMEDY_ARGOCD_NAMESPACE", "argocd"))
    # Where the run-once ledger (lifecycle/gitops_once.py) lives; None: the Remediation's namespace.
    ledger_namespace: str | None = field(default_factory=lambda: os.environ.get("REMEDY_NAMESPACE") or None)

    def is_controller(self, username: str | None) -> bool:
        return bool(username) and username in self.controllers


class ObjectApi:
    """What this module needs from KubeClient: reading an Application."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube

    async def application(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.kube.call(
                f"Application {namespace}/{name}", self.kube.custom.get_namespaced_custom_object,
                APPS_GROUP, APPS_VERSION, namespace, APPS_PLURAL, name)
            return obj
        except TargetNotFoundError:
            return None


async def gitops_requester(cfg: GitOpsConfig, apps: ObjectApi | None, who: Requester, obj: dict[str, Any],
                           tracked: dict[str, Any]) -> Requester:
    """The requester to use instead of the GitOps controller ``who``.

    ``obj`` is the Remediation; ``tracked`` the object Argo CD applied (the Remediation
    itself, or the RemediationPolicy owning it)."""
    meta = tracked.get("metadata") or {}
    kind, name, ns = tracked.get("kind") or "Remediation", meta.get("name", ""), meta.get("namespace", "")
    what = f"{kind} {ns}/{name} was applied by the GitOps controller {who.username}"
    never = "remedy never runs anything with the GitOps controller's own rights"
    try:
        app_ref = tracking(meta, cfg.apps_namespace)
    except AmbiguousTrackingError as exc:
        raise PermanentError(f"{what}, but {exc}; {never}", reason=REASON) from None
    if app_ref is None:
        raise PermanentError(f"{what} and carries no Argo CD tracking; {never}", reason=REASON)
    key = "/".join(app_ref)
    mapped = cfg.requesters.get(key)
    if not mapped:
        raise PermanentError(
            f"{what} for Application {key}, which has no GitOps requester; {never}: an admin maps the "
            f"Application to an RBAC-bound identity in REMEDY_GITOPS_REQUESTERS (chart value gitops.requesters, "
            f"docs/security.md)", reason=REASON)
    if apps is None:
        raise PermanentError(f"{what}; cannot read Application {key} to confirm it manages this object", reason=REASON)
    app = await apps.application(*app_ref)
    if app is None or not manages(app, GROUP, kind, ns, name):
        age = age_seconds(meta.get("creationTimestamp"))
        if app is not None and age is not None and age < LISTING_GRACE_SECONDS:
            raise RetryableError(f"waiting for Argo CD to list {kind} {ns}/{name} in Application {key}",
                                 delay=2.0, reason="WaitingForGitOps")
        raise PermanentError(f"{what}, but Application {key} "
                             f"{'does not exist' if app is None else 'does not list it among its resources'}; {never}",
                             reason=REASON)
    return Requester(username=mapped, groups=())


def gitops_approval(cfg: GitOpsConfig | None, user: str) -> str | None:
    """Why an approval by ``user`` does not count, if it came through GitOps."""
    if cfg is not None and cfg.is_controller(user):
        return (f"GitOpsApproval: {user} is a GitOps controller; approvals committed to git are not accepted, "
                "a person approves with kubectl remedy approve")
    return None
