"""kopf keeps no full body per Remediation: no timer or daemon may be registered on
``remediations``. kopf stores every object's body in its per-object memory
(``DaemonsMemory.live_fresh_body``) as soon as a resource has any spawning handler, whatever
that handler's filters; for Remediations that was most of the operator's memory per object
(bench/memory.py, docs/scale.md). The same holds for RemediationPolicies: their refresh,
history and Prometheus polling run as process-wide loops (runtime/loops.py), not per-policy timers."""

from __future__ import annotations

import kopf

from remedy import handlers  # noqa: F401 - registers the handlers


def test_no_timer_or_daemon_on_remediations_or_policies() -> None:
    registry = kopf.get_default_registry()
    assert registry._changing._handlers, "no handlers registered (is the handlers module imported?)"
    spawning = [h.id for h in registry._spawning._handlers]
    assert spawning == []


def test_ttl_is_scheduled_from_watch_events() -> None:
    watching = kopf.get_default_registry()._watching._handlers
    assert any(h.id == "schedule_expiry" and h.selector is not None and h.selector.any_name == "remediations" for h in watching)
