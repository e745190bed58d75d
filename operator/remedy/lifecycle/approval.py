"""Approval gate: who approved (as the API server saw them), whether that counts, and expiry.

Why a module: approval used to be "some name was written into an annotation". Now the name
is the approving user as authenticated by the API server (a ValidatingAdmissionPolicy
rejects any other value, and a MutatingAdmissionPolicy stamps the approver's groups next to
it), and the rules that decide whether it counts live here, free of I/O, so they can be
tested exhaustively:

- ``approval.approvers``: users and groups allowed to approve (empty: anyone with patch).
- ``approval.mode``: ``any`` (one approval suffices) or ``all`` (every listed approver;
  a Group entry is satisfied by one member of it).
- ``approval.fourEyes``: the requester's own approval never counts.
- ``approval.expiresAfter``: still unapproved this long after creation -> Skipped/ApprovalExpired.

Each approval seen is recorded once in ``status.approvals`` (accepted or not, with why), so
``mode: all`` collects approvals given one after another on the same annotation.

Bound to the spec (issue 20): every approval carries the digest of the spec it approved
(annotation ``approved-spec-digest`` written by ``kubectl remedy approve``, or
``spec.approval.approvedSpecDigest``; ``remedy.api.digest``). It counts only while that digest
equals the digest of the spec the engine is about to run; judged again on every pass, so an
edit after approval voids it: an ``ApprovalVoided`` Warning Event, ``Approved=False`` with
reason ``ApprovalVoided`` and the phase back to AwaitingApproval. An approval without a digest
never counts (NoSpecDigest). This holds without admission; admission additionally refuses
spec edits once planning started, and binds the digest annotation to its writer like
approved-by.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from ..api.common import now_rfc3339, parse_duration
from ..api.digest import short, spec_digest
from ..api.objects import view
from ..api.remediation import Approval
from ..base import rfc3339
from ..base.constants import ANN_APPROVED_BY, ANN_APPROVED_BY_GROUPS, ANN_APPROVED_SPEC_DIGEST
from ..base.errors import RetryableError, SkipError
from ..clients.access_review import Requester
from .authz import requester_of, split_groups
from .gitops_identity import GitOpsConfig, gitops_approval

log = logging.getLogger("remedy.engine")


@dataclass
class Gate:
    needed: bool
    approved: bool
    approved_by: str | None
    message: str
    records: list[dict[str, Any]]
    new_records: list[dict[str, Any]] = field(default_factory=list)
    expired: bool = False
    recheck_after: float | None = None
    voided: list[dict[str, Any]] = field(default_factory=list)  # accepted before, void now (spec changed)
    digest: str = ""


def observed(obj: dict[str, Any], approval: Approval) -> list[tuple[str, tuple[str, ...], str | None]]:
    """(user, groups, approved spec digest) approvals present on the object right now."""
    ann = view(obj).annotations
    out: list[tuple[str, tuple[str, ...], str | None]] = []
    if ann.get(ANN_APPROVED_BY):
        out.append((ann[ANN_APPROVED_BY], split_groups(ann.get(ANN_APPROVED_BY_GROUPS)),
                    ann.get(ANN_APPROVED_SPEC_DIGEST) or None))
    if approval.approved_by:
        out.append((approval.approved_by, (), approval.approved_spec_digest))
    return out


def _judge(user: str, groups: tuple[str, ...], approval: Approval, requester: Requester | None,
           approved_digest: str | None = None, digest: str | None = None,
           gitops: GitOpsConfig | None = None) -> tuple[bool, str]:
    refused = gitops_approval(gitops, user)
    if refused:
        return False, refused
    if digest is not None:
        if not approved_digest:
            return False, (f"NoSpecDigest: the approval by {user} names no spec digest; approve with "
                           f"`kubectl remedy approve`, or set approval.approvedSpecDigest: {digest}")
        if approved_digest != digest:
            return False, (f"SpecChanged: {user} approved spec {short(approved_digest)}, the spec is now "
                           f"{short(digest)}; approve again (the spec's digest is {digest})")
    if approval.four_eyes:
        if requester is None:
            return False, "RequesterUnknown: fourEyes needs the recorded requester"
        if user == requester.username:
            return False, f"SelfApproval: {user} requested this Remediation and fourEyes is set"
    if approval.approvers:
        for a in approval.approvers:
            if (a.kind == "User" and a.name == user) or (a.kind == "Group" and a.name in groups):
                return True, "Approver"
        listed = ", ".join(f"{a.kind}:{a.name}" for a in approval.approvers)
        return False, f"NotAnApprover: {user} is not one of approval.approvers ({listed})"
    return True, "Approver"


def _satisfied(approval: Approval, accepted: list[dict[str, Any]]) -> bool:
    if not accepted:
        return False
    if approval.mode != "all" or not approval.approvers:
        return True
    for a in approval.approvers:
        if a.kind == "User" and not any(r["user"] == a.name for r in accepted):
            return False
        if a.kind == "Group" and not any(a.name in (r.get("groups") or []) for r in accepted):
            return False
    return True


def _age(created: Any, now: datetime) -> float | None:
    return rfc3339.age_seconds(created, now)


def evaluate(obj: dict[str, Any], approval: Approval, action_requires: bool, requester: Requester | None,
             recorded: list[dict[str, Any]] | None, now: datetime | None = None,
             gitops: GitOpsConfig | None = None) -> Gate:
    now = now or datetime.now(timezone.utc)
    records = [dict(r) for r in recorded or []]
    needed = approval.required or action_requires or bool(approval.approvers)
    digest = spec_digest(obj.get("spec"))
    new: list[dict[str, Any]] = []
    for user, groups, approved_digest in observed(obj, approval):
        if any(r.get("user") == user and tuple(r.get("groups") or ()) == groups
               and r.get("specDigest") == approved_digest for r in records):
            continue
        ok, why = _judge(user, groups, approval, requester, approved_digest, digest, gitops)
        rec = {"user": user, "groups": list(groups), "at": now_rfc3339(), "accepted": ok, "reason": why,
               "specDigest": approved_digest}
        records.append(rec)
        new.append(rec)
    # Judge every approval again on each pass: whether it counts depends on the current
    # requester, approvers and spec, not on what they were when it was first seen.
    voided: list[dict[str, Any]] = []
    for seen in records:
        was = bool(seen.get("accepted"))
        ok, why = _judge(str(seen.get("user")), tuple(seen.get("groups") or ()), approval, requester,
                         seen.get("specDigest"), digest, gitops)
        seen["accepted"], seen["reason"] = ok, why
        if was and not ok and why.startswith("SpecChanged"):
            voided.append(seen)
    accepted = [r for r in records if r.get("accepted")]
    names = ", ".join(dict.fromkeys(r["user"] for r in accepted)) or None
    if not needed:
        return Gate(False, True, names, "approval not required", records, new, digest=digest)
    if _satisfied(approval, accepted):
        return Gate(True, True, names, f"approved by {names} (spec {short(digest)})", records, new, digest=digest)
    waiting = "waiting for approval: kubectl remedy approve <name> (or annotate approved-by as yourself)"
    if approval.approvers:
        waiting += f"; approvers ({approval.mode}): " + ", ".join(f"{a.kind}:{a.name}" for a in approval.approvers)
    if approval.four_eyes:
        waiting += "; fourEyes: the requester cannot approve"
    if accepted:
        waiting += f"; approved so far by {names}"
    if voided:
        waiting = (f"approval by {', '.join(dict.fromkeys(str(r['user']) for r in voided))} voided: the spec changed "
                   f"after it was approved (now {short(digest)}); " + waiting)
    waiting += f"; spec digest {digest}"
    gate = Gate(True, False, names, waiting, records, new, voided=voided, digest=digest)
    if approval.expires_after:
        limit = parse_duration(approval.expires_after)
        age = _age(view(obj).metadata.get("creationTimestamp"), now)
        if age is not None and age >= limit:
            gate.expired = True
            gate.message = f"not approved within approval.expiresAfter {approval.expires_after}; not run"
        elif age is not None:
            gate.recheck_after = limit - age
    return gate


class _Run(Protocol):
    obj: dict[str, Any]

    @property
    def status(self) -> dict[str, Any]: ...

    async def patch(self, changes: dict[str, Any], *, lock: bool = True) -> None: ...

    def conds(self, **updates: tuple[str, str, str]) -> list[dict[str, Any]]: ...

    def event(self, type_: str, reason: str, message: str) -> None: ...


async def run_gate(run: _Run, approval: Approval, action_requires: bool, gitops: GitOpsConfig | None = None) -> Gate:
    """Evaluate the gate for a Pending/AwaitingApproval Remediation and record what changed.

    Raises SkipError(ApprovalExpired) when the wait is over, RetryableError to look again
    when an expiry is due (nothing else would wake the handler up), and returns the gate.
    """
    gate = evaluate(run.obj, approval, action_requires, requester_of(run.obj), run.status.get("approvals"),
                    gitops=gitops)
    for rec in gate.voided:
        run.event("Warning", "ApprovalVoided", f"approval by {rec['user']} no longer counts: {rec['reason']}")
    for rec in gate.new_records:
        if rec["accepted"]:
            run.event("Normal", "ApprovalRecorded", f"approval by {rec['user']} recorded")
        else:
            reason = str(rec["reason"]).split(":", 1)[0]
            run.event("Warning", "ApprovalRejected", f"approval by {rec['user']} does not count: {rec['reason']}")
            log.warning("approval rejected (%s): %s", reason, rec["reason"])
    if gate.expired:
        if gate.new_records:
            await run.patch({"approvals": gate.records}, lock=False)
        raise SkipError(gate.message, reason="ApprovalExpired")
    if gate.approved:
        if gate.new_records:
            await run.patch({"approvals": gate.records}, lock=False)
        return gate
    changes: dict[str, Any] = {}
    if gate.new_records or gate.voided:
        changes["approvals"] = gate.records
    if run.status.get("phase") != "AwaitingApproval" or run.status.get("message") != gate.message:
        reason = "ApprovalVoided" if gate.voided else "AwaitingApproval"
        changes.update({"phase": "AwaitingApproval", "message": gate.message,
                        "conditions": run.conds(Approved=("False", reason, gate.message))})
    if changes:
        first = run.status.get("phase") != "AwaitingApproval"
        await run.patch(changes, lock=False)
        if first:
            run.event("Normal", "AwaitingApproval", gate.message)
    if gate.recheck_after is not None:
        raise RetryableError(f"awaiting approval; expiry check in {gate.recheck_after:.0f}s",
                             delay=max(1.0, min(gate.recheck_after + 0.5, 600.0)), reason="AwaitingApproval")
    return gate
