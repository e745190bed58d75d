"""Workload actions (runbooks 001, 003, 004): rollout restart, scale, rollback, raise memory.

All act through the Kubernetes API only, in the Remediation's namespace, and are idempotent
given their recorded plan: a restart stamps the Remediation's uid (a second identical stamp
changes nothing), scale sets an absolute count, rollback and memory raise apply a template
computed once, at plan time, and stored in status.plan.

Every write is a JSON patch (field manager ``remedy``, so managedFields name remedy) whose
``test`` ops are the preconditions: the fields the plan read must still hold what it read
(``metadata.generation`` for template writes, ``spec.replicas`` for scale). A person's edit in
between fails the test, nothing is applied, and the lifecycle plans again with a TargetChanged
Event that says what changed. (A resourceVersion precondition would also fail on every status
write of the workload controllers, which happen all the time during a rollout.)

Each action has an ``observe`` probe (see remedy.actions.base) that compares the target with
the recorded plan after an ambiguous outcome, so a lost response is never re-planned: a
rollback without toRevision can never roll forward to the bad revision.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity as _parse_quantity

from ..api.common import parse_duration
from ..api.workload import DeploymentRef, RaiseMemoryOnOOM, RestartWorkload, RollbackWorkload, ScaleWorkload, WorkloadRef
from ..base.constants import ANN_RESTARTED_BY, FIELD_MANAGER
from ..base.errors import (
    AmbiguousOutcomeError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RemedyError,
    RetryableError,
    SkipError,
    TargetNotFoundError,
)
from .base import ActionContext, ActionDef, Applied, CannotTell, Evidence, NotApplied, Observation

RESTART_ANNOTATION = ANN_RESTARTED_BY


def parse_quantity(text: str) -> Decimal:
    value: Decimal = _parse_quantity(text)  # type: ignore[no-untyped-call]
    return value
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _target(ref: Any) -> str:
    return f"{ref.kind}/{ref.name}"


# The AppsV1Api method name of each workload kind: ``<verb>_namespaced_<suffix>``.
_APPS_SUFFIX = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}


def _apps_call(ctx: ActionContext, verb: str, kind: str) -> Any:
    return getattr(ctx.kube.apps, f"{verb}_namespaced_{_APPS_SUFFIX[kind]}")


async def _read(ctx: ActionContext, kind: str, name: str) -> Any:
    reader = _apps_call(ctx, "read", kind)
    try:
        return await ctx.kube.call(f"{kind} {ctx.namespace}/{name}", reader, name, ctx.namespace)
    except TargetNotFoundError:
        raise TargetNotFoundError(f"{kind} {ctx.namespace}/{name} not found: check spec.action target") from None


async def _patch(ctx: ActionContext, kind: str, name: str, ops: list[dict[str, Any]], read: dict[str, Any]) -> Any:
    """One JSON patch whose leading ``test`` ops are the preconditions (``read``: JSON pointer ->
    the value the plan read). A failed test is TargetChanged, with what changed in the message."""
    patcher = _apps_call(ctx, "patch", kind)
    tests = [{"op": "test", "path": path, "value": value} for path, value in read.items()]
    try:
        return await ctx.kube.call(f"patch {kind} {ctx.namespace}/{name}", patcher, name, ctx.namespace, tests + ops,
                                   mutating=True, field_manager=FIELD_MANAGER,
                                   _content_type="application/json-patch+json")
    except RetryableError as exc:
        if exc.reason != "TargetChanged":
            raise
        diffs = await _what_changed(ctx, kind, name, read)
        if diffs is not None and not diffs:
            # Every tested field still holds what the plan read: the patch itself was rejected.
            raise PermanentError(f"patch {kind} {ctx.namespace}/{name} rejected by the API server: {exc.message}",
                                 reason="Invalid") from None
        what = "; ".join(diffs) if diffs else "could not re-read it"
        raise RetryableError(f"{kind}/{name} changed since the plan: {what}", delay=0.5, reason="TargetChanged") from None


async def _what_changed(ctx: ActionContext, kind: str, name: str, read: dict[str, Any]) -> list[str] | None:
    """Which tested fields differ now from what the plan read (None: cannot re-read)."""
    try:
        now = ctx.kube.api_client.sanitize_for_serialization(await _read(ctx, kind, name))  # type: ignore[no-untyped-call]
    except RetryableError:
        return None
    diffs = []
    for path, was in read.items():
        cur: Any = now
        for part in path.strip("/").split("/"):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur != was:
            field_name = path.strip("/").replace("/", ".")
            diffs.append(f"{field_name} was {was!r} at plan time, now {cur!r}")
    if any("generation" in d for d in diffs):
        diffs.append("someone edited its spec in between")
    return diffs


def _selector(workload: Any) -> str:
    labels = (workload.spec.selector.match_labels or {}) if workload.spec.selector else {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


async def pod_snapshot(ctx: ActionContext, ref: WorkloadRef | DeploymentRef) -> Evidence:
    """Pods, restart counts, last termination reasons and recent Events: the runbooks' 'before' picture."""
    workload = await _read(ctx, ref.kind, ref.name)
    pods = await ctx.kube.call("list pods", ctx.kube.core.list_namespaced_pod, ctx.namespace, label_selector=_selector(workload))
    out = []
    for pod in pods.items[:20]:
        containers = []
        for cs in pod.status.container_statuses or []:
            last = cs.last_state.terminated if cs.last_state else None
            containers.append(
                {
                    "name": cs.name,
                    "restartCount": cs.restart_count,
                    "ready": cs.ready,
                    "lastTerminationReason": last.reason if last else None,
                }
            )
        out.append({"name": pod.metadata.name, "phase": pod.status.phase, "containers": containers})
    # The workload's own Events and its pods' (OOMKilled, BackOff live on the pods).
    names = {ref.name} | {pod.metadata.name for pod in pods.items}
    events = await ctx.kube.call("list events", ctx.kube.core.list_namespaced_event, ctx.namespace, limit=500)
    recent = [
        {"object": e.involved_object.name, "reason": e.reason, "message": (e.message or "")[:200], "count": e.count}
        for e in sorted(events.items, key=lambda e: str(e.last_timestamp or ""))
        if e.involved_object is not None and e.involved_object.name in names
    ][-10:]
    return {"workload": _target(ref), "pods": out, "podCount": len(pods.items), "events": recent}


# --- restartWorkload --------------------------------------------------------------------


async def restart_plan(ctx: ActionContext, p: RestartWorkload) -> Evidence:
    workload = await _read(ctx, p.target.kind, p.target.name)
    annotations = (workload.spec.template.metadata.annotations or {}) if workload.spec.template.metadata else {}
    return {
        "workload": _target(p.target),
        "stamp": {RESTART_ANNOTATION: ctx.uid},
        "alreadyStamped": annotations.get(RESTART_ANNOTATION) == ctx.uid,
        "generationBefore": workload.metadata.generation,
        "change": f"set pod template annotation {RESTART_ANNOTATION}={ctx.uid} (rolling restart)",
    }


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def restart_execute(ctx: ActionContext, p: RestartWorkload, plan: Evidence) -> Evidence:
    workload = await _read(ctx, p.target.kind, p.target.name)
    meta = workload.spec.template.metadata
    ops: list[dict[str, Any]] = []
    if meta is None:
        ops.append({"op": "add", "path": "/spec/template/metadata", "value": {}})
    if meta is None or meta.annotations is None:
        ops.append({"op": "add", "path": "/spec/template/metadata/annotations", "value": {}})
    ops.append({"op": "add", "path": f"/spec/template/metadata/annotations/{_pointer(RESTART_ANNOTATION)}", "value": ctx.uid})
    # The generation just read: a restart adds one annotation, so it only needs the spec not
    # to move between this read and the write (a stale plan cannot hide here).
    patched = await _patch(ctx, p.target.kind, p.target.name, ops, {"/metadata/generation": workload.metadata.generation})
    return {"workload": _target(p.target), "generation": patched.metadata.generation, "stamp": ctx.uid}


async def restart_observe(ctx: ActionContext, p: RestartWorkload, plan: Evidence) -> Observation:
    workload = await _read(ctx, p.target.kind, p.target.name)
    meta = workload.spec.template.metadata
    stamp = (meta.annotations or {}).get(RESTART_ANNOTATION) if meta else None
    if stamp == ctx.uid:
        return Applied(f"pod template of {_target(p.target)} carries {RESTART_ANNOTATION}={ctx.uid}")
    return NotApplied(f"pod template of {_target(p.target)} has {RESTART_ANNOTATION}={stamp!r}, not this Remediation's uid")


async def restart_verify(ctx: ActionContext, p: RestartWorkload, plan: Evidence, result: Evidence) -> Evidence:
    """The controller observed the new template; with waitForRollout, the rollout finished."""
    deadline = parse_duration(p.wait_for_rollout) if p.wait_for_rollout else 30.0
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        w = await _read(ctx, p.target.kind, p.target.name)
        observed = (w.status.observed_generation or 0) >= (w.metadata.generation or 0)
        done = observed
        if p.wait_for_rollout and p.target.kind == "Deployment":
            spec_replicas = w.spec.replicas or 0
            done = observed and (w.status.updated_replicas or 0) >= spec_replicas and (w.status.available_replicas or 0) >= spec_replicas
        if done:
            return {"observedGeneration": w.status.observed_generation, "updatedReplicas": w.status.updated_replicas}
        if loop.time() > end:
            raise PermanentError(f"{_target(p.target)} did not roll out within {deadline:.0f}s", reason="RolloutTimeout")
        await asyncio.sleep(0.5)


RESTART = ActionDef(
    name="restartWorkload", params=RestartWorkload, target=lambda p: _target(p.target),
    plan=restart_plan, execute=restart_execute, verify=restart_verify, observe=restart_observe,
    snapshot=lambda ctx, p: pod_snapshot(ctx, p.target), idempotent=True,
)


# --- scaleWorkload ----------------------------------------------------------------------


async def scale_plan(ctx: ActionContext, p: ScaleWorkload) -> Evidence:
    workload = await _read(ctx, p.target.kind, p.target.name)
    current = int(workload.spec.replicas or 0)
    wanted = p.replicas if p.replicas is not None else current + int(p.delta or 0)
    if p.min_replicas > p.max_replicas:
        raise InvalidSpecError(f"minReplicas {p.min_replicas} exceeds maxReplicas {p.max_replicas}")
    to = min(max(wanted, p.min_replicas), p.max_replicas)
    clamped = to != wanted
    if to == current:
        raise SkipError(f"{_target(p.target)} already has {current} replicas" + (f" (wanted {wanted}, clamped)" if clamped else ""),
                        reason="AlreadyScaled")
    note = f" (wanted {wanted}, clamped to [{p.min_replicas}, {p.max_replicas}])" if clamped else ""
    return {"workload": _target(p.target), "from": current, "to": to, "wanted": wanted, "clamped": clamped,
            "change": f"replicas {current} -> {to}{note}"}


async def scale_execute(ctx: ActionContext, p: ScaleWorkload, plan: Evidence) -> Evidence:
    # Precondition: replicas still what the plan read, so a delta is never applied twice and a
    # person's (or an autoscaler's) scale in between is never overwritten.
    await _patch(ctx, p.target.kind, p.target.name, [{"op": "replace", "path": "/spec/replicas", "value": plan["to"]}],
                 {"/spec/replicas": plan["from"]})
    return {"workload": _target(p.target), "from": plan.get("from"), "to": plan["to"], "clamped": plan.get("clamped", False)}


async def scale_observe(ctx: ActionContext, p: ScaleWorkload, plan: Evidence) -> Observation:
    workload = await _read(ctx, p.target.kind, p.target.name)
    replicas = int(workload.spec.replicas or 0)
    if replicas == plan["to"]:
        return Applied(f"{_target(p.target)} has {replicas} replicas, the planned count")
    if replicas == plan["from"]:
        return NotApplied(f"{_target(p.target)} still has {replicas} replicas, the count the plan read")
    return CannotTell(f"{_target(p.target)} has {replicas} replicas: neither the planned {plan['to']} nor the "
                      f"{plan['from']} the plan read (someone else scaled it)")


SCALE = ActionDef(
    name="scaleWorkload", params=ScaleWorkload, target=lambda p: _target(p.target),
    plan=scale_plan, execute=scale_execute, observe=scale_observe, idempotent=True, destructive=False,
)


# --- rollbackWorkload -------------------------------------------------------------------


def _strip_template(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    return t


def _template_of(ctx: ActionContext, workload: Any) -> dict[str, Any]:
    raw: dict[str, Any] = ctx.kube.api_client.sanitize_for_serialization(workload.spec.template)  # type: ignore[no-untyped-call]
    return _strip_template(raw)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _changed_since_previous_plan(ctx: ActionContext, key: str, now: Any, what: str) -> None:
    """A re-plan after TargetChanged: if the field the first plan acted on moved, a person
    changed it; acting on the new value would undo their change, so do nothing."""
    before = (ctx.previous_plan or {}).get(key)
    if before is not None and before != now:
        raise SkipError(f"{what} changed since this Remediation planned (someone edited it); "
                        "not overriding that change", reason="TargetChanged",
                        evidence={"previousPlan": {key: before}, "now": {key: now}})


async def rollback_plan(ctx: ActionContext, p: RollbackWorkload) -> Evidence:
    dep = await _read(ctx, "Deployment", p.target.name)
    rs_list = await ctx.kube.call(
        "list replicasets", ctx.kube.apps.list_namespaced_replica_set, ctx.namespace, label_selector=_selector(dep)
    )
    owned = [
        rs for rs in rs_list.items
        if any(o.uid == dep.metadata.uid for o in (rs.metadata.owner_references or []))
        and REVISION_ANNOTATION in (rs.metadata.annotations or {})
    ]
    by_rev = {int(rs.metadata.annotations[REVISION_ANNOTATION]): rs for rs in owned}
    current = int((dep.metadata.annotations or {}).get(REVISION_ANNOTATION, max(by_rev, default=0)))
    if p.to_revision is not None:
        target_rev = p.to_revision
        if target_rev not in by_rev:
            raise TargetNotFoundError(f"revision {target_rev} of Deployment/{p.target.name} not found (have {sorted(by_rev)})")
    else:
        earlier = [r for r in by_rev if r < current]
        if not earlier:
            raise SkipError(f"Deployment/{p.target.name} has no revision before {current}", reason="NoPreviousRevision")
        target_rev = max(earlier)
    if target_rev == current:
        raise SkipError(f"Deployment/{p.target.name} already at revision {current}", reason="AlreadyAtRevision")
    from_hash = _digest(_template_of(ctx, dep))
    _changed_since_previous_plan(ctx, "fromTemplateHash", from_hash, f"the pod template of Deployment/{p.target.name}")
    template = _template_of(ctx, by_rev[target_rev])
    images = [c.get("image") for c in template.get("spec", {}).get("containers", [])]
    return {
        "workload": _target(p.target), "fromRevision": current, "toRevision": target_rev,
        "images": images, "template": template, "generation": dep.metadata.generation, "fromTemplateHash": from_hash,
        "change": f"restore pod template of revision {target_rev} (currently {current})",
    }


def _generation_test(plan: Evidence) -> dict[str, Any]:
    # Plans recorded before preconditions existed carry no generation: no test for those.
    return {"/metadata/generation": plan["generation"]} if plan.get("generation") is not None else {}


async def rollback_execute(ctx: ActionContext, p: RollbackWorkload, plan: Evidence) -> Evidence:
    ops = [{"op": "replace", "path": "/spec/template", "value": plan["template"]}]
    dep = await _patch(ctx, "Deployment", p.target.name, ops, _generation_test(plan))
    return {"workload": _target(p.target), "fromRevision": plan["fromRevision"], "toRevision": plan["toRevision"],
            "generation": dep.metadata.generation, "images": plan["images"]}


async def rollback_observe(ctx: ActionContext, p: RollbackWorkload, plan: Evidence) -> Observation:
    dep = await _read(ctx, "Deployment", p.target.name)
    if _template_of(ctx, dep) == plan["template"]:
        return Applied(f"Deployment/{p.target.name} runs the planned template of revision {plan['toRevision']}")
    if plan.get("generation") is not None and dep.metadata.generation == plan["generation"]:
        return NotApplied(f"Deployment/{p.target.name} is unchanged since the plan (generation {plan['generation']})")
    return CannotTell(f"Deployment/{p.target.name} runs neither the planned template nor the one the plan read "
                      f"(generation {dep.metadata.generation}, planned from {plan.get('generation')})")


ROLLBACK = ActionDef(
    name="rollbackWorkload", params=RollbackWorkload, target=lambda p: _target(p.target),
    plan=rollback_plan, execute=rollback_execute, observe=rollback_observe,
    snapshot=lambda ctx, p: pod_snapshot(ctx, p.target), idempotent=True,
)


# --- raiseMemoryOnOOM -------------------------------------------------------------------


def _mi(quantity: Decimal) -> str:
    return f"{math.ceil(quantity / (1024 * 1024))}Mi"


async def memory_plan(ctx: ActionContext, p: RaiseMemoryOnOOM) -> Evidence:
    workload = await _read(ctx, p.target.kind, p.target.name)
    pods = await ctx.kube.call(
        "list pods", ctx.kube.core.list_namespaced_pod, ctx.namespace, label_selector=_selector(workload)
    )
    oom: dict[str, list[str]] = {}
    for pod in pods.items:
        for cs in pod.status.container_statuses or []:
            reasons = [
                s.terminated.reason for s in (cs.last_state, cs.state) if s is not None and s.terminated is not None
            ]
            if "OOMKilled" in reasons and (p.container is None or cs.name == p.container):
                oom.setdefault(cs.name, []).append(pod.metadata.name)
    if p.require_oom_killed and not oom:
        raise SkipError(f"no OOMKilled containers in pods of {_target(p.target)}", reason="NoOOMKilled")
    cap = parse_quantity(p.max_limit)
    step = parse_quantity(p.min_step)
    changes = []
    for index, c in enumerate(workload.spec.template.spec.containers):
        if (oom and c.name not in oom) or (p.container and c.name != p.container):
            continue
        limits = (c.resources.limits or {}) if c.resources else {}
        requests = (c.resources.requests or {}) if c.resources else {}
        if "memory" not in limits:
            raise PermanentError(f"container {c.name} has no memory limit to raise", reason="NoMemoryLimit")
        old = parse_quantity(limits["memory"])
        if old >= cap:
            raise OverCapError(f"container {c.name}: memory limit {limits['memory']} is already at maxLimit {p.max_limit}; refused")
        bumped = max(Decimal(math.ceil(old * Decimal(str(p.factor)))), old + step)
        mib = Decimal(1024 * 1024)
        rounded = Decimal(math.ceil(bumped / mib)) * mib
        # Rounding up to whole Mi must never cross the cap (e.g. a decimal-unit cap like 3G).
        new, new_text = (cap, p.max_limit) if rounded >= cap else (rounded, _mi(rounded))
        change = {"container": c.name, "index": index, "oldLimit": limits["memory"], "newLimit": new_text,
                  "cappedAtMaxLimit": bumped > cap, "oomKilledPods": oom.get(c.name, [])}
        if "memory" in requests and parse_quantity(requests["memory"]) > new:
            change["newRequest"] = new_text
        changes.append(change)
    if not changes:
        raise SkipError("no container matched", reason="NoMatchingContainer")
    limits_now = {c["container"]: c["oldLimit"] for c in changes}
    _changed_since_previous_plan(ctx, "limits", limits_now, f"the memory limits of {_target(p.target)}")
    return {"workload": _target(p.target), "strategy": p.strategy, "containers": changes,
            "generation": workload.metadata.generation, "limits": limits_now,
            "change": "; ".join(f"{c['container']} memory limit {c['oldLimit']} -> {c['newLimit']}" for c in changes)}


async def memory_execute(ctx: ActionContext, p: RaiseMemoryOnOOM, plan: Evidence) -> Evidence:
    containers = []
    for c in plan["containers"]:
        res: dict[str, Any] = {"limits": {"memory": c["newLimit"]}}
        if "newRequest" in c:
            res["requests"] = {"memory": c["newRequest"]}
        containers.append({"name": c["container"], "resources": res})
    # The template first, in both strategies: new pods must keep the raised limit even if an
    # in-place resize below fails halfway. Memory fields only, each container tested by name
    # at the index the plan read, plus the generation the plan read.
    ops: list[dict[str, Any]] = []
    read: dict[str, Any] = _generation_test(plan)
    for c in plan["containers"]:
        if "index" not in c:  # a plan recorded before preconditions: strategic merge by name
            ops = []
            break
        base = f"/spec/template/spec/containers/{c['index']}"
        read[f"{base}/name"] = c["container"]
        ops.append({"op": "replace", "path": f"{base}/resources/limits/memory", "value": c["newLimit"]})
        if "newRequest" in c:
            ops.append({"op": "replace", "path": f"{base}/resources/requests/memory", "value": c["newRequest"]})
    if ops:
        await _patch(ctx, p.target.kind, p.target.name, ops, read)
    else:
        await _strategic_patch(ctx, p.target.kind, p.target.name, {"spec": {"template": {"spec": {"containers": containers}}}})
    resized: list[str] = []
    if p.strategy == "inPlace":
        try:
            resized = await _resize_pods_in_place(ctx, p, containers)
        except (RemedyError, AmbiguousOutcomeError) as exc:
            # The template is already raised, so this is never "nothing changed": a retryable
            # error here would re-plan and raise the limit a second time. Pods pick the new
            # limit up when they are recreated; say what failed.
            return {"workload": _target(p.target), "containers": plan["containers"], "resizedInPlace": [],
                    "resizeError": exc.message,
                    "summary": f"{plan.get('change')}; in-place resize failed ({exc.message[:200]}), new pods get the limit"}
    return {"workload": _target(p.target), "containers": plan["containers"], "resizedInPlace": resized}


async def _strategic_patch(ctx: ActionContext, kind: str, name: str, body: dict[str, Any]) -> Any:
    patcher = {"Deployment": ctx.kube.apps.patch_namespaced_deployment,
               "StatefulSet": ctx.kube.apps.patch_namespaced_stateful_set,
               "DaemonSet": ctx.kube.apps.patch_namespaced_daemon_set}[kind]
    return await ctx.kube.call(f"patch {kind} {ctx.namespace}/{name}", patcher, name, ctx.namespace, body,
                               mutating=True, field_manager=FIELD_MANAGER)


async def memory_observe(ctx: ActionContext, p: RaiseMemoryOnOOM, plan: Evidence) -> Observation:
    workload = await _read(ctx, p.target.kind, p.target.name)
    by_name = {c.name: c for c in workload.spec.template.spec.containers}
    applied, untouched = [], []
    for c in plan["containers"]:
        cur = by_name.get(c["container"])
        limit = ((cur.resources.limits or {}) if cur is not None and cur.resources else {}).get("memory")
        if limit is not None and parse_quantity(limit) == parse_quantity(c["newLimit"]):
            applied.append(c["container"])
        elif limit is not None and parse_quantity(limit) == parse_quantity(c["oldLimit"]):
            untouched.append(c["container"])
    names = [c["container"] for c in plan["containers"]]
    if len(applied) == len(names):
        return Applied(f"memory limits of {', '.join(names)} equal the planned ones")
    if len(untouched) == len(names):
        return NotApplied(f"memory limits of {', '.join(names)} are still the ones the plan read")
    return CannotTell(f"memory limits of {_target(p.target)} are neither all planned nor all as read "
                      f"(planned: {applied}, as read: {untouched})")


async def _resize_pods_in_place(ctx: ActionContext, p: RaiseMemoryOnOOM, containers: list[dict[str, Any]]) -> list[str]:
    workload = await _read(ctx, p.target.kind, p.target.name)
    pods = await ctx.kube.call("list pods", ctx.kube.core.list_namespaced_pod, ctx.namespace, label_selector=_selector(workload))
    resized = []
    for pod in pods.items:
        body = {"spec": {"containers": containers}}
        # The generated client's own pods/resize call (the raw call_api this replaces took
        # arguments the client no longer has; only a real kubelet test exercised this path).
        await ctx.kube.call(
            f"resize pod {pod.metadata.name}", ctx.kube.core.patch_namespaced_pod_resize,
            pod.metadata.name, ctx.namespace, body,
            _content_type="application/strategic-merge-patch+json", mutating=True,
        )
        resized.append(pod.metadata.name)
    return resized


RAISE_MEMORY = ActionDef(
    name="raiseMemoryOnOOM", params=RaiseMemoryOnOOM, target=lambda p: _target(p.target),
    plan=memory_plan, execute=memory_execute, observe=memory_observe,
    snapshot=lambda ctx, p: pod_snapshot(ctx, p.target), idempotent=True,
)
