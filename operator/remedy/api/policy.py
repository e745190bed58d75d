"""The RemediationPolicy CRD: a trigger (PromQL poll or Alertmanager alert) plus a Remediation
template, behind guards.

Condition types:

- Ready     True: trigger valid and being evaluated. False: invalid trigger or template
            (reason says what). Unknown: not yet evaluated.
- Paused    True: not creating Remediations, either because spec.paused is set by a person
            (reason PausedBySpec) or because it paused itself after pauseAfterFailures
            consecutive failures (reason TooManyFailures) until resumed. False: active.
- Degraded  True: the last evaluation failed (Prometheus unreachable, template error) or the
            last child failed. False: healthy. Unknown: nothing observed yet.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from ..base.constants import API_VERSION, POLICIES
from .autonomy import Mode, Promotion, TrackRecord
from .common import ApiModel, Condition, CrdRoot, Duration, exactly_one_field, preserve_unknown, printer_column
from .holds import HoldWhile, SilenceSpec, Window
from .remediation import GitOps, PromQLVerify


class PrometheusTrigger(ApiModel):
    query: str = Field(min_length=1, max_length=4096, description="Each result series fires once it stays non-empty for `for`.")
    for_: Duration = Field(default="0s", alias="for")
    interval: Duration = "15s"


class AlertTrigger(ApiModel):
    alertname: str = Field(min_length=1)
    match_labels: dict[str, str] = Field(default_factory=dict, description="Extra label equality matchers.")


class Trigger(ApiModel):
    """Exactly one of prometheus / alert (CEL rule)."""

    model_config = ConfigDict(json_schema_extra=exactly_one_field("spec.trigger"))

    prometheus: PrometheusTrigger | None = None
    alert: AlertTrigger | None = None


class Guards(ApiModel):
    cooldown: Duration = Field(default="5m", description="Minimum time between two Remediations for the same target.")
    max_per_hour: int = Field(default=6, ge=1, le=10_000)
    max_concurrent: int = Field(default=1, ge=1, le=1000)
    pause_after_failures: int = Field(default=3, ge=1, le=1000)


class EscalationStep(ApiModel):
    after: Duration = Field(description="Delay after the previous step failed.")
    action: dict[str, Any] = Field(json_schema_extra=preserve_unknown(), description="An action member, like spec.template.action.")


class RemediationTemplate(ApiModel):
    """A Remediation spec; string fields may use {{ labels.x }} / {{ annotations.y }} (Jinja, sandboxed, strict)."""

    action: dict[str, Any] = Field(json_schema_extra=preserve_unknown())
    dry_run: bool = False
    timeout: Duration = "5m"
    reason: str | None = None
    on_target_changed: Literal["Skip", "Replan"] = Field(
        default="Skip", description="The children's spec.onTargetChanged: Skip (a person's edit wins) or Replan.")
    gitops: GitOps | None = Field(default=None, description="The children's spec.gitops (Argo CD-tracked targets).")


class RemediationPolicySpec(ApiModel):
    trigger: Trigger
    template: RemediationTemplate
    guards: Guards = Field(default_factory=Guards)
    require_approval: bool = False
    verify: PromQLVerify | None = None
    escalate: list[EscalationStep] = Field(default_factory=list)
    paused: bool = Field(default=False, description="Set by a person to pause; unset (or false) to resume after a self-pause.")
    mode: Mode = Field(default="auto", description="shadow: children are dry runs (plan only); approve: children wait for approval; "
                                                  "auto: children act. With spec.promotion the operator moves the effective mode (status.mode).")
    max_mode: Mode = Field(default="auto", description="Promotion never goes past this mode.")
    ineffective_within: Duration = Field(default="30m", description="A succeeded run whose alert fingerprint fires again this soon counts as ineffective.")
    promotion: Promotion | None = None
    silence: SilenceSpec | None = Field(default=None, description="An Alertmanager silence while each child runs.")
    hold_while: HoldWhile | None = Field(default=None, description="Do not start while other alerts fire or a maintenance silence matches.")
    windows: list[Window] = Field(default_factory=list, max_length=32, description="Start children only inside one of these windows (empty: any time).")
    successful_history_limit: int | None = Field(
        default=None, ge=0, le=100_000,
        description="Finished children kept (Succeeded and Skipped), newest first; older ones are deleted once no guard "
                    "needs them (see docs). Unset: keep all (like CronJob's successfulJobsHistoryLimit).")
    failed_history_limit: int | None = Field(
        default=None, ge=0, le=100_000,
        description="Failed children kept, newest first; the current failure streak is always kept. Unset: keep all.")


class PolicyCounters(ApiModel):
    fired: int = 0
    deduplicated: int = 0
    created: int = 0
    succeeded: int = 0
    failed: int = 0
    blocked_cooldown: int = 0
    blocked_rate: int = 0
    blocked_concurrency: int = 0
    blocked_paused: int = 0
    blocked_hold: int = Field(default=0, description="Starts held by spec.holdWhile (or Alertmanager unreachable while it is set).")
    blocked_window: int = Field(default=0, description="Starts outside spec.windows.")


class RemediationPolicyStatus(ApiModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    last_fired_at: str | None = None
    consecutive_failures: int = 0
    counters: PolicyCounters = Field(default_factory=PolicyCounters)
    active_children: list[str] = Field(default_factory=list)
    failures_reset_at: str | None = Field(default=None, description="Failures before this time no longer count (set on resume).")
    self_paused_at: str | None = None
    mode: str | None = Field(default=None, description="Effective mode (spec.mode, or where promotion moved it).")
    mode_base: str | None = Field(default=None, description="The spec.mode that status.mode was derived from; a change of spec.mode resets it.")
    mode_since: str | None = Field(default=None, description="When the effective mode last changed; only later outcomes count towards the next change.")
    track_record: TrackRecord | None = None
    active_series: dict[str, Any] | None = Field(
        default=None, json_schema_extra=preserve_unknown(),
        description="Prometheus trigger: series fingerprint -> {firstSeen, fired, labels}; persisted so a restart keeps dedup keys.",
    )


class RemediationPolicy(CrdRoot):
    """The whole object; ``crdgen`` builds the CRD from it (names, columns, spec and status)."""

    plural: ClassVar[str] = POLICIES
    short_names: ClassVar[tuple[str, ...]] = ("rempol",)
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        printer_column("Trigger", "string", ".spec.trigger.alert.alertname"),
        printer_column("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        printer_column("Paused", "string", '.status.conditions[?(@.type=="Paused")].status'),
        printer_column("Mode", "string", ".status.mode"),
        printer_column("Runs", "integer", ".status.trackRecord.runs"),
        printer_column("Verified", "integer", ".status.trackRecord.verified"),
        printer_column("Ineffective", "integer", ".status.trackRecord.ineffective", priority=1),
        printer_column("Failed", "integer", ".status.trackRecord.failed", priority=1),
        printer_column("Fired", "integer", ".status.counters.fired"),
        printer_column("LastFired", "date", ".status.lastFiredAt"),
        printer_column("Age", "date", ".metadata.creationTimestamp"),
    )

    api_version: str = API_VERSION
    kind: str = "RemediationPolicy"
    spec: RemediationPolicySpec
    status: RemediationPolicyStatus | None = None
