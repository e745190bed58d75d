"""``kubectl remedy describe NAME``: plan, result, evidence, conditions and timeline of a Remediation.

``--keys`` prints, one per line, every key a bulk action's rule selects *now* (re-derived with
the caller's own credentials; status holds only counts, the first 20 and a digest).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from typing import Any

from ...base.constants import REMEDIATIONS
from ..client import Kube, PluginError
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


def _keys(kube: Kube, obj: dict[str, Any]) -> int:
    from ...actions.keys import key_set_action, selected_keys
    from ...base.errors import RemedyError

    ns = str((obj.get("metadata") or {}).get("namespace"))
    action = (obj.get("spec") or {}).get("action") or {}
    try:
        name, is_key_set = key_set_action(action)
    except ValueError as exc:
        raise PluginError(f"cannot read spec.action: {exc}") from None
    if not is_key_set:
        raise PluginError(f"--keys: action {name} does not act on a key set")

    def read_secret(secret_name: str, key: str) -> str:
        secret = kube.call(f'secrets "{secret_name}" in namespace "{ns}"', kube.core.read_namespaced_secret,
                           secret_name, ns)
        data = (secret.data or {}).get(key)
        if data is None:
            raise PluginError(f'Secret {ns}/{secret_name} has no key "{key}"')
        return base64.b64decode(data).decode()

    async def stream() -> int:
        n = 0
        async for key in selected_keys(action, ns, str(obj["metadata"]["name"]), str(obj["metadata"].get("uid")),
                                       read_secret):
            sys.stdout.write(key + "\n")
            n += 1
        return n

    try:
        count = asyncio.run(stream())
    except RemedyError as exc:
        raise PluginError(exc.message) from None
    sys.stderr.write(f"{count} key(s) selected now by {name} (re-derived, not stored)\n")
    return 0


def run(kube: Kube, args: argparse.Namespace) -> int:
    fmt = output(args, ("json", "yaml"))
    obj = kube.get(REMEDIATIONS, namespace(kube, args), args.name)
    if getattr(args, "keys", False):
        return _keys(kube, obj)
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


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", action="store_true",
                        help="print every key the bulk action's rule selects now (re-derived; needs read access to its Secrets)")


COMMAND = Command("describe", "plan, result, evidence, conditions and timeline of a Remediation", run, "Remediation",
                  add_arguments=_arguments)
