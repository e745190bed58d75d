"""Who the API server says this kubeconfig is, for the annotations remedy's admission checks.

Why: the ValidatingAdmissionPolicies (deploy/admission/validating) accept a requester or an
approver only when the annotations name the requesting user exactly as request.userInfo does:
user name and every group, comma-joined in the API server's order. Where no
MutatingAdmissionPolicy writes them (validating-only mode), the client must, and only the API
server can say what they are: a SelfSubjectReview answers with request.userInfo itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.constants import ANN_APPROVED_BY, ANN_APPROVED_BY_GROUPS, ANN_REQUESTED_BY, ANN_REQUESTED_BY_GROUPS
from .client import Kube, PluginError

GROUP_SEPARATOR = ","  # what the admission policies join request.userInfo.groups with


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...]

    @property
    def joined_groups(self) -> str:
        return GROUP_SEPARATOR.join(self.groups)

    def requester_annotations(self) -> dict[str, str]:
        return {ANN_REQUESTED_BY: self.username, ANN_REQUESTED_BY_GROUPS: self.joined_groups}

    def approver_annotations(self) -> dict[str, str]:
        return {ANN_APPROVED_BY: self.username, ANN_APPROVED_BY_GROUPS: self.joined_groups}


def ask(kube: Kube) -> Identity | None:
    """request.userInfo as the API server sees this client (None if it cannot answer)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        review = client.AuthenticationV1Api(kube.api).create_self_subject_review(client.V1SelfSubjectReview())
    except (ApiException, OSError, HTTPError):
        return None
    info = review.status.user_info if review.status else None
    if info is None or not info.username:
        return None
    return Identity(str(info.username), tuple(str(g) for g in info.groups or ()))


def require(kube: Kube) -> Identity:
    """Like ``ask``, but a clear error when the API server does not say (nothing to guess from)."""
    who = ask(kube)
    if who is None:
        raise PluginError("cannot learn who you are from the API server (SelfSubjectReview, "
                          "authentication.k8s.io/v1): remedy's admission policies need your exact user name and groups")
    return who
