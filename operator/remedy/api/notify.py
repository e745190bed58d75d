"""Where a notify goes in the wire format its receiver already speaks: Slack incoming webhook,
PagerDuty Events API v2, Opsgenie Alert API, Microsoft Teams (Workflows / Adaptive Card) or a
generic JSON webhook. Secrets (webhook URLs that embed a token, routing keys, API keys) are
only ever referenced; a dedup key makes a resend update the receiver's alert instead of adding
one (PagerDuty dedup_key, Opsgenie alias, generic dedupKey + Idempotency-Key)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import ApiModel, Duration, SecretKeyRef

SinkFormat = Literal["slack", "pagerduty", "opsgenie", "teams", "generic"]


class NotifySink(ApiModel):
    """Exactly one of url / urlSecretRef for slack, teams and generic (Slack and Teams webhook
    URLs are secrets themselves); pagerduty and opsgenie default to their public endpoints and
    need keySecretRef (routing key / API key)."""

    format: SinkFormat
    url: str | None = Field(default=None, pattern=r"^https?://", max_length=2048, description="Endpoint (no secret in it).")
    url_secret_ref: SecretKeyRef | None = Field(default=None, description="Endpoint read from a Secret (Slack/Teams webhook URLs).")
    key_secret_ref: SecretKeyRef | None = Field(default=None, description="PagerDuty routing key or Opsgenie API key.")
    dedup_key: str | None = Field(default=None, max_length=255,
                                  description="Same key, same alert at the receiver (default: the Remediation's name).")
    source: str | None = Field(default=None, max_length=100, description="Who raised it (default: remedy/<namespace>).")
    timeout: Duration = "10s"
