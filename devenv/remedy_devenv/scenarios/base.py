"""What a demo scenario is: data (runbook, trigger, the cookbook manifest it applies, the
Prometheus alert it needs, what it should end as) plus a few small functions (inject the
incident, detect its symptom, check the world afterwards, clean up). The runner
(remedy_devenv.demo.runner) drives every scenario the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..demo.stack import Stack

Detector = Callable[[Stack], "str | None"]


@dataclass(frozen=True)
class AlertRule:
    """One Prometheus alerting rule the scenario relies on (thresholds shortened for the demo)."""

    alert: str
    expr: str
    for_: str
    labels: dict[str, str]
    summary: str

    def rule(self) -> dict[str, Any]:
        return {"alert": self.alert, "expr": self.expr, "for": self.for_, "labels": dict(self.labels),
                "annotations": {"summary": self.summary}}


@dataclass
class Scenario:
    name: str  # also docs/cookbook/<name>.yaml
    runbook: str
    title: str
    trigger: str  # for the summary
    action: str
    inject: Callable[[Stack], str]
    detect: list[tuple[str, Detector]]  # milestones before the Remediation
    check: Callable[[Stack, dict[str, Any]], str]  # after the Remediation ended; raises DemoError
    policy: str | None = None  # automatic: children of this RemediationPolicy
    remediation: str | None = None  # manual: applied with kubectl once detected
    from_git: bool = False  # the Remediation is applied by Argo CD from git, not with kubectl
    approve: bool = False
    expect_phase: str = "Succeeded"
    expect_reason: str | None = None
    cleanup: Callable[[Stack], None] | None = None
    alerts: tuple[AlertRule, ...] = field(default_factory=tuple)


def promql(expr: str, label: str = "metric") -> Detector:
    """Milestone: the PromQL expression returns something."""

    def fn(st: Stack) -> str | None:
        res = st.prom_query(expr)
        if not res:
            return None
        vals = ", ".join(str(r.get("value", [0, "?"])[1]) for r in res[:3])
        return f"{label}: {expr} = {vals}"

    return fn


def alert(name: str) -> Detector:
    """Milestone: Prometheus has the alert firing."""
    return lambda st: f"Prometheus alert {name} firing" if st.firing(name) else None


def alertmanager(name: str) -> Detector:
    """Milestone: Alertmanager has it active (and routes it to remedy's webhook)."""
    return lambda st: (f"Alertmanager active {name} -> remedy webhook" if st.in_alertmanager(name) else None)


def alert_chain(rule: AlertRule, *, routed: bool = True) -> list[tuple[str, Detector]]:
    """metric -> alert (-> alertmanager) milestones for a scenario triggered by ``rule``."""
    chain = [("metric", promql(rule.expr)), ("alert", alert(rule.alert))]
    if routed:
        chain.append(("alertmanager", alertmanager(rule.alert)))
    return chain
