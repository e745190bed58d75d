"""``kubectl remedy``: the operator's day-2 surface for people on call.

Why this exists: ``kubectl get rem`` shows one line per object, but during an incident people
need the *story* of a Remediation (plan, evidence, conditions and Events on one timeline), a
safe way to approve one (only when it is actually waiting, never blindly), a pause switch for
a policy that misbehaves, a policy's history, and a post-incident report they can paste into
the review. Installed as the console script ``kubectl-remedy`` so kubectl's plugin discovery
finds it on PATH; it follows kubectl conventions (``--kubeconfig``, ``--context``,
``-n/--namespace`` defaulting to the context's namespace, ``-A``, ``-o json|yaml``; exit 0 on
success, 1 with a message on stderr otherwise).

It reads and writes only through the Kubernetes API (the kubernetes python client) and only
touches metadata and ``spec``: status belongs to the operator.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn

import yaml

from . import rfc3339
from .constants import ANN_APPROVED_BY as APPROVED_BY_ANNOTATION
from .constants import ANN_RESUMED_AT as RESUMED_AT_ANNOTATION
from .constants import GROUP, POLICIES, REMEDIATIONS, VERSION
from .constants import KUBECTL_FIELD_MANAGER as FIELD_MANAGER
from .constants import LABEL_POLICY as POLICY_LABEL


class PluginError(Exception):
    """A user-facing failure: printed on stderr, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """kubectl exits 1 on usage errors too; argparse's default is 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n")


# -- time helpers -----------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    """RFC 3339 string (or datetime) -> aware datetime; None when missing or unparsable."""
    if value is None or value == "":
        return None
    return rfc3339.parse(value)


def human_duration(seconds: float) -> str:
    """kubectl's compact age style: 45s, 3m20s, 2h5m, 3d4h."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 10:
        return f"{m}m{s}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h == 0:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    if d == 0:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h}h" if h else f"{d}d"
    return f"{d}d"


def age(value: Any, now: datetime | None = None) -> str:
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(timezone.utc)) - t).total_seconds())


def fmt_time(t: datetime | None) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def duration_of(obj: dict[str, Any]) -> float | None:
    """Seconds from start of execution (or creation, if it never started) to completion."""
    status = obj.get("status") or {}
    end = parse_time(status.get("completedAt"))
    start = parse_time(status.get("startedAt")) or parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if end is None or start is None:
        return None
    return max(0.0, (end - start).total_seconds())


# -- object helpers ---------------------------------------------------------------------------

def conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in ((obj.get("status") or {}).get("conditions") or []) if isinstance(c, dict)]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in conditions(obj):
        if c.get("type") == type_:
            return c
    return None


def reason_of(obj: dict[str, Any]) -> str:
    """The one word that explains where the object is: Completed's reason once final, else the
    reason of the step it is waiting on."""
    status = obj.get("status") or {}
    completed = condition(obj, "Completed")
    if completed and completed.get("status") == "True":
        return str(completed.get("reason") or "")
    if status.get("phase") == "AwaitingApproval":
        approved = condition(obj, "Approved")
        return str((approved or {}).get("reason") or "AwaitingApproval")
    for type_ in ("Verified", "Executed", "Approved", "Validated"):
        c = condition(obj, type_)
        if c and c.get("reason") not in (None, "", "NotEvaluated", "NotConfigured"):
            return str(c["reason"])
    return ""


def phase_of(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return dict(meta)


def _table(rows: Sequence[Sequence[str]]) -> str:
    """kubectl-style left-aligned columns separated by three spaces."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=4, sort_keys=False, default=str) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def _indent(text: str, prefix: str = "  ") -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


# -- timeline ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One line of a Remediation's story."""

    time: datetime
    source: str  # object | status | condition | event
    what: str
    order: int = 0  # tie-break within the same second: creation first, completion last


def timeline(obj: dict[str, Any], events: Iterable[dict[str, Any]]) -> list[Entry]:
    """Status timestamps, conditions' lastTransitionTime and the object's Events, by time."""
    meta, status = _meta(obj), obj.get("status") or {}
    entries: list[Entry] = []

    def add(when: Any, source: str, what: str, order: int) -> None:
        t = parse_time(when)
        if t is not None:
            entries.append(Entry(t, source, what, order))

    add(meta.get("creationTimestamp"), "object", "Remediation created", 0)
    attempt = status.get("attemptId")
    add(status.get("startedAt"), "status", f"execution started{f' (attempt {attempt})' if attempt else ''}", 3)
    if status.get("completedAt"):
        add(status.get("completedAt"), "status", f"completed: {phase_of(obj) or '?'} ({reason_of(obj) or '-'})", 5)
    for c in conditions(obj):
        msg = f"{c.get('type')}={c.get('status')} {c.get('reason') or ''}".rstrip()
        if c.get("message"):
            msg += f": {c['message']}"
        add(c.get("lastTransitionTime"), "condition", msg, 2)
    for e in events:
        when = e.get("eventTime") or e.get("firstTimestamp") or e.get("lastTimestamp") or _meta(e).get("creationTimestamp")
        count = int(e.get("count") or 1)
        text = f"{e.get('type') or 'Normal'} {e.get('reason') or ''}: {e.get('message') or ''}"
        if count > 1:
            text += f" (x{count})"
        add(when, "event", text, 4)
    entries.sort(key=lambda x: (x.time, x.order))
    return entries


# -- the API ----------------------------------------------------------------------------------

class Kube:
    """The few API calls the plugin needs, with kubectl-like errors."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig)
        except (ConfigException, OSError, yaml.YAMLError) as exc:
            raise PluginError(f"cannot load kubeconfig: {exc}") from None
        chosen = active
        if context:
            chosen = next((c for c in contexts or [] if c.get("name") == context), active)
        ctx = (chosen or {}).get("context") or {}
        self.default_namespace: str = str(ctx.get("namespace") or "default")
        self.user: str | None = ctx.get("user") or None
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise PluginError(f"Error from server (NotFound): {what} not found") from None
            raise PluginError(f"Error from server ({exc.reason}): {what}: {_api_message(exc)}") from None
        except HTTPError as exc:
            raise PluginError(f"cannot reach the API server: {exc}") from None

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.call(f'{plural}.{GROUP} "{name}" in namespace "{ns}"',
                                        self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name)
        return obj

    def list_objects(self, plural: str, ns: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        if ns is None:
            res = self.call(f"{plural}.{GROUP}", self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **kwargs)
        else:
            res = self.call(f"{plural}.{GROUP}", self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural, **kwargs)
        return [dict(i) for i in (res or {}).get("items") or []]

    def merge_patch(self, plural: str, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = self.call(
            f'{plural}.{GROUP} "{name}" in namespace "{ns}"', self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, ns, plural, name, body, field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json")
        return obj

    def events_for(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        meta = _meta(obj)
        selector = f"involvedObject.name={meta.get('name')}"
        if meta.get("uid"):
            selector += f",involvedObject.uid={meta['uid']}"
        res = self.call("events", self.core.list_namespaced_event, meta.get("namespace"), field_selector=selector)
        items = self.api.sanitize_for_serialization(res).get("items") or []
        return [dict(e) for e in items]


def _api_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.body or exc.reason)
    return str(body.get("message") or exc.reason) if isinstance(body, dict) else str(exc.body)


# -- commands ---------------------------------------------------------------------------------

def _namespace(kube: Kube, args: argparse.Namespace) -> str:
    return str(getattr(args, "namespace", None) or kube.default_namespace)


def _output(args: argparse.Namespace, allowed: Iterable[str]) -> str | None:
    fmt: str | None = getattr(args, "output", None)
    allowed = tuple(allowed)
    if fmt is not None and fmt not in allowed:
        raise PluginError(f"unable to match a printer suitable for the output format {fmt!r}, "
                          f"allowed formats are: {','.join(allowed)}")
    return fmt


def cmd_list(kube: Kube, args: argparse.Namespace) -> int:
    fmt = _output(args, ("wide", "json", "yaml", "name"))
    all_ns = bool(getattr(args, "all_namespaces", False))
    items = kube.list_objects(REMEDIATIONS, None if all_ns else _namespace(kube, args))
    if fmt in ("json", "yaml"):
        sys.stdout.write(_dump({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}, fmt))
        return 0
    if fmt == "name":
        for o in items:
            sys.stdout.write(f"remediation.{GROUP}/{_meta(o).get('name')}\n")
        return 0
    if not items:
        where = "any namespace" if all_ns else f"{_namespace(kube, args)} namespace"
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
        meta, status = _meta(o), o.get("status") or {}
        row = [str(meta.get("name")), str(status.get("action") or ""), str(status.get("target") or ""),
               phase_of(o), reason_of(o), age(meta.get("creationTimestamp"), now)]
        if fmt == "wide":
            d = duration_of(o)
            row += [str(status.get("approvedBy") or ""), str(status.get("attemptId") or ""),
                    human_duration(d) if d is not None else "", str(status.get("message") or "")[:80]]
        if all_ns:
            row = [str(meta.get("namespace")), *row]
        rows.append(row)
    sys.stdout.write(_table(rows))
    return 0


def _yaml_block(data: Any) -> str:
    if data in (None, {}, []):
        return "  <none>\n"
    return _indent(str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)))


def cmd_describe(kube: Kube, args: argparse.Namespace) -> int:
    fmt = _output(args, ("json", "yaml"))
    ns = _namespace(kube, args)
    obj = kube.get(REMEDIATIONS, ns, args.name)
    events = kube.events_for(obj)
    story = timeline(obj, events)
    if fmt:
        sys.stdout.write(_dump({"object": obj, "events": events, "timeline": [
            {"time": fmt_time(e.time), "source": e.source, "event": e.what} for e in story]}, fmt))
        return 0
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    d = duration_of(obj)
    lines = [
        ("Name", meta.get("name")), ("Namespace", meta.get("namespace")),
        ("Labels", ",".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()) or "<none>"),
        ("Created", fmt_time(parse_time(meta.get("creationTimestamp")))),
        ("Action", status.get("action")), ("Target", status.get("target")),
        ("Phase", phase_of(obj) or "<none>"), ("Reason", reason_of(obj) or "<none>"),
        ("Message", status.get("message")), ("Incident", spec.get("reason")),
        ("Dry Run", str(bool(spec.get("dryRun"))).lower()),
        ("Approval Required", str(bool((spec.get("approval") or {}).get("required"))).lower()),
        ("Approved By", status.get("approvedBy")),
        ("Attempt", f"{status.get('attemptId') or '-'} (attempts: {status.get('attempts') or 0})"),
        ("Started", fmt_time(parse_time(status.get("startedAt")))),
        ("Completed", fmt_time(parse_time(status.get("completedAt")))),
        ("Duration", human_duration(d) if d is not None else "-"),
    ]
    out = [f"{k + ':':<20}{v if v not in (None, '') else '<none>'}\n" for k, v in lines]
    out.append("Plan:\n" + _yaml_block(status.get("plan")))
    out.append("Result:\n" + _yaml_block(status.get("result")))
    out.append("Evidence:\n" + _yaml_block(status.get("evidence")))
    out.append("Conditions:\n")
    conds = conditions(obj)
    if conds:
        rows = [["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"]]
        rows += [[str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""),
                  fmt_time(parse_time(c.get("lastTransitionTime"))), str(c.get("message") or "")] for c in conds]
        out.append(_indent(_table(rows)))
    else:
        out.append("  <none>\n")
    out.append("Timeline:\n")
    if story:
        rows = [["TIME", "SOURCE", "WHAT"]] + [[fmt_time(e.time), e.source, e.what] for e in story]
        out.append(_indent(_table(rows)))
    else:
        out.append("  <none>\n")
    sys.stdout.write("".join(out))
    return 0


def default_approver(kube: Kube) -> str:
    return kube.user or os.environ.get("USER") or getpass.getuser()


def cmd_approve(kube: Kube, args: argparse.Namespace) -> int:
    fmt = _output(args, ("json", "yaml", "name"))
    ns = _namespace(kube, args)
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
    body = {"metadata": {"resourceVersion": _meta(obj).get("resourceVersion"),
                         "annotations": {APPROVED_BY_ANNOTATION: who}}}
    patched = kube.merge_patch(REMEDIATIONS, ns, args.name, body)
    return _done(patched, fmt, f"remediation.{GROUP}/{args.name} approved by {who}")


def _done(obj: dict[str, Any], fmt: str | None, message: str) -> int:
    if fmt in ("json", "yaml"):
        sys.stdout.write(_dump(obj, fmt))
    elif fmt == "name":
        sys.stdout.write(message.split(" ", 1)[0] + "\n")
    else:
        sys.stdout.write(message + "\n")
    return 0


def cmd_pause(kube: Kube, args: argparse.Namespace) -> int:
    fmt = _output(args, ("json", "yaml", "name"))
    ns = _namespace(kube, args)
    kube.get(POLICIES, ns, args.name)  # a clear NotFound before patching
    patched = kube.merge_patch(POLICIES, ns, args.name, {"spec": {"paused": True}})
    return _done(patched, fmt, f"remediationpolicy.{GROUP}/{args.name} paused")


def cmd_resume(kube: Kube, args: argparse.Namespace) -> int:
    fmt = _output(args, ("json", "yaml", "name"))
    ns = _namespace(kube, args)
    kube.get(POLICIES, ns, args.name)
    now = rfc3339.now()
    # spec.paused=false resumes a person's pause; the annotation makes the object change even
    # when spec.paused was already false, which is how a self-pause (TooManyFailures) is lifted.
    body = {"metadata": {"annotations": {RESUMED_AT_ANNOTATION: now}}, "spec": {"paused": False}}
    patched = kube.merge_patch(POLICIES, ns, args.name, body)
    return _done(patched, fmt, f"remediationpolicy.{GROUP}/{args.name} resumed")


def _children(kube: Kube, ns: str, policy: str) -> list[dict[str, Any]]:
    items = kube.list_objects(REMEDIATIONS, ns, label_selector=f"{POLICY_LABEL}={policy}")
    return sorted(items, key=lambda o: (parse_time(_meta(o).get("creationTimestamp")) or datetime.min.replace(tzinfo=timezone.utc),
                                        str(_meta(o).get("name"))))


def cmd_history(kube: Kube, args: argparse.Namespace) -> int:
    fmt = _output(args, ("json", "yaml"))
    ns = _namespace(kube, args)
    policy = kube.get(POLICIES, ns, args.name)
    children = _children(kube, ns, args.name)
    pstatus = policy.get("status") or {}
    counters = dict(pstatus.get("counters") or {})
    if fmt:
        sys.stdout.write(_dump({
            "policy": args.name, "namespace": ns, "paused": bool((policy.get("spec") or {}).get("paused")),
            "conditions": pstatus.get("conditions") or [], "counters": counters,
            "lastFiredAt": pstatus.get("lastFiredAt"),
            "remediations": [{
                "name": _meta(o).get("name"), "created": _meta(o).get("creationTimestamp"),
                "action": (o.get("status") or {}).get("action"), "target": (o.get("status") or {}).get("target"),
                "phase": phase_of(o) or None, "reason": reason_of(o) or None, "durationSeconds": duration_of(o),
            } for o in children],
        }, fmt))
        return 0
    paused = condition(policy, "Paused")
    out = [f"Policy:     {ns}/{args.name}\n",
           f"Paused:     spec={str(bool((policy.get('spec') or {}).get('paused'))).lower()}"
           + (f", condition={paused.get('status')} ({paused.get('reason')})" if paused else "") + "\n",
           f"Last fired: {fmt_time(parse_time(pstatus.get('lastFiredAt')))}\n", "Counters:\n"]
    if counters:
        out.append(_indent(_table([[f"{k}:", str(v)] for k, v in counters.items()])))
    else:
        out.append("  <none>\n")
    out.append(f"Remediations ({len(children)}):\n")
    if children:
        rows = [["CREATED", "NAME", "ACTION", "TARGET", "PHASE", "REASON", "DURATION"]]
        for o in children:
            d = duration_of(o)
            st = o.get("status") or {}
            rows.append([fmt_time(parse_time(_meta(o).get("creationTimestamp"))), str(_meta(o).get("name")),
                         str(st.get("action") or ""), str(st.get("target") or ""), phase_of(o) or "-",
                         reason_of(o) or "-", human_duration(d) if d is not None else "-"])
        out.append(_indent(_table(rows)))
    else:
        out.append("  <none>\n")
    sys.stdout.write("".join(out))
    return 0


def _md(text: Any) -> str:
    """One markdown table cell: no pipes or newlines."""
    return str(text if text not in (None, "") else "-").replace("|", "\\|").replace("\n", " ")


def _md_yaml(data: Any) -> str:
    if data in (None, {}, []):
        return "_none recorded_\n"
    return "```yaml\n" + str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)) + "```\n"


def render_report(obj: dict[str, Any], events: list[dict[str, Any]], now: datetime | None = None) -> str:
    """A post-incident review in markdown (timeline, plan, evidence, outcome, follow-ups)."""
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    name, ns = meta.get("name"), meta.get("namespace")
    phase, reason = phase_of(obj) or "Pending", reason_of(obj)
    d = duration_of(obj)
    policy = (meta.get("labels") or {}).get(POLICY_LABEL)
    trigger = f"RemediationPolicy `{policy}`" if policy else "created directly (kubectl / GitOps)"
    approval = (spec.get("approval") or {})
    approved = status.get("approvedBy") or (
        "not required" if not approval.get("required") else "never given" if phase in ("Succeeded", "Failed", "Skipped") else "pending")
    generated = fmt_time(now or datetime.now(timezone.utc))
    out: list[str] = [
        f"# Incident report: {ns}/{name}\n\n",
        f"_Generated by `kubectl remedy report` at {generated} from Remediation `{ns}/{name}` "
        f"(uid `{meta.get('uid') or '-'}`)._\n\n",
        "## Summary\n\n| Field | Value |\n|---|---|\n",
    ]
    for k, v in (("Incident / reason", spec.get("reason")), ("Action", status.get("action")),
                 ("Target", status.get("target")), ("Outcome", f"**{phase}**" + (f" ({reason})" if reason else "")),
                 ("Triggered by", trigger), ("Approved by", approved),
                 ("Dry run", "yes" if spec.get("dryRun") else "no"),
                 ("Attempt", f"{status.get('attemptId') or '-'} (attempts: {status.get('attempts') or 0})"),
                 ("Started", fmt_time(parse_time(status.get("startedAt")))),
                 ("Completed", fmt_time(parse_time(status.get("completedAt")))),
                 ("Duration", human_duration(d) if d is not None else "-")):
        out.append(f"| {k} | {_md(v)} |\n")
    out.append("\n## Timeline\n\nAll times UTC; from status timestamps, condition transitions and Kubernetes Events.\n\n")
    out.append("| Time | Source | What happened |\n|---|---|---|\n")
    for e in timeline(obj, events):
        out.append(f"| {fmt_time(e.time)} | {e.source} | {_md(e.what)} |\n")
    out.append("\n## Plan\n\nWhat the operator decided to change, recorded before acting.\n\n")
    out.append(_md_yaml(status.get("plan")))
    out.append("\n## Evidence\n\nSnapshot of the target taken before the action.\n\n")
    out.append(_md_yaml(status.get("evidence")))
    out.append("\n## Outcome\n\n")
    out.append(f"**{phase}**" + (f" — {reason}" if reason else "") + (f": {status.get('message')}" if status.get("message") else "") + "\n\n")
    out.append("### Result\n\n" + _md_yaml(status.get("result")))
    out.append("\n### Conditions\n\n| Type | Status | Reason | Last transition | Message |\n|---|---|---|---|---|\n")
    for c in conditions(obj):
        out.append(f"| {_md(c.get('type'))} | {_md(c.get('status'))} | {_md(c.get('reason'))} | "
                   f"{fmt_time(parse_time(c.get('lastTransitionTime')))} | {_md(c.get('message'))} |\n")
    out.append("\n## Root cause\n\n_To be completed by the incident owner: why did the condition this "
               "remediation addressed occur?_\n")
    out.append("\n## Impact\n\n_To be completed: user / business impact and its duration._\n")
    out.append("\n## Action items\n\n")
    items = ["Confirm the root cause and link the incident ticket"]
    if phase == "Failed":
        items.append(f"Fix what `{reason or 'the failure'}` points at (see docs/troubleshooting.md) and decide whether to retry")
    if policy:
        items.append(f"Review RemediationPolicy `{policy}` guards and trigger (`kubectl remedy history {policy}`)")
    items.append("Decide whether this remediation should become (or stay) automatic")
    out.extend(f"- [ ] {i}\n" for i in items)
    out.append("\n## Lessons learned\n\n- What went well:\n- What could improve:\n")
    return "".join(out)


def cmd_report(kube: Kube, args: argparse.Namespace) -> int:
    _output(args, ("markdown",))
    ns = _namespace(kube, args)
    obj = kube.get(REMEDIATIONS, ns, args.name)
    sys.stdout.write(render_report(obj, kube.events_for(obj)))
    return 0


# -- wiring -----------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """kubectl's global flags; accepted before or after the subcommand."""
    d = None if top else argparse.SUPPRESS  # subparser defaults must not clobber top-level values
    parser.add_argument("--kubeconfig", default=d, help="path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=d, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=d, help="namespace (default: the context's namespace)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="list across all namespaces")
    parser.add_argument("-o", "--output", default=d, help="output format: wide|json|yaml|name (per command)")


COMMANDS: dict[str, tuple[Callable[[Kube, argparse.Namespace], int], str]] = {
    "list": (cmd_list, "list Remediations (NAME ACTION TARGET PHASE REASON AGE)"),
    "describe": (cmd_describe, "plan, result, evidence, conditions and timeline of a Remediation"),
    "approve": (cmd_approve, "approve a Remediation that is AwaitingApproval"),
    "pause": (cmd_pause, "pause a RemediationPolicy (spec.paused=true)"),
    "resume": (cmd_resume, "resume a RemediationPolicy, including after a self-pause"),
    "history": (cmd_history, "a RemediationPolicy's Remediations and counters"),
    "report": (cmd_report, "markdown incident report of a Remediation"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubectl remedy", description="Inspect and steer remedy Remediations and RemediationPolicies.")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, top=False)
        if name in ("describe", "approve", "report"):
            p.add_argument("name", metavar="NAME", help="Remediation name")
        elif name in ("pause", "resume", "history"):
            p.add_argument("name", metavar="POLICY", help="RemediationPolicy name")
        if name == "approve":
            p.add_argument("--by", default=None, help="approver recorded on the object (default: kubeconfig user, then $USER)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help(sys.stderr)
        return 1
    handler = COMMANDS[args.command][0]
    try:
        kube = Kube(args.kubeconfig, args.context)
        return handler(kube, args)
    except PluginError as exc:
        msg = str(exc)
        sys.stderr.write(msg if msg.startswith(("error:", "Error")) else f"error: {msg}")
        sys.stderr.write("\n")
        return 1
    except BrokenPipeError:  # `kubectl remedy list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
