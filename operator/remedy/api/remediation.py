"""The Remediation CRD: one action, run once, with plan and evidence in status.

Condition types (each set on first visit, even as Unknown):

- Validated  True: spec is valid and the action's inputs resolved. False: invalid spec
             (reason InvalidSpec, SecretNotFound, ...). Unknown: not yet checked.
- Approved   True: approval not required, or granted (message says by whom). False: waiting
             for approval (AwaitingApproval) or approval expired. Unknown: not evaluated yet.
- Executed   True: the action ran and completed. False: it failed, was refused (OverCap),
             skipped, or this was a dry run. Unknown: not started, in progress, or the outcome
             is unknown because the operator restarted mid-action (reason OutcomeUnknown).
- Verified   True: verification passed. False: it failed or timed out. Unknown: pending or
             no verification configured (reason NotConfigured).
- Completed  True: a final phase was reached (Succeeded, Failed, Skipped); reason and message
             summarise the outcome. False/Unknown: still in progress.

``phase`` is derived from the conditions for printer columns and Argo CD health.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from ..base.constants import ANN_APPROVED_BY, ANN_APPROVED_SPEC_DIGEST, API_VERSION, REMEDIATIONS
from .common import ApiModel, Condition, CrdRoot, Duration, exactly_one_field, preserve_unknown, printer_column
from .http import HttpRequest, Notify, ResetCircuitBreaker
from .idempotency import PurgeIdempotencyKeys
from .mongo import KillSlowMongoOps
from .postgres import PostgresStatement, TerminatePostgresQueries
from .redis import DeleteRedisKeys
from .workload import RaiseMemoryOnOOM, RestartWorkload, RollbackWorkload, ScaleWorkload

Phase = Literal["Pending", "AwaitingApproval", "Running", "Verifying", "Succeeded", "Failed", "Skipped"]
CONDITION_TYPES: tuple[str, ...] = ("Validated", "Approved", "Executed", "Verified", "Completed")


class ActionSpec(ApiModel):
    """Exactly one member must be set (enforced by a CEL rule in the CRD)."""

    model_config = ConfigDict(json_schema_extra=exactly_one_field("spec.action"))

    restart_workload: RestartWorkload | None = None
    scale_workload: ScaleWorkload | None = None
    rollback_workload: RollbackWorkload | None = None
    raise_memory_on_oom: RaiseMemoryOnOOM | None = Field(default=None, alias="raiseMemoryOnOOM")
    purge_idempotency_keys: PurgeIdempotencyKeys | None = None
    delete_redis_keys: DeleteRedisKeys | None = None
    reset_circuit_breaker: ResetCircuitBreaker | None = None
    kill_slow_mongo_ops: KillSlowMongoOps | None = None
    terminate_postgres_queries: TerminatePostgresQueries | None = None
    http_request: HttpRequest | None = None
    postgres_statement: PostgresStatement | None = None
    notify: Notify | None = None

    def members_set(self) -> list[str]:
        """Wire names (camelCase) of the members that are set."""
        return [
            (info.alias or name)
            for name, info in type(self).model_fields.items()
            if getattr(self, name) is not None
        ]

    def only(self) -> tuple[str, ApiModel]:
        """The one member: (wire name, params). Raises ValueError unless exactly one is set."""
        members = self.members_set()
        if len(members) != 1:
            raise ValueError(
                f"spec.action must set exactly one action, got {len(members)}: {', '.join(members) or 'none'}"
            )
        for name, info in type(self).model_fields.items():
            if (info.alias or name) == members[0]:
                value = getattr(self, name)
                assert isinstance(value, ApiModel)
                return members[0], value
        raise AssertionError("unreachable")


def action_member_names() -> list[str]:
    return [(info.alias or name) for name, info in ActionSpec.model_fields.items()]


class Approver(ApiModel):
    """A user or group allowed to approve (RBAC subject style)."""

    kind: Literal["User", "Group"] = "User"
    name: str = Field(min_length=1, max_length=253)


class ApprovalRecord(ApiModel):
    """One approval the operator saw, with the approver as the API server authenticated them."""

    user: str
    groups: list[str] = Field(default_factory=list)
    at: str | None = None
    accepted: bool = False
    reason: str = Field(default="", description="Approver, or why it did not count (SelfApproval, NotAnApprover, "
                                                "SpecChanged, NoSpecDigest).")
    spec_digest: str | None = Field(default=None, description="Digest of the spec this approval approved.")


class Approval(ApiModel):
    required: bool = Field(default=False, description="Wait in AwaitingApproval until approved.")
    approved_by: str | None = Field(
        default=None,
        description=(f"Set to grant approval (GitOps-friendly); the annotation {ANN_APPROVED_BY} works too. "
                     "The API server rejects any value other than the name of the user setting it. Counts only "
                     "with approvedSpecDigest (the annotation: with "
                     f"{ANN_APPROVED_SPEC_DIGEST}) equal to the digest of the spec."),
    )
    approved_spec_digest: str | None = Field(
        default=None, pattern=r"^sha256:[0-9a-f]{64}$",
        description=("Digest of the spec approvedBy approves (the AwaitingApproval message shows the current one; "
                     "`kubectl remedy approve` computes it). Any later spec change voids the approval."),
    )
    approvers: list[Approver] = Field(
        default_factory=list, max_length=64,
        description="Who may approve (users or groups, as the API server authenticates them); empty: anyone "
                    "allowed to patch the Remediation. Setting it implies required.",
    )
    mode: Literal["any", "all"] = Field(
        default="any", description="any: one accepted approval suffices; all: every listed approver must approve.")
    four_eyes: bool = Field(default=False, description="The requester's own approval never counts.")
    expires_after: Duration | None = Field(
        default=None, description="Unapproved this long after creation: Skipped with reason ApprovalExpired.")


class PromQLVerify(ApiModel):
    """Verification: this PromQL must return an empty result within timeout."""

    promql: str = Field(min_length=1, max_length=4096)
    timeout: Duration = "2m"
    interval: Duration = "5s"


class GitOps(ApiModel):
    """Acting on a workload an Argo CD Application tracks (docs/argocd.md)."""

    on_revert_expected: Literal["Refuse", "Act"] = Field(
        default="Refuse",
        description="When the tracking Application would undo the change at once (automated sync with selfHeal, "
                    "the field not ignored): Refuse ends Failed/GitOpsWouldRevert without acting; Act acts anyway "
                    "(a revert then ends Failed/RevertedByGitOps).")
    watch_for: Duration = Field(
        default="60s",
        description="After acting on an Argo CD-tracked workload without any verification configured, watch the "
                    "changed field this long for a GitOps revert before Succeeded.")


class RemediationSpec(ApiModel):
    action: ActionSpec
    dry_run: bool = Field(default=False, description="Plan only: status.plan says what would change.")
    approval: Approval = Field(default_factory=Approval)
    timeout: Duration = Field(default="5m", description="Limit on execution plus verification.")
    reason: str | None = Field(default=None, max_length=1024, description="Free text: incident id, why.")
    verify: PromQLVerify | None = None
    on_target_changed: Literal["Skip", "Replan"] = Field(
        default="Skip",
        description="When the target changed between plan and write (a precondition failed, nothing was written): "
                    "Skip ends Skipped/TargetChanged naming the field, its value and the manager that changed it "
                    "(a person's edit wins); Replan plans again from the changed target.")
    gitops: GitOps = Field(default_factory=GitOps)
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=31_536_000,
        description="Delete this Remediation this long after it finished (like a Job's). A policy's child is "
                    "kept while its policy's guards may still count it.")


class RemediationStatus(ApiModel):
    phase: Phase | None = None
    action: str | None = Field(default=None, description="Which action (printer column).")
    target: str | None = Field(default=None, description="What it acts on (printer column).")
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    attempt_id: str | None = Field(default=None, description="Intent record: set before acting.")
    attempts: int = 0
    interruptions: int = Field(
        default=0, description="Attempts cut short by the executor dying; re-applied from the recorded plan "
                               "and budgeted apart from attempts.")
    executor: str | None = Field(default=None, description="Operator instance running the attempt.")
    heartbeat_at: str | None = Field(default=None, description="Refreshed while running; a stale one means the executor died.")
    epoch: int = Field(default=0, description="Fencing token: raised by each claim of an attempt (intent or takeover); every "
                                              "status write of that attempt is a compare-and-swap on it.")
    started_at: str | None = None
    completed_at: str | None = None
    approved_by: str | None = None
    spec_digest: str | None = Field(default=None, description="Digest of the spec the attempt was recorded for; a "
                                                              "resumed attempt never runs a spec with another digest.")
    approvals: list[ApprovalRecord] = Field(default_factory=list, description="Approvals seen, accepted or not.")
    requested_by: str | None = Field(default=None, description="The requester whose rights the action ran with.")
    message: str | None = None
    plan: dict[str, Any] | None = Field(default=None, json_schema_extra=preserve_unknown())
    result: dict[str, Any] | None = Field(default=None, json_schema_extra=preserve_unknown())
    evidence: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra=preserve_unknown(),
        description="Snapshot of the target taken before a destructive action (pods, restarts, events).",
    )


class Remediation(CrdRoot):
    """The whole object; ``crdgen`` builds the CRD from it (names, columns, spec and status)."""

    plural: ClassVar[str] = REMEDIATIONS
    short_names: ClassVar[tuple[str, ...]] = ("rem",)
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        printer_column("Action", "string", ".status.action"),
        printer_column("Target", "string", ".status.target"),
        printer_column("Phase", "string", ".status.phase"),
        printer_column("Reason", "string", '.status.conditions[?(@.type=="Completed")].reason'),
        printer_column("DryRun", "boolean", ".spec.dryRun", priority=1),
        printer_column("Message", "string", ".status.message", priority=1),
        printer_column("Age", "date", ".metadata.creationTimestamp"),
    )

    api_version: str = Field(default=API_VERSION, pattern=f"^{re.escape(API_VERSION)}$")
    kind: Literal["Remediation"] = "Remediation"
    spec: RemediationSpec
    status: RemediationStatus | None = None
