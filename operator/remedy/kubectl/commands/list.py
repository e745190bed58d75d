"""``kubectl remedy list``: one line per Remediation (NAME ACTION TARGET PHASE REASON AGE)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from ...base.constants import GROUP, REMEDIATIONS
from ..client import Kube
from ..command import Command, namespace, output
from ..render import age, dump, duration_text, meta, phase_of, reason_of, table


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("wide", "json", "yaml", "name"))
    all_ns = bool(getattr(args, "all_namespaces", False))
    items = kube.list_objects(REMEDIATIONS, None if all_ns else namespace(kube, args))
    if fmt in ("json", "yaml"):
        sys.stdout.write(dump({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}, fmt))
        return 0
    if fmt == "name":
        for o in items:
            sys.stdout.write(f"remediation.{GROUP}/{meta(o).get('name')}\n")
        return 0
    if not items:
        where = "any namespace" if all_ns else f"{namespace(kube, args)} namespace"
        sys.stderr.write(f"No resources found in {where}.\n")
        return 0
    header = ["NAME", "ACTION", "TARGET", "PHASE", "REASON", "AGE"]
    if fmt == "wide":
        header += ["APPROVED-BY", "ATTEMPT", "DURATION", "MESSAGE"]
    if all_ns:
        header = ["NAMESPACE", *header]
    rows = [header]
    now = datetime.now(timezone.utc)
    for o in items:
        m, status = meta(o), o.get("status") or {}
        row = [str(m.get("name")), str(status.get("action") or ""), str(status.get("target") or ""),
               phase_of(o), reason_of(o), age(m.get("creationTimestamp"), now)]
        if fmt == "wide":
            row += [str(status.get("approvedBy") or ""), str(status.get("attemptId") or ""),
                    duration_text(o, ""), str(status.get("message") or "")[:80]]
        if all_ns:
            row = [str(m.get("namespace")), *row]
        rows.append(row)
    sys.stdout.write(table(rows))
    return 0


COMMAND = Command("list", "list Remediations (NAME ACTION TARGET PHASE REASON AGE)", run)
