"""The operator acts only while its identity checks are in force (issue 20): the probe's verdict
from the API server's answer, and the gate holding Remediations (condition, one Event, retry)
and letting them go once the checks are back. The real control plane part is in
tests/security/test_validating_only.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from remedy.base.errors import RetryableError
from remedy.clients.admission_probe import AdmissionProbe, probe_body, probe_namespace, verdict
from remedy.runtime.admission_gate import CONDITION, REASON, GatedLifecycle, GatedSilences

VAP_DENIAL = json.dumps({"kind": "Status", "code": 403, "reason": "Forbidden", "message": (
    'remediations.remedy.dev "remedy-admission-probe-x" is forbidden: ValidatingAdmissionPolicy \'remedy-identity\' '
    "with binding 'remedy-identity' denied request: remedy.dev/requested-by and remedy.dev/requested-by-groups are "
    "recorded by the API server")})


def test_only_a_refusal_by_remedys_validating_policy_counts_as_in_force() -> None:
    assert verdict(403, VAP_DENIAL)[0] is True
    admitted = verdict(None, "")
    assert admitted[0] is False and "was admitted" in admitted[1]
    rbac = verdict(403, json.dumps({"message": 'remediations.remedy.dev is forbidden: User "x" cannot create resource'}))
    assert rbac[0] is False and "RBAC" in rbac[1]
    other_vap = verdict(403, json.dumps({"message": "ValidatingAdmissionPolicy 'deny-all' denied request: no"}))
    assert other_vap[0] is False
    assert verdict(404, json.dumps({"message": 'namespaces "x" not found'}))[0] is False


def test_the_probe_forges_both_identities_and_stores_nothing() -> None:
    body = probe_body("ns")
    ann = body["metadata"]["annotations"]
    assert ann["remedy.dev/requested-by"].startswith("system:remedy:") and ann["remedy.dev/approved-by"].startswith("system:remedy:")
    assert "generateName" in body["metadata"] and "name" not in body["metadata"]
    assert probe_namespace(None, None, ["team-*", "shop"]) == "shop"
    assert probe_namespace(None, "remedy-system", ["team-*"]) == "remedy-system"
    assert probe_namespace("probe", "remedy-system", ["shop"]) == "probe"
    assert probe_namespace(None, None, None) == "default"


class FakeProbe(AdmissionProbe):
    def __init__(self, answers: list[bool]) -> None:
        super().__init__(api_client=None, namespace="default")  # type: ignore[arg-type]
        self.answers = answers

    async def probe_once(self) -> tuple[bool, str]:
        ok = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return ok, "in force" if ok else "a forged requester was admitted"


class FakeKube:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[dict[str, Any]] = []

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.obj

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any]:
        assert resource_version == self.obj["metadata"]["resourceVersion"]
        self.patches.append(status)
        self.obj = {**self.obj, "status": {**self.obj.get("status", {}), **status}}
        return self.obj


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


class Engine:
    def __init__(self) -> None:
        self.calls = 0
        self.executor_id = "me"

    async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> str | None:
        self.calls += 1
        return "Succeeded"


def rem(phase: str | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "n", "name": "r", "resourceVersion": "7", "generation": 1},
            "status": {"phase": phase} if phase else {}}


async def test_held_while_not_in_force_then_runs_once_the_checks_are_back() -> None:
    probe, kube, rec, engine = FakeProbe([False]), FakeKube(rem()), Recorder(), Engine()
    gated = GatedLifecycle(engine, probe, kube, rec)
    for _ in range(3):
        with pytest.raises(RetryableError) as err:
            await gated.reconcile("n", "r")
        assert err.value.reason == REASON and err.value.delay == probe.retry_interval
    assert engine.calls == 0, "nothing ran"
    cond = next(c for c in kube.obj["status"]["conditions"] if c["type"] == CONDITION)
    assert (cond["status"], cond["reason"]) == ("False", REASON) and "forged requester was admitted" in cond["message"]
    assert rec.events == [("Warning", REASON)] and len(kube.patches) == 1, "one Event and one write per hold"
    assert gated.executor_id == "me"  # everything else is the engine's

    probe.answers = [True]
    await probe.check()
    assert await gated.reconcile("n", "r") == "Succeeded" and engine.calls == 1
    cond = next(c for c in kube.obj["status"]["conditions"] if c["type"] == CONDITION)
    assert (cond["status"], cond["reason"]) == ("True", "AdmissionInForce")


async def test_finished_remediations_are_left_alone_and_silences_wait() -> None:
    probe, kube = FakeProbe([False]), FakeKube(rem("Succeeded"))
    engine = Engine()
    assert await GatedLifecycle(engine, probe, kube, Recorder()).reconcile("n", "r") == "Succeeded"
    assert engine.calls == 0 and kube.patches == []

    class Keeper:
        seen = 0

        async def on_child(self, body: dict[str, Any], event_type: str | None = None) -> None:
            Keeper.seen += 1

    silences = GatedSilences(Keeper(), probe)
    await silences.on_child({"metadata": {}}, "ADDED")
    assert Keeper.seen == 0
    probe.answers = [True]
    await probe.check()
    await silences.on_child({"metadata": {}}, "ADDED")
    assert Keeper.seen == 1


async def test_switched_off_it_never_asks() -> None:
    probe = FakeProbe([False])
    probe.enabled = False
    engine = Engine()
    assert await GatedLifecycle(engine, probe, FakeKube(rem()), Recorder()).reconcile("n", "r") == "Succeeded"
    assert probe.in_force_now is None


def stamped(created: float, writes: list[tuple[float, dict[str, Any], str | None]]) -> dict[str, Any]:
    from datetime import datetime, timezone

    def ts(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    obj = rem()
    obj["metadata"]["creationTimestamp"] = ts(created)
    obj["metadata"]["managedFields"] = [{"manager": "m", "operation": "Update", "time": ts(t), "fieldsV1": f,
                                         **({"subresource": sub} if sub else {})} for t, f, sub in writes]
    return obj


async def test_what_was_written_while_the_checks_were_missing_is_refused_not_run() -> None:
    probe, engine, rec = FakeProbe([True, False, True]), Engine(), Recorder()
    await probe.check()
    ok_at = probe.last_ok_wall
    assert ok_at is not None
    await probe.check()  # the policies are gone
    await probe.check()  # back
    assert len(probe.windows) == 1 and probe.windows[0][0] == ok_at and probe.windows[0][1] is not None
    probe.windows = [(ok_at, ok_at + 10)]  # an outage of 10 s, without waiting for one
    inside = ok_at + 5
    requester = {"f:metadata": {"f:annotations": {"f:remedy.dev/requested-by": {}}}}
    kopf_only = {"f:metadata": {"f:annotations": {"f:kopf.remedy.dev/last-handled-configuration": {}}}}
    cases = {
        "created in the window": (stamped(inside, []), True),
        "requester rewritten in the window": (stamped(ok_at - 600, [(inside, requester, None)]), True),
        "spec edited in the window": (stamped(ok_at - 600, [(inside, {"f:spec": {"f:reason": {}}}, None)]), True),
        "only kopf and status written then": (stamped(ok_at - 600, [(inside, kopf_only, None),
                                                                    (inside, {"f:status": {}}, "status")]), False),
        "untouched since before": (stamped(ok_at - 600, [(ok_at - 600, requester, None)]), False),
    }
    for what, (obj, refused) in cases.items():
        kube = FakeKube(obj)
        engine.calls = 0
        result = await GatedLifecycle(engine, probe, kube, rec).reconcile("n", "r")
        if refused:
            assert result == "Failed" and engine.calls == 0, what
            st = kube.obj["status"]
            assert st["phase"] == "Failed" and "create a new Remediation" in st["message"], what
            assert next(c for c in st["conditions"] if c["type"] == "Completed")["reason"] == REASON, what
        else:
            assert result == "Succeeded" and engine.calls == 1 and kube.patches == [], what


async def test_an_api_server_that_does_not_answer_changes_no_verdict() -> None:
    """An outage of the API server is not an outage of the checks: nothing is written past
    admission while it is down, so no window opens and what was created before is not failed."""
    assert verdict(503, json.dumps({"message": "etcd leader changed"}))[0] is None
    assert verdict(429, "{}")[0] is None
    # A restarted API server refuses everything it would check until its policies are loaded.
    not_ready = json.dumps({"message": 'remediations.remedy.dev "x" is forbidden: not yet ready to handle request'})
    assert verdict(403, not_ready)[0] is None

    class Flaky(FakeProbe):
        async def probe_once(self) -> tuple[bool | None, str]:
            ok = self.answers.pop(0)
            return ok, "?"

    probe = Flaky([None, True, None, None, True])  # type: ignore[list-item]
    assert await probe.check() is False and probe.windows == []  # no answer yet: nothing runs
    assert await probe.check() is True
    assert await probe.check() is True and await probe.check() is True  # down: still in force
    assert probe.windows == [] and probe.in_force_now is True
