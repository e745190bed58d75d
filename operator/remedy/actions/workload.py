"""Workload actions (runbooks 001, 003, 004): rollout restart, scale, rollback, raise memory.

All act through the Kubernetes API only, in the Remediation's namespace, and are idempotent
given their recorded plan: a restart stamps the Remediation's uid (a second identical stamp
changes nothing), scale sets an absolute count, rollback and memory raise apply a template
computed once, at plan time, and stored in status.plan.
"""

from __future__ import annotations

import asyncio
import copy
import math
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity as _parse_quantity

from ..api.workload import DeploymentRef, RaiseMemoryOnOOM, RestartWorkload, RollbackWorkload, ScaleWorkload, WorkloadRef
from ..api.common import parse_duration
from ..constants import ANN_RESTARTED_BY
from ..errors import InvalidSpecError, OverCapError, PermanentError, SkipError, TargetNotFoundError
from .base import ActionContext, ActionDef, Evidence

RESTART_ANNOTATION = ANN_RESTARTED_BY


def parse_quantity(text: str) -> Decimal:
    value: Decimal = _parse_quantity(text)  # type: ignore[no-untyped-call]
    return value
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _target(ref: Any) -> str:
    return f"{ref.kind}/{ref.name}"


async def _read(ctx: ActionContext, kind: str, name: str) -> Any:
    apps = ctx.kube.apps
    reader = {
        "Deployment": apps.read_namespaced_deployment,
        "StatefulSet": apps.read_namespaced_stateful_set,
        "DaemonSet": apps.read_namespaced_daemon_set,
    }[kind]
    try:
        return await ctx.kube.call(f"{kind} {ctx.namespace}/{name}", reader, name, ctx.namespace)
    except TargetNotFoundError:
        raise TargetNotFoundError(f"{kind} {ctx.namespace}/{name} not found: check spec.action target") from None


async def _patch(ctx: ActionContext, kind: str, name: str, body: dict[str, Any]) -> Any:
    apps = ctx.kube.apps
    patcher = {
        "Deployment": apps.patch_namespaced_deployment,
        "StatefulSet": apps.patch_namespaced_stateful_set,
        "DaemonSet": apps.patch_namespaced_daemon_set,
    }[kind]
    return await ctx.kube.call(f"patch {kind} {ctx.namespace}/{name}", patcher, name, ctx.namespace, body)


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


async def restart_execute(ctx: ActionContext, p: RestartWorkload, plan: Evidence) -> Evidence:
    body = {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: ctx.uid}}}}}
    workload = await _patch(ctx, p.target.kind, p.target.name, body)
    return {"workload": _target(p.target), "generation": workload.metadata.generation, "stamp": ctx.uid}


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
    plan=restart_plan, execute=restart_execute, verify=restart_verify,
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
    apps = ctx.kube.apps
    fn = apps.patch_namespaced_deployment_scale if p.target.kind == "Deployment" else apps.patch_namespaced_stateful_set_scale
    await ctx.kube.call(f"scale {_target(p.target)}", fn, p.target.name, ctx.namespace, {"spec": {"replicas": plan["to"]}})
    return {"workload": _target(p.target), "from": plan.get("from"), "to": plan["to"], "clamped": plan.get("clamped", False)}


SCALE = ActionDef(
    name="scaleWorkload", params=ScaleWorkload, target=lambda p: _target(p.target),
    plan=scale_plan, execute=scale_execute, idempotent=True, destructive=False,
)


# --- rollbackWorkload -------------------------------------------------------------------


def _strip_template(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    return t


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
    api = ctx.kube.api_client
    raw_template = api.sanitize_for_serialization(by_rev[target_rev].spec.template)  # type: ignore[no-untyped-call]
    template = _strip_template(raw_template)
    images = [c.get("image") for c in template.get("spec", {}).get("containers", [])]
    return {
        "workload": _target(p.target), "fromRevision": current, "toRevision": target_rev,
        "images": images, "template": template,
        "change": f"restore pod template of revision {target_rev} (currently {current})",
    }


async def rollback_execute(ctx: ActionContext, p: RollbackWorkload, plan: Evidence) -> Evidence:
    body = [{"op": "replace", "path": "/spec/template", "value": plan["template"]}]
    dep = await _patch(ctx, "Deployment", p.target.name, body)  # type: ignore[arg-type]
    return {"workload": _target(p.target), "fromRevision": plan["fromRevision"], "toRevision": plan["toRevision"],
            "generation": dep.metadata.generation, "images": plan["images"]}


ROLLBACK = ActionDef(
    name="rollbackWorkload", params=RollbackWorkload, target=lambda p: _target(p.target),
    plan=rollback_plan, execute=rollback_execute,
    snapshot=lambda ctx, p: pod_snapshot(ctx, p.target), idempotent=True,
)


# --- raiseMemoryOnOOM -------------------------------------------------------------------


def _mi(quantity: Decimal) -> str:
    return f"{int(math.ceil(quantity / (1024 * 1024)))}Mi"


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
    for c in workload.spec.template.spec.containers:
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
        change = {"container": c.name, "oldLimit": limits["memory"], "newLimit": new_text,
                  "cappedAtMaxLimit": bumped > cap, "oomKilledPods": oom.get(c.name, [])}
        if "memory" in requests and parse_quantity(requests["memory"]) > new:
            change["newRequest"] = new_text
        changes.append(change)
    if not changes:
        raise SkipError("no container matched", reason="NoMatchingContainer")
    return {"workload": _target(p.target), "strategy": p.strategy, "containers": changes,
            "change": "; ".join(f"{c['container']} memory limit {c['oldLimit']} -> {c['newLimit']}" for c in changes)}


async def memory_execute(ctx: ActionContext, p: RaiseMemoryOnOOM, plan: Evidence) -> Evidence:
    containers = []
    for c in plan["containers"]:
        res: dict[str, Any] = {"limits": {"memory": c["newLimit"]}}
        if "newRequest" in c:
            res["requests"] = {"memory": c["newRequest"]}
        containers.append({"name": c["container"], "resources": res})
    # The template first, in both strategies: new pods must keep the raised limit even if an
    # in-place resize below fails halfway. Strategic merge keys containers by name: memory only.
    await _patch(ctx, p.target.kind, p.target.name, {"spec": {"template": {"spec": {"containers": containers}}}})
    resized: list[str] = []
    if p.strategy == "inPlace":
        resized = await _resize_pods_in_place(ctx, p, containers)
    return {"workload": _target(p.target), "containers": plan["containers"], "resizedInPlace": resized}


async def _resize_pods_in_place(ctx: ActionContext, p: RaiseMemoryOnOOM, containers: list[dict[str, Any]]) -> list[str]:
    workload = await _read(ctx, p.target.kind, p.target.name)
    pods = await ctx.kube.call("list pods", ctx.kube.core.list_namespaced_pod, ctx.namespace, label_selector=_selector(workload))
    resized = []
    for pod in pods.items:
        body = {"spec": {"containers": containers}}
        await ctx.kube.call(
            f"resize pod {pod.metadata.name}", ctx.kube.core.api_client.call_api,
            f"/api/v1/namespaces/{ctx.namespace}/pods/{pod.metadata.name}/resize", "PATCH",
            header_params={"Content-Type": "application/strategic-merge-patch+json", "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], response_type="object", _return_http_data_only=True,
        )
        resized.append(pod.metadata.name)
    return resized


RAISE_MEMORY = ActionDef(
    name="raiseMemoryOnOOM", params=RaiseMemoryOnOOM, target=lambda p: _target(p.target),
    plan=memory_plan, execute=memory_execute,
    snapshot=lambda ctx, p: pod_snapshot(ctx, p.target), idempotent=True,
)
