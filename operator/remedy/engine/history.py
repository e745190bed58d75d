"""History of finished Remediations: which ones the operator deletes, and when.

Why: finished Remediations were never removed, so a busy cluster accumulated them forever (in
etcd, in every watch, in the operator's memory). Like Kubernetes' own controllers:

* a RemediationPolicy's children are kept up to ``successfulHistoryLimit`` succeeded (and
  skipped) ones and ``failedHistoryLimit`` failed ones, newest first (CronJob's
  ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit``); unset keeps all;
* any Remediation with ``ttlSecondsAfterFinished`` is deleted that long after it finished
  (Job's field of the same name).

The policy's guards read its children, so history never deletes what a guard still needs: a
child finished within the policy's *guard horizon* (the longest of the hour behind
``maxPerHour``, ``cooldown``, ``ineffectiveWithin``, the escalation delays and, with
``promotion``, its ``within``) is kept whatever
the limits, and so is every failed child newer than the policy's latest success (the failure
streak behind ``pauseAfterFailures``). A TTL on a policy's child yields to the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import rfc3339
from ..api.common import parse_duration
from ..clients.kube import KubeClient
from ..constants import LABEL_POLICY

FINAL = {"Succeeded", "Failed", "Skipped"}
HOUR = 3600.0


def _ts(text: Any) -> float | None:
    return rfc3339.epoch(text) if isinstance(text, str) else None


def finished_at(obj: dict[str, Any]) -> float | None:
    """When a final Remediation finished (completedAt), or None while it is not final."""
    status = obj.get("status") or {}
    if status.get("phase") not in FINAL:
        return None
    return _ts(status.get("completedAt")) or _ts((obj.get("metadata") or {}).get("creationTimestamp"))


def guard_horizon(policy_spec: dict[str, Any]) -> float:
    """Seconds during which a finished child may still matter to one of the policy's guards."""
    guards = policy_spec.get("guards") or {}
    spans = [HOUR, parse_duration(str(guards.get("cooldown") or "5m")),
             parse_duration(str(policy_spec.get("ineffectiveWithin") or "30m"))]
    spans.append(sum(parse_duration(str(step.get("after") or "0s")) for step in policy_spec.get("escalate") or []))
    promotion = policy_spec.get("promotion")
    if isinstance(promotion, dict):  # earned autonomy counts outcomes this far back
        spans.append(parse_duration(str(promotion.get("within") or "168h")))
    return max(spans)


@dataclass(frozen=True)
class Doomed:
    namespace: str
    name: str
    uid: str
    why: str


def _doomed(obj: dict[str, Any], why: str) -> Doomed:
    meta = obj.get("metadata") or {}
    return Doomed(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid")), why)


def beyond_history(policy_spec: dict[str, Any], children: Iterable[dict[str, Any]], now: float) -> list[Doomed]:
    """The policy's finished children to delete: over the history limits or past their TTL, and
    outside what the guards need (see the module docstring)."""
    ok_limit = policy_spec.get("successfulHistoryLimit")
    failed_limit = policy_spec.get("failedHistoryLimit")
    horizon = guard_horizon(policy_spec)
    final: list[tuple[float, dict[str, Any]]] = sorted(
        ((t, c) for c in children if (t := finished_at(c)) is not None), key=lambda tc: -tc[0])
    last_success = max((t for t, c in final if (c.get("status") or {}).get("phase") == "Succeeded"), default=None)
    kept_ok = kept_failed = 0
    out: list[Doomed] = []
    for t, c in final:
        failed = (c.get("status") or {}).get("phase") == "Failed"
        if failed:
            kept_failed += 1
            over = failed_limit is not None and kept_failed > int(failed_limit)
        else:
            kept_ok += 1
            over = ok_limit is not None and kept_ok > int(ok_limit)
        ttl = (c.get("spec") or {}).get("ttlSecondsAfterFinished")
        expired = ttl is not None and now - t >= float(ttl)
        if not (over or expired):
            continue
        if now - t < horizon:
            continue  # a guard may still count it
        if failed and (last_success is None or t > last_success):
            continue  # part of the current failure streak
        out.append(_doomed(c, "over the history limit" if over else f"ttlSecondsAfterFinished {ttl} passed"))
    return out


def ttl_expired(objs: Iterable[dict[str, Any]], now: float, policy_label: str) -> list[Doomed]:
    """Remediations without a policy whose ttlSecondsAfterFinished has passed (a policy's
    children are collected with their policy, where the guards are known)."""
    out = []
    for obj in objs:
        if ((obj.get("metadata") or {}).get("labels") or {}).get(policy_label):
            continue
        ttl = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
        t = finished_at(obj)
        if ttl is not None and t is not None and now - t >= float(ttl):
            out.append(_doomed(obj, f"ttlSecondsAfterFinished {ttl} passed"))
    return out


async def collect_policy(kube: KubeClient, namespace: str, name: str, spec: dict[str, Any], now: float) -> list[Doomed]:
    """Delete the policy's children that history no longer keeps; returns what was deleted."""
    children = await kube.list_objects("remediations", namespace, label_selector=f"{LABEL_POLICY}={name}")
    doomed = beyond_history(spec, children, now)
    return [d for d in doomed if await kube.delete_object("remediations", d.namespace, d.name, d.uid)]


async def collect_expired(kube: KubeClient, obj: dict[str, Any], now: float) -> Doomed | None:
    """Delete one Remediation without a policy once its ttlSecondsAfterFinished has passed."""
    doomed = ttl_expired([obj], now, LABEL_POLICY)
    if doomed and await kube.delete_object("remediations", doomed[0].namespace, doomed[0].name, doomed[0].uid):
        return doomed[0]
    return None
