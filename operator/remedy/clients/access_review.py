"""Ask the API server whether a user may do something (SubjectAccessReview).

Why: the operator holds broad rights; a Remediation must run with the rights of the person
who asked for it. The API server's authorizer (RBAC, and whatever else the cluster runs) is
the only authority on that, so remedy asks it instead of re-implementing RBAC.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from ..base.errors import RetryableError


@dataclass(frozen=True)
class Permission:
    """One attribute set of an RBAC check, e.g. get secrets "pg" in namespace shop."""

    verb: str
    resource: str
    namespace: str
    name: str = ""
    group: str = ""
    subresource: str = ""

    def describe(self) -> str:
        res = f"{self.resource}{'/' + self.subresource if self.subresource else ''}"
        if self.group:
            res = f"{res}.{self.group}"
        named = f' "{self.name}"' if self.name else ""
        return f"{self.verb} {res}{named} in namespace {self.namespace}"


@dataclass(frozen=True)
class Requester:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""


class AccessReviewer:
    """LocalSubjectAccessReview through the operator's own client.

    Local (namespaced) rather than cluster-wide SubjectAccessReview: every question remedy
    asks is about one namespace, and ``create localsubjectaccessreviews`` can be granted by a
    Role, so the namespaced install keeps having no cluster-scoped grant at all.
    """

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = k8s.AuthorizationV1Api(api_client)

    async def allowed(self, who: Requester, perm: Permission) -> tuple[bool, str]:
        body = k8s.V1LocalSubjectAccessReview(metadata=k8s.V1ObjectMeta(namespace=perm.namespace),
                                              spec=k8s.V1SubjectAccessReviewSpec(
            user=who.username, groups=list(who.groups), uid=who.uid or None,
            resource_attributes=k8s.V1ResourceAttributes(
                verb=perm.verb, group=perm.group, resource=perm.resource, subresource=perm.subresource or None,
                namespace=perm.namespace, name=perm.name or None,
            ),
        ))
        try:
            res = await asyncio.to_thread(self.api.create_namespaced_local_subject_access_review, perm.namespace, body)
        except ApiException as exc:
            if exc.status in (401, 403):
                # Fail closed, but say why: the operator itself may not ask.
                return False, "the operator may not create localsubjectaccessreviews (check its RBAC)"
            raise RetryableError(f"LocalSubjectAccessReview failed with HTTP {exc.status}", delay=3.0,
                                 reason="APIUnavailable") from None
        except (OSError, TimeoutError) as exc:
            raise RetryableError(f"LocalSubjectAccessReview: API server unreachable ({type(exc).__name__})", delay=3.0,
                                 reason="APIUnavailable") from None
        status = res.status
        return bool(status and status.allowed and not status.denied), str((status and status.reason) or "")
