"""RemediationPolicy: turn a firing into at most one guarded child Remediation, and turn the
children's outcomes into pause, degradation and escalation.

Dedup is the API server's job, not ours: a child's name is derived from (policy uid,
fingerprint, startsAt, episode), so however many replicas or resends see the same firing, only
one create can succeed. An episode ends when its resolve is seen (the child is stamped
ANN_RESOLVED_AT): a later firing with the same startsAt, as a real Alertmanager may send after
a flap, is the next episode and gets its own child, still under the policy's guards. Guards are
evaluated from the observed children (level-based), so a restart loses nothing. Counters are
batched in memory and flushed by ``refresh``.

One writer path for the policy's status: ``write_status`` computes each change from the object
just read and writes it with that resourceVersion, reading again on a 409, so the Prometheus
poller, alert handling and refreshes never overwrite each other's conditions.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .. import rfc3339
from ..actions.base import ActionDef
from ..api.common import now_rfc3339, now_rfc3339_ms, parse_duration
from ..api.policy import RemediationPolicySpec
from ..api.remediation import FINAL_PHASES, ActionSpec
from ..constants import (
    ANN_EPISODE,
    ANN_FINGERPRINT,
    ANN_LABELS,
    ANN_RESOLVED_AT,
    ANN_RESUMED_AT,
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
    VERSION,
)
from ..errors import InvalidSpecError, RetryableError
from ..observability import ALERTS_DEDUP, GUARD_BLOCKS, POLICIES_PAUSED
from . import authz, autonomy, gitops
from .children import controller_of, is_child_of, why_not_child
from .conditions import get_condition, set_condition
from .holds import Holds, silence_annotation
from .lifecycle import Recorder
from .templating import render

log = logging.getLogger("remedy.policy")
# Degraded reasons written by the Prometheus trigger (triggers/prometheus.py), cleared by it.
TRIGGER_DEGRADED_REASONS = frozenset({"NoPrometheus", "PrometheusUnavailable", "InvalidPromQL"})
# What the children cache keeps of a child's annotations and conditions (PolicyEngine._slim).
_OWN_ANNOTATIONS = f"{GROUP}/"
_CONDITION_FIELDS = ("type", "status", "reason", "message")


@dataclass(frozen=True)
class Firing:
    fingerprint: str
    starts_at: str
    labels: dict[str, str]
    annotations: dict[str, str]
    source: str = "alertmanager"


def child_name(policy_name: str, policy_uid: str, fingerprint: str, starts_at: str, step: int = 0, episode: int = 0) -> str:
    seed = f"{policy_uid}|{fingerprint}|{starts_at}" + (f"|{episode}" if episode else "")
    digest = hashlib.sha256(seed.encode()).hexdigest()[:12]
    base = f"{policy_name[:40].rstrip('-.')}-{digest}"
    return base if step == 0 else f"{base}-e{step}"


def series_fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


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


def _variables(firing: Firing, policy_name: str) -> dict[str, Any]:
    return {"labels": firing.labels, "annotations": firing.annotations, "fingerprint": firing.fingerprint,
            "startsAt": firing.starts_at, "policy": policy_name}


class BlockEvents:
    """Guard blocks as one Event series per (policy, guard), not one Event per alert: the first
    block posts at once, later ones within ``window`` seconds are counted and posted as one
    Event carrying the count and the last block's time and message (a storm of 5,000 blocked
    alerts was 5,000 Events on the API server)."""

    def __init__(self, recorder: Recorder, window: float = 5.0) -> None:
        self.recorder = recorder
        self.window = window
        self._last_post: dict[tuple[str, str, str], float] = {}
        # key -> [count, first time, last time, last message, policy]
        self._held: dict[tuple[str, str, str], list[Any]] = {}

    def note(self, policy: dict[str, Any], guard: str, message: str) -> None:
        meta = policy["metadata"]
        key = (meta["namespace"], meta["name"], guard)
        now = time.time()
        if now - self._last_post.get(key, 0.0) >= self.window and key not in self._held:
            self._last_post[key] = now
            self.recorder.event(policy, "Warning", f"Blocked{guard.capitalize()}", message)
            return
        held = self._held.get(key)
        if held is None:
            self._held[key] = [1, now, now, message, policy]
            delay = max(0.0, self._last_post.get(key, now) + self.window - now)
            asyncio.get_running_loop().call_later(delay, self._flush, key)
        else:
            held[0] += 1
            held[2], held[3], held[4] = now, message, policy

    def _flush(self, key: tuple[str, str, str]) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        count, first, last, message, policy = held
        self._last_post[key] = time.time()
        self.recorder.event(policy, "Warning", f"Blocked{key[2].capitalize()}",
                            f"{message} (blocked {count} firing(s) between {rfc3339.format_time(first)} "
                            f"and {rfc3339.format_time(last)})"[:1024])


class PolicyEngine:
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
        """The policy's children: labelled objects the operator created for it (engine/children.py);
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
            if taken is not None and not is_child_of(taken, policy):
                return self._name_taken(policy, cname, taken)
            if taken is not None:
                self._remember(cname)
                return self._dedup(key, name)
            fresh = await self._policy(ns, name, uid)
            if fresh is None:
                return "error:PolicyGone"
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
            active = [c for c in children if (c.get("status") or {}).get("phase") not in FINAL_PHASES]
            # The refresh loop writes the Paused condition about once a second; within a burst,
            # check the failure streak here too so the pause takes effect at the threshold.
            finals = sorted((c for c in children if (c.get("status") or {}).get("phase") in FINAL_PHASES),
                            key=lambda c: (c.get("status") or {}).get("completedAt") or "")
            streak, _ = consecutive_failures(finals, status.get("failuresResetAt"))
            resumed_at = (fresh["metadata"].get("annotations") or {}).get(ANN_RESUMED_AT)
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
                         and (c["metadata"].get("labels") or {}).get(LABEL_STEP, "0") == "0"]
            if len(last_hour) >= spec.guards.max_per_hour:
                return self._block(fresh, "rate", f"{len(last_hour)} remediations in the last hour (maxPerHour {spec.guards.max_per_hour})")
            target_hash = hashlib.sha256(target.encode()).hexdigest()[:16]
            cooldown = parse_duration(spec.guards.cooldown)
            recent_same = [c for c in children if (c["metadata"].get("labels") or {}).get(LABEL_TARGET) == target_hash
                           and (rfc3339.epoch(c["metadata"].get("creationTimestamp")) or 0) > now - cooldown]
            if cooldown and recent_same:
                return self._block(fresh, "cooldown", f"{target} was remediated less than {spec.guards.cooldown} ago")
            held = await self.holds.check(spec, firing.fingerprint, firing.labels, _variables(firing, name))
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
                if ((c["metadata"].get("annotations") or {}).get(ANN_FINGERPRINT) == fingerprint
                    and (c["metadata"].get("annotations") or {}).get(ANN_STARTS_AT) == starts_at
                    and (c["metadata"].get("labels") or {}).get(LABEL_STEP, "0") == "0")]
        return max(same, key=lambda c: int((c["metadata"].get("annotations") or {}).get(ANN_EPISODE) or 0), default=None)

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
                cached["metadata"]["annotations"] = {**(cached["metadata"].get("annotations") or {}), ANN_RESOLVED_AT: stamp}
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

    def _render(self, template_action: dict[str, Any], firing: Firing, policy_name: str) -> tuple[dict[str, Any], str]:
        action = render(template_action, _variables(firing, policy_name), "spec.template.action")
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
            "reason": f"policy {meta['name']}: {firing.labels.get('alertname', firing.source)}",
        }
        if spec.template.reason:
            try:
                child_spec["reason"] = str(render(spec.template.reason, _variables(firing, meta["name"]), "spec.template.reason"))[:1024]
            except InvalidSpecError as exc:
                child_spec["reason"] = f"{spec.template.reason} ({exc.message})"[:1024]
        if spec.require_approval:
            child_spec["approval"] = {"required": True}
        if spec.verify is not None:
            child_spec["verify"] = spec.verify.wire()
        annotations = {ANN_FINGERPRINT: firing.fingerprint, ANN_STARTS_AT: firing.starts_at,
                       ANN_LABELS: json.dumps(firing.labels, sort_keys=True)[:4000], ANN_TARGET: target[:250]}
        # On behalf of the policy's author as the API server recorded it (engine/authz.py); the
        # admission policy lets only the operator set this, and only on a policy's child.
        annotations.update(authz.on_behalf_of(policy))
        if spec.silence is not None:
            annotations[ANN_SILENCE] = silence_annotation(spec.silence, _variables(firing, meta["name"]))
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
            if st.get("phase") not in (None, "Pending", "AwaitingApproval"):
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
                continue  # the lifecycle engine moved it meanwhile; look again
            self._count((meta["namespace"], meta["name"]), "cancelled")
            self.recorder.event(child, "Normal", "AlertResolved", msg)
            await self._mark_resolved(meta["namespace"], meta["name"], child, ep_key)
            return "cancelled"
        return "started"

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
            conds = set_condition((fresh.get("status") or {}).get("conditions") or [], type_, status, reason, message,
                                  fresh["metadata"].get("generation"))
            return {"conditions": conds}
        await self.write_status(policy["metadata"]["namespace"], policy["metadata"]["name"], changes)

    async def _degrade(self, policy: dict[str, Any], reason: str, message: str) -> None:
        def changes(fresh: dict[str, Any]) -> dict[str, Any]:
            gen = fresh["metadata"].get("generation")
            conds = set_condition((fresh.get("status") or {}).get("conditions") or [], "Degraded", "True", reason, message, gen)
            if reason in ("InvalidSpec", "TemplateError"):
                conds = set_condition(conds, "Ready", "False", reason, message, gen)
            return {"conditions": conds}
        await self.write_status(policy["metadata"]["namespace"], policy["metadata"]["name"], changes)

    def has_pending(self) -> list[tuple[str, str]]:
        return [k for k, c in self._pending.items() if c]

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
        st = dict(policy.get("status") or {})
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
        children = await self.children(meta["namespace"], meta["name"], policy)
        finals = sorted((c for c in children if (c.get("status") or {}).get("phase") in FINAL_PHASES),
                        key=lambda c: (c.get("status") or {}).get("completedAt") or "")
        active = [c["metadata"]["name"] for c in children if (c.get("status") or {}).get("phase") not in FINAL_PHASES]
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
            rc = get_condition((reverted.get("status") or {}).get("conditions") or [], "Completed") or {}
            msg = (f"paused itself: {reverted['metadata']['name']} was reverted by GitOps ({rc.get('message', '')}); "
                   f"resume with `kubectl remedy resume {meta['name']}`")[:1024]
            conds = set_condition(conds, "Paused", "True", gitops.REASON, msg, gen)
            if not st.get("selfPausedAt"):
                changes["selfPausedAt"] = now_rfc3339()
        elif self_paused:
            lf = last_failed or {}
            reason = ((get_condition((lf.get("status") or {}).get("conditions") or [], "Completed") or {}).get("reason")) or "Failed"
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
        if last is not None and (last.get("status") or {}).get("phase") == "Failed":
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
            by_firing[(c["metadata"].get("labels") or {}).get(LABEL_FIRING, "")].append(c)
        for base, group in by_firing.items():
            top = max(group, key=lambda c: int((c["metadata"].get("labels") or {}).get(LABEL_STEP, "0")))
            step = int((top["metadata"].get("labels") or {}).get(LABEL_STEP, "0"))
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
