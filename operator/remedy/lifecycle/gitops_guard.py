"""Never a silent undo: what the engine does around acting on an Argo CD-tracked workload.

Why: Argo CD's self-heal puts a remedied field back within seconds, and a Remediation
without ``verify`` used to report Succeeded anyway. Two steps, both only for workloads
carrying Argo CD tracking:

- ``preflight`` (before planning): read the tracking Application, forecast whether it will
  revert the change (lifecycle/gitops_apps.py), say so up front (condition ``GitOps`` and an
  Event), and refuse when the revert is certain unless ``spec.gitops.onRevertExpected: Act``.
- ``watch_window`` (after acting, when nothing else verifies): the remedied field is watched
  for ``spec.gitops.watchFor``; a revert ends Failed/RevertedByGitOps naming the Application
  (lifecycle/gitops.py), which also pauses a parent policy.

The operator reads Applications only (RBAC: get on applications.argoproj.io); it never edits
them, so "pause auto-sync for me" is deliberately not offered: that would give remedy write
access to every Application's sync policy.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..actions.base import ActionContext
from ..api.common import parse_duration
from ..api.remediation import RemediationSpec
from ..base.errors import PermanentError, RemedyError
from ..clients.access_review import Requester
from .conditions import get_condition
from .gitops import WOULD_REVERT, _workload_meta
from .gitops_apps import HOW_TO_KEEP, AmbiguousTrackingError, Forecast, forecast, tracking
from .gitops_identity import GitOpsConfig, ObjectApi

__all__ = ["CONDITION", "REFUSED", "GitOpsConfig", "preflight", "read_forecast", "record_requester", "tracked_window"]

CONDITION = "GitOps"
REFUSED = WOULD_REVERT


class _Run(Protocol):
    gen: Any

    @property
    def status(self) -> dict[str, Any]: ...

    async def patch(self, changes: dict[str, Any], *, lock: bool = True) -> None: ...

    def conds(self, **updates: tuple[str, str, str]) -> list[dict[str, Any]]: ...

    def event(self, type_: str, reason: str, message: str) -> None: ...


async def read_forecast(cfg: GitOpsConfig, ctx: ActionContext, action: str, params: Any) -> Forecast | None:
    """None when the target is not an Argo CD-tracked workload."""
    try:
        meta = await _workload_meta(ctx, params)
    except RemedyError:
        return None  # the action's own planning reports a missing target
    if not meta:
        return None
    try:
        ref = tracking(meta, cfg.apps_namespace)
    except AmbiguousTrackingError as exc:
        return Forecast("?", "unknown", f"cannot tell which Argo CD Application tracks the target: {exc}")
    if ref is None:
        return None
    target = getattr(params, "target", None)
    kind, name = str(getattr(target, "kind", "")), str(getattr(target, "name", ""))
    try:
        app = await ObjectApi(ctx.kube).application(*ref)
    except RemedyError as exc:
        return Forecast("/".join(ref), "unknown", f"cannot read Argo CD Application {'/'.join(ref)}: {exc.message}")
    if app is None:
        # No such Application (or no Application CRD): the label is someone else's, e.g. Helm
        # sets app.kubernetes.io/instance on everything it installs. Not Argo CD's to revert.
        return None
    return forecast(app, "apps", kind, ctx.namespace, name, action)


async def preflight(run: _Run, cfg: GitOpsConfig | None, spec: RemediationSpec, ctx: ActionContext,
                    action: str, params: Any) -> Forecast | None:
    if cfg is None:
        return None
    fc = await read_forecast(cfg, ctx, action, params)
    if fc is None:
        return None
    status = "True" if fc.reverts == "never" else ("False" if fc.certain else "Unknown")
    reason = {"never": "ChangeStands", "selfHeal": "WillBeReverted", "nextSync": "RevertedAtNextSync",
              "manualSync": "RevertedAtManualSync"}.get(fc.reverts, "CannotTell")
    message = fc.message if fc.reverts == "never" else f"{fc.message}; {HOW_TO_KEEP}"
    seen = get_condition(run.status.get("conditions") or [], CONDITION) or {}
    if (seen.get("status"), seen.get("reason"), seen.get("message")) != (status, reason, message):  # once per change
        await run.patch({"conditions": run.conds(**{CONDITION: (status, reason, message)})}, lock=False)
        run.event("Normal" if fc.reverts == "never" else "Warning", f"GitOps{reason}", message)
    if fc.certain and spec.gitops.on_revert_expected == "Refuse":
        raise PermanentError(f"not acting: {fc.message} (spec.gitops.onRevertExpected is Refuse); {HOW_TO_KEEP}",
                             reason=REFUSED)
    return fc


async def record_requester(run: _Run, who: Requester | None) -> None:
    """status.requestedBy is whose rights the action runs with: for an object Argo CD applied,
    the GitOps requester the Guard substituted (lifecycle/gitops_identity.py), said once in an Event."""
    recorded = run.status.get("requestedBy")
    if who is None or who.username == recorded:
        return
    await run.patch({"requestedBy": who.username}, lock=False)
    run.event("Normal", "GitOpsRequester", f"applied by the GitOps controller {recorded}; runs with the rights of "
                                           f"{who.username}, the requester its Application is mapped to")


async def tracked_window(cfg: GitOpsConfig | None, spec: RemediationSpec, ctx: ActionContext, action: str,
                         params: Any) -> float:
    """Seconds to watch for a revert when nothing else verifies: spec.gitops.watchFor for a
    workload an existing Application tracks (or whose Application cannot be read), else 0."""
    if cfg is None:
        return 0.0
    fc = await read_forecast(cfg, ctx, action, params)
    return parse_duration(spec.gitops.watch_for) if fc is not None else 0.0
