"""Metrics (/metrics via prometheus_client) and Kubernetes Events, in one place.

Metric names are part of the public surface: dashboards and alert rules in deploy/ use them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

REMEDIATIONS = Counter(
    "remedy_remediations_total", "Remediations that reached a final phase.", ["action", "phase", "reason"], registry=REGISTRY
)
STARTED = Counter("remedy_remediations_started_total", "Action executions started.", ["action"], registry=REGISTRY)
DURATION = Histogram(
    "remedy_remediation_duration_seconds", "Start of execution to final phase.", ["action"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
ALERTS = Counter("remedy_alerts_received_total", "Alerts received by the webhook.", ["status"], registry=REGISTRY)
ALERTS_DEDUP = Counter("remedy_alerts_deduplicated_total", "Firings that mapped to an existing Remediation.", ["policy"], registry=REGISTRY)
GUARD_BLOCKS = Counter("remedy_guard_blocked_total", "Firings blocked by a guard.", ["policy", "guard"], registry=REGISTRY)
POLICIES_PAUSED = Gauge("remedy_policies_paused", "Policies currently paused.", registry=REGISTRY)
MODE_CHANGES = Counter("remedy_policy_mode_changes_total", "Policy mode changes by promotion or demotion.",
                       ["policy", "from_mode", "to_mode", "reason"], registry=REGISTRY)
POLICY_MODE = Gauge("remedy_policy_mode", "Effective policy mode: 0 shadow, 1 approve, 2 auto.", ["namespace", "policy"], registry=REGISTRY)
WEBHOOK_REJECTED = Counter(
    "remedy_webhook_rejected_total", "Webhook requests refused for their body (400 bad, 408 too slow, 413 too large, 422 shape).",
    ["code"], registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "remedy_webhook_request_duration_seconds", "Alertmanager webhook handling time.", ["code"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class MetricsObserver:
    """Lifecycle observer that records outcomes as metrics."""

    def started(self, action: str) -> None:
        STARTED.labels(action=action).inc()

    def finished(self, action: str, phase: str, reason: str, seconds: float | None) -> None:
        REMEDIATIONS.labels(action=action, phase=phase, reason=reason).inc()
        if seconds is not None:
            DURATION.labels(action=action).observe(seconds)


def serve_metrics(port: int, host: str = "127.0.0.1") -> Any:
    return start_http_server(port, addr=host, registry=REGISTRY)


class _IdentityFilter(logging.Filter):
    """Puts the Remediation's identity into every record that carries it (plain format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ident = getattr(record, "remediation", None)
        if ident and not str(record.msg).startswith("["):
            record.msg = f"[{ident} uid={getattr(record, 'uid', '')}] {record.msg}"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        for key in ("remediation", "uid"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        k8s = getattr(record, "k8s_ref", None)  # kopf's per-object loggers
        if isinstance(k8s, dict):
            out["remediation"] = f"{k8s.get('namespace')}/{k8s.get('name')}"
            out["uid"] = k8s.get("uid")
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(fmt: str = "plain") -> None:
    import kopf

    if fmt == "json":
        kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    else:
        kopf.configure(verbose=False)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_IdentityFilter())
