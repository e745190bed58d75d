"""Operator settings read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    prometheus_url: str | None = field(default_factory=lambda: os.environ.get("REMEDY_PROMETHEUS_URL"))
    # Alertmanager API v2 (spec.silence, spec.holdWhile); unset: silences are not created and
    # holdWhile holds every start (fail closed).
    alertmanager_url: str | None = field(default_factory=lambda: os.environ.get("REMEDY_ALERTMANAGER_URL"))
    webhook_host: str = field(default_factory=lambda: os.environ.get("REMEDY_WEBHOOK_HOST", "127.0.0.1"))
    webhook_port: int = field(default_factory=lambda: _int("REMEDY_WEBHOOK_PORT", 18080))
    # Where other replicas reach this one's webhook (sharding: runtime/shards.py), e.g.
    # http://$(POD_IP):8080/alertmanager; unset: alerts for other shards are handled here.
    webhook_advertise_url: str | None = field(default_factory=lambda: os.environ.get("REMEDY_WEBHOOK_ADVERTISE_URL") or None)
    webhook_token_file: str | None = field(default_factory=lambda: os.environ.get("REMEDY_WEBHOOK_TOKEN_FILE"))
    # 2x a realistic 10,000-alert Alertmanager group (7.8 MB; triggers/alertmanager.py).
    webhook_max_body: int = field(default_factory=lambda: _int("REMEDY_WEBHOOK_MAX_BODY", 16 << 20))
    webhook_read_timeout: float = field(default_factory=lambda: float(os.environ.get("REMEDY_WEBHOOK_READ_TIMEOUT", "10")))
    metrics_port: int = field(default_factory=lambda: _int("REMEDY_METRICS_PORT", 18081))
    max_attempts: int = field(default_factory=lambda: _int("REMEDY_MAX_ATTEMPTS", 5))
    heartbeat_seconds: float = field(default_factory=lambda: float(os.environ.get("REMEDY_HEARTBEAT_SECONDS", "5")))
    namespace: str | None = field(default_factory=lambda: os.environ.get("REMEDY_NAMESPACE"))
    # Bounds on every outbound call (issue 12): a hung connection must never pin a worker or
    # outlive spec.timeout. Data-plane actions also carry their own per-spec timeouts; these
    # are the ceilings for calls that have none.
    kube_request_timeout: float = field(default_factory=lambda: _float("REMEDY_KUBE_REQUEST_TIMEOUT", 15.0))
    kube_connect_timeout: float = field(default_factory=lambda: _float("REMEDY_KUBE_CONNECT_TIMEOUT", 5.0))
    prometheus_timeout: float = field(default_factory=lambda: _float("REMEDY_PROMETHEUS_TIMEOUT", 10.0))
    observe_timeout: float = field(default_factory=lambda: _float("REMEDY_OBSERVE_TIMEOUT", 30.0))
    # Slack-compatible webhook told when an outcome stays unknown (lifecycle/escalation.py).
    escalation_webhook: str | None = field(default_factory=lambda: os.environ.get("REMEDY_ESCALATION_WEBHOOK") or None)
    # Security (issue 13): outbound HTTP allowlist (remedy.clients.egress; empty allows nothing)
    # and whether actions run only with the recorded requester's RBAC (remedy.lifecycle.authz).
    egress_allow: str = field(default_factory=lambda: os.environ.get("REMEDY_EGRESS_ALLOW", ""))
    requester_checks: bool = field(
        default_factory=lambda: os.environ.get("REMEDY_REQUESTER_CHECKS", "true").lower() not in ("0", "false", "no"))

    # Issue 20: a server-side dry run checks at start and every admission_probe_seconds that
    # remedy's admission policies are in force; while they are not, nothing runs (admission_gate).
    admission_probe: bool = field(
        default_factory=lambda: os.environ.get("REMEDY_ADMISSION_PROBE", "true").lower() not in ("0", "false", "no"))
    admission_probe_seconds: float = field(default_factory=lambda: _float("REMEDY_ADMISSION_PROBE_SECONDS", 60.0))
    admission_probe_namespace: str | None = field(
        default_factory=lambda: os.environ.get("REMEDY_ADMISSION_PROBE_NAMESPACE") or None)


def load() -> Settings:
    return Settings()
