"""The refresh path: a policy's status recomputed from its children (counters, pause,
degradation, readiness, autonomy) and due escalation steps created."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from typing import Any

from pydantic import ValidationError

from ..api.common import now_rfc3339, parse_duration
from ..api.objects import view
from ..api.policy import RemediationPolicySpec
from ..base import rfc3339
from ..base.constants import (
    ANN_FINGERPRINT,
    ANN_LABELS,
    ANN_RESUMED_AT,
    ANN_STARTS_AT,
    FINAL_PHASES,
    LABEL_FIRING,
    LABEL_STEP,
    POLICIES,
    REMEDIATIONS,
)
from ..base.errors import InvalidSpecError, RetryableError
from ..base.observability import POLICIES_PAUSED
from ..lifecycle import gitops
from ..lifecycle.conditions import get_condition, set_condition
from . import autonomy
from .firing import TRIGGER_DEGRADED_REASONS, Firing
from .memory import PolicyMemory, consecutive_failures


class RefreshPath(PolicyMemory):
    async def refresh(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Recompute the policy's status from its children; flush counters; run due escalations."""
        key = (namespace, name)
        async with self._locks[key]:
            policy = await self.kube.get_object(POLICIES, namespace, name)
            for _ in range(8):
                if policy is None:
                    self._pending.pop(key, None)
                    self._paused.discard(key)
                    self._children.pop(key, None)
                    self._synced.discard(key)
                    return None
                try:
                    return await self._refresh(policy, key)
                except RetryableError as exc:
                    if exc.reason != "Conflict":
                        raise
                    # Another writer (the Prometheus trigger, alert handling) wrote in between:
                    # recompute from the fresh object; the counters were put back by _refresh.
                    policy = await self.kube.get_object(POLICIES, namespace, name)
            raise RetryableError(f"status of policy {namespace}/{name} kept changing; retrying", delay=1.0, reason="Conflict")

    async def _refresh(self, policy: dict[str, Any], key: tuple[str, str]) -> dict[str, Any]:
        meta = policy["metadata"]
        gen = meta.get("generation")
        st = dict(view(policy).status)
        conds = list(st.get("conditions") or [])
        try:
            spec = RemediationPolicySpec.model_validate(policy.get("spec") or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = f"spec.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
            conds = set_condition(conds, "Ready", "False", "InvalidSpec", msg, gen)
            conds = set_condition(conds, "Degraded", "True", "InvalidSpec", msg, gen)
            return await self.kube.patch_status(POLICIES, meta["namespace"], meta["name"],  # type: ignore[no-any-return]
                                                {"conditions": conds, "observedGeneration": gen}, meta.get("resourceVersion"))
        children = await self.children(meta["namespace"], meta["name"])
        finals = sorted((c for c in children if view(c).phase in FINAL_PHASES),
                        key=lambda c: view(c).status.get("completedAt") or "")
        active = [c["metadata"]["name"] for c in children if view(c).phase not in FINAL_PHASES]
        reset_at = st.get("failuresResetAt")
        resumed_at = (meta.get("annotations") or {}).get(ANN_RESUMED_AT)
        changes: dict[str, Any] = {}
        if resumed_at and st.get("selfPausedAt") and resumed_at > st["selfPausedAt"]:
            reset_at = resumed_at
            changes["failuresResetAt"] = resumed_at
            changes["selfPausedAt"] = None
            self.recorder.event(policy, "Normal", "Resumed", f"resumed by annotation {ANN_RESUMED_AT}={resumed_at}")
        consecutive, last_failed = consecutive_failures(finals, reset_at)
        reverted = None if changes.get("failuresResetAt") else gitops.reverted_since(finals, reset_at)
        self_paused = (consecutive >= spec.guards.pause_after_failures or reverted is not None) and not changes.get("failuresResetAt")
        was_paused = (get_condition(conds, "Paused") or {}).get("status") == "True"
        if spec.paused:
            conds = set_condition(conds, "Paused", "True", "PausedBySpec", "spec.paused is true", gen)
        elif reverted is not None:
            rc = get_condition(view(reverted).conditions, "Completed") or {}
            msg = (f"paused itself: {reverted['metadata']['name']} was reverted by GitOps ({rc.get('message', '')}); "
                   f"resume with `kubectl remedy resume {meta['name']}`")[:1024]
            conds = set_condition(conds, "Paused", "True", gitops.REASON, msg, gen)
            if not st.get("selfPausedAt"):
                changes["selfPausedAt"] = now_rfc3339()
        elif self_paused:
            lf = last_failed or {}
            reason = ((get_condition(view(lf).conditions, "Completed") or {}).get("reason")) or "Failed"
            msg = (f"paused itself after {consecutive} consecutive failed remediations (last: "
                   f"{lf.get('metadata', {}).get('name')}: {reason}); resume with `kubectl remedy resume {meta['name']}`")
            conds = set_condition(conds, "Paused", "True", "TooManyFailures", msg, gen)
            if not st.get("selfPausedAt"):
                changes["selfPausedAt"] = now_rfc3339()
        else:
            conds = set_condition(conds, "Paused", "False", "Active", "creating remediations when the trigger fires", gen)
        now_paused = spec.paused or self_paused
        if now_paused and not was_paused:
            self.recorder.event(policy, "Warning", "Paused", (get_condition(conds, "Paused") or {}).get("message", ""))
        if now_paused:
            self._paused.add(key)
        else:
            self._paused.discard(key)
        POLICIES_PAUSED.set(len(self._paused))
        last = finals[-1] if finals else None
        if last is not None and view(last).phase == "Failed":
            lc = get_condition(last["status"].get("conditions") or [], "Completed") or {}
            conds = set_condition(conds, "Degraded", "True", "LastRemediationFailed",
                                  f"{last['metadata']['name']}: {lc.get('reason')}: {lc.get('message', '')}", gen)
        else:
            prev = get_condition(conds, "Degraded") or {}
            # Degraded set by the trigger (Prometheus unreachable, bad PromQL) is the trigger's to
            # clear; a refresh clears only what it owns.
            if prev.get("reason") in TRIGGER_DEGRADED_REASONS:
                pass
            elif (prev.get("reason") not in ("TemplateError",) or prev.get("observedGeneration") != gen
                    or key in self._template_ok):
                conds = set_condition(conds, "Degraded", "False", "Healthy", "no failed remediation", gen)
        ready_prev = get_condition(conds, "Ready") or {}
        # A TemplateError keeps Ready False (docs/policies.md) until the spec changes or a
        # firing renders again; only then is the policy evaluated as ready.
        template_error = (ready_prev.get("status") == "False" and ready_prev.get("reason") == "TemplateError"
                          and ready_prev.get("observedGeneration") == gen and key not in self._template_ok)
        if template_error:
            pass
        elif ready_prev.get("status") != "True" or ready_prev.get("observedGeneration") != gen:
            conds = set_condition(conds, "Ready", "True", "Evaluating", "trigger valid and evaluated", gen)
        pending = self._pending.pop(key, Counter())
        counters = dict(st.get("counters") or {})
        last_fired = pending.pop("_lastFired", 0)
        for k, v in pending.items():
            camel = "".join(w if i == 0 else w.capitalize() for i, w in enumerate(k.split("_")))
            counters[camel] = int(counters.get(camel, 0)) + v
        counters["succeeded"] = sum(1 for c in finals if c["status"].get("phase") == "Succeeded")
        counters["failed"] = sum(1 for c in finals if c["status"].get("phase") == "Failed")
        changes.update({"conditions": conds, "observedGeneration": gen, "counters": counters,
                        "consecutiveFailures": consecutive, "activeChildren": active[:50]})
        mode_change = await self._autonomy(policy, spec, st, children, changes, gen)
        if last_fired:
            changes["lastFiredAt"] = rfc3339.format_time(last_fired)
        try:
            updated: dict[str, Any] = await self.kube.patch_status(POLICIES, meta["namespace"], meta["name"], changes,
                                                                   meta.get("resourceVersion"))
        except Exception:
            for k, v in pending.items():  # do not lose counts on a failed flush
                self._pending[key][k] += v
            raise
        self._note_policy(updated)
        autonomy.observe_mode(updated)
        if mode_change is not None:
            await autonomy.announce(self.kube, self.recorder, updated, spec, *mode_change)
        if spec.escalate and not now_paused:
            await self._escalate(updated, spec, children)
        return updated

    async def _autonomy(self, policy: dict[str, Any], spec: RemediationPolicySpec, st: dict[str, Any],
                        children: list[dict[str, Any]], changes: dict[str, Any], gen: Any) -> tuple[str, str, str, str] | None:
        """Track record, mode and the Autonomous condition into ``changes``; the mode change, if any."""
        now = time.time()
        record, scored = autonomy.track_record(children, spec, now)
        decision = autonomy.decide(spec, st, scored, now)
        old = autonomy.effective_mode(spec, st)
        fields = autonomy.mode_status(spec, st, decision)
        mode = str(fields.get("mode") or old)
        conds = changes["conditions"]
        changes["conditions"] = set_condition(conds, autonomy.CONDITION, *autonomy.condition_args(
            mode, decision, get_condition(conds, autonomy.CONDITION)), gen)
        changes.update(fields)
        changes["trackRecord"] = record
        pending = autonomy.next_decision_in(scored, spec, now)
        if pending is not None:
            self._schedule(policy, pending)
        previous = st.get("mode")
        if decision is None and previous in ("shadow", "approve", "auto") and previous != mode:  # a person changed spec.mode
            return str(previous), mode, "Configured", f"spec.mode {spec.mode} (maxMode {spec.max_mode})"
        return (old, mode, decision[1], decision[2]) if decision is not None else None

    async def _escalate(self, policy: dict[str, Any], spec: RemediationPolicySpec, children: list[dict[str, Any]]) -> None:
        by_firing: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for c in children:
            by_firing[view(c).labels.get(LABEL_FIRING, "")].append(c)
        for base, group in by_firing.items():
            top = max(group, key=lambda c: int(view(c).labels.get(LABEL_STEP, "0")))
            step = int(view(top).labels.get(LABEL_STEP, "0"))
            tst = top.get("status") or {}
            if tst.get("phase") != "Failed" or step >= len(spec.escalate):
                continue
            nxt = spec.escalate[step]
            due = (rfc3339.epoch(tst.get("completedAt")) or time.time()) + parse_duration(nxt.after)
            delay = due - time.time()
            if delay > 0:
                self._schedule(policy, delay)
                continue
            ann = top["metadata"].get("annotations") or {}
            firing = Firing(ann.get(ANN_FINGERPRINT, ""), ann.get(ANN_STARTS_AT, ""), json.loads(ann.get(ANN_LABELS, "{}")), {}, "escalation")
            try:
                action, target = self._render(nxt.action, firing, policy["metadata"]["name"])
            except InvalidSpecError as exc:
                await self._degrade(policy, exc.reason, f"escalation step {step + 1}: {exc.message}")
                continue
            th = hashlib.sha256(target.encode()).hexdigest()[:16]
            body = self._child_body(policy, spec, f"{base}-e{step + 1}", action, target, th, firing, step + 1)
            _, created = await self.kube.create_object_if_absent(REMEDIATIONS, policy["metadata"]["namespace"], body)
            if created:
                self.recorder.event(policy, "Warning", "Escalated",
                                    f"{top['metadata']['name']} failed; escalation step {step + 1}: {target}")

