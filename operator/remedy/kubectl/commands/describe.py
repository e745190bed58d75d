"""``kubectl remedy describe NAME``: plan, result, evidence, conditions and timeline of a Remediation."""

from __future__ import annotations

import argparse
import sys

from ...constants import REMEDIATIONS
from ..client import Kube
from ..command import Command, namespace, output
from ..render import (
    conditions,
    dump,
    duration_text,
    fmt_stamp,
    fmt_time,
    meta,
    phase_of,
    reason_of,
    section,
    timeline,
    yaml_block,
)


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml"))
    obj = kube.get(REMEDIATIONS, namespace(kube, args), args.name)
    events = kube.events_for(obj)
    story = timeline(obj, events)
    if fmt:
        sys.stdout.write(dump({"object": obj, "events": events, "timeline": [
            {"time": fmt_time(e.time), "source": e.source, "event": e.what} for e in story]}, fmt))
        return 0
    m, spec, status = meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    lines = [
        ("Name", m.get("name")), ("Namespace", m.get("namespace")),
        ("Labels", ",".join(f"{k}={v}" for k, v in (m.get("labels") or {}).items()) or "<none>"),
        ("Created", fmt_stamp(m.get("creationTimestamp"))),
        ("Action", status.get("action")), ("Target", status.get("target")),
        ("Phase", phase_of(obj) or "<none>"), ("Reason", reason_of(obj) or "<none>"),
        ("Message", status.get("message")), ("Incident", spec.get("reason")),
        ("Dry Run", str(bool(spec.get("dryRun"))).lower()),
        ("Approval Required", str(bool((spec.get("approval") or {}).get("required"))).lower()),
        ("Approved By", status.get("approvedBy")),
        ("Attempt", f"{status.get('attemptId') or '-'} (attempts: {status.get('attempts') or 0})"),
        ("Started", fmt_stamp(status.get("startedAt"))),
        ("Completed", fmt_stamp(status.get("completedAt"))),
        ("Duration", duration_text(obj)),
    ]
    out = [f"{k + ':':<20}{v if v not in (None, '') else '<none>'}\n" for k, v in lines]
    out.append("Plan:\n" + yaml_block(status.get("plan")))
    out.append("Result:\n" + yaml_block(status.get("result")))
    out.append("Evidence:\n" + yaml_block(status.get("evidence")))
    out.append("Conditions:\n")
    out.append(section([["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"]] + [
        [str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""),
         fmt_stamp(c.get("lastTransitionTime")), str(c.get("message") or "")] for c in conditions(obj)]))
    out.append("Timeline:\n")
    out.append(section([["TIME", "SOURCE", "WHAT"]] + [[fmt_time(e.time), e.source, e.what] for e in story]))
    sys.stdout.write("".join(out))
    return 0


COMMAND = Command("describe", "plan, result, evidence, conditions and timeline of a Remediation", run, "Remediation")
