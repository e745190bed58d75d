"""Issue 20 item 1, engine half, in process: a Remediation that copies a policy's labels (and
even its controller ownerReference) but was not created by the operator changes no policy
state: failure streak and self-pause, track record, escalation, history, silences. Each test
runs the same scenario with a real child as the control, so the assertion can fail.

On the real control plane with the shipped roles: tests/security/test_forged_children.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from remedy.actions.registry import REGISTRY
from remedy.api.children import is_child_of
from remedy.base import rfc3339
from remedy.base.constants import (
    ANN_FINGERPRINT,
    ANN_LABELS,
    ANN_REQUESTED_BY,
    ANN_SILENCE,
    ANN_STARTS_AT,
    LABEL_FIRING,
    LABEL_POLICY,
    LABEL_STEP,
    POLICIES,
    REMEDIATIONS,
)
from remedy.policies.firing import Firing
from remedy.policies.machinery import Policies
from remedy.policies.silences import SilenceKeeper
from tests.fixtures.fakes import FakeRecorder, FakeStore

ADMIN, MALLORY = "admin", "mallory"
TEMPLATE = {"restartWorkload": {"target": {"name": "web"}}}
ESCALATE = [{"after": "0s", "action": {"scaleWorkload": {"target": {"name": "admin-only"}, "replicas": 0}}}]


class World:
    def __init__(self) -> None:
        self.store, self.recorder = FakeStore(), FakeRecorder()
        spec = {"trigger": {"alert": {"alertname": "Down"}}, "template": {"action": TEMPLATE},
                "guards": {"cooldown": "0s", "maxPerHour": 100, "maxConcurrent": 100, "pauseAfterFailures": 2},
                "escalate": ESCALATE}
        self.policy = self.store.add(POLICIES, {"metadata": {"name": "p", "annotations": {ANN_REQUESTED_BY: ADMIN}},
                                                "spec": spec})
        self.engine = Policies(self.store, self.recorder, REGISTRY)
        self.engine.observe_policy(self.policy, "ADDED")

    def labelled(self, name: str, requester: str, n: int, **annotations: str) -> dict[str, Any]:
        """A failed Remediation with the policy's labels and controller reference, requested by ``requester``
        (as the admission policies stamp it)."""
        body = self.store.add(REMEDIATIONS, {
            "metadata": {"name": name, "creationTimestamp": rfc3339.format_time(time.time() - 60),
                         "labels": {LABEL_POLICY: "p", LABEL_FIRING: name, LABEL_STEP: "0"},
                         "annotations": {ANN_REQUESTED_BY: requester, ANN_FINGERPRINT: f"fp{n}",
                                         ANN_STARTS_AT: "2026-01-01T00:00:00Z", ANN_LABELS: "{}", **annotations},
                         "ownerReferences": [{"apiVersion": "remedy.dev/v1alpha1", "kind": "RemediationPolicy",
                                              "name": "p", "uid": self.policy["metadata"]["uid"], "controller": True}]},
            "spec": {"action": TEMPLATE},
            "status": {"phase": "Failed", "completedAt": rfc3339.format_time(time.time() - 30, ms=True),
                       "conditions": [{"type": "Completed", "status": "True", "reason": "RequesterForbidden",
                                       "message": "x"}]}})
        self.engine.observe_child(body, "ADDED")
        return body

    def names(self) -> set[str]:
        return {n for (p, _, n) in self.store.objects if p == REMEDIATIONS}


@pytest.mark.parametrize("requester", [MALLORY, ADMIN])
async def test_forged_children_change_no_policy_state(requester: str) -> None:
    w = World()
    w.labelled("forged-1", requester, 1)
    w.labelled("forged-2", requester, 2)
    before = w.names()
    await w.engine.refresh("ns", "p")
    st = w.store.obj(POLICIES, "p")["status"]
    paused = next(c for c in st["conditions"] if c["type"] == "Paused")
    escalations = w.names() - before
    if requester == MALLORY:
        assert st["consecutiveFailures"] == 0 and paused["status"] == "False"
        assert st["trackRecord"]["runs"] == 0 and st["counters"]["failed"] == 0
        assert escalations == set(), "an escalation child was created from a forged child"
    else:  # control: the operator's own children do all of it
        assert st["consecutiveFailures"] == 2 and paused["status"] == "True"
        assert st["trackRecord"]["failed"] == 2


async def test_escalation_from_a_real_failed_child_only() -> None:
    w = World()
    w.store.objects[(POLICIES, "ns", "p")]["spec"]["guards"]["pauseAfterFailures"] = 10
    w.labelled("forged-1", MALLORY, 1)
    await w.engine.refresh("ns", "p")
    assert "forged-1-e1" not in w.names()
    w.labelled("real-1", ADMIN, 3)
    await w.engine.refresh("ns", "p")
    assert "real-1-e1" in w.names(), "control: a real failed child escalates"
    e1 = w.store.obj(REMEDIATIONS, "real-1-e1")
    assert e1["metadata"]["annotations"][ANN_REQUESTED_BY] == ADMIN and is_child_of(e1, w.store.obj(POLICIES, "p"))


async def test_a_forged_object_squatting_a_child_name_is_reported_not_deduplicated() -> None:
    from remedy.policies.firing import child_name

    w = World()
    f = Firing("fp9", "2026-01-01T00:00:09Z", {"alertname": "Down"}, {})
    cname = child_name("p", w.policy["metadata"]["uid"], f.fingerprint, f.starts_at)
    w.labelled(cname, MALLORY, 9)
    assert await w.engine.fire(w.store.obj(POLICIES, "p"), f) == "error:ChildNameTaken"
    assert "ChildNameTaken" in w.recorder.reasons("p")


def test_a_recreated_policy_does_not_inherit_children() -> None:
    w = World()
    child = w.labelled("real-1", ADMIN, 1)
    recreated = {**w.policy, "metadata": {**w.policy["metadata"], "uid": "another-uid"}}
    assert is_child_of(child, w.policy) and not is_child_of(child, recreated)


class FakeAlertmanager:
    def __init__(self) -> None:
        self.created: list[Any] = []

    async def silences(self) -> list[dict[str, Any]]:
        return []

    async def create_silence(self, matchers: list[dict[str, Any]], duration_s: float, comment: str) -> str:
        self.created.append(matchers)
        return f"s{len(self.created)}"


@pytest.mark.parametrize("requester", [MALLORY, ADMIN])
async def test_silences_only_for_real_children(requester: str, monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    silence = '{"matchers": [{"name": "alertname", "value": ".*", "isRegex": true}], "durationSeconds": 600}'
    body = w.labelled("child", requester, 1, **{ANN_SILENCE: silence})
    body["status"] = {"phase": "Pending"}
    w.store.objects[(REMEDIATIONS, "ns", "child")]["status"] = {"phase": "Pending"}
    am = FakeAlertmanager()
    keeper = SilenceKeeper(w.store, am, w.recorder)  # type: ignore[arg-type]
    annotated: list[str] = []

    async def annotate(child: dict[str, Any], sid: str) -> None:
        annotated.append(sid)

    monkeypatch.setattr(keeper, "_annotate", annotate)
    await keeper.on_child(body, "ADDED")
    if requester == MALLORY:
        assert am.created == [] and "SilenceRefused" in w.recorder.reasons("child")
    else:
        assert len(am.created) == 1 and annotated == ["s1"]


async def test_a_child_of_a_deleted_and_recreated_policy_runs_for_nobody() -> None:
    """The requester check of a child (lifecycle/authz.py) reads the owning policy by its
    controller reference: a policy of the same name but another uid is not that owner."""
    from remedy.base.errors import PermanentError
    from remedy.lifecycle.authz import Guard

    w = World()
    child = w.labelled("real-1", ADMIN, 1)
    guard = Guard(reviewer=None, egress=None, objects=w.store)
    assert (await guard.requester(child)).username == ADMIN  # control: the owner it names
    w.store.objects[(POLICIES, "ns", "p")]["metadata"]["uid"] = "recreated-uid"
    with pytest.raises(PermanentError, match="does not match the author"):
        await guard.requester(child)
