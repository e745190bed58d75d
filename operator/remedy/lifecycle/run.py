"""One pass of the lifecycle over one Remediation: plan, intent, act, observe, verify, each
step read from status and written back with an optimistic lock (machine.py says why).

Why a module apart from machine.py: the pass is the long part, read top to bottom; the
Lifecycle around it only serialises passes per object and holds the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..actions.base import ActionContext, ActionDef, Applied, CannotTell, NotApplied
from ..api.common import now_rfc3339_ms, parse_duration
from ..api.objects import view
from ..api.remediation import CONDITION_TYPES, RemediationSpec
from ..base.constants import ANN_APPROVED_BY, FINAL_PHASES, NOT_STARTED_PHASES, REMEDIATIONS
from ..base.errors import AmbiguousOutcomeError, OverCapError, PermanentError, RemedyError, RetryableError, SkipError
from ..base.rfc3339 import age_seconds
from . import gitops_guard, gitops_once, recovery
from .accept import pending_record
from .approval import run_gate
from .conditions import get_condition, initial_conditions, set_condition
from .fencing import FencedOutError, fenced_patch
from .gitops import REASON as REVERTED_BY_GITOPS
from .gitops import verify_unless_reverted
from .review import intent_digest, review_before_acting
from .verify import verify_promql

if TYPE_CHECKING:
    from .machine import Lifecycle

PLURAL = REMEDIATIONS
APPROVED_BY_ANNOTATION = ANN_APPROVED_BY
log = logging.getLogger("remedy.engine")
OBSERVING = recovery.OBSERVING  # the Executed reason while an outcome is observed (recovery.py)


class Run:
    """One pass over one object; keeps the freshest copy of it between patches."""

    def __init__(self, lifecycle: Lifecycle, obj: dict[str, Any]) -> None:
        self.e = lifecycle
        self.obj = obj
        self.meta = obj["metadata"]
        self.ns = self.meta["namespace"]
        self.name = self.meta["name"]
        self.gen = self.meta.get("generation")
        # The fencing token this run holds once it recorded intent or took an attempt over;
        # from then on every status write is a compare-and-swap on it (engine/fencing.py).
        self.epoch: int | None = None
        self._confirmed_at = 0.0
        # The spec this pass reviews, plans and runs: a patch's answer may carry a newer one.
        self.spec_digest = intent_digest(obj)
        self.accepted: dict[str, Any] = {}  # a first pass's Pending record, not yet written (accept.py)

    @property
    def status(self) -> dict[str, Any]:
        return dict(view(self.obj).status)

    async def _hook(self, point: str) -> None:
        fn = self.e.hooks.get(point)
        if fn is not None:
            await fn(self.obj)

    async def patch(self, changes: dict[str, Any], *, lock: bool = True) -> None:
        if self.accepted:  # the first write of a first pass: carries the Pending record, locked
            changes, lock, self.accepted = {**self.accepted, **changes}, True, {}
        changes = dict(changes)
        changes.setdefault("observedGeneration", self.gen)
        if self.epoch is not None:
            self.obj = await fenced_patch(self.e.store, PLURAL, self.obj, changes, self.e.executor_id, self.epoch)
        else:
            rv = self.meta.get("resourceVersion") if lock else None
            self.obj = await self.e.store.patch_status(PLURAL, self.ns, self.name, changes, rv)
        self.meta = self.obj["metadata"]

    async def claim(self, changes: dict[str, Any]) -> None:
        """Take the attempt: one resourceVersion-locked write of a new epoch naming this executor."""
        epoch = int(self.status.get("epoch") or 0) + 1
        self.epoch = None
        await self.patch({**changes, "executor": self.e.executor_id, "epoch": epoch, "heartbeatAt": now_rfc3339_ms()})
        self.epoch = epoch
        self.e.liveness.forget((self.ns, self.name))

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
        try:
            return await self._advance_any()
        except FencedOutError as exc:
            # A woken stale executor: another one owns the attempt. Never write over it.
            log.warning("fenced out, stopping without writing: %s", exc.message,
                        extra={"remediation": f"{self.ns}/{self.name}", "uid": self.meta.get("uid")})
            return None

    async def _advance_any(self) -> str | None:
        phase = self.status.get("phase")
        if phase in FINAL_PHASES:
            # Finished objects are never run again, but a spec edit (e.g. spec.reason) must still
            # be observed, or GitOps tools wait for "observedGeneration" forever.
            if self.gen is not None and self.status.get("observedGeneration") != self.gen:
                await self.patch({"observedGeneration": self.gen}, lock=False)
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
        except FencedOutError:
            raise
        except _Finished:
            return str(self.status.get("phase"))
        except RetryableError:
            if self.accepted:  # a first pass retried before any write still records Pending
                with contextlib.suppress(RemedyError):
                    await self.patch({})
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
        if phase is None:  # Pending in memory now, in status with the first write (accept.py)
            self.accepted = pending_record(self.obj, action.name, action.target(params), self.gen)
            self.obj = {**self.obj, "status": {**self.status, **self.accepted}}
            self.event("Normal", "Accepted", f"{action.name} on {action.target(params)} accepted")
            phase = "Pending"
        ctx = self.e.context_factory(self.obj)
        if phase in NOT_STARTED_PHASES:
            # Approval (lifecycle/approval.py) and the requester's own rights (lifecycle/authz.py):
            # both before planning, because planning already reads Secrets.
            gate = await run_gate(self, spec.approval, action.requires_approval, self.gitops)
            if not gate.approved:
                return "AwaitingApproval"
            approved_by = gate.approved_by if gate.needed else None
            approved = ("True", "Approved", gate.message) if gate.needed else (
                "True", "NotRequired", "approval not required")
            if self.e.guard is not None:
                try:
                    who = await self.e.guard.check(self.obj, action.name, params)
                except PermanentError:
                    # Approved, then refused for the requester's rights: say both.
                    await self.patch({"conditions": self.conds(Approved=approved)}, lock=False)
                    raise
                await gitops_guard.record_requester(self, who)
            await gitops_guard.preflight(self, self.gitops, spec, ctx, action.name, params)
            return await self._plan_and_run(spec, action, params, ctx, approved, approved_by)
        if phase in ("Running", "Verifying"):
            await self._review(phase, spec, action, params)  # lifecycle/review.py: spec, approval, rights, allowlist
        if phase == "Running":
            return await self._resume_running(spec, action, params, ctx)
        if phase == "Verifying":
            self._check_not_live_elsewhere()
            await self.claim({})
            beat = asyncio.create_task(self._heartbeat())
            try:
                return await self._verify(spec, action, params, ctx, dict(self.status.get("plan") or {}),
                                          dict(self.status.get("result") or {}))
            finally:
                beat.cancel()
        return str(phase)

    async def _review(self, phase: str, spec: RemediationSpec, action: ActionDef[Any], params: Any) -> None:
        """A resumed attempt is reviewed again; a refusal after intent may follow a send: escalate."""
        running = phase == "Running"
        try:
            await review_before_acting(self.obj, self.e.guard if running else None, action.name, params,
                                       spec if running else None, action.requires_approval)
        except PermanentError as exc:
            self._check_not_live_elsewhere()
            msg = f"{exc.message} (attempt {self.status.get('attemptId')} was already started)"
            await self.finish("Failed", exc.reason, msg, executed=("Unknown", exc.reason, msg) if running else None)
            self.event("Warning", "EscalationRequired", f"a person must check the target: {msg}"[:1024])
            raise _Finished from None

    @property
    def gitops(self) -> gitops_guard.GitOpsConfig | None:
        return self.e.guard.gitops if self.e.guard is not None else None

    def _approved_by(self, spec: RemediationSpec) -> str | None:
        annotations = self.meta.get("annotations") or {}
        return spec.approval.approved_by or annotations.get(APPROVED_BY_ANNOTATION) or None

    async def _plan_and_run(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                            approved: tuple[str, str, str], approved_by: str | None) -> str:
        # A plan recorded by an earlier attempt (its precondition failed: TargetChanged): the
        # new plan may compare against it so it never undoes a person's edit.
        ctx.previous_plan = dict(self.status.get("plan") or {}) or None
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
        if self.gitops is not None:  # one run per name+spec even if Argo CD re-creates the object
            await gitops_once.claim(ctx.kube, self.obj, self.gitops.ledger_namespace)
        evidence = None
        if action.destructive and action.snapshot is not None:  # evidence of what is about to be destroyed
            try:
                evidence = await action.snapshot(ctx, params)
            except RemedyError as exc:
                evidence = {"error": exc.message}
        attempts = int(self.status.get("attempts") or 0) + 1
        attempt_id = f"{self.meta['uid'][:8]}-{attempts}"
        if intent_digest(self.obj) != self.spec_digest:
            # Edited since this pass read it (a patch's answer carried the new spec): what was
            # approved, reviewed and planned is not what is stored. Read again from the start.
            raise RetryableError("the spec changed during planning; reviewing it again", delay=0.5, reason="Conflict")
        # Intent first: if we die after this, the next operator sees Running and does not act blindly.
        await self.claim({
            "phase": "Running", "attemptId": attempt_id, "attempts": attempts, "plan": plan,
            "evidence": evidence, "startedAt": self.status.get("startedAt") or now_rfc3339_ms(),
            "approvedBy": approved_by, "specDigest": self.spec_digest,
            "message": f"running: {plan.get('change') or action.name}",
            "conditions": self.conds(Approved=approved, Executed=("Unknown", "InProgress", f"attempt {attempt_id} started")),
        })
        self.event("Normal", "Started", f"attempt {attempt_id}: {plan.get('change') or action.name}")
        if self.e.observer:
            self.e.observer.started(action.name)
        await self._hook("after_intent")
        return await self._execute(spec, action, params, ctx, plan)

    async def _resume_running(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext) -> str:
        """Found Running: the outcome of the recorded attempt was never recorded. Observe it."""
        st = self.status
        attempt_id = st.get("attemptId")
        plan = dict(st.get("plan") or {})
        self._check_not_live_elsewhere()
        previous = st.get("executor")
        executed = get_condition(st.get("conditions") or [], "Executed") or {}
        if executed.get("reason") == OBSERVING and executed.get("message"):
            cause = str(executed["message"])  # we were already observing; keep the true cause
        elif previous not in (None, self.e.executor_id):
            silent = self.e.liveness.silent_for((self.ns, self.name), st)
            cause = (f"executor {previous} stopped during attempt {attempt_id} before recording its outcome "
                     f"(its heartbeat unchanged for {silent:.0f}s by this operator's clock)")
        else:
            cause = f"attempt {attempt_id} was interrupted in this operator process before its outcome was recorded"
        await self.claim({})
        beat = asyncio.create_task(self._heartbeat())
        try:
            return await recovery.recover(self, spec, action, params, ctx, plan, cause, interrupted=True)
        finally:
            beat.cancel()

    def _check_not_live_elsewhere(self) -> None:
        """Running/Verifying with a heartbeat from another executor: alive unless silent (fencing.py)."""
        self.e.liveness.check_silent((self.ns, self.name), self.status, self.e.executor_id, 3 * self.e.heartbeat_interval)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.e.heartbeat_interval)
            try:
                await self.patch({"heartbeatAt": now_rfc3339_ms()})
            except FencedOutError as exc:
                log.warning("heartbeat stopped: %s", exc.message)
                return
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
        attempt_id = self.status.get("attemptId")
        # Confirm the epoch is still ours (compare-and-swap) right before the mutating step, and
        # let the action confirm again before each later one (at most every interval / 5).
        await self._confirm_epoch(force=True)
        ctx.confirm = self._confirm_epoch
        await self._hook("after_fence")
        try:
            result = await asyncio.wait_for(action.execute(ctx, params, plan), timeout=timeout)
        except AmbiguousOutcomeError as exc:
            return await recovery.recover(self, spec, action, params, ctx, plan, f"attempt {attempt_id}: {exc.message}")
        except RetryableError as exc:
            # Contract: RetryableError from execute means nothing changed; plan again.
            if exc.reason == "TargetChanged" and spec.on_target_changed == "Skip":
                return await self._target_changed(exc, attempt_id)
            if exc.reason == "TargetChanged":
                self.event("Warning", "TargetChanged", f"attempt {attempt_id} not applied: {exc.message}; planning again")
            await self._count_retry(exc, "executing", back_to_pending=True)
            raise
        except TimeoutError:
            return await self._timed_out(spec, action, params, ctx, plan)
        await self._hook("after_action")
        return await self._after_execute(spec, action, params, ctx, plan, result, deadline)

    async def _confirm_epoch(self, force: bool = False) -> None:
        # Rate-limited to one write per interval / 5: sound, because a takeover needs the
        # executor silent for 3 intervals, and a frozen process's monotonic clock runs on.
        now = self.e.liveness.clock()
        if force or now - self._confirmed_at >= self.e.heartbeat_interval / 5:
            await self.patch({"heartbeatAt": now_rfc3339_ms()})
            self._confirmed_at = now

    async def _target_changed(self, exc: RetryableError, attempt_id: Any) -> str:
        """A person's edit wins: the precondition failed, nothing was written; stand down and
        say what moved, to what, and who moved it (spec.onTargetChanged: Replan plans again)."""
        msg = f"attempt {attempt_id} not applied: {exc.message}; not overriding that change (spec.onTargetChanged: Skip)"
        changes = getattr(exc, "changes", None) or []
        return await self.finish("Skipped", "TargetChanged", msg, executed=("False", "TargetChanged", msg),
                                 result={"targetChanged": changes} if changes else None)

    async def _timed_out(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                         plan: dict[str, Any]) -> str:
        """spec.timeout cancelled execute mid-flight: say what actually happened to the target."""
        msg = f"{action.name} did not finish within spec.timeout {spec.timeout}"
        try:
            seen = await recovery.observe(self, action, ctx, params, plan)
        except RemedyError as exc:
            seen = CannotTell(f"observing failed: {exc.message}")
        if isinstance(seen, Applied):
            msg += f"; observed applied ({seen.detail}), not verified"
            return await self.finish("Failed", "Timeout", msg, executed=("True", "Timeout", msg))
        if isinstance(seen, NotApplied):
            msg += f"; observed not applied ({seen.detail})"
            return await self.finish("Failed", "Timeout", msg, executed=("False", "Timeout", msg))
        return await recovery.outcome_unknown(self, f"{msg}; {seen.detail}")

    async def _after_execute(self, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                             plan: dict[str, Any], result: dict[str, Any], deadline: float) -> str:
        watch = await gitops_guard.tracked_window(self.gitops, spec, ctx, action.name, params)
        if action.verify is not None or spec.verify is not None or watch > 0:
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
            if action.verify is None and spec.verify is None:  # only a GitOps revert can fail it
                window = await gitops_guard.tracked_window(self.gitops, spec, ctx, action.name, params)
                await asyncio.sleep(window)
                checks["gitops"] = f"not reverted within spec.gitops.watchFor {spec.gitops.watch_for}"

        try:
            await asyncio.wait_for(verify_unless_reverted(run_checks(), action, ctx, params, plan),
                                   timeout=max(0.1, deadline - loop.time()))
        except TimeoutError:
            msg = f"verification did not finish within spec.timeout {spec.timeout}"
            return await self.finish("Failed", "VerificationTimeout", msg, result=result,
                                     verified=("False", "VerificationTimeout", msg))
        except RetryableError:
            raise
        except RemedyError as exc:
            msg = f"verification failed: {exc.message}"
            reason = REVERTED_BY_GITOPS if exc.reason == REVERTED_BY_GITOPS else "VerificationFailed"
            return await self.finish("Failed", reason, msg, verified=("False", exc.reason, msg))
        msg = _summary(result, plan)
        return await self.finish("Succeeded", "Verified", msg, result={**result, "verification": checks},
                                 verified=("True", "Verified", "verification passed"))

    async def _count_retry(self, exc: RetryableError, during: str, back_to_pending: bool = False) -> None:
        # Executing counted its attempt when it recorded intent; planning counts here.
        attempts = int(self.status.get("attempts") or 0) + (0 if back_to_pending else 1)
        if attempts >= self.e.max_attempts:
            # Record the count the message states, and say it is final: not a transient reason.
            msg = f"gave up after {attempts} attempts; last error while {during} ({exc.reason}): {exc.message}"
            await self.patch({"attempts": attempts}, lock=False)
            raise PermanentError(msg, reason="RetriesExhausted")
        msg = f"transient error while {during} (attempt {attempts}/{self.e.max_attempts}): {exc.message}"
        changes: dict[str, Any] = {"attempts": attempts, "message": msg,
                                   "conditions": self.conds(Executed=("Unknown", exc.reason, msg))}
        if back_to_pending:
            changes["phase"] = "Pending"
        await self.patch(changes, lock=False)
        self.event("Warning", exc.reason, msg)
        exc.delay = min(60.0, max(exc.delay, 2.0 ** attempts))


class _Finished(Exception):  # noqa: N818 - control flow, not an error: the pass already wrote a final phase
    """Raised after ``finish`` to leave ``_advance`` without a second final write."""


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
