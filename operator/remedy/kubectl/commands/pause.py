"""``kubectl remedy pause POLICY``: stop a RemediationPolicy creating Remediations (spec.paused)."""

from __future__ import annotations

import argparse

from ...base.constants import GROUP, POLICIES
from ..client import Kube
from ..command import Command, done, namespace, output


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml", "name"))
    ns = namespace(kube, args)
    kube.get(POLICIES, ns, args.name)  # a clear NotFound before patching
    patched = kube.merge_patch(POLICIES, ns, args.name, {"spec": {"paused": True}})
    return done(patched, fmt, f"remediationpolicy.{GROUP}/{args.name} paused")


COMMAND = Command("pause", "pause a RemediationPolicy (spec.paused=true)", run, "RemediationPolicy")
