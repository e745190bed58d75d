"""The fire path: a firing becomes at most one guarded child Remediation, and a resolve
cancels a child that has not started.

Dedup is the API server's job, not ours: a child's name is derived from (policy uid,
fingerprint, startsAt, episode), so however many replicas or resends see the same firing, only
one create can succeed. An episode ends when its resolve is seen (the child is stamped
ANN_RESOLVED_AT): a later firing with the same startsAt, as a real Alertmanager may send after
a flap, is the next episode and gets its own child, still under the policy's guards. Guards are
evaluated from the observed children (level-based), so a restart loses nothing. Counters are
batched in memory and flushed by ``refresh``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pydantic import ValidationError

from ..api.children import is_child_of, why_not_child
from ..api.common import now_rfc3339, now_rfc3339_ms, parse_duration
from ..api.objects import view
from ..api.policy import RemediationPolicySpec
from ..base import rfc3339
from ..base.constants import (
    ANN_EPISODE,
    ANN_FINGERPRINT,
    ANN_RESOLVED_AT,
    ANN_RESUMED_AT,
    ANN_STARTS_AT,
    FINAL_PHASES,
    GROUP,
    LABEL_STEP,
    LABEL_TARGET,
    NOT_STARTED_PHASES,
    POLICIES,
    REMEDIATIONS,
    VERSION,
)
from ..base.errors import InvalidSpecError, RetryableError
from ..base.observability import ALERTS_DEDUP, GUARD_BLOCKS
from ..lifecycle import gitops
from ..lifecycle.conditions import get_condition, set_condition
from . import autonomy
from .firing import Firing, child_name, variables
from .memory import PolicyMemory, consecutive_failures


class FirePath(PolicyMemory):
    async def fire(self, policy: dict[str, Any], firing: Firing) -> str:
        """Returns created | deduplicated | blocked:<guard> | error:<reason>."""
        meta = policy["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        key = (ns, name)
        self._count(key, "fired")
        ep_key = (ns, name, firing.fingerprint, firing.starts_at)
        if self._known_episode_child(ep_key, uid):
            return self._dedup(key, name)
        async with self._locks[key]:
            episode = await self._episode_for(ep_key)
            cname = child_name(name, uid, firing.fingerprint, firing.starts_at, episode=episode)
            if cname in self._known:
                return self._dedup(key, name)
            # The watch-fed cache instead of a GET per firing: a child it has not seen yet (a
            # lagging watch, another replica) still ends in the create's 409 below.
            await self.children(ns, name, policy)
            taken = self._children[key].get(cname)
            if taken is not None and is_child_of(taken, policy):
                self._remember(cname)
                return self._dedup(key, name)
            fresh = await self._policy(ns, name, uid)
            if fresh is None:
                return "error:PolicyGone"
            if taken is not None:
                # Judged against the newest policy (the trigger's copy may predate an author
                # change): still not its child, so the name is taken by someone else's object.
                if not is_child_of(taken, fresh):
                    return self._name_taken(fresh, cname, taken)
                self._remember(cname)
                return self._dedup(key, name)
            try:
                spec = RemediationPolicySpec.model_validate(fresh.get("spec") or {})
            except ValidationError as exc:
                await self._degrade(fresh, "InvalidSpec", str(exc.errors()[0]["msg"]))
                return "error:InvalidSpec"
            status = fresh.get("status") or {}
            paused = get_condition(status.get("conditions") or [], "Paused")
            if spec.paused or (paused is not None and paused.get("status") == "True"):
                return self._block(fresh, "paused", "policy is paused")
            try:
                action, target = self._render(spec.template.action, firing, name)
            except InvalidSpecError as exc:
                self._template_ok.discard(key)
                await self._degrade(fresh, exc.reason, exc.message)
                self.recorder.event(fresh, "Warning", exc.reason, exc.message)
                return f"error:{exc.reason}"
            if key not in self._template_ok:
                self._template_ok.add(key)
                self._queue_refresh(key)  # a TemplateError may clear now
            children = await self.children(ns, name, fresh)
            if await autonomy.note_refire(self.kube, children, firing.fingerprint, cname, spec.ineffective_within):
                # An earlier run was ineffective; with promotion this may demote the policy, and
                # this very firing must already be created in the demoted mode.
                if spec.promotion is None:
                    self._queue_refresh(key)
                else:
                    for _ in range(3):
                        try:
                            fresh = await self._refresh(fresh, key)
                            break
                        except RetryableError as exc:
                            if exc.reason != "Conflict":
                                self._queue_refresh(key)
                                break
                            fresh = await self.kube.get_object(POLICIES, ns, name) or fresh
                    status = fresh.get("status") or {}
            now = time.time()
            active = [c for c in children if view(c).phase not in FINAL_PHASES]
            # The refresh loop writes the Paused condition about once a second; within a burst,
            # check the failure streak here too so the pause takes effect at the threshold.
            finals = sorted((c for c in children if view(c).phase in FINAL_PHASES),
                            key=lambda c: view(c).status.get("completedAt") or "")
            streak, _ = consecutive_failures(finals, status.get("failuresResetAt"))
            resumed_at = view(fresh).annotations.get(ANN_RESUMED_AT)
            if streak >= spec.guards.pause_after_failures and not (
                    resumed_at and status.get("selfPausedAt") and resumed_at > status["selfPausedAt"]):
                self._queue_refresh(key)
                return self._block(fresh, "paused", f"{streak} consecutive failed remediations (pauseAfterFailures {spec.guards.pause_after_failures})")
            reverted = gitops.reverted_since(finals, status.get("failuresResetAt"))
            if reverted is not None and not (resumed_at and status.get("selfPausedAt") and resumed_at > status["selfPausedAt"]):
                self._queue_refresh(key)  # never re-apply what GitOps just reverted
                return self._block(fresh, "paused", f"{reverted['metadata']['name']} was reverted by GitOps")
            if len(active) >= spec.guards.max_concurrent:
                return self._block(fresh, "concurrency", f"{len(active)} remediations still active (maxConcurrent {spec.guards.max_concurrent})")
            last_hour = [c for c in children if (rfc3339.epoch(c["metadata"].get("creationTimestamp")) or 0) > now - 3600
                         and view(c).labels.get(LABEL_STEP, "0") == "0"]
            if len(last_hour) >= spec.guards.max_per_hour:
                return self._block(fresh, "rate", f"{len(last_hour)} remediations in the last hour (maxPerHour {spec.guards.max_per_hour})")
            target_hash = hashlib.sha256(target.encode()).hexdigest()[:16]
            cooldown = parse_duration(spec.guards.cooldown)
            recent_same = [c for c in children if view(c).labels.get(LABEL_TARGET) == target_hash
                           and (rfc3339.epoch(c["metadata"].get("creationTimestamp")) or 0) > now - cooldown]
            if cooldown and recent_same:
                return self._block(fresh, "cooldown", f"{target} was remediated less than {spec.guards.cooldown} ago")
            held = await self.holds.check(spec, firing.fingerprint, firing.labels, variables(firing, name))
            if held is not None:
                return self._block(fresh, *held)
            body = self._child_body(fresh, spec, cname, action, target, target_hash, firing, step=0)
            if episode:
                body["metadata"]["annotations"][ANN_EPISODE] = str(episode)
            # Reserve the child under the lock (guards of the next firing count it, duplicates
            # are decided in memory), then create outside it: creates of different firings run
            # concurrently, bounded by _create_slots; the API server's name uniqueness decides.
            reserved = self._slim({**body, "metadata": {**body["metadata"], "creationTimestamp": now_rfc3339()}})
            self._children[key][cname] = reserved
            previous_ep = self._episodes.get(ep_key)
            self._remember(cname)
            self._episodes[ep_key] = (episode, False)
        try:
            async with self._create_slots:
                created_obj, created = await self.kube.create_object_if_absent(REMEDIATIONS, ns, body)
        except BaseException:
            # Not created: forget the reservation, so the next firing (a resend) tries again.
            if self._children[key].get(cname) is reserved:
                self._children[key].pop(cname, None)
            self._known.pop(cname, None)
            if self._episodes.get(ep_key) == (episode, False):
                if previous_ep is None:
                    self._episodes.pop(ep_key, None)
                else:
                    self._episodes[ep_key] = previous_ep
            raise
        if not created:
            return self._dedup(key, name)
        if created_obj is not None and self._children[key].get(cname) is reserved:
            self._children[key][cname] = self._slim(created_obj)  # unless its watch event came first
        self._count(key, "created")
        self._pending[key]["_lastFired"] = int(now)
        self.recorder.event(fresh, "Normal", "Remediating", f"created Remediation {cname} for {target} ({firing.source} {firing.fingerprint})")
        if spec.silence is not None and self.holds.am is None:
            self.recorder.event(fresh, "Warning", "SilenceNotCreated",
                                f"spec.silence is set but the operator has no REMEDY_ALERTMANAGER_URL: {cname} runs unsilenced")
        return "created"

    def _known_episode_child(self, ep_key: tuple[str, str, str, str], uid: str) -> bool:
        """The firing's current episode already has a child (created or seen by this process)."""
        known_ep = self._episodes.get(ep_key)
        return (known_ep is not None and not known_ep[1]
                and child_name(ep_key[1], uid, ep_key[2], ep_key[3], episode=known_ep[0]) in self._known)

    def fire_known_duplicate(self, policy: dict[str, Any], firing: Firing) -> bool:
        """Decided in memory, without an API call or a task: a firing whose current episode
        already has a child is a duplicate (counted as such). False: ``fire`` must decide."""
        meta = policy["metadata"]
        ep_key = (meta["namespace"], meta["name"], firing.fingerprint, firing.starts_at)
        if not self._known_episode_child(ep_key, meta["uid"]):
            return False
        self._count((ep_key[0], ep_key[1]), "fired")
        self._dedup((ep_key[0], ep_key[1]), ep_key[1])
        return True

    def count_repeats(self, policy: dict[str, Any], n: int = 1) -> None:
        """Deliveries of a firing that a task is already deciding (the webhook joins them to it):
        counted as fired and deduplicated, like any resend of a firing."""
        meta = policy["metadata"]
        key = (meta["namespace"], meta["name"])
        self._count(key, "fired", n)
        self._count(key, "deduplicated", n)
        ALERTS_DEDUP.labels(policy=meta["name"]).inc(n)

    async def _episode_for(self, ep_key: tuple[str, str, str, str]) -> int:
        """The episode a firing of (fingerprint, startsAt) belongs to: the latest one, or the
        next once the latest one's resolve was seen. From memory, else from the children."""
        known = self._episodes.get(ep_key)
        if known is None:
            latest = self._latest_child(await self.children(ep_key[0], ep_key[1]), ep_key[2], ep_key[3])
            if latest is None:
                return 0
            ann = latest["metadata"].get("annotations") or {}
            known = (int(ann.get(ANN_EPISODE) or 0), bool(ann.get(ANN_RESOLVED_AT)))
            self._episodes[ep_key] = known
        return known[0] + 1 if known[1] else known[0]

    @staticmethod
    def _latest_child(children: list[dict[str, Any]], fingerprint: str, starts_at: str) -> dict[str, Any] | None:
        same = [c for c in children
                if (view(c).annotations.get(ANN_FINGERPRINT) == fingerprint
                    and view(c).annotations.get(ANN_STARTS_AT) == starts_at
                    and view(c).labels.get(LABEL_STEP, "0") == "0")]
        return max(same, key=lambda c: int(view(c).annotations.get(ANN_EPISODE) or 0), default=None)

    async def _mark_resolved(self, ns: str, policy: str, child: dict[str, Any], ep_key: tuple[str, str, str, str]) -> None:
        """Stamp the episode's child: the next firing of the same startsAt is a new episode."""
        meta = child["metadata"]
        episode = int((meta.get("annotations") or {}).get(ANN_EPISODE) or 0)
        if not (meta.get("annotations") or {}).get(ANN_RESOLVED_AT):
            stamp = now_rfc3339_ms()
            await self.kube.call(f"remediations/{meta['name']} annotate", self.kube.custom.patch_namespaced_custom_object,
                                 GROUP, VERSION, ns, REMEDIATIONS, meta["name"],
                                 {"metadata": {"annotations": {ANN_RESOLVED_AT: stamp}}})
            meta["annotations"] = {**(meta.get("annotations") or {}), ANN_RESOLVED_AT: stamp}
            cached = self._children[(ns, policy)].get(meta["name"])
            if cached is not None:  # the next firing may come before the watch event does
                cached["metadata"]["annotations"] = {**view(cached).annotations, ANN_RESOLVED_AT: stamp}
        self._episodes[ep_key] = (episode, True)

    def _name_taken(self, policy: dict[str, Any], cname: str, taken: dict[str, Any]) -> str:
        """Another object holds the child's name: not ours, so this firing cannot create its child."""
        msg = f"Remediation {cname} exists but is not this policy's child ({why_not_child(taken, policy)}); firing not run"
        self.recorder.event(policy, "Warning", "ChildNameTaken", msg[:1024])
        return "error:ChildNameTaken"

    def _dedup(self, key: tuple[str, str], name: str) -> str:
        self._count(key, "deduplicated")
        ALERTS_DEDUP.labels(policy=name).inc()
        return "deduplicated"

    def _block(self, policy: dict[str, Any], guard: str, message: str) -> str:
        meta = policy["metadata"]
        self._count((meta["namespace"], meta["name"]), f"blocked_{guard}")
        GUARD_BLOCKS.labels(policy=meta["name"], guard=guard).inc()
        self._block_events.note(policy, guard, message)
        return f"blocked:{guard}"

    # --- resolution ------------------------------------------------------------------------
    async def resolve(self, policy: dict[str, Any], firing: Firing) -> str:
        """The alert resolved: cancel its child if it has not started. Returns cancelled | none | started."""
        meta = policy["metadata"]
        ep_key = (meta["namespace"], meta["name"], firing.fingerprint, firing.starts_at)
        known = self._episodes.get(ep_key)
        if known is None:
            latest = self._latest_child(await self.children(meta["namespace"], meta["name"]), firing.fingerprint, firing.starts_at)
            episode = int(((latest or {}).get("metadata", {}).get("annotations") or {}).get(ANN_EPISODE) or 0)
        else:
            episode = known[0]
        cname = child_name(meta["name"], meta["uid"], firing.fingerprint, firing.starts_at, episode=episode)
        for _ in range(3):
            child = await self.kube.get_object(REMEDIATIONS, meta["namespace"], cname)
            if child is None:
                return "none"
            if await autonomy.note_cleared(self.kube, child):  # shadow run: the alert cleared without action
                self._queue_refresh((meta["namespace"], meta["name"]))
            st = child.get("status") or {}
            if st.get("phase") is not None and st["phase"] not in NOT_STARTED_PHASES:
                await self._mark_resolved(meta["namespace"], meta["name"], child, ep_key)
                return "started"
            msg = "the alert resolved before the remediation started; not running it"
            conds = set_condition(st.get("conditions") or [], "Completed", "True", "AlertResolved", msg, child["metadata"].get("generation"))
            conds = set_condition(conds, "Executed", "False", "AlertResolved", msg, child["metadata"].get("generation"))
            try:
                await self.kube.patch_status(REMEDIATIONS, meta["namespace"], cname,
                                             {"phase": "Skipped", "message": msg, "completedAt": now_rfc3339_ms(), "conditions": conds},
                                             child["metadata"]["resourceVersion"])
            except RetryableError:
                continue  # the lifecycle moved it meanwhile; look again
            self._count((meta["namespace"], meta["name"]), "cancelled")
            self.recorder.event(child, "Normal", "AlertResolved", msg)
            await self._mark_resolved(meta["namespace"], meta["name"], child, ep_key)
            return "cancelled"
        return "started"

