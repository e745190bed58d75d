"""What the lifecycle does when the outcome of a send is unknown: observe the target against the
recorded plan, then re-apply, finish, or hand the question to a person (OutcomeUnknown).

Why a module apart from run.py: recovery is the part that must never plan again, and it reads
best on its own; run.py calls it from a lost answer, a timeout and a resumed attempt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..actions.base import ActionContext, ActionDef, Applied, CannotTell, NotApplied, Observation
from ..api.common import parse_duration
from ..api.remediation import RemediationSpec
from ..base.errors import RemedyError, RetryableError
from ..base.rfc3339 import age_seconds

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("remedy.engine")
# Executed condition reason while the outcome of an attempt is being observed; a resumed pass
# reads its message as the true cause instead of guessing "the operator restarted".
OBSERVING = "ObservingOutcome"


async def observe(run: Run, action: ActionDef[Any], ctx: ActionContext, params: Any, plan: dict[str, Any]) -> Observation:
    if action.observe is None:
        if action.idempotent:
            return NotApplied(f"{action.name} has no probe but is idempotent: re-running the recorded plan is harmless")
        return CannotTell(f"{action.name} has no way to observe whether its request was applied")
    try:
        return await asyncio.wait_for(action.observe(ctx, params, plan), timeout=run.e.observe_timeout)
    except TimeoutError:
        raise RetryableError(f"observing the target of {action.name} took over {run.e.observe_timeout:.0f}s",
                             reason="ObserveUnavailable") from None

async def recover(run: Run, spec: RemediationSpec, action: ActionDef[Any], params: Any, ctx: ActionContext,
                   plan: dict[str, Any], cause: str, *, interrupted: bool = False) -> str:
    """The outcome of sending the recorded plan is unknown: observe it, never plan again.

    ``interrupted``: the executor died (or was cancelled) mid-attempt. Re-applying after that
    counts against ``max_interruptions`` in ``status.interruptions``, not against the
    attempts budget meant for sends the target answered badly.
    """
    attempt_id = run.status.get("attemptId")
    await run.patch({"message": f"outcome unknown: {cause}; observing the target",
                      "conditions": run.conds(Executed=("Unknown", OBSERVING, cause))}, lock=False)
    run.event("Warning", "OutcomeUnknown", f"{cause}; observing the target against the recorded plan")
    try:
        seen = await observe(run, action, ctx, params, plan)
    except RetryableError as exc:
        # Cannot read the target now. Ask again later, but not beyond spec.timeout after start.
        started = age_seconds(run.status.get("startedAt"))
        if started is not None and started > 2 * parse_duration(spec.timeout):
            return await outcome_unknown(run, f"{cause}; the target could not be observed: {exc.message}")
        raise
    except RemedyError as exc:
        return await outcome_unknown(run, f"{cause}; observing failed: {exc.message}")
    if isinstance(seen, Applied):
        run.event("Normal", "ObservedApplied", f"attempt {attempt_id}: {seen.detail}; not sending it again")
        # The plan's own figures (target revision, images, replicas) are the result: observe
        # just confirmed the target holds them.
        result = {**{k: v for k, v in plan.items() if k not in ("template", "change")},
                  "summary": f"{plan.get('change') or action.name} (observed applied after: {cause})"[:500],
                  "observed": seen.detail, "outcomeObserved": "Applied"}
        loop = asyncio.get_running_loop()
        return await run._after_execute(spec, action, params, ctx, plan, result,
                                          loop.time() + parse_duration(spec.timeout))
    if isinstance(seen, NotApplied) and interrupted:
        interruptions = int(run.status.get("interruptions") or 0) + 1
        if interruptions > run.e.max_interruptions:
            msg = (f"gave up after {interruptions - 1} interrupted attempts (the executor kept dying "
                   f"before recording an outcome): {cause}; observed: {seen.detail}")
            return await run.finish("Failed", "InterruptionsExhausted", msg, executed=("False", "NotApplied", msg))
        msg = (f"observed not applied ({seen.detail}); re-applying the recorded plan "
               f"(interruption {interruptions}/{run.e.max_interruptions})")
        await run.patch({"interruptions": interruptions, "message": msg,
                          "conditions": run.conds(Executed=("Unknown", "ReApplying", msg))}, lock=False)
        run.event("Normal", "ReApplying", f"attempt {attempt_id}: {msg}")
        return await run._execute_inner(spec, action, params, ctx, plan)
    if isinstance(seen, NotApplied):
        attempts = int(run.status.get("attempts") or 0)
        if attempts >= run.e.max_attempts:
            msg = f"gave up after {attempts} attempts: {cause}; observed: {seen.detail}"
            return await run.finish("Failed", "RetriesExhausted", msg, executed=("False", "NotApplied", msg))
        attempts += 1
        msg = f"observed not applied ({seen.detail}); re-applying the recorded plan (attempt {attempts}/{run.e.max_attempts})"
        await run.patch({"attempts": attempts, "message": msg,
                          "conditions": run.conds(Executed=("Unknown", "ReApplying", msg))}, lock=False)
        run.event("Normal", "ReApplying", f"attempt {attempt_id}: {msg}")
        await asyncio.sleep(min(8.0, 0.5 * 2 ** max(0, attempts - 2)))
        if run.e.guard is not None:  # rights may have been removed while we waited
            await run.e.guard.check(run.obj, action.name, params)
        return await run._execute_inner(spec, action, params, ctx, plan)
    return await outcome_unknown(run, f"{cause}; {seen.detail}")

async def outcome_unknown(run: Run, message: str) -> str:
    msg = f"{message}. Not run again so it cannot act twice: check the target against status.plan."
    phase = await run.finish("Failed", "OutcomeUnknown", msg, executed=("Unknown", "OutcomeUnknown", msg))
    run.event("Warning", "EscalationRequired", f"a person must check the target: {msg}"[:1024])
    if run.e.escalate is not None:
        try:
            await run.e.escalate(run.obj, msg)
        except Exception as exc:  # noqa: BLE001 - escalation is best effort; the Event is posted
            log.warning("escalation hook failed: %s", exc)
    return phase
