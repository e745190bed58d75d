"""``kubectl remedy history POLICY``: a RemediationPolicy's counters and its Remediations by time."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from ...base import rfc3339
from ...base.constants import ANN_MODE, LABEL_POLICY, POLICIES, REMEDIATIONS
from ..client import Kube
from ..command import Command, namespace, output
from ..render import condition, dump, duration_of, duration_text, fmt_stamp, indent, meta, phase_of, reason_of, section, table

_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def children(kube: Kube, ns: str, policy: str) -> list[dict[str, Any]]:
    """The policy's Remediations (by its label), oldest first."""
    items = kube.list_objects(REMEDIATIONS, ns, label_selector=f"{LABEL_POLICY}={policy}")
    return sorted(items, key=lambda o: (rfc3339.parse(meta(o).get("creationTimestamp")) or _EPOCH, str(meta(o).get("name"))))


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml"))
    ns = namespace(kube, args)
    policy = kube.get(POLICIES, ns, args.name)
    kids = children(kube, ns, args.name)
    pstatus = policy.get("status") or {}
    counters = dict(pstatus.get("counters") or {})
    paused_spec = bool((policy.get("spec") or {}).get("paused"))
    record = dict(pstatus.get("trackRecord") or {})
    outcome_of = {str(o.get("name")): str(o.get("outcome")) + (f" ({o['wouldHave']})" if o.get("wouldHave") else "")
                  for o in record.get("lastOutcomes") or []}
    if fmt:
        sys.stdout.write(dump({
            "policy": args.name, "namespace": ns, "paused": paused_spec,
            "conditions": pstatus.get("conditions") or [], "counters": counters,
            "lastFiredAt": pstatus.get("lastFiredAt"),
            "mode": pstatus.get("mode"), "modeSince": pstatus.get("modeSince"), "trackRecord": record,
            "remediations": [{
                "name": meta(o).get("name"), "created": meta(o).get("creationTimestamp"),
                "action": (o.get("status") or {}).get("action"), "target": (o.get("status") or {}).get("target"),
                "phase": phase_of(o) or None, "reason": reason_of(o) or None, "durationSeconds": duration_of(o),
                "mode": (meta(o).get("annotations") or {}).get(ANN_MODE), "outcome": outcome_of.get(str(meta(o).get("name"))),
            } for o in kids],
        }, fmt))
        return 0
    paused = condition(policy, "Paused")
    out = [f"Policy:     {ns}/{args.name}\n",
           f"Paused:     spec={str(paused_spec).lower()}"
           + (f", condition={paused.get('status')} ({paused.get('reason')})" if paused else "") + "\n",
           f"Last fired: {fmt_stamp(pstatus.get('lastFiredAt'))}\n", "Counters:\n"]
    out.append(indent(table([[f"{k}:", str(v)] for k, v in counters.items()])) if counters else "  <none>\n")
    autonomous = condition(policy, "Autonomous")
    out.append(f"Mode:       {pstatus.get('mode') or (policy.get('spec') or {}).get('mode') or 'auto'} since {fmt_stamp(pstatus.get('modeSince'))}"
               + (f" ({autonomous.get('reason')}: {autonomous.get('message')})" if autonomous else "") + "\n")
    if record:
        out.append("Track record:\n")
        out.append(indent(table([[f"{k}:", str(v)] for k, v in record.items() if k != "lastOutcomes"])))
    out.append(f"Remediations ({len(kids)}):\n")
    rows = [["CREATED", "NAME", "ACTION", "TARGET", "PHASE", "REASON", "DURATION", "MODE", "OUTCOME"]]
    for o in kids:
        st = o.get("status") or {}
        rows.append([fmt_stamp(meta(o).get("creationTimestamp")), str(meta(o).get("name")),
                     str(st.get("action") or ""), str(st.get("target") or ""), phase_of(o) or "-",
                     reason_of(o) or "-", duration_text(o), (meta(o).get("annotations") or {}).get(ANN_MODE) or "-",
                     outcome_of.get(str(meta(o).get("name")), "-")])
    out.append(section(rows))
    sys.stdout.write("".join(out))
    return 0


COMMAND = Command("history", "a RemediationPolicy's Remediations and counters", run, "RemediationPolicy")
