"""Review at every use (issue 20): what a resumed or repeated attempt must pass before it acts.

Why a module: the first pass of a Remediation checks the approval gate and the requester's
rights (SubjectAccessReview) and the egress allowlist right before planning. But an attempt is
also driven later: after an operator restart or a shard takeover (``Running`` found with a dead
executor), after an ambiguous outcome (re-applying the recorded plan), and into verification.
Each of those reads the spec *again* from the API server, and the spec may have changed since
intent (admission refuses that, but the engine must hold without admission), and the
requester's RoleBindings may have been removed. So before any of them acts:

1. the spec must be the spec the intent was recorded for: ``status.specDigest`` (written with
   the intent, by the operator only) equals the digest of the spec now (``remedy.api.digest``).
   Otherwise the Remediation ends Failed/SpecChanged: the edited spec is never run, and since
   the recorded attempt may have been sent, a person is asked to check (EscalationRequired);
2. the approval gate must still be satisfied for that spec (an approval removed, or no longer
   counting, ends it Failed/ApprovalWithdrawn);
3. the requester must still hold every right the spec needs and every URL must still pass the
   allowlist (``Guard.check``, the same check as the first pass).

Objects whose intent predates this field (no ``status.specDigest``) skip step 1 only.
"""

from __future__ import annotations

from typing import Any

from ..api.digest import short, spec_digest
from ..api.remediation import RemediationSpec
from ..base.errors import PermanentError
from .approval import evaluate
from .authz import requester_of


class SpecChangedError(PermanentError):
    reason = "SpecChanged"


def intent_digest(obj: dict[str, Any]) -> str:
    """What the intent record stores: the digest of the spec about to run."""
    return spec_digest(obj.get("spec"))


def check_spec_unchanged(obj: dict[str, Any]) -> None:
    status = obj.get("status") or {}
    recorded = status.get("specDigest")
    if not recorded:
        return
    now = intent_digest(obj)
    if now != recorded:
        raise SpecChangedError(
            f"the spec changed after attempt {status.get('attemptId')} was recorded (spec {short(recorded)} then, "
            f"{short(now)} now); the edited spec is not run. The recorded attempt may have been applied: check "
            "the target against status.plan, and create a new Remediation for the new spec")


def check_still_approved(obj: dict[str, Any], spec: RemediationSpec, action_requires: bool) -> None:
    gate = evaluate(obj, spec.approval, action_requires, requester_of(obj), (obj.get("status") or {}).get("approvals"))
    if gate.needed and not gate.approved:
        raise PermanentError(f"the approval no longer holds: {gate.message}", reason="ApprovalWithdrawn")


async def review_before_acting(obj: dict[str, Any], guard: Any, action: str, params: Any,
                               spec: RemediationSpec | None = None, action_requires: bool = False) -> None:
    """Raise unless a resumed/repeated attempt may act now (see the module docstring)."""
    check_spec_unchanged(obj)
    if spec is not None:
        check_still_approved(obj, spec, action_requires)
    if guard is not None:
        await guard.check(obj, action, params)
