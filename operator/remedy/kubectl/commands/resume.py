"""``kubectl remedy resume POLICY``: lift a person's pause or the policy's own self-pause."""

from __future__ import annotations

import argparse

from ...base import rfc3339
from ...base.constants import ANN_RESUMED_AT, GROUP, POLICIES
from ..client import Kube
from ..command import Command, done, namespace, output


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml", "name"))
    ns = namespace(kube, args)
    kube.get(POLICIES, ns, args.name)
    # spec.paused=false resumes a person's pause; the annotation makes the object change even
    # when spec.paused was already false, which is how a self-pause (TooManyFailures) is lifted.
    body = {"metadata": {"annotations": {ANN_RESUMED_AT: rfc3339.now()}}, "spec": {"paused": False}}
    patched = kube.merge_patch(POLICIES, ns, args.name, body)
    return done(patched, fmt, f"remediationpolicy.{GROUP}/{args.name} resumed")


COMMAND = Command("resume", "resume a RemediationPolicy, including after a self-pause", run, "RemediationPolicy")
