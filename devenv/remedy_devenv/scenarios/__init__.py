"""The demo's incidents, in the order ./scripts/demo runs them: one module each (data plus
small inject / detect / check / cleanup functions), manifests from docs/cookbook/<name>.yaml.
To add one: write a module with ``SCENARIO = Scenario(...)``, a cookbook manifest, and list
it below."""

from __future__ import annotations

from typing import Any

from . import (
    bad_release,
    breaker_stuck,
    breaker_upstream_down,
    chaos_keys,
    earned_autonomy,
    gitops,
    idempotency_locks,
    long_transactions,
    oom,
    outbox_stuck,
    purchase_locks,
    reconcile,
    slow_mongo,
)
from .base import AlertRule, Scenario

SCENARIOS: list[Scenario] = [m.SCENARIO for m in (
    idempotency_locks, breaker_stuck, chaos_keys, outbox_stuck, purchase_locks, long_transactions, oom, bad_release, slow_mongo,
    reconcile, breaker_upstream_down, earned_autonomy, gitops)]
BY_NAME = {s.name: s for s in SCENARIOS}


def prometheus_rules() -> dict[str, Any]:
    """The alert rules every scenario relies on, as one Prometheus rule file."""
    rules: list[AlertRule] = list({r.alert: r for s in SCENARIOS for r in s.alerts}.values())
    return {"groups": [{"name": "runbooks", "rules": [r.rule() for r in rules]}]}


__all__ = ["BY_NAME", "SCENARIOS", "AlertRule", "Scenario", "prometheus_rules"]
