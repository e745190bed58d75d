"""The policy machinery's shared state: the watch-fed caches of policies and their children,
the counters batched for the next refresh, the one writer path of a policy's status, and the
child body both the fire path and escalation create.

One writer path for the policy's status: ``write_status`` computes each change from the object
just read and writes it with that resourceVersion, reading again on a 409, so the Prometheus
poller, alert handling and refreshes never overwrite each other's conditions.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter, OrderedDict, defaultdict
from typing import Any

from pydantic import ValidationError

from ..actions.base import ActionDef
from ..api.children import controller_of, is_child_of
from ..api.objects import view
from ..api.policy import RemediationPolicySpec
from ..api.remediation import ActionSpec
from ..base.constants import (
    ANN_FINGERPRINT,
    ANN_LABELS,
    ANN_SILENCE,
    ANN_STARTS_AT,
    ANN_TARGET,
    API_VERSION,
    GROUP,
    LABEL_FIRING,
    LABEL_POLICY,
    LABEL_STEP,
    LABEL_TARGET,
    POLICIES,
    POLICY_KIND,
    REMEDIATION_KIND,
    REMEDIATIONS,
)
from ..base.errors import InvalidSpecError, RetryableError
from ..lifecycle import authz
from ..lifecycle.conditions import set_condition
from ..lifecycle.ports import Recorder
from . import autonomy
from .blocks import BlockEvents
from .firing import Firing, variables
from .holds import Holds, silence_annotation
from .templating import render

# What the children cache keeps of a child's annotations and conditions (Policies._slim).
_OWN_ANNOTATIONS = f"{GROUP}/"
_CONDITION_FIELDS = ("type", "status", "reason", "message")

def consecutive_failures(finals: list[dict[str, Any]], reset_at: str | None) -> tuple[int, dict[str, Any] | None]:
    """Trailing Failed children (by completion time) since the last success or resume."""
    consecutive = 0
    last_failed: dict[str, Any] | None = None
    for c in reversed(finals):
        cst = c.get("status") or {}
        if reset_at and (cst.get("completedAt") or "") <= reset_at:
            break
        if cst.get("phase") == "Failed":
            consecutive += 1
            last_failed = last_failed or c
        elif cst.get("phase") == "Succeeded":
            break
    return consecutive, last_failed


class PolicyMemory:
    """State and helpers shared by the fire path (fire.py) and the refresh path (refresh.py)."""

    def __init__(self, store: Any, recorder: Recorder, registry: dict[str, ActionDef[Any]], known_capacity: int = 100_000,
                 create_concurrency: int = 16) -> None:
        self.kube = store
        self.recorder = recorder
        self.registry = registry
        self.holds = Holds()  # spec.windows / spec.holdWhile; the operator gives it its Alertmanager
        self._known: OrderedDict[str, None] = OrderedDict()
        self._known_capacity = known_capacity
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._pending: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._paused: set[tuple[str, str]] = set()
        self._scheduled: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.refresh_requested: asyncio.Queue[tuple[str, str]] | None = None
        # Children per policy, seeded by one LIST per policy and kept current by watch events
        # (observe_child), so guard checks cost O(1) API calls however long the history is.
        self._children: defaultdict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        self._synced: set[tuple[str, str]] = set()
        # (namespace, policy, fingerprint, startsAt) -> (latest episode, its resolve was seen)
        self._episodes: dict[tuple[str, str, str, str], tuple[int, bool]] = {}
        # Policies whose template rendered since its last TemplateError: only then may Ready turn
        # True again at the same generation (after a restart: not until a render succeeds).
        self._template_ok: set[tuple[str, str]] = set()
        self._block_events = BlockEvents(recorder)
        self._policy_seen: dict[tuple[str, str], dict[str, Any]] = {}
        self._create_slots = asyncio.Semaphore(create_concurrency)

    # --- children cache -----------------------------------------------------------------------
    @staticmethod
    def _slim(body: dict[str, Any]) -> dict[str, Any]:
        """What the guards, episodes, track record and pause logic read of a child, nothing more:
        remedy's own annotations (not kopf's last-handled-configuration or kubectl's
        last-applied-configuration, each a full copy of the object) and each condition's
        type, status, reason and message. One record per child for as long as it exists."""
        meta = body.get("metadata") or {}
        st = body.get("status") or {}
        slim_meta: dict[str, Any] = {k: meta.get(k) for k in ("name", "namespace", "labels", "creationTimestamp")}
        controller = controller_of(body)  # with the requester annotations: whose child it is
        slim_meta["ownerReferences"] = [controller] if controller else []
        slim_meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(_OWN_ANNOTATIONS)}
        slim_st: dict[str, Any] = {k: st.get(k) for k in ("phase", "completedAt") if st.get(k) is not None}
        if st.get("conditions"):
            slim_st["conditions"] = [{k: c[k] for k in _CONDITION_FIELDS if k in c} for c in st["conditions"]]
        return {"metadata": slim_meta, "status": slim_st}

    def observe_child(self, body: dict[str, Any], event_type: str | None) -> None:
        """Called for every watch event of a Remediation labelled with a policy."""
        meta = body.get("metadata") or {}
        policy = (meta.get("labels") or {}).get(LABEL_POLICY)
        if not policy:
            return
        key = (meta.get("namespace", ""), policy)
        if event_type == "DELETED":
            self._children[key].pop(meta.get("name", ""), None)
        else:
            self._children[key][meta.get("name", "")] = self._slim(body)

    async def children(self, namespace: str, policy: str, owner: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The policy's children: labelled objects the operator created for it (api/children.py);
        a labelled object anyone else created changes no guard, streak, track record or escalation."""
        key = (namespace, policy)
        if key not in self._synced:
            listed = await self.kube.list_objects(REMEDIATIONS, namespace, f"{LABEL_POLICY}={policy}")
            cache = self._children[key]
            for child in listed:
                cache.setdefault(child["metadata"]["name"], self._slim(child))
            self._synced.add(key)
        owner = owner or self._policy_seen.get(key) or await self.kube.get_object(POLICIES, namespace, policy)
        if owner is None:
            return []
        return [c for c in self._children[key].values() if is_child_of(c, owner)]

    # --- the policies themselves, watch-fed -----------------------------------------------
    def observe_policy(self, body: dict[str, Any], event_type: str | None) -> None:
        """Called for every watch event of a RemediationPolicy (status changes included)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self._policy_seen.pop(key, None)
        else:
            self._note_policy(body)

    def known_policies(self) -> list[dict[str, Any]]:
        """Every policy the watch has shown (newest version each; read-only for the caller)."""
        return list(self._policy_seen.values())

    def _note_policy(self, body: dict[str, Any]) -> None:
        """Keep the newest version seen (watch event, GET or our own status write)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        old = self._policy_seen.get(key)
        if old is not None and old["metadata"].get("uid") == meta.get("uid"):
            new_rv, old_rv = str(meta.get("resourceVersion") or ""), str(old["metadata"].get("resourceVersion") or "")
            if new_rv.isdigit() and old_rv.isdigit() and int(new_rv) < int(old_rv):
                return
        self._policy_seen[key] = copy.deepcopy(body)

    async def _policy(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        """The policy as the watch last showed it (no GET per firing: under a storm a GET waits
        behind every other API call in the client's thread pool, and the policy's lock with it);
        read from the API server when not seen yet or when the uid differs (recreated)."""
        seen = self._policy_seen.get((namespace, name))
        if seen is not None and seen["metadata"].get("uid") == uid:
            return seen
        fresh: dict[str, Any] | None = await self.kube.get_object(POLICIES, namespace, name)
        if fresh is not None:
            self._note_policy(fresh)
        return fresh

    # --- firing ---------------------------------------------------------------------------
    def _remember(self, name: str) -> None:
        self._known[name] = None
        self._known.move_to_end(name)
        while len(self._known) > self._known_capacity:
            self._known.popitem(last=False)

    def _count(self, key: tuple[str, str], counter: str, n: int = 1) -> None:
        self._pending[key][counter] += n

    def _render(self, template_action: dict[str, Any], firing: Firing, policy_name: str) -> tuple[dict[str, Any], str]:
        action = render(template_action, variables(firing, policy_name), "spec.template.action")
        try:
            member, params = ActionSpec.model_validate(action).only()
        except (ValidationError, ValueError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            loc = ".".join(str(x) for x in exc.errors()[0]["loc"]) if isinstance(exc, ValidationError) else ""
            raise InvalidSpecError(f"rendered spec.template.action{('.' + loc) if loc else ''}: {msg}", reason="TemplateError") from None
        if member not in self.registry:
            raise InvalidSpecError(f"action {member} is not supported", reason="TemplateError")
        return action, f"{member}:{self.registry[member].target(params)}"

    def _child_body(self, policy: dict[str, Any], spec: RemediationPolicySpec, cname: str, action: dict[str, Any],
                    target: str, target_hash: str, firing: Firing, step: int) -> dict[str, Any]:
        meta = policy["metadata"]
        child_spec: dict[str, Any] = {
            "action": action, "dryRun": spec.template.dry_run, "timeout": spec.template.timeout,
            "onTargetChanged": spec.template.on_target_changed,
            "reason": f"policy {meta['name']}: {firing.labels.get('alertname', firing.source)}",
        }
        if spec.template.reason:
            try:
                child_spec["reason"] = str(render(spec.template.reason, variables(firing, meta["name"]), "spec.template.reason"))[:1024]
            except InvalidSpecError as exc:
                child_spec["reason"] = f"{spec.template.reason} ({exc.message})"[:1024]
        if spec.require_approval:
            child_spec["approval"] = {"required": True}
        if spec.verify is not None:
            child_spec["verify"] = spec.verify.wire()
        if spec.template.gitops is not None:
            child_spec["gitops"] = spec.template.gitops.wire()
        annotations = {ANN_FINGERPRINT: firing.fingerprint, ANN_STARTS_AT: firing.starts_at,
                       ANN_LABELS: json.dumps(firing.labels, sort_keys=True)[:4000], ANN_TARGET: target[:250]}
        # On behalf of the policy's author as the API server recorded it (lifecycle/authz.py); the
        # admission policy lets only the operator set this, and only on a policy's child.
        annotations.update(authz.on_behalf_of(policy))
        if spec.silence is not None:
            annotations[ANN_SILENCE] = silence_annotation(spec.silence, variables(firing, meta["name"]))
        pst = policy.get("status") or {}
        autonomy.apply_mode(child_spec, annotations, autonomy.effective_mode(spec, pst),
                            pst.get("modeSince") if pst.get("modeBase") == spec.mode else None)
        base = cname if step == 0 else cname.rsplit("-e", 1)[0]
        return {
            "apiVersion": API_VERSION, "kind": REMEDIATION_KIND,
            "metadata": {
                "name": cname,
                "labels": {LABEL_POLICY: meta["name"], LABEL_FIRING: base, LABEL_STEP: str(step), LABEL_TARGET: target_hash},
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": API_VERSION, "kind": POLICY_KIND, "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}],
            },
            "spec": child_spec,
        }

    # --- outcomes: counters, pause, degradation, escalation ----------------------------------
    async def write_status(self, namespace: str, name: str, changes_for: Any,
                           policy: dict[str, Any] | None = None, tries: int = 8) -> dict[str, Any] | None:
        """The one writer path of a RemediationPolicy's status. ``changes_for(policy)`` computes
        the changes from the object just read (None: nothing to write); they are written with
        its resourceVersion, and on a 409 the policy is read again and they are recomputed.
        Returns the updated policy (None if it is gone)."""
        for _ in range(tries):
            if policy is None:
                policy = await self.kube.get_object(POLICIES, namespace, name)
                if policy is None:
                    return None
            changes = changes_for(policy)
            if not changes:
                return policy
            try:
                updated: dict[str, Any] = await self.kube.patch_status(
                    POLICIES, namespace, name, changes, policy["metadata"].get("resourceVersion"))
                self._note_policy(updated)
                return updated
            except RetryableError as exc:
                if exc.reason != "Conflict":
                    raise
                policy = None  # someone wrote meanwhile: read again, recompute
        raise RetryableError(f"status of policy {namespace}/{name} kept changing; retrying", delay=1.0, reason="Conflict")

    async def set_policy_condition(self, policy: dict[str, Any], type_: str, status: str, reason: str, message: str) -> None:
        """One condition, written through ``write_status`` (the Prometheus trigger's path)."""
        def changes(fresh: dict[str, Any]) -> dict[str, Any]:
            conds = set_condition(view(fresh).conditions, type_, status, reason, message,
                                  fresh["metadata"].get("generation"))
            return {"conditions": conds}
        await self.write_status(policy["metadata"]["namespace"], policy["metadata"]["name"], changes)

    async def _degrade(self, policy: dict[str, Any], reason: str, message: str) -> None:
        def changes(fresh: dict[str, Any]) -> dict[str, Any]:
            gen = fresh["metadata"].get("generation")
            conds = set_condition(view(fresh).conditions, "Degraded", "True", reason, message, gen)
            if reason in ("InvalidSpec", "TemplateError"):
                conds = set_condition(conds, "Ready", "False", reason, message, gen)
            return {"conditions": conds}
        await self.write_status(policy["metadata"]["namespace"], policy["metadata"]["name"], changes)

    def has_pending(self) -> list[tuple[str, str]]:
        return [k for k, c in self._pending.items() if c]

    def _queue_refresh(self, key: tuple[str, str]) -> None:
        if self.refresh_requested is not None:
            self.refresh_requested.put_nowait(key)

    def _schedule(self, policy: dict[str, Any], delay: float) -> None:
        key = (policy["metadata"]["namespace"], policy["metadata"]["name"])
        if key in self._scheduled or self.refresh_requested is None:
            return
        queue = self.refresh_requested
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._scheduled.pop(key, None)
            queue.put_nowait(key)

        self._scheduled[key] = loop.call_later(delay + 0.1, fire)

    async def _refresh(self, policy: dict[str, Any], key: tuple[str, str]) -> dict[str, Any]:
        """Recompute one policy's status (refresh.py); the fire path calls it on a demotion."""
        raise NotImplementedError
