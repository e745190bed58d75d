"""The Remediation lifecycle: level-based, exactly once, visible.

    (new) -> Pending -> [AwaitingApproval] -> Running -> [Verifying] -> Succeeded
                                                 \\-> Failed | Skipped (from any step)

Each call of ``reconcile`` reads the object fresh and advances it from what status says,
never from a diff. Before acting it records intent (attemptId, plan, phase Running) with an
optimistic lock on resourceVersion, so only one writer can claim an attempt; after acting it
records the outcome. If it finds ``Running`` on entry, the operator died mid-action: an
idempotent action is re-run with the *recorded* plan; any other ends Failed with reason
OutcomeUnknown instead of acting twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from ..actions.base import ActionContext, ActionDef
from ..api.common import now_rfc3339_ms, parse_duration
from ..api.remediation import CONDITION_TYPES, FINAL_PHASES, RemediationSpec
from ..constants import ANN_APPROVED_BY, REMEDIATIONS
from ..errors import OverCapError, PermanentError, RemedyError, RetryableError, SkipError
from ..rfc3339 import age_seconds
from .conditions import initial_conditions, set_condition
from .verify import verify_promql

PLURAL = REMEDIATIONS
APPROVED_BY_ANNOTATION = ANN_APPROVED_BY
log = logging.getLogger("remedy.engine")


class Store(Protocol):
    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]: ...


class Recorder(Protocol):
    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class Observer(Protocol):
    def finished(self, action: str, phase: str, reason: str, seconds: float | None) -> None: ...
    def started(self, action: str) -> None: ...


class ContextFactory(Protocol):
    def __call__(self, obj: dict[str, Any]) -> ActionContext: ...


@dataclass
class Engine:
    store: Store
    recorder: Recorder
    registry: dict[str, ActionDef[Any]]
    context_factory: ContextFactory
    observer: Observer | None = None
    max_attempts: int = 5
    prometheus_url: str | None = None
    hooks: dict[str, Any] = field(default_factory=dict)  # test seam: called at named points
    executor_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}")
    heartbeat_interval: float = 5.0

    async def reconcile(self, namespace: str, name: str) -> str | None:
        """Advance one Remediation as far as possible; returns its phase afterwards.

        Raises RetryableError (mapped to kopf.TemporaryError by the handlers) to be called again.
        """
        obj = await self.store.get_object(PLURAL, namespace, name)
        if obj is None:
            return None
        return await _Run(self, obj).advance()


class _Run:
    """One pass over one object; keeps the freshest copy of it between patches."""

    def __init__(self, engine: Engine, obj: dict[str, Any]) -> None:
        self.e = engine
        self.obj = obj
        self.meta = obj["metadata"]
        self.ns = self.meta["namespace"]
        self.name = self.meta["name"]
        self.gen = self.meta.get("generation")

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.obj.get("status") or {})

    async def _hook(self, point: str) -> None:
        fn = self.e.hooks.get(point)
        if fn is not None:
            await fn(self.obj)

    async def patch(self, changes: dict[str, Any], *, lock: bool = True) -> None:
        changes = dict(changes)
        changes.setdefault("observedGeneration", self.gen)
        rv = self.meta.get("resourceVersion") if lock else None
        self.obj = await self.e.store.patch_status(PLURAL, self.ns, self.name, changes, rv)
        self.meta = self.obj["metadata"]

    def conds(self, **updates: tuple[str, str, str]) -> list[dict[str, Any]]:
        conds = list(self.status.get("conditions") or [])
        for type_, (status, reason, message) in updates.items():
            conds = set_condition(conds, type_, status, reason, message, self.gen)
        return conds

    def event(self, type_: str, reason: str, message: str) -> None:
        self.e.recorder.event(self.obj, type_, reason, message)
        # One log line per transition, carrying the object's identity (grep-able by name or uid).
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "%s: %s",
                reason, message, extra={"remediation": f"{self.ns}/{self.name}", "uid": self.meta.get("uid")})

    async def finish(self, phase: str, reason: str, message: str, **extra: Any) -> str:
        executed = extra.pop("executed", None)
        verified = extra.pop("verified", None)
        updates: dict[str, tuple[str, str, str]] = {"Completed": ("True", reason, message)}
        if executed:
            updates["Executed"] = executed
        if verified:
            updates["Verified"] = verified
        await self.patch(
            {"phase": phase, "completedAt": now_rfc3339_ms(), "message": message, "conditions": self.conds(**updates), **extra},
            lock=False,
        )
        self.event("Normal" if phase != "Failed" else "Warning", reason, f"{phase}: {message}")
        if self.e.observer:
            started = self.status.get("startedAt")
            self.e.observer.finished(str(self.status.get("action") or "unknown"), phase, reason, age_seconds(started))
        return phase

    async def advance(self) -> str | None:
        phase = self.status.get("phase")
        if phase in FINAL_PHASES:
            return str(phase)
        try:
            spec = RemediationSpec.model_validate(self.obj.get("spec") or {})
            member, params = spec.action.only()
            action = self.e.registry[member]
        except (ValidationError, ValueError) as exc:
            return await self._invalid(_readable(exc))
        except KeyError as exc:
            return await self._invalid(f"action {exc} is not supported by this operator version")
        try:
            return await self._advance(phase, spec, action, params)
        except RetryableError:
            raise
        except SkipError as exc:
            return await self.finish("Skipped", exc.reason, exc.message,
                                     executed=("False", exc.reason, exc.message),
                                     result=exc.evidence or None)
        except RemedyError as exc:
            return await self.finish("Failed", exc.reason, exc.message, executed=("False", exc.reason, exc.message))

    async def _invalid(self, message: str) -> str:
        if not self.status.get("conditions"):
            await self.patch({"conditions": initial_conditions(CONDITION_TYPES, self.gen)}, lock=False)
        await self.patch({"conditions": self.conds(Validated=("False", "InvalidSpec", message))}, lock=False)
        return await self.finish("Failed", "InvalidSpec", message)

    async def _advance(self, phase: str | None, spec: RemediationSpec, action: ActionDef[Any], params: Any) -> str:
        if phase is None:
            conds = initial_conditions(CONDITION_TYPES, self.gen)
            conds = set_condition(conds, "Validated", "True", "Valid", "spec is valid", self.gen)
            await self.patch({"phase": "Pending", "action": action.name, "target": action.target(params),
                              "conditions": conds, "attempts": 0})
            self.event("Normal", "Accepted", f"{action.name} on {action.target(params)} accepted")
            phase = "Pending"
        ctx = self.e.context_factory(self.obj)
        if phase in ("Pending", "AwaitingApproval"):
            approved_by = self._approved_by(spec)
            if (spec.approval.required or action.requires_approval) and not approved_by:
                if phase != "AwaitingApproval":
                    msg = ("waiting for approval: set spec.approval.approvedBy or annotate "
                           f"{APPROVED_BY_ANNOTATION}=<your name>")
                    await self.patch({"phase": "AwaitingApproval", "message": msg,
                                      "conditions": self.conds(Approved=("False", "AwaitingApproval", msg))})
                    self.event("Normal", "AwaitingApproval", msg)
                return "AwaitingApproval"
            approved = ("True", "Approved", f"approved by {approved_by}") if approved_by else (
                "True", "NotRequired", "approval not required")
            return await self._plan_and_run(spec, action, params, ctx, approved, approved_by)
        if phase == "Running":
            return await self._resume_running(spec, action, params, ctx)
        if phase == "Verifying":
            self._check_not_live_elsewhere()
            await self.patch({"executor": self.e.executor_id, "heartbeatAt": now_rfc3339_ms()})
            beat = asyncio.create_task(self._heartbeat())
            try:
                return await self._verify(spec, action, params, ctx, dict(self.status.get("plan") or {}),
                                          dict(self.status.get("result") or {}))
            finally:
                beat.cancel()
        return str(phase)

    def _approved_by(self, spec: RemediationSpec) -> str | None:
        annotations = self.meta.get("annotations") or {}
        return spec.approval.approved_by or annotations.get(APPROVED_BY_ANNOTATION) or None

    async def _plan_and_run(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                            approved: tuple[str, str, str], approved_by: str | None) -> str:
        try:
            plan = await action.plan(ctx, params)
        except RetryableError as exc:
            await self._count_retry(exc, "planning")
            raise
        except OverCapError as exc:
            await self.patch({"conditions": self.conds(Approved=approved)}, lock=False)
            return await self.finish("Failed", exc.reason, exc.message, executed=("False", exc.reason, exc.message))
        if spec.dry_run:
            msg = f"dry run: {plan.get('change') or 'plan recorded'}"
            await self.patch({"plan": plan, "conditions": self.conds(Approved=approved)})
            return await self.finish("Succeeded", "DryRun", msg, executed=("False", "DryRun", "dry run: nothing changed"),
                                     verified=("Unknown", "NotConfigured", "dry run"))
        evidence = None
        if action.snapshot is not None:
            try:
                evidence = await action.snapshot(ctx, params)
            except RemedyError as exc:
                evidence = {"error": exc.message}
        attempts = int(self.status.get("attempts") or 0) + 1
        attempt_id = f"{self.meta['uid'][:8]}-{attempts}"
        # Intent first: if we die after this, the next operator sees Running and does not act blindly.
        await self.patch({
            "phase": "Running", "attemptId": attempt_id, "executor": self.e.executor_id, "heartbeatAt": now_rfc3339_ms(), "attempts": attempts, "plan": plan,
            "evidence": evidence, "startedAt": self.status.get("startedAt") or now_rfc3339_ms(),
            "approvedBy": approved_by, "message": f"running: {plan.get('change') or action.name}",
            "conditions": self.conds(Approved=approved, Executed=("Unknown", "InProgress", f"attempt {attempt_id} started")),
        })
        self.event("Normal", "Started", f"attempt {attempt_id}: {plan.get('change') or action.name}")
        if self.e.observer:
            self.e.observer.started(action.name)
        await self._hook("after_intent")
        return await self._execute(spec, action, params, ctx, plan)

    async def _resume_running(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext) -> str:
        attempt_id = self.status.get("attemptId")
        plan = dict(self.status.get("plan") or {})
        self._check_not_live_elsewhere()
        await self.patch({"executor": self.e.executor_id, "heartbeatAt": now_rfc3339_ms()})
        if action.idempotent:
            msg = f"operator restarted during attempt {attempt_id}; re-applying the recorded plan (idempotent)"
            await self.patch({"conditions": self.conds(Executed=("Unknown", "Resumed", msg))}, lock=False)
            self.event("Normal", "Resumed", msg)
            return await self._execute(spec, action, params, ctx, plan)
        msg = (f"operator restarted during attempt {attempt_id} of a non-idempotent action; it was NOT run again. "
               "Check the target against status.plan; create a new Remediation to retry.")
        return await self.finish("Failed", "OutcomeUnknown", msg, executed=("Unknown", "OutcomeUnknown", msg))

    def _check_not_live_elsewhere(self) -> None:
        """Running/Verifying with a fresh heartbeat from another executor: it is alive, not crashed."""
        st = self.status
        if st.get("executor") in (None, self.e.executor_id):
            return
        age = age_seconds(st.get("heartbeatAt"))
        stale_after = 3 * self.e.heartbeat_interval
        if age is not None and age < stale_after:
            raise RetryableError(
                f"attempt {st.get('attemptId')} is in progress on {st.get('executor')} (heartbeat {age:.0f}s ago)",
                delay=stale_after - age + 0.5, reason="InProgressElsewhere",
            )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.e.heartbeat_interval)
            try:
                self.obj = await self.e.store.patch_status(PLURAL, self.ns, self.name, {"heartbeatAt": now_rfc3339_ms()})
                self.meta = self.obj["metadata"]
            except RemedyError as exc:
                log.warning("heartbeat for %s/%s failed: %s", self.ns, self.name, exc.message)

    async def _execute(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                       plan: dict[str, Any]) -> str:
        beat = asyncio.create_task(self._heartbeat())
        try:
            return await self._execute_inner(spec, action, params, ctx, plan)
        finally:
            beat.cancel()

    async def _execute_inner(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                             plan: dict[str, Any]) -> str:
        timeout = parse_duration(spec.timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            result = await asyncio.wait_for(action.execute(ctx, params, plan), timeout=timeout)
        except RetryableError as exc:
            # Contract: RetryableError from execute means nothing changed; go back to Pending.
            await self._count_retry(exc, "executing", back_to_pending=True)
            raise
        except TimeoutError:
            msg = f"{action.name} did not finish within {spec.timeout}"
            return await self.finish("Failed", "Timeout", msg, executed=("Unknown", "Timeout", msg))
        await self._hook("after_action")
        if action.verify is not None or spec.verify is not None:
            await self.patch({"phase": "Verifying", "result": result, "message": "verifying",
                              "conditions": self.conds(Executed=("True", "Executed", _summary(result, plan)),
                                                       Verified=("Unknown", "InProgress", "verifying"))}, lock=False)
            return await self._verify(spec, action, params, ctx, plan, result, deadline)
        msg = _summary(result, plan)
        return await self.finish("Succeeded", "Succeeded", msg, result=result, executed=("True", "Executed", msg),
                                 verified=("Unknown", "NotConfigured", "no verification configured"))

    async def _verify(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                      plan: dict[str, Any], result: dict[str, Any], deadline: float | None = None) -> str:
        """spec.timeout bounds execution plus verification: verification gets what is left."""
        checks: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + parse_duration(spec.timeout)

        async def run_checks() -> None:
            if action.verify is not None:
                checks["action"] = await action.verify(ctx, params, plan, result)
            if spec.verify is not None:
                checks["promql"] = await verify_promql(self.e.prometheus_url, spec.verify)

        try:
            await asyncio.wait_for(run_checks(), timeout=max(0.1, deadline - loop.time()))
        except TimeoutError:
            msg = f"verification did not finish within spec.timeout {spec.timeout}"
            return await self.finish("Failed", "VerificationTimeout", msg, result=result,
                                     verified=("False", "VerificationTimeout", msg))
        except RetryableError:
            raise
        except RemedyError as exc:
            msg = f"verification failed: {exc.message}"
            return await self.finish("Failed", "VerificationFailed", msg, verified=("False", exc.reason, msg))
        msg = _summary(result, plan)
        return await self.finish("Succeeded", "Verified", msg, result={**result, "verification": checks},
                                 verified=("True", "Verified", "verification passed"))

    async def _count_retry(self, exc: RetryableError, during: str, back_to_pending: bool = False) -> None:
        attempts = int(self.status.get("attempts") or 0) + (0 if back_to_pending else 1)
        msg = f"transient error while {during} (attempt {attempts}/{self.e.max_attempts}): {exc.message}"
        if attempts >= self.e.max_attempts:
            raise PermanentError(f"gave up after {attempts} attempts: {exc.message}", reason=exc.reason)
        changes: dict[str, Any] = {"attempts": attempts, "message": msg,
                                   "conditions": self.conds(Executed=("Unknown", exc.reason, msg))}
        if back_to_pending:
            changes["phase"] = "Pending"
        await self.patch(changes, lock=False)
        self.event("Warning", exc.reason, msg)
        exc.delay = min(60.0, max(exc.delay, 2.0 ** attempts))


def _summary(result: dict[str, Any], plan: dict[str, Any]) -> str:
    text = result.get("summary") or plan.get("change") or "done"
    return str(text)[:500]


def _readable(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(x) for x in err["loc"])
            parts.append(f"spec.{loc}: {err['msg']}")
        return "; ".join(parts)
    return str(exc)
