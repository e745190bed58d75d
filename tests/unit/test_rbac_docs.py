"""docs/security.md's RBAC table is what the chart grants the operator: rendered with every
optional grant on (cluster and namespaced mode, shards), each (API group, resource) gets exactly
the verbs the table lists. Issue 20: the chart granted `delete` on remediations while the docs
said it granted no delete."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from tests.fixtures.chart import render

REPO = Path(__file__).resolve().parents[2]
RENDERINGS = (("shards=2",), ("watch.mode=namespaced", "watch.namespaces={a,b}"))
Grants = dict[tuple[str, str], set[str]]


def _chart_grants() -> Grants:
    grants: Grants = defaultdict(set)
    for sets in RENDERINGS:
        for doc in render(*sets):
            # The operator's own roles; the people's ClusterRoles are named <fullname>:<role>.
            if doc["kind"] in ("ClusterRole", "Role") and ":" not in doc["metadata"]["name"]:
                for rule in doc["rules"]:
                    for group in rule["apiGroups"]:
                        for resource in rule["resources"]:
                            grants[(group or "core", resource)] |= set(rule["verbs"])
    return dict(grants)


def _doc_grants() -> Grants:
    text = (REPO / "docs/security.md").read_text()
    table = text.split("<!-- rbac-table: begin -->")[1].split("<!-- rbac-table: end -->")[0]
    grants: Grants = defaultdict(set)
    for line in table.strip().splitlines()[2:]:
        group, resources, verbs = (c.strip() for c in line.strip("|").split("|")[:3])
        for resource in re.findall(r"`([^`]+)`", resources):
            grants[(group.strip("`"), resource)] |= {v.strip() for v in verbs.split(",")}
    return dict(grants)


def test_security_doc_lists_exactly_what_the_chart_grants_the_operator() -> None:
    chart, doc = _chart_grants(), _doc_grants()
    assert len(chart) >= 20 and ("remedy.dev", "remediations") in chart
    assert doc == chart, {k: (doc.get(k), chart.get(k)) for k in set(doc) | set(chart) if doc.get(k) != chart.get(k)}


def test_the_one_delete_is_on_remediations_and_nothing_escalates() -> None:
    chart = _chart_grants()
    assert [k for k, verbs in chart.items() if "delete" in verbs] == [("remedy.dev", "remediations")]
    assert not [k for k, verbs in chart.items() if verbs & {"*", "escalate", "bind", "impersonate", "deletecollection"}]
    assert ("core", "secrets") in chart and chart[("core", "secrets")] == {"get"}
