"""``kubectl remedy approve NAME``: approve a Remediation, only while it is AwaitingApproval."""

from __future__ import annotations

import argparse
import getpass
import os

from ...base.constants import ANN_APPROVED_BY, GROUP, REMEDIATIONS
from ..client import Kube, PluginError
from ..command import Command, done, namespace, output
from ..render import meta, phase_of


def default_approver(kube: Kube) -> str:
    """Who the API server says this kubeconfig is (SelfSubjectReview): the admission policy
    accepts only that name as approver. The kubeconfig user entry, then $USER, if it cannot ask."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        review = client.AuthenticationV1Api(kube.api).create_self_subject_review(client.V1SelfSubjectReview())
        name = review.status.user_info.username if review.status and review.status.user_info else None
        if name:
            return str(name)
    except (ApiException, OSError, HTTPError):
        pass
    return kube.user or os.environ.get("USER") or getpass.getuser()


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml", "name"))
    ns = namespace(kube, args)
    obj = kube.get(REMEDIATIONS, ns, args.name)
    phase = phase_of(obj) or "Pending (not yet processed)"
    if phase_of(obj) != "AwaitingApproval":
        raise PluginError(f'remediation "{args.name}" in namespace "{ns}" is {phase}, not AwaitingApproval: '
                          "nothing to approve")
    who = (args.by or default_approver(kube)).strip()
    if not who:
        raise PluginError("--by must not be empty")
    # resourceVersion makes this an optimistic lock: if the object moved on since we read it,
    # the API server answers 409 instead of us approving something we did not look at.
    body = {"metadata": {"resourceVersion": meta(obj).get("resourceVersion"),
                         "annotations": {ANN_APPROVED_BY: who}}}
    patched = kube.merge_patch(REMEDIATIONS, ns, args.name, body)
    return done(patched, fmt, f"remediation.{GROUP}/{args.name} approved by {who}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", default=None, help="approver recorded on the object; the API server accepts only your own user name "
                        "(default: who the API server says you are, else the kubeconfig user, then $USER)")


COMMAND = Command("approve", "approve a Remediation that is AwaitingApproval", run, "Remediation", _arguments)
