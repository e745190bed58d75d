"""The Grafana dashboard may only use metrics (and labels) that remedy.base.observability defines.

Metric names are public surface; this keeps deploy/grafana/remedy-dashboard.json from
drifting silently when a metric is renamed or a label changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from remedy.base import observability
from remedy.base.observability import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "remedy-dashboard.json"

# Sample-name suffixes each metric type exposes (prometheus text format / OpenMetrics).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Labels added by the scrape (target labels) rather than by the operator.
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "clamp_min",
             "clamp_max", "topk", "bottomk", "label_values", "vector", "abs", "delta", "deriv", "time"}


def exposed_names() -> dict[str, str]:
    """Every sample name the registry can expose -> its metric family name."""
    names: dict[str, str] = {}
    for family in REGISTRY.collect():
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    return names


def family_labels() -> dict[str, set[str]]:
    """Family name -> label names, from the metric objects observability defines."""
    out: dict[str, set[str]] = {}
    for value in vars(observability).values():
        if isinstance(value, MetricWrapperBase):
            family = next(iter(value.describe())).name
            out[family] = set(getattr(value, "_labelnames", ()))
    return out


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [str(n["expr"]) for n in walk(doc) if isinstance(n.get("expr"), str)]
    for var in doc["templating"]["list"]:
        definition = var.get("definition")
        if isinstance(definition, str) and definition:
            exprs.append(definition)
    return exprs


def metric_names(expr: str) -> set[str]:
    """Identifiers in metric-name position: not functions, keywords, labels, or $variables."""
    label_values = re.match(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,", expr)
    if label_values:  # a Grafana variable query: the first argument is the metric
        return {label_values.group(1)}
    cleaned = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    cleaned = re.sub(r"\[[^\]]*\]", "", cleaned)                   # range selectors [5m], [$__range]
    cleaned = re.sub(r"\{[^}]*\}", "{}", cleaned)                  # label matchers
    cleaned = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", cleaned)
    cleaned = re.sub(r"\$\w+", "", cleaned)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", cleaned):
        ident, call = m.group(1), m.group(2)
        if call or ident in PROMQL_WORDS or ident in FUNCTIONS:
            continue
        names.add(ident)
    return names


def label_names(expr: str) -> set[str]:
    labels = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    label_values = re.match(r"label_values\(\s*[\w:]+\s*,\s*(\w+)\s*\)", expr)
    if label_values:
        labels.add(label_values.group(1))
    return labels


def test_dashboard_is_valid_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in doc["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"])


def test_every_referenced_metric_exists_in_registry() -> None:
    exposed = exposed_names()
    referenced = set().union(*(metric_names(e) for e in expressions()))
    assert referenced, "no metrics parsed from the dashboard"
    unknown = sorted(referenced - set(exposed))
    assert not unknown, f"dashboard uses metrics remedy.base.observability does not define: {unknown}"


@pytest.mark.parametrize("expr", expressions())
def test_labels_used_exist_on_the_metrics(expr: str) -> None:
    exposed, labels = exposed_names(), family_labels()
    families = {exposed[m] for m in metric_names(expr) if m in exposed}
    assert families, f"no remedy metric in {expr!r}"
    allowed = set().union(*(labels.get(f, set()) for f in families)) | SCRAPE_LABELS
    if any(n.endswith("_bucket") for n in metric_names(expr)):
        allowed.add("le")
    unknown = sorted(label_names(expr) - allowed)
    assert not unknown, f"{expr!r} uses labels {unknown}; metrics {sorted(families)} have {sorted(allowed)}"


def test_dashboard_covers_the_operator_surface() -> None:
    referenced = {exposed_names()[m] for e in expressions() for m in metric_names(e) if m in exposed_names()}
    for family in ("remedy_remediations", "remedy_remediation_duration_seconds", "remedy_alerts_received",
                   "remedy_alerts_deduplicated", "remedy_guard_blocked", "remedy_policies_paused",
                   "remedy_webhook_request_duration_seconds"):
        assert family in referenced, f"dashboard has no panel for {family}"


def test_parser_catches_an_unknown_metric() -> None:
    assert metric_names('sum by (action) (rate(remedy_bogus_total{job=~"$job"}[5m]))') == {"remedy_bogus_total"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(remedy_webhook_request_duration_seconds_bucket[5m])))") == {
        "remedy_webhook_request_duration_seconds_bucket"}
    assert "remedy_bogus_total" not in exposed_names()
