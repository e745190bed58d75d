"""Policy building blocks that need no cluster: templating, dedup names, alert routing."""

from __future__ import annotations

import pytest

from remedy.base.errors import InvalidSpecError
from remedy.policies.firing import child_name, series_fingerprint
from remedy.policies.templating import render
from remedy.triggers.index import PolicyIndex


def test_render_substitutes_labels_recursively() -> None:
    out = render({"target": {"name": "{{ labels.deployment }}"}, "n": 3, "list": ["{{ policy }}"]},
                 {"labels": {"deployment": "orders"}, "policy": "p"})
    assert out == {"target": {"name": "orders"}, "n": 3, "list": ["p"]}


def test_absent_label_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(InvalidSpecError) as info:
        render({"name": "{{ labels.deployment }}"}, {"labels": {}}, "spec.template.action")
    assert info.value.reason == "TemplateError" and "deployment" in info.value.message
    assert "spec.template.action.name" in info.value.message


def test_default_filter_allows_an_explicit_fallback() -> None:
    assert render("{{ labels.deployment | default('orders') }}", {"labels": {}}) == "orders"


def test_sandbox_blocks_internals() -> None:
    with pytest.raises(InvalidSpecError):
        render("{{ labels.__class__.__mro__[1].__subclasses__() }}", {"labels": {}})


def test_child_names_are_deterministic_and_dns_safe() -> None:
    a = child_name("outbox-stuck", "uid-1", "fp", "2026-01-01T00:00:00Z")
    assert a == child_name("outbox-stuck", "uid-1", "fp", "2026-01-01T00:00:00Z")
    assert a != child_name("outbox-stuck", "uid-1", "fp", "2026-01-01T00:05:00Z")
    assert a != child_name("outbox-stuck", "uid-2", "fp", "2026-01-01T00:00:00Z")
    long = child_name("x" * 200, "u", "f", "s", step=2)
    assert len(long) <= 63 and long.endswith("-e2")


def test_series_fingerprint_ignores_label_order() -> None:
    assert series_fingerprint({"a": "1", "b": "2"}) == series_fingerprint({"b": "2", "a": "1"})


def test_index_routes_by_alertname_and_match_labels() -> None:
    idx = PolicyIndex()
    meta = {"namespace": "n", "name": "p", "uid": "u"}
    idx.upsert({"metadata": meta, "spec": {"trigger": {"alert": {"alertname": "A", "matchLabels": {"team": "x"}}}}})
    idx.upsert({"metadata": {**meta, "name": "prom"}, "spec": {"trigger": {"prometheus": {"query": "up"}}}})
    assert len(idx) == 1
    assert idx.matching({"alertname": "A", "team": "x"})
    assert not idx.matching({"alertname": "A", "team": "y"})
    assert not idx.matching({"alertname": "B", "team": "x"})
    idx.remove("n", "p")
    assert not idx.matching({"alertname": "A", "team": "x"})
