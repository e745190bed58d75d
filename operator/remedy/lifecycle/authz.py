"""No confused deputy: a Remediation runs only with the rights of whoever asked for it.

Why: the operator may patch Deployments, read Secrets and end database sessions. Anyone who
may create a Remediation would otherwise borrow all of that. So before an action plans
(planning already reads Secrets) the lifecycle:

1. reads the requester the API server recorded at admission (annotations stamped by the
   MutatingAdmissionPolicy in charts/remedy/templates/admission.yaml, unforgeable because
   the ValidatingAdmissionPolicy rejects any other value). A policy's child carries the
   policy's recorded author, which is checked against the owning policy here;
2. asks the API server (SubjectAccessReview) whether that user and groups may
   ``use remediationactions.<group>/<action>``, ``get`` every Secret the params name and
   ``patch`` the workload they target;
3. resolves every URL the params name and checks it against the operator's egress allowlist.

Any refusal is a PermanentError whose message names exactly what is missing, so the
Remediation ends Failed (RequesterForbidden / DestinationNotAllowed) with an Event and
nothing read or sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from ..api.children import controller_of
from ..api.common import SecretKeyRef
from ..api.objects import view
from ..base.constants import ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS, GROUP, POLICIES, POLICY_KIND
from ..base.errors import PermanentError
from ..clients.access_review import Permission, Requester
from ..clients.egress import DestinationNotAllowedError, EgressPolicy
from .gitops_identity import GitOpsConfig, ObjectApi, gitops_requester

ACTIONS_RESOURCE = "remediationactions"
USE_VERB = "use"
GROUP_SEPARATOR = ","

_WORKLOAD_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
_URL_FIELDS = ("url", "status_url", "base_url")


class RequesterForbiddenError(PermanentError):
    reason = "RequesterForbidden"


class Reviewer(Protocol):
    async def allowed(self, who: Requester, perm: Permission) -> tuple[bool, str]: ...


class ObjectReader(Protocol):
    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def split_groups(text: str | None) -> tuple[str, ...]:
    return tuple(g for g in (text or "").split(GROUP_SEPARATOR) if g)


def requester_of(obj: dict[str, Any]) -> Requester | None:
    """The user the API server saw create (or last change the spec of) this object."""
    ann = view(obj).annotations
    user = ann.get(ANN_REQUESTED_BY)
    if not user:
        return None
    return Requester(username=user, groups=split_groups(ann.get(ANN_REQUESTED_BY_GROUPS)))


def on_behalf_of(policy: dict[str, Any]) -> dict[str, str]:
    """The requester annotations a policy's child carries: the policy's recorded author."""
    ann = view(policy).annotations
    return {k: ann[k] for k in (ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS) if k in ann}


def _walk(model: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every field of a params model, recursively."""
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            value = getattr(model, name)
            yield f"{path}.{name}" if path else name, value
            yield from _walk(value, f"{path}.{name}" if path else name)
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            yield from _walk(item, f"{path}[{i}]")


def secret_refs(params: Any) -> list[SecretKeyRef]:
    return [v for _, v in _walk(params) if isinstance(v, SecretKeyRef)]


def urls(params: Any) -> list[str]:
    return [v for p, v in _walk(params)
            if isinstance(v, str) and p.rsplit(".", 1)[-1] in _URL_FIELDS and v.startswith(("http://", "https://"))]


def required_permissions(action: str, params: Any, namespace: str) -> list[Permission]:
    """What the requester must be allowed, in the order it is checked."""
    perms = [Permission(USE_VERB, ACTIONS_RESOURCE, namespace, name=action, group=GROUP)]
    target = getattr(params, "target", None)
    kind, name = getattr(target, "kind", None), getattr(target, "name", None)
    if isinstance(kind, str) and kind in _WORKLOAD_PLURALS and isinstance(name, str):
        perms.append(Permission("patch", _WORKLOAD_PLURALS[kind], namespace, name=name, group="apps",
                                subresource="scale" if action == "scaleWorkload" else ""))
    seen: set[str] = set()
    for ref in secret_refs(params):
        if ref.name not in seen:
            seen.add(ref.name)
            perms.append(Permission("get", "secrets", namespace, name=ref.name))
    return perms


@dataclass
class Guard:
    """The checks above; ``reviewer`` None disables the RBAC part (unit tests, or
    ``REMEDY_REQUESTER_CHECKS=false`` for a cluster without the admission policies)."""

    reviewer: Reviewer | None
    egress: EgressPolicy | None
    objects: ObjectReader | None = None
    # Identity through GitOps (lifecycle/gitops_identity.py): a GitOps controller as requester is
    # replaced by the requester the admin mapped its Application to, or refused.
    gitops: GitOpsConfig | None = None
    apps: ObjectApi | None = None

    async def requester(self, obj: dict[str, Any]) -> Requester:
        meta = obj.get("metadata") or {}
        who = requester_of(obj)
        if who is None:
            raise RequesterForbiddenError(
                f"no {ANN_REQUESTED_BY} annotation: the requester is unknown, so nothing is run on their behalf "
                "(install the remedy admission policies: charts/remedy templates/admission.yaml or deploy/admission)",
                reason="RequesterUnknown")
        ref = controller_of(obj)
        owner: dict[str, Any] | None = None
        if ref is not None and self.objects is not None:
            policy = str(ref.get("name"))
            owner = await self.objects.get_object(POLICIES, meta.get("namespace", ""), policy)
            if owner is not None and view(owner).metadata.get("uid") != ref.get("uid"):
                # A policy of that name, but not the one this child was created for (deleted
                # and recreated, perhaps by someone else): its author is not this child's.
                owner = None
            author = requester_of(owner) if owner else None
            if author is None or author != who:
                raise RequesterForbiddenError(
                    f"recorded requester {who.username!r} does not match the author of RemediationPolicy "
                    f"{policy!r} ({author.username if author else 'unknown'!r}); not run on anyone's behalf")
        if self.gitops is not None and self.gitops.is_controller(who.username):
            tracked = {"kind": POLICY_KIND, **owner} if owner is not None else {"kind": "Remediation", **obj}
            return await gitops_requester(self.gitops, self.apps, who, obj, tracked)
        return who

    async def check(self, obj: dict[str, Any], action: str, params: Any) -> Requester | None:
        """Raise unless the requester may do all of this; returns the requester checked."""
        namespace = obj["metadata"]["namespace"]
        who: Requester | None = None
        if self.reviewer is not None:
            who = await self.requester(obj)
            for perm in required_permissions(action, params, namespace):
                ok, why = await self.reviewer.allowed(who, perm)
                if not ok:
                    groups = f" (groups {', '.join(who.groups)})" if who.groups else ""
                    raise RequesterForbiddenError(
                        f"requester {who.username}{groups} may not {perm.describe()}; "
                        f"grant it with RBAC to run this {action}" + (f" [{why}]" if why else ""))
        if self.egress is not None:
            for url in urls(params):
                why_not = await self.egress.check_url(url)
                if why_not:
                    raise DestinationNotAllowedError(f"{action}: {why_not}; nothing was sent and no Secret was read")
        return who
