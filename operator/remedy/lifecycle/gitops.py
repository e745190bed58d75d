"""Not fighting GitOps: notice when Argo CD's self-heal undoes a remediation during its
verification, end the Remediation Failed/RevertedByGitOps naming the Application, and let the
policy pause itself with that reason instead of re-applying in a loop.

How a revert is seen: while verification runs, the action's own ``observe`` probe (the one
used to resolve ambiguous outcomes) is polled; NotApplied means the remedied field is back
at the value the plan read. That alone is not attributed to GitOps: only a workload that
carries Argo CD's tracking annotation (``argocd.argoproj.io/tracking-id``, annotation
tracking) or tracking label (``app.kubernetes.io/instance``, Argo CD's default label
tracking) is. The message also names the field manager that wrote last, from managedFields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from ..actions.base import ActionContext, ActionDef, NotApplied
from ..base.constants import FIELD_MANAGER
from ..base.errors import PermanentError, RemedyError, RetryableError
from .conditions import get_condition

REASON = "RevertedByGitOps"
# Refused up front (lifecycle/gitops_guard.py): the tracking Application would revert the change.
WOULD_REVERT = "GitOpsWouldRevert"
ARGO_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
ARGO_TRACKING_LABEL = "app.kubernetes.io/instance"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def argo_application(meta: dict[str, Any]) -> str | None:
    """The Argo CD Application tracking this object, if any."""
    tracking = (meta.get("annotations") or {}).get(ARGO_TRACKING_ANNOTATION)
    if tracking:
        return str(tracking).split(":", 1)[0] or None  # "<app>:<group>/<kind>:<ns>/<name>"
    return (meta.get("labels") or {}).get(ARGO_TRACKING_LABEL) or None


def last_writer(meta: dict[str, Any]) -> str | None:
    """The most recent field manager of the spec other than remedy (managedFields carry a time
    per manager; status writers such as the controller manager are not who reverted)."""
    def get(m: dict[str, Any], *keys: str) -> Any:
        return next((m[k] for k in keys if m.get(k) is not None), None)

    entries = [m for m in meta.get("managed_fields") or meta.get("managedFields") or []
               if isinstance(m, dict) and get(m, "manager") != FIELD_MANAGER and not get(m, "subresource")
               and "f:spec" in (get(m, "fields_v1", "fieldsV1") or {})]
    entries.sort(key=lambda m: str(get(m, "time") or ""))
    return str(get(entries[-1], "manager")) if entries else None


async def _workload_meta(ctx: ActionContext, params: Any) -> dict[str, Any] | None:
    target = getattr(params, "target", None)
    kind, name = getattr(target, "kind", None), getattr(target, "name", None)
    if kind not in WORKLOAD_KINDS or not name:
        return None
    reader = {"Deployment": ctx.kube.apps.read_namespaced_deployment,
              "StatefulSet": ctx.kube.apps.read_namespaced_stateful_set,
              "DaemonSet": ctx.kube.apps.read_namespaced_daemon_set}[kind]
    obj = await ctx.kube.call(f"{kind} {ctx.namespace}/{name}", reader, name, ctx.namespace)
    meta: dict[str, Any] = obj.metadata.to_dict() if obj is not None and obj.metadata is not None else {}
    return meta


async def watch_for_revert(action: ActionDef[Any], ctx: ActionContext, params: Any, plan: dict[str, Any],
                           interval: float = 1.0, stop: asyncio.Event | None = None) -> None:
    """Returns once ``stop`` is set; raises PermanentError(reason RevertedByGitOps) once an
    Argo-tracked workload's remedied field is back at its old value. Transient read errors are
    ignored.

    ``stop`` and not only cancellation ends the loop: a client library that swallows a
    cancellation arriving together with its own socket timeout (seen with redis-py's asyncio
    client under Python 3.11) would otherwise keep this watch, and the Remediation's
    verification with it, alive forever."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set() or action.observe is None:
            continue
        try:
            seen = await action.observe(ctx, params, plan)
            if not isinstance(seen, NotApplied) or stop.is_set():
                continue
            meta = await _workload_meta(ctx, params)
        except (RetryableError, RemedyError):
            continue
        app = argo_application(meta or {})
        if app is None:
            continue  # reverted by someone else: not ours to attribute; verification decides
        writer = last_writer(meta or {})
        raise PermanentError(f"reverted by GitOps: Argo CD Application {app!r} restored the old value "
                             f"({seen.detail}){f'; last writer: field manager {writer}' if writer else ''}. Not re-applying: "
                             f"change the desired state in Git, or let remedy's change stand with "
                             f"ignoreDifferences.managedFieldsManagers: [{FIELD_MANAGER}] (docs/argocd.md)", reason=REASON)


# How long the end of a verification waits for its cancelled helpers to wind down; a helper that
# ignored its cancellation stops by itself at its next ``stop`` check.
WIND_DOWN_SECONDS = 2.0


async def verify_unless_reverted(checks: Coroutine[Any, Any, None], action: ActionDef[Any], ctx: ActionContext,
                                 params: Any, plan: dict[str, Any], interval: float = 1.0) -> None:
    """Run the verification checks; a GitOps revert seen meanwhile wins and cancels them."""
    stop = asyncio.Event()
    verify = asyncio.ensure_future(checks)
    watch = asyncio.ensure_future(watch_for_revert(action, ctx, params, plan, interval=interval, stop=stop))
    try:
        done, _ = await asyncio.wait({verify, watch}, return_when=asyncio.FIRST_COMPLETED)
        if watch in done:
            verify.cancel()
            watch.result()  # raises RevertedByGitOps
        await verify
    finally:
        stop.set()
        for task in (verify, watch):
            if not task.done():
                task.cancel()
        # Never wait without bound here: the outcome is already decided.
        await asyncio.wait({verify, watch}, timeout=WIND_DOWN_SECONDS)
        for task in (verify, watch):
            if task.done() and not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as never retrieved


def reverted_since(finals: list[dict[str, Any]], reset_at: str | None) -> dict[str, Any] | None:
    """The latest child that ended RevertedByGitOps (or was refused because GitOps would revert
    it, GitOpsWouldRevert: same cause, Git wins) after the last resume, if the policy must pause."""
    for c in reversed(finals):
        st = c.get("status") or {}
        if reset_at and (st.get("completedAt") or "") <= reset_at:
            return None
        if (get_condition(st.get("conditions") or [], "Completed") or {}).get("reason") in (REASON, WOULD_REVERT):
            return dict(c)
    return None
