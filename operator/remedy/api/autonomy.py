"""Earned autonomy: a policy's mode (shadow, approve, auto), the promotion rules that move it
between modes from its measured track record, and the track record itself in status.

Why a separate module: the mode decides what a child Remediation may do (plan only, wait for a
person, or act), and the track record is the evidence for changing it; both are part of the
RemediationPolicy schema but have nothing to do with triggers or guards.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, Duration
from .http import Notify

Mode = Literal["shadow", "approve", "auto"]
MODE_ORDER: tuple[str, ...] = ("shadow", "approve", "auto")


class Promotion(ApiModel):
    """Move shadow -> approve -> auto after `after` good outcomes in a row in the current mode
    (each within `within`), never past spec.maxMode; demote auto -> approve after
    `demoteAfterFailures` failed or `demoteAfterIneffective` ineffective outcomes in a row."""

    after: int = Field(default=3, ge=1, le=1000, description="Consecutive good outcomes in the current mode that earn the next mode.")
    within: Duration = Field(default="168h", description="Only outcomes completed this recently count towards promotion.")
    demote_after_failures: int = Field(default=2, ge=1, le=1000, description="Consecutive failed outcomes in auto that demote to approve.")
    demote_after_ineffective: int = Field(default=2, ge=1, le=1000,
                                          description="Consecutive ineffective outcomes in auto (the alert came back) that demote to approve.")
    notify: Notify | None = Field(default=None, description="Also sent (as a notify Remediation) when the policy is demoted.")


class Outcome(ApiModel):
    name: str
    mode: str = Field(description="Mode the policy was in when the Remediation was created.")
    outcome: str = Field(description="verified | succeeded | ineffective | failed | planned")
    would_have: str | None = Field(default=None, description="Shadow only: clearedOnItsOwn | stillFiring | pending.")
    completed_at: str | None = None


class TrackRecord(ApiModel):
    """Computed from the policy's child Remediations (final phases only); Skipped children
    (alert resolved before start, refused) are not runs."""

    runs: int = 0
    succeeded: int = Field(default=0, description="Executed and succeeded (verified or not, ineffective included).")
    verified: int = Field(default=0, description="Succeeded with verification passed.")
    failed: int = 0
    ineffective: int = Field(default=0, description="Succeeded, but the same alert fingerprint fired again within spec.ineffectiveWithin.")
    planned: int = Field(default=0, description="Shadow-mode dry runs that produced a plan.")
    cleared_on_its_own: int = Field(default=0, description="Shadow runs whose alert resolved within the verify window without any action.")
    median_seconds_to_verified: float | None = Field(default=None, description="Creation to verified, median over verified runs.")
    last_outcomes: list[Outcome] = Field(default_factory=list, description="Most recent outcomes, newest last.")
