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

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..api.common import parse_duration
from ..api.objects import view
from ..base import rfc3339
from ..base.constants import FINAL_PHASES, LABEL_POLICY
from ..clients.kube import KubeClient

HOUR = 3600.0
log = logging.getLogger("remedy.history")


def _ts(text: Any) -> float | None:
    return rfc3339.epoch(text) if isinstance(text, str) else None


def finished_at(obj: dict[str, Any]) -> float | None:
    """When a final Remediation finished (completedAt), or None while it is not final."""
    status = obj.get("status") or {}
    if status.get("phase") not in FINAL_PHASES:
        return None
    return _ts(status.get("completedAt")) or _ts(view(obj).metadata.get("creationTimestamp"))


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
    last_success = max((t for t, c in final if view(c).phase == "Succeeded"), default=None)
    kept_ok = kept_failed = 0
    out: list[Doomed] = []
    for t, c in final:
        failed = view(c).phase == "Failed"
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
        if (view(obj).metadata.get("labels") or {}).get(policy_label):
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


class ExpiryTimers:
    """``ttlSecondsAfterFinished`` of Remediations without a policy, one asyncio timer per
    finished object that has a TTL, scheduled from watch events (``observe``).

    Why not a kopf timer: a kopf timer (or daemon) on a resource makes kopf keep every object's
    full body in its per-object memory for as long as the object exists (kopf's
    ``DaemonsMemory.live_fresh_body`` is set for every object of a resource with a spawning
    handler, whatever the handler's filters), about 28 KiB per Remediation, and puts its
    finalizer on every object the timer matches. A timer here holds a few strings per object
    that actually has a TTL. The deletion itself re-checks and uses a uid precondition
    (``collect_expired``), so a late or repeated timer never deletes a newer object.
    """

    def __init__(self, kube: KubeClient, retry_seconds: float = 10.0) -> None:
        self.kube = kube
        self.retry_seconds = retry_seconds
        self._timers: dict[str, asyncio.TimerHandle] = {}  # uid -> the pending deletion
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._timers)

    def observe(self, body: dict[str, Any], event_type: str | None) -> None:
        """Called for every watch event of a Remediation without a policy."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        pending = self._timers.pop(uid, None)
        if pending is not None:
            pending.cancel()  # the latest event decides (a TTL edited on a finished object)
        if event_type == "DELETED" or (meta.get("labels") or {}).get(LABEL_POLICY):
            return
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        done = finished_at(body)
        if ttl is None or done is None:
            return
        status = body.get("status") or {}
        slim = {"metadata": {k: meta.get(k) for k in ("namespace", "name", "uid", "creationTimestamp")},
                "spec": {"ttlSecondsAfterFinished": ttl},
                "status": {"phase": status.get("phase"), "completedAt": status.get("completedAt")}}
        self._schedule(slim, max(0.0, done + float(ttl) - time.time()))

    def _schedule(self, slim: dict[str, Any], delay: float) -> None:
        uid = str(slim["metadata"]["uid"])
        self._timers[uid] = asyncio.get_running_loop().call_later(delay, self._due, slim)

    def _due(self, slim: dict[str, Any]) -> None:
        self._timers.pop(str(slim["metadata"]["uid"]), None)
        task = asyncio.ensure_future(self._collect(slim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _collect(self, slim: dict[str, Any]) -> None:
        meta = slim["metadata"]
        try:
            doomed = await collect_expired(self.kube, slim, time.time())
        except Exception as exc:  # noqa: BLE001 - API unavailable or refused: try again later
            log.warning("deleting expired Remediation %s/%s failed: %s; retrying in %ss",
                        meta.get("namespace"), meta.get("name"), exc, self.retry_seconds)
            if str(meta["uid"]) not in self._timers:  # no newer event rescheduled it meanwhile
                self._schedule(slim, self.retry_seconds)
            return
        if doomed is not None:
            log.info("deleted Remediation %s/%s: %s", doomed.namespace, doomed.name, doomed.why)
