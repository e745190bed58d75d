"""``kubectl remedy approve NAME``: approve a Remediation, only while it is AwaitingApproval."""

from __future__ import annotations

import argparse
import getpass
import os

from ...base.constants import ANN_APPROVED_BY, ANN_APPROVED_BY_GROUPS, GROUP, REMEDIATIONS
from .. import identity
from ..client import Kube, PluginError
from ..command import Command, done, namespace, output
from ..render import meta, phase_of


def default_approver(kube: Kube) -> tuple[str, str | None]:
    """(name, groups) from SelfSubjectReview: the admission policy accepts only the approving
    user's own name and groups. The kubeconfig user entry, then $USER, if it cannot ask; the
    groups are then left to the mutating admission policy (where it is served)."""
    who = identity.ask(kube)
    if who is not None:
        return who.username, who.joined_groups
    return kube.user or os.environ.get("USER") or getpass.getuser(), None


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml", "name"))
    ns = namespace(kube, args)
    obj = kube.get(REMEDIATIONS, ns, args.name)
    phase = phase_of(obj) or "Pending (not yet processed)"
    if phase_of(obj) != "AwaitingApproval":
        raise PluginError(f'remediation "{args.name}" in namespace "{ns}" is {phase}, not AwaitingApproval: '
                          "nothing to approve")
    asked, groups = default_approver(kube)
    who = (args.by or asked).strip()
    if not who:
        raise PluginError("--by must not be empty")
    annotations = {ANN_APPROVED_BY: who}
    if groups is not None and who == asked:
        # Where no MutatingAdmissionPolicy stamps them, the validating policy wants the
        # approver's groups written by the client; where one does, it writes the same value.
        annotations[ANN_APPROVED_BY_GROUPS] = groups
    # resourceVersion makes this an optimistic lock: if the object moved on since we read it,
    # the API server answers 409 instead of us approving something we did not look at.
    body = {"metadata": {"resourceVersion": meta(obj).get("resourceVersion"),
                         "annotations": annotations}}
    patched = kube.merge_patch(REMEDIATIONS, ns, args.name, body)
    return done(patched, fmt, f"remediation.{GROUP}/{args.name} approved by {who}")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", default=None, help="approver recorded on the object; the API server accepts only your own user name "
                        "(default: who the API server says you are, else the kubeconfig user, then $USER)")


COMMAND = Command("approve", "approve a Remediation that is AwaitingApproval", run, "Remediation", _arguments)
