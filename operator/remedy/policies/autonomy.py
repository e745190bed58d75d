"""Earned autonomy: what a policy's mode does to its children, the track record computed from
the children's final states, and the promotion / demotion decision taken from that record.

Why here and not in fire.py: the fire path decides *whether* a firing creates a child;
this module decides *how much* the child may do and keeps score. Everything is computed from
observed objects (the children cache and their annotations), so a restart loses nothing:

- a child carries the mode it was created in (ANN_MODE) and the policy's ``status.modeSince``
  at that time (ANN_MODE_SINCE), so only outcomes earned in the current mode count towards
  the next change;
- a succeeded child whose alert fingerprint fires again within ``spec.ineffectiveWithin`` is
  annotated ANN_REFIRED_AT (ineffective);
- a shadow (dry-run) child whose alert resolves is annotated ANN_CLEARED_AT, which says
  whether the alert would have cleared without any action.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from typing import Any

from ..api.autonomy import MODE_ORDER
from ..api.common import parse_duration
from ..api.objects import view
from ..api.policy import RemediationPolicySpec
from ..base import rfc3339
from ..base.constants import (
    ANN_CLEARED_AT,
    ANN_FINGERPRINT,
    ANN_MODE,
    ANN_MODE_SINCE,
    ANN_REFIRED_AT,
    API_VERSION,
    GROUP,
    POLICY_KIND,
    REMEDIATION_KIND,
    REMEDIATIONS,
    VERSION,
)
from ..base.observability import MODE_CHANGES, POLICY_MODE
from ..lifecycle import authz
from ..lifecycle.conditions import get_condition

LAST_OUTCOMES = 10
CONDITION = "Autonomous"


def _epoch(text: Any) -> float | None:
    return rfc3339.epoch(text)


def _now_ms() -> str:
    return rfc3339.now(ms=True)


def _rank(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER) - 1


def clamp(mode: str, max_mode: str) -> str:
    return mode if _rank(mode) <= _rank(max_mode) else max_mode


def effective_mode(spec: RemediationPolicySpec, status: dict[str, Any]) -> str:
    """status.mode while it was derived from the current spec.mode, else spec.mode; never past maxMode."""
    if spec.promotion is not None and status.get("mode") in MODE_ORDER and status.get("modeBase") == spec.mode:
        return clamp(str(status["mode"]), spec.max_mode)
    return clamp(spec.mode, spec.max_mode)


def apply_mode(child_spec: dict[str, Any], annotations: dict[str, str], mode: str, mode_since: str | None) -> None:
    """shadow: plan only; approve: a person approves each run; auto: as configured."""
    annotations[ANN_MODE] = mode
    if mode_since:
        annotations[ANN_MODE_SINCE] = mode_since
    if mode == "shadow":
        child_spec["dryRun"] = True
    elif mode == "approve":
        child_spec["approval"] = {**(child_spec.get("approval") or {}), "required": True}


# --- outcomes ------------------------------------------------------------------------------
def _completed_reason(child: dict[str, Any]) -> str:
    st = child.get("status") or {}
    return str((get_condition(st.get("conditions") or [], "Completed") or {}).get("reason") or "")


def is_dry_run(child: dict[str, Any]) -> bool:
    ann = view(child).annotations
    return ann.get(ANN_MODE) == "shadow" or bool((child.get("spec") or {}).get("dryRun")) or _completed_reason(child) == "DryRun"


def verify_window(spec: RemediationPolicySpec) -> float:
    return parse_duration(spec.verify.timeout if spec.verify is not None else spec.template.timeout)


def classify(child: dict[str, Any], spec: RemediationPolicySpec, now: float) -> dict[str, Any] | None:
    """One final child as a track-record entry; None for children that are not runs."""
    meta = child.get("metadata") or {}
    st = child.get("status") or {}
    ann = meta.get("annotations") or {}
    phase = st.get("phase")
    if phase not in ("Succeeded", "Failed"):
        return None
    entry: dict[str, Any] = {"name": meta.get("name"), "mode": ann.get(ANN_MODE, "auto"), "completedAt": st.get("completedAt")}
    if phase == "Failed":
        entry["outcome"] = "failed"
    elif _completed_reason(child) == "DryRun":
        entry["outcome"] = "planned"
        created = _epoch(meta.get("creationTimestamp")) or now
        cleared = _epoch(ann.get(ANN_CLEARED_AT))
        window = verify_window(spec)
        if cleared is not None and cleared - created <= window:
            entry["wouldHave"] = "clearedOnItsOwn"
        elif now - created > window:
            entry["wouldHave"] = "stillFiring"
        else:
            entry["wouldHave"] = "pending"
    elif ann.get(ANN_REFIRED_AT):
        entry["outcome"] = "ineffective"
    elif (get_condition(st.get("conditions") or [], "Verified") or {}).get("status") == "True":
        entry["outcome"] = "verified"
    else:
        entry["outcome"] = "succeeded"
    return entry


def track_record(children: list[dict[str, Any]], spec: RemediationPolicySpec, now: float) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]:
    """(status.trackRecord, [(child, entry)] oldest first)."""
    finals = sorted(children, key=lambda c: view(c).status.get("completedAt") or "")
    scored = [(c, e) for c in finals if (e := classify(c, spec, now)) is not None]
    outcomes = [e["outcome"] for _, e in scored]
    to_verified = [t for c, e in scored if e["outcome"] in ("verified", "ineffective")
                   and (get_condition(view(c).conditions, "Verified") or {}).get("status") == "True"
                   and (t := _duration(c)) is not None]
    record: dict[str, Any] = {
        "runs": len(scored),
        "succeeded": sum(1 for o in outcomes if o in ("verified", "succeeded", "ineffective")),
        "verified": sum(1 for o in outcomes if o == "verified"),
        "failed": outcomes.count("failed"),
        "ineffective": outcomes.count("ineffective"),
        "planned": outcomes.count("planned"),
        "clearedOnItsOwn": sum(1 for _, e in scored if e.get("wouldHave") == "clearedOnItsOwn"),
        "medianSecondsToVerified": round(statistics.median(to_verified), 3) if to_verified else None,
        "lastOutcomes": [e for _, e in scored[-LAST_OUTCOMES:]],
    }
    return record, scored


def _duration(child: dict[str, Any]) -> float | None:
    start = _epoch(view(child).metadata.get("creationTimestamp"))
    end = _epoch(view(child).status.get("completedAt"))
    return None if start is None or end is None else max(0.0, end - start)


# --- promotion -----------------------------------------------------------------------------
def _streak(entries: list[dict[str, Any]], good: set[str]) -> int:
    n = 0
    for e in reversed(entries):
        if e["outcome"] not in good:
            break
        n += 1
    return n


def decide(spec: RemediationPolicySpec, status: dict[str, Any], scored: list[tuple[dict[str, Any], dict[str, Any]]],
           now: float) -> tuple[str, str, str] | None:
    """(new mode, reason, message) when the record earns a change of mode, else None."""
    promo = spec.promotion
    if promo is None:
        return None
    mode = effective_mode(spec, status)
    since = status.get("modeSince") if status.get("modeBase") == spec.mode else None
    # Children created before the first refresh carry no mode-since: they were created in spec.mode.
    current = [e for c, e in scored if e["mode"] == mode
               and ((view(c).annotations).get(ANN_MODE_SINCE) or (since if mode == spec.mode else None)) == since]
    if mode == "auto":
        failed = _streak(current, {"failed"})
        if failed >= promo.demote_after_failures:
            return "approve", "Demoted", f"{failed} consecutive failed runs in auto (demoteAfterFailures {promo.demote_after_failures})"
        ineffective = _streak(current, {"ineffective"})
        if ineffective >= promo.demote_after_ineffective:
            return "approve", "Demoted", (f"{ineffective} consecutive ineffective runs in auto: the alert fired again within "
                                          f"{spec.ineffective_within} (demoteAfterIneffective {promo.demote_after_ineffective})")
        return None
    nxt = MODE_ORDER[_rank(mode) + 1]
    if _rank(nxt) > _rank(spec.max_mode):
        return None
    window = parse_duration(promo.within)
    recent = [e for e in current if (_epoch(e.get("completedAt")) or 0) >= now - window]
    if mode == "shadow":
        # A dry run earns trust once its plan was made and the alert did not clear without
        # action (so the action would have been needed); undecided ones wait.
        decided = [{**e, "outcome": "needed" if e["outcome"] == "planned" and e.get("wouldHave") != "clearedOnItsOwn" else "not-needed"}
                   for e in recent if e.get("wouldHave") != "pending"]
        streak = _streak(decided, {"needed"})
        what = "planned runs whose alert still needed action"
    else:
        streak = _streak(recent, {"verified"})
        what = "verified runs"
    if streak >= promo.after:
        return nxt, "Promoted", f"{streak} consecutive {what} in {mode} within {promo.within} (after {promo.after})"
    return None


def mode_status(spec: RemediationPolicySpec, status: dict[str, Any], decision: tuple[str, str, str] | None) -> dict[str, Any]:
    """The status fields for the mode: unchanged, initialised from spec, or changed by a decision."""
    mode = effective_mode(spec, status)
    if decision is not None:
        return {"mode": decision[0], "modeBase": spec.mode, "modeSince": _now_ms()}
    if status.get("mode") != mode or status.get("modeBase") != spec.mode or not status.get("modeSince"):
        return {"mode": mode, "modeBase": spec.mode, "modeSince": _now_ms() if status.get("mode") != mode or not status.get("modeSince") else status["modeSince"]}
    return {}


def condition_args(mode: str, decision: tuple[str, str, str] | None, previous: dict[str, Any] | None) -> tuple[str, str, str]:
    """(status, reason, message) of the Autonomous condition."""
    status = "True" if mode == "auto" else "False"
    if decision is not None:
        return status, decision[1], f"{decision[1].lower()} to {mode}: {decision[2]}"
    if previous and previous.get("status") == status and previous.get("reason") in ("Promoted", "Demoted"):
        return status, str(previous["reason"]), str(previous.get("message") or "")
    return status, "Configured", f"mode {mode} (spec.mode)"


# --- observations written on children -------------------------------------------------------
async def _annotate(kube: Any, namespace: str, name: str, annotations: dict[str, str]) -> None:
    await kube.call(f"remediations/{name} annotate", kube.custom.patch_namespaced_custom_object,
                    GROUP, VERSION, namespace, REMEDIATIONS, name, {"metadata": {"annotations": annotations}})


async def note_refire(kube: Any, children: list[dict[str, Any]], fingerprint: str, new_child: str,
                      within: str, now: float | None = None) -> list[str]:
    """The alert fired again: succeeded (executed) children of the same fingerprint that
    completed within ``within`` are ineffective. Returns the names annotated."""
    now = time.time() if now is None else now
    limit = parse_duration(within)
    marked = []
    for c in children:
        meta = c.get("metadata") or {}
        ann = meta.get("annotations") or {}
        st = c.get("status") or {}
        if (ann.get(ANN_FINGERPRINT) != fingerprint or meta.get("name") == new_child or ann.get(ANN_REFIRED_AT)
                or st.get("phase") != "Succeeded" or _completed_reason(c) == "DryRun"):
            continue
        done = _epoch(st.get("completedAt"))
        if done is None or not (now - limit <= done <= now):
            continue
        stamp = _now_ms()
        await _annotate(kube, meta.get("namespace") or "", str(meta.get("name")), {ANN_REFIRED_AT: stamp})
        c.setdefault("metadata", {}).setdefault("annotations", {})[ANN_REFIRED_AT] = stamp
        marked.append(str(meta.get("name")))
    return marked


async def note_cleared(kube: Any, child: dict[str, Any]) -> bool:
    """The alert of a shadow child resolved: remember when (once)."""
    meta = child.get("metadata") or {}
    if not is_dry_run(child) or (meta.get("annotations") or {}).get(ANN_CLEARED_AT):
        return False
    await _annotate(kube, meta.get("namespace") or "", str(meta.get("name")), {ANN_CLEARED_AT: _now_ms()})
    return True


def next_decision_in(scored: list[tuple[dict[str, Any], dict[str, Any]]], spec: RemediationPolicySpec, now: float) -> float | None:
    """Seconds until the earliest undecided shadow outcome's verify window closes (a refresh
    is due then, so the would-have outcome and a promotion do not wait for the periodic timer)."""
    window = verify_window(spec)
    due = [(_epoch(view(c).metadata.get("creationTimestamp")) or now) + window - now
           for c, e in scored if e.get("wouldHave") == "pending"]
    return max(0.0, min(due)) + 0.5 if due else None


async def announce(kube: Any, recorder: Any, policy: dict[str, Any], spec: RemediationPolicySpec,
                   old: str, new: str, reason: str, message: str) -> None:
    """A change of mode is an Event and a metric (the condition is already in status); a
    demotion also sends spec.promotion.notify, as a notify Remediation owned by the policy."""
    meta = policy["metadata"]
    MODE_CHANGES.labels(policy=meta["name"], from_mode=old, to_mode=new, reason=reason).inc()
    POLICY_MODE.labels(namespace=meta["namespace"], policy=meta["name"]).set(_rank(new))
    text = f"{old} -> {new}: {message}"
    recorder.event(policy, "Warning" if reason == "Demoted" else "Normal", "ModeConfigured" if reason == "Configured" else reason, text)
    promo = spec.promotion
    if reason != "Demoted" or promo is None or promo.notify is None:
        return
    since = str(view(policy).status.get("modeSince") or _now_ms())
    digest = hashlib.sha256(f"{meta['uid']}|{since}".encode()).hexdigest()[:10]
    notify = promo.notify.wire()
    notify["message"] = f"{notify['message']} ({meta['name']} {text})"[:4000]
    body = {
        "apiVersion": API_VERSION, "kind": REMEDIATION_KIND,
        "metadata": {"name": f"{meta['name'][:40].rstrip('-.')}-demoted-{digest}",
                     # on behalf of the policy's author, like every child (lifecycle/authz.py)
                     "annotations": authz.on_behalf_of(policy),
                     "ownerReferences": [{"apiVersion": API_VERSION, "kind": POLICY_KIND, "name": meta["name"],
                                          "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}]},
        "spec": {"action": {"notify": notify}, "reason": f"policy {meta['name']} demoted to {new}"},
    }
    await kube.create_object_if_absent(REMEDIATIONS, meta["namespace"], body)


def observe_mode(policy: dict[str, Any]) -> None:
    """Keep the remedy_policy_mode gauge current for policies seen after a restart."""
    meta = policy.get("metadata") or {}
    mode = view(policy).status.get("mode")
    if mode in MODE_ORDER:
        POLICY_MODE.labels(namespace=meta.get("namespace", ""), policy=meta.get("name", "")).set(_rank(str(mode)))
