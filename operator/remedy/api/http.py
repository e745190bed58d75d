"""Params of the HTTP actions: reset a circuit breaker (runbooks 001-003), call a webhook such as
the reconcile cron (runbook 002) or DELETE /chaos/config (runbook 001), and notify."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, Duration, SecretKeyRef
from .notify import NotifySink

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class HttpCall(ApiModel):
    url: str = Field(pattern=r"^https?://", max_length=2048)
    method: HttpMethod = "POST"
    headers: dict[str, str] = Field(default_factory=dict, description="Plain headers (no secrets here).")
    bearer_token_secret_ref: SecretKeyRef | None = Field(default=None, description="Sent as Authorization: Bearer.")
    body: str | None = Field(default=None, max_length=65536, description="Request body (JSON text or plain).")
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    timeout: Duration = "10s"
    idempotency_key: bool = Field(
        default=True,
        description=("Send an Idempotency-Key header derived from the Remediation's uid (the same on every attempt "
                     "and after operator restarts). The endpoint must run a repeat with the same key at most once; "
                     "then a lost response is re-sent safely. Set false for endpoints without that support: a lost "
                     "response then ends Failed/OutcomeUnknown with an escalation instead of a repeat."),
    )


class HttpRequest(HttpCall):
    """One HTTP call; the response status (and a short body excerpt) is the evidence."""


class HealthCheck(ApiModel):
    url: str = Field(pattern=r"^https?://", max_length=2048)
    consecutive: int = Field(default=3, ge=1, le=100, description="Passes in a row required.")
    interval: Duration = "1s"
    timeout: Duration = "3s"


class ResetCircuitBreaker(ApiModel):
    """Force a breaker HALF_OPEN (or closed) only after its upstream proved healthy N times in a row."""

    status_url: str = Field(pattern=r"^https?://", description="e.g. http://gateway:8000/status/breakers")
    breaker: str = Field(min_length=1, description="Breaker name in the status document, e.g. payments.")
    state_field: str = Field(default="state", description="Field of the breaker entry that holds its state.")
    upstream_health: HealthCheck
    reset: HttpCall = Field(description="The request that forces the new state.")
    expect_state: list[str] = Field(default_factory=lambda: ["HALF_OPEN", "CLOSED"], description="States that count as reset.")
    only_when_state: list[str] = Field(default_factory=lambda: ["OPEN"], description="Act only if the breaker is in one of these.")
    verify_timeout: Duration = "15s"


class Notify(ApiModel):
    """A message to a webhook (Slack-compatible JSON {text}) and always a Kubernetes Event."""

    message: str = Field(min_length=1, max_length=4000)
    webhook: HttpCall | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    sink: NotifySink | None = Field(default=None, description="Also send in a receiver's own wire format (Slack, PagerDuty, Opsgenie, Teams, generic).")
