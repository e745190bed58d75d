"""RemediationPolicy guards (policies/machinery.py ``Policies.fire``) in process, with the
fake Store/Recorder: a firing creates at most one child, deduplicated by name also across a
restart, and each guard (paused by spec or condition, failure streak, maxConcurrent,
maxPerHour, cooldown) blocks with its own Event and counter; bad templates and specs end in
an error result and a Degraded condition, never a child. No cluster; seconds. The e2e suite
proves the same against the real API server and Alertmanager (tests/e2e/test_policies.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from remedy.actions.registry import REGISTRY
from remedy.base import rfc3339
from remedy.base.constants import ANN_FINGERPRINT, API_VERSION, LABEL_POLICY, LABEL_STEP, LABEL_TARGET, POLICIES, REMEDIATIONS
from remedy.policies.firing import Firing
from remedy.policies.machinery import Policies
from tests.fixtures.fakes import FakeRecorder, FakeStore

TEMPLATE = {"restartWorkload": {"target": {"name": "{{ labels.deployment }}"}}}


def firing(n: int = 1, deployment: str = "web") -> Firing:
    return Firing(fingerprint=f"fp{n}", starts_at=f"2026-01-01T00:00:0{n}Z",
                  labels={"alertname": "Down", "deployment": deployment}, annotations={})


class World:
    def __init__(self, guards: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **spec: Any) -> None:
        self.store, self.recorder = FakeStore(), FakeRecorder()
        body = {"trigger": {"alert": {"alertname": "Down"}}, "template": {"action": TEMPLATE},
                "guards": {"cooldown": "0s", "maxPerHour": 100, "maxConcurrent": 100, **(guards or {})}, **spec}
        self.policy = self.store.add(POLICIES, {"metadata": {"name": "p"}, "spec": body, "status": status or {}})
        self.engine = Policies(self.store, self.recorder, REGISTRY)

    async def fire(self, f: Firing, engine: Policies | None = None) -> str:
        return await (engine or self.engine).fire(self.store.obj(POLICIES, "p"), f)

    def children(self) -> list[dict[str, Any]]:
        return [o for (p, _, _), o in self.store.objects.items() if p == REMEDIATIONS]

    def child(self, deployment: str, *, phase: str | None = None, created_ago: float = 0.0, completed_ago: float = 0.0,
              n: int = 99) -> None:
        """A child from an earlier firing, as the API server would list it."""
        import hashlib
        import time

        target = f"restartWorkload:Deployment/{deployment}"
        status = {"phase": phase, "completedAt": rfc3339.format_time(time.time() - completed_ago, ms=True)} if phase else {}
        body = self.store.add(REMEDIATIONS, {"metadata": {
            "name": f"old-{n}", "creationTimestamp": rfc3339.format_time(time.time() - created_ago),
            "labels": {LABEL_POLICY: "p", LABEL_STEP: "0", LABEL_TARGET: hashlib.sha256(target.encode()).hexdigest()[:16]},
            "annotations": {ANN_FINGERPRINT: f"old{n}"}}, "spec": {}, "status": status})
        self.engine.observe_child(body, "ADDED")  # the watch event the operator would get

    def finish_child(self, n: int, phase: str) -> None:
        obj = self.store.objects[(REMEDIATIONS, "ns", f"old-{n}")]
        obj["status"] = {"phase": phase, "completedAt": rfc3339.now(ms=True)}
        self.engine.observe_child(obj, "MODIFIED")

    def blocked_events(self) -> list[str]:
        return [r for r in self.recorder.reasons("p") if r.startswith("Blocked")]


async def test_a_firing_creates_one_child_owned_by_the_policy() -> None:
    w = World()
    assert await w.fire(firing()) == "created"
    [child] = w.children()
    meta = child["metadata"]
    assert child["apiVersion"] == API_VERSION and child["spec"]["action"] == {"restartWorkload": {"target": {"name": "web"}}}
    assert meta["labels"][LABEL_POLICY] == "p" and meta["annotations"][ANN_FINGERPRINT] == "fp1"
    assert meta["ownerReferences"][0]["uid"] == w.policy["metadata"]["uid"]
    assert "Remediating" in w.recorder.reasons("p")


async def test_the_same_firing_is_deduplicated_also_after_a_restart() -> None:
    w = World()
    assert await w.fire(firing()) == "created"
    assert await w.fire(firing()) == "deduplicated"
    restarted = Policies(w.store, w.recorder, REGISTRY)  # no memory: the child's name is the dedup key
    assert await w.fire(firing(), engine=restarted) == "deduplicated"
    assert len(w.children()) == 1 and len(w.store.creates) == 1


async def test_different_firings_create_different_children() -> None:
    w = World()
    assert [await w.fire(firing(1, "a")), await w.fire(firing(2, "b"))] == ["created", "created"]
    assert len({c["metadata"]["name"] for c in w.children()}) == 2


@pytest.mark.parametrize(("spec", "status"), [
    ({"paused": True}, {}),
    ({}, {"conditions": [{"type": "Paused", "status": "True", "reason": "TooManyFailures", "message": "x"}]}),
])
async def test_a_paused_policy_creates_nothing(spec: dict[str, Any], status: dict[str, Any]) -> None:
    w = World(status=status, **spec)
    assert await w.fire(firing()) == "blocked:paused"
    assert not w.children() and w.blocked_events() == ["BlockedPaused"]


async def test_failure_streak_pauses_at_the_threshold() -> None:
    w = World(guards={"pauseAfterFailures": 2})
    w.child("a", phase="Failed", n=1, completed_ago=20)
    assert await w.fire(firing(1, "x")) == "created"
    w.child("b", phase="Running", n=2)
    w.finish_child(2, "Failed")  # seen through the watch, between two firings
    assert await w.fire(firing(2, "y")) == "blocked:paused"
    assert w.blocked_events() == ["BlockedPaused"]


async def test_a_success_resets_the_failure_streak() -> None:
    w = World(guards={"pauseAfterFailures": 2})
    w.child("a", phase="Failed", n=1, completed_ago=30)
    w.child("b", phase="Failed", n=2, completed_ago=20)
    w.child("c", phase="Succeeded", n=3, completed_ago=10)
    assert await w.fire(firing()) == "created"


async def test_max_concurrent_counts_unfinished_children() -> None:
    w = World(guards={"maxConcurrent": 1})
    w.child("a", phase="Running", n=1)
    assert await w.fire(firing(1, "b")) == "blocked:concurrency"
    w.finish_child(1, "Succeeded")
    assert await w.fire(firing(1, "b")) == "created"


async def test_max_per_hour_counts_children_of_the_last_hour() -> None:
    w = World(guards={"maxPerHour": 2})
    w.child("a", phase="Succeeded", n=1, created_ago=7200)  # outside the hour
    w.child("b", phase="Succeeded", n=2, created_ago=60)
    assert await w.fire(firing(1, "c")) == "created"
    assert await w.fire(firing(2, "d")) == "blocked:rate"
    assert w.blocked_events() == ["BlockedRate"]


async def test_cooldown_is_per_target() -> None:
    w = World(guards={"cooldown": "10m"})
    w.child("web", phase="Succeeded", n=1, created_ago=60)
    assert await w.fire(firing(1, "web")) == "blocked:cooldown"
    assert await w.fire(firing(2, "api")) == "created"
    w2 = World(guards={"cooldown": "10m"})
    w2.child("web", phase="Succeeded", n=1, created_ago=900)  # cooled down
    assert await w2.fire(firing(1, "web")) == "created"


async def test_each_block_is_counted_per_guard() -> None:
    w = World(guards={"maxConcurrent": 1})
    w.child("a", phase="Running", n=1)
    for n in range(3):
        assert await w.fire(firing(n, "b")) == "blocked:concurrency"
    assert w.engine._pending[("ns", "p")]["blocked_concurrency"] == 3
    assert w.engine._pending[("ns", "p")]["fired"] == 3


async def test_a_template_naming_an_absent_label_is_an_error_on_the_policy() -> None:
    w = World()
    f = Firing("fp", "2026-01-01T00:00:00Z", {"alertname": "Down"}, {})
    assert await w.fire(f) == "error:TemplateError"
    assert not w.children()
    conds = {c["type"]: (c["status"], c["reason"]) for c in w.store.obj(POLICIES, "p")["status"]["conditions"]}
    assert conds["Degraded"] == ("True", "TemplateError") and conds["Ready"] == ("False", "TemplateError")


async def test_an_invalid_policy_spec_is_an_error_not_a_crash() -> None:
    w = World()
    w.store.objects[(POLICIES, "ns", "p")]["spec"]["guards"]["maxPerHour"] = 0
    assert await w.fire(firing()) == "error:InvalidSpec" and not w.children()


async def test_a_deleted_policy_fires_nothing() -> None:
    w = World()
    policy = w.store.obj(POLICIES, "p")
    del w.store.objects[(POLICIES, "ns", "p")]
    assert await w.engine.fire(policy, firing()) == "error:PolicyGone" and not w.children()


# --- storms (issue 16): decided in memory, creates concurrent, blocks aggregated -------------------


async def test_a_known_duplicate_is_decided_in_memory() -> None:
    w = World()
    assert await w.fire(firing()) == "created"
    policy = w.store.obj(POLICIES, "p")
    assert all(w.engine.fire_known_duplicate(policy, firing()) for _ in range(1000))
    assert not w.engine.fire_known_duplicate(policy, firing(2, "other"))  # a new firing needs fire()
    assert len(w.store.creates) == 1 and len(w.children()) == 1


async def test_concurrent_firings_still_respect_max_concurrent() -> None:
    """Creates run outside the policy's lock; the reservation in the cache keeps the guard exact."""
    import asyncio

    w = World(guards={"maxConcurrent": 5})
    results = await asyncio.gather(*(w.fire(firing(i % 9 + 1, f"d{i}")) for i in range(40)))
    assert results.count("created") == 5 and len(w.children()) == 5 and len(w.store.creates) == 5
    assert results.count("blocked:concurrency") + results.count("deduplicated") == 35


async def test_guard_blocks_are_one_event_series_per_guard() -> None:
    import asyncio

    w = World(paused=True)
    w.engine._block_events.window = 0.2
    for i in range(50):
        assert await w.fire(firing(i % 9 + 1, f"d{i}")) == "blocked:paused"
    assert w.blocked_events() == ["BlockedPaused"]  # the first at once, the rest held
    await asyncio.sleep(0.35)
    assert w.blocked_events() == ["BlockedPaused", "BlockedPaused"]
    assert "blocked 49 firing(s)" in w.recorder.events[-1][3]
