"""The Remediation lifecycle (lifecycle/machine.py) in process: every phase transition, the
approval wait, dry run, invalid spec, skip, over-cap, verification, the optimistic lock, and
crash-resume from each recorded intent, with a fake Store/Recorder (tests/fixtures/fakes.py)
and a scripted action. No cluster; the whole file runs in a few seconds. The e2e suite keeps
the same properties proven against the real API server (tests/e2e/test_lifecycle.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from remedy.actions.base import ActionContext, ActionDef, Applied, CannotTell, NotApplied, Observation
from remedy.api.digest import spec_digest
from remedy.api.workload import RestartWorkload
from remedy.base.constants import ANN_APPROVED_BY, ANN_APPROVED_SPEC_DIGEST, REMEDIATIONS
from remedy.base.errors import (
    AmbiguousOutcomeError,
    OverCapError,
    PermanentError,
    RetryableError,
    SkipError,
    TargetChangedError,
)
from remedy.lifecycle.machine import Lifecycle
from tests.fixtures.fakes import FakeRecorder, FakeStore

MEMBER = "restartWorkload"  # the spec member the scripted action stands in for


class Crash(BaseException):
    """The operator process dies here (BaseException: nothing in the engine may swallow it)."""


@dataclass
class Script:
    """What the scripted action does, and what it was asked to do."""

    plan_error: Exception | None = None
    execute_errors: list[Exception] = field(default_factory=list)  # raised by successive execute calls
    execute_sleep: float = 0.0
    verify_error: Exception | None = None
    observation: Observation | None = None
    plans: int = 0
    executed: list[dict[str, Any]] = field(default_factory=list)  # the plan each execute got
    observed: int = 0
    verified: int = 0
    snapshots: int = 0


def scripted_action(s: Script, *, idempotent: bool = False, verify: bool = False, observe: bool = False,
                    snapshot: bool = False, requires_approval: bool = False) -> ActionDef[RestartWorkload]:
    async def plan(ctx: ActionContext, p: RestartWorkload) -> dict[str, Any]:
        s.plans += 1
        if s.plan_error is not None:
            raise s.plan_error
        return {"change": f"restart {p.target.name}", "planNo": s.plans}

    async def execute(ctx: ActionContext, p: RestartWorkload, plan: dict[str, Any]) -> dict[str, Any]:
        s.executed.append(dict(plan))
        if s.execute_sleep:
            await asyncio.sleep(s.execute_sleep)
        if s.execute_errors:
            raise s.execute_errors.pop(0)
        return {"summary": f"restarted ({plan['change']})"}

    async def do_verify(ctx: ActionContext, p: RestartWorkload, plan: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        s.verified += 1
        if s.verify_error is not None:
            raise s.verify_error
        return {"ok": True}

    async def do_observe(ctx: ActionContext, p: RestartWorkload, plan: dict[str, Any]) -> Observation:
        s.observed += 1
        assert s.observation is not None
        return s.observation

    async def do_snapshot(ctx: ActionContext, p: RestartWorkload) -> dict[str, Any]:
        s.snapshots += 1
        return {"pods": 2}

    return ActionDef(
        name=MEMBER, params=RestartWorkload, target=lambda p: f"Deployment/{p.target.name}", plan=plan, execute=execute,
        verify=do_verify if verify else None, observe=do_observe if observe else None,
        snapshot=do_snapshot if snapshot else None, idempotent=idempotent, requires_approval=requires_approval,
    )


class World:
    """One fake API server, one recorder, and engines (operator processes) over them."""

    def __init__(self, action: ActionDef[Any], **engine: Any) -> None:
        self.store, self.recorder = FakeStore(), FakeRecorder()
        self.action = action
        self.escalations: list[str] = []
        self.engine = self.new_engine(**engine)

    def new_engine(self, **kw: Any) -> Lifecycle:
        async def escalate(obj: dict[str, Any], message: str) -> None:
            self.escalations.append(message)

        def context(obj: dict[str, Any]) -> ActionContext:
            meta = obj["metadata"]
            return ActionContext(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], kube=None)  # type: ignore[arg-type]

        return Lifecycle(store=self.store, recorder=self.recorder, registry={MEMBER: self.action}, context_factory=context,
                      escalate=escalate, **kw)

    def create(self, name: str = "r", annotations: dict[str, str] | None = None, **spec: Any) -> None:
        body = {"action": {MEMBER: {"target": {"name": "web"}}}, **spec}
        self.store.add(REMEDIATIONS, {"metadata": {"name": name, "annotations": annotations or {}}, "spec": body})

    async def reconcile(self, name: str = "r", engine: Lifecycle | None = None) -> str | None:
        return await (engine or self.engine).reconcile("ns", name)

    def digest(self, name: str = "r") -> str:
        return spec_digest(self.store.obj(REMEDIATIONS, name).get("spec"))

    def status(self, name: str = "r") -> dict[str, Any]:
        return dict(self.store.obj(REMEDIATIONS, name).get("status") or {})

    def condition(self, type_: str, name: str = "r") -> tuple[str, str]:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return c["status"], c["reason"]
        raise AssertionError(f"no condition {type_}")


# --- the happy paths: every forward transition ------------------------------------------------------


async def test_new_to_succeeded_records_intent_before_acting() -> None:
    s = Script()
    w = World(scripted_action(s, snapshot=True))
    w.create()
    assert await w.reconcile() == "Succeeded"
    assert w.store.phases("r") == ["Running", "Succeeded"]
    # Intent (plan, attempt, executor) was written in the patch that set Running, before execute ran.
    intent = next(p for _, _, p in w.store.patches if p.get("phase") == "Running")
    assert intent["plan"] == {"change": "restart web", "planNo": 1} and intent["attempts"] == 1
    assert intent["attemptId"].endswith("-1") and intent["executor"] == w.engine.executor_id
    assert intent["evidence"] == {"pods": 2}
    # The Pending record rode on the intent: one status write before acting, not two.
    assert w.store.patches[0][2]["phase"] == "Running"
    assert intent["action"] == MEMBER and intent["target"] == "Deployment/web" and "requestedBy" in intent
    assert {c["type"]: c["reason"] for c in intent["conditions"]}["Validated"] == "Valid"
    assert s.executed == [intent["plan"]]
    st = w.status()
    assert st["action"] == MEMBER and st["target"] == "Deployment/web" and st["completedAt"]
    assert st["result"]["summary"] == "restarted (restart web)"
    assert w.condition("Validated") == ("True", "Valid")
    assert w.condition("Approved") == ("True", "NotRequired")
    assert w.condition("Executed") == ("True", "Executed")
    assert w.condition("Verified") == ("Unknown", "NotConfigured")
    assert w.condition("Completed") == ("True", "Succeeded")
    assert w.recorder.reasons("r") == ["Accepted", "Started", "Succeeded"]


async def test_first_pass_from_the_event_body_reads_nothing() -> None:
    """The body the watch delivered starts a first pass: no GET, one status write before acting."""
    s = Script()
    w = World(scripted_action(s))
    w.create()
    gets = w.store.gets
    assert await w.engine.reconcile("ns", "r", w.store.obj(REMEDIATIONS, "r")) == "Succeeded"
    assert w.store.gets == gets and len(s.executed) == 1
    assert w.store.phases("r") == ["Running", "Succeeded"]


async def test_a_stale_event_body_costs_one_conflict_then_a_fresh_read() -> None:
    """Another writer moved the object after the event: the locked first write is a 409, and
    the pass starts over from a fresh read; the action runs once."""
    s = Script()
    w = World(scripted_action(s))
    w.create()
    stale = w.store.obj(REMEDIATIONS, "r")
    w.store.touch(REMEDIATIONS, "r", annotations={"someone": "else"})
    gets = w.store.gets
    assert await w.engine.reconcile("ns", "r", stale) == "Succeeded"
    assert w.store.gets == gets + 1 and len(s.executed) == 1 and s.plans == 2


async def test_an_event_body_of_a_started_object_is_not_trusted() -> None:
    """Only a first pass may start from the event's body: with a phase in status it reads fresh."""
    s = Script()
    w = World(scripted_action(s))
    w.create()
    assert await w.reconcile() == "Succeeded"
    body = w.store.obj(REMEDIATIONS, "r")
    body["status"]["phase"] = "Running"  # what an old event would show
    gets = w.store.gets
    assert await w.engine.reconcile("ns", "r", body) == "Succeeded"
    assert w.store.gets == gets + 1 and len(s.executed) == 1


async def test_a_first_pass_that_must_retry_still_records_pending() -> None:
    s = Script(plan_error=RetryableError("target API unavailable", delay=1.0))
    w = World(scripted_action(s))
    w.create()
    with pytest.raises(RetryableError):
        await w.reconcile()
    st = w.status()
    assert st["phase"] == "Pending" and st["attempts"] == 1 and st["action"] == MEMBER


async def test_evidence_is_taken_only_before_a_destructive_action() -> None:
    s = Script()
    action = scripted_action(s, snapshot=True)
    w = World(ActionDef(**{**action.__dict__, "destructive": False}))
    w.create()
    assert await w.reconcile() == "Succeeded"
    assert s.snapshots == 0 and "evidence" not in w.status()


async def test_verification_passes_through_verifying() -> None:
    s = Script()
    w = World(scripted_action(s, verify=True))
    w.create()
    assert await w.reconcile() == "Succeeded"
    assert w.store.phases("r") == ["Running", "Verifying", "Succeeded"]
    assert s.verified == 1 and w.condition("Verified") == ("True", "Verified")
    assert w.condition("Completed") == ("True", "Verified")
    assert w.status()["result"]["verification"] == {"action": {"ok": True}}


async def test_verification_failure_ends_failed_after_executing() -> None:
    s = Script(verify_error=PermanentError("pods still crash-looping", reason="StillCrashing"))
    w = World(scripted_action(s, verify=True))
    w.create()
    assert await w.reconcile() == "Failed"
    assert w.store.phases("r") == ["Running", "Verifying", "Failed"]
    assert w.condition("Executed") == ("True", "Executed")
    assert w.condition("Verified") == ("False", "StillCrashing")
    assert w.condition("Completed") == ("True", "VerificationFailed")
    assert "pods still crash-looping" in w.status()["message"]


async def test_verification_timeout_is_bounded_by_spec_timeout() -> None:
    s = Script()
    action = scripted_action(s, verify=True)

    async def slow_verify(*_: Any) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    w = World(ActionDef(**{**action.__dict__, "verify": slow_verify}))
    w.create(timeout="200ms")
    assert await w.reconcile() == "Failed"
    assert w.condition("Completed") == ("True", "VerificationTimeout")


# --- approval ---------------------------------------------------------------------------------------


async def test_approval_wait_then_approved_by_annotation() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create(approval={"required": True})
    assert await w.reconcile() == "AwaitingApproval"
    assert await w.reconcile() == "AwaitingApproval"  # still waiting: nothing planned, nothing new written
    assert s.plans == 0 and not s.executed
    assert w.condition("Approved") == ("False", "AwaitingApproval")
    assert w.recorder.reasons("r").count("AwaitingApproval") == 1
    w.store.touch(REMEDIATIONS, "r", annotations={ANN_APPROVED_BY: "alice", ANN_APPROVED_SPEC_DIGEST: w.digest()})
    assert await w.reconcile() == "Succeeded"
    assert w.store.phases("r") == ["AwaitingApproval", "Running", "Succeeded"]
    assert w.status()["approvedBy"] == "alice" and w.condition("Approved") == ("True", "Approved")


async def test_action_that_requires_approval_waits_even_when_spec_does_not_ask() -> None:
    s = Script()
    w = World(scripted_action(s, requires_approval=True))
    w.create()
    assert await w.reconcile() == "AwaitingApproval" and s.plans == 0


async def test_approval_expiry_skips() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create(approval={"required": True, "expiresAfter": "1ms"})
    await asyncio.sleep(0.01)
    assert await w.reconcile() == "Skipped"
    assert w.condition("Completed") == ("True", "ApprovalExpired") and s.plans == 0


# --- endings that never act -------------------------------------------------------------------------


async def test_dry_run_plans_and_changes_nothing() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create(dryRun=True)
    assert await w.reconcile() == "Succeeded"
    assert s.plans == 1 and not s.executed
    assert w.status()["plan"]["change"] == "restart web"
    assert w.condition("Executed") == ("False", "DryRun") and w.condition("Completed") == ("True", "DryRun")


@pytest.mark.parametrize(("spec", "says"), [
    ({"action": {}}, "exactly one action, got 0"),
    ({"action": {MEMBER: {"target": {"name": "web"}}, "scaleWorkload": {"target": {"name": "web"}, "replicas": 1}}},
     "exactly one action, got 2"),
    ({"action": {MEMBER: {"target": {"name": "web"}}}, "timeout": "soon"}, "spec.timeout"),
    ({"action": {"notify": {"message": "hello"}}}, "not supported by this operator version"),
])
async def test_invalid_spec_fails_with_what_and_why(spec: dict[str, Any], says: str) -> None:
    s = Script()
    w = World(scripted_action(s))
    w.store.add(REMEDIATIONS, {"metadata": {"name": "r"}, "spec": spec})
    assert await w.reconcile() == "Failed"
    assert w.condition("Validated") == ("False", "InvalidSpec")
    assert w.condition("Completed") == ("True", "InvalidSpec")
    assert says in w.status()["message"] and s.plans == 0


async def test_skip_from_plan_ends_skipped() -> None:
    s = Script(plan_error=SkipError("nothing to restart: 0 replicas", reason="NothingToDo"))
    w = World(scripted_action(s))
    w.create()
    assert await w.reconcile() == "Skipped"
    assert w.condition("Completed") == ("True", "NothingToDo") and not s.executed


async def test_over_cap_plan_is_refused_without_acting() -> None:
    s = Script(plan_error=OverCapError("would delete 5000 keys (maxKeys 100)"))
    w = World(scripted_action(s))
    w.create()
    assert await w.reconcile() == "Failed"
    assert w.condition("Completed") == ("True", "OverCap") and not s.executed
    assert "Running" not in w.store.phases("r")


async def test_permanent_error_from_execute_fails() -> None:
    s = Script(execute_errors=[PermanentError("deployment is paused", reason="TargetPaused")])
    w = World(scripted_action(s))
    w.create()
    assert await w.reconcile() == "Failed"
    assert w.store.phases("r") == ["Running", "Failed"]
    assert w.condition("Completed") == ("True", "TargetPaused")


async def test_final_phase_is_never_run_again_but_observes_generation() -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create()
    assert await w.reconcile() == "Succeeded"
    w.store.touch(REMEDIATIONS, "r", generation=2)
    assert await w.reconcile() == "Succeeded"
    assert len(s.executed) == 1 and s.plans == 1
    assert w.status()["observedGeneration"] == 2


# --- retries and the optimistic lock ----------------------------------------------------------------


async def test_transient_plan_error_is_retried_then_gives_up() -> None:
    s = Script(plan_error=RetryableError("redis unreachable", delay=0.1, reason="Unavailable"))
    w = World(scripted_action(s), max_attempts=3)
    w.create()
    for attempt in (1, 2):
        with pytest.raises(RetryableError):
            await w.reconcile()
        assert w.status()["attempts"] == attempt
    assert await w.reconcile() == "Failed"
    assert w.condition("Completed") == ("True", "RetriesExhausted") and w.status()["attempts"] == 3
    assert not s.executed


async def test_retryable_execute_error_goes_back_to_pending_and_plans_again() -> None:
    s = Script(execute_errors=[RetryableError("replicaset changed under us", reason="TargetChanged")])
    w = World(scripted_action(s))
    w.create(onTargetChanged="Replan")
    with pytest.raises(RetryableError):
        await w.reconcile()
    assert w.status()["phase"] == "Pending" and "TargetChanged" in w.recorder.reasons("r")
    assert await w.reconcile() == "Succeeded"
    assert [p["planNo"] for p in s.executed] == [1, 2]  # a fresh plan, because nothing changed
    assert w.status()["attempts"] == 2


async def test_target_changed_ends_skipped_naming_field_manager_and_value_by_default() -> None:
    """Issue 21: a person's edit wins. Nothing was written (the precondition failed); the
    Remediation stands down instead of planning again over the person's change."""
    changes = [{"field": "spec.replicas", "was": 2, "now": 5, "manager": "kubectl-scale", "operation": "Update",
                "subresource": "scale", "time": "2026-12-05T11:00:00Z"}]
    s = Script(execute_errors=[TargetChangedError(
        "Deployment/web changed since the plan: spec.replicas was 2 at plan time, now 5, changed by 'kubectl-scale'",
        changes=changes)])
    w = World(scripted_action(s))
    w.create()
    assert await w.reconcile() == "Skipped"
    st = w.status()
    assert w.condition("Completed") == ("True", "TargetChanged")
    assert "spec.replicas" in st["message"] and "kubectl-scale" in st["message"] and "now 5" in st["message"]
    assert st["result"] == {"targetChanged": changes}
    assert s.plans == 1 and len(s.executed) == 1  # never planned again
    assert await w.reconcile() == "Skipped" and s.plans == 1


async def test_a_concurrent_writer_loses_the_intent_race_and_nothing_runs() -> None:
    s = Script()
    action = scripted_action(s)
    w = World(action)
    w.create()

    async def plan_while_someone_writes(ctx: ActionContext, p: RestartWorkload) -> dict[str, Any]:
        w.store.touch(REMEDIATIONS, "r", annotations={"someone": "else"})  # resourceVersion moves on
        return {"change": "restart web"}

    w.engine.registry[MEMBER] = ActionDef(**{**action.__dict__, "plan": plan_while_someone_writes})
    with pytest.raises(RetryableError) as info:
        await w.reconcile()
    assert info.value.reason == "Conflict" and not s.executed
    assert "phase" not in w.status()  # the loser wrote nothing, not even its Pending record


# --- ambiguous outcomes: observed, never re-planned -------------------------------------------------


@pytest.mark.parametrize(("seen", "phase", "executes"), [
    (Applied("stamp is on the template"), "Succeeded", 1),
    (NotApplied("stamp absent"), "Succeeded", 2),
    (CannotTell("endpoint cannot say"), "Failed", 1),
])
async def test_ambiguous_execute_outcome_is_observed(seen: Observation, phase: str, executes: int) -> None:
    s = Script(execute_errors=[AmbiguousOutcomeError("connection reset after sending")], observation=seen)
    w = World(scripted_action(s, observe=True))
    w.create()
    assert await w.reconcile() == phase
    assert s.plans == 1 and s.observed == 1 and len(s.executed) == executes
    assert all(p == s.executed[0] for p in s.executed)  # the recorded plan, never a new one
    assert "OutcomeUnknown" in w.recorder.reasons("r")
    if phase == "Failed":
        assert w.condition("Completed") == ("True", "OutcomeUnknown")
        assert w.condition("Executed") == ("Unknown", "OutcomeUnknown")
        assert "EscalationRequired" in w.recorder.reasons("r") and len(w.escalations) == 1


async def test_spec_timeout_cancels_execute_and_says_what_happened() -> None:
    s = Script(execute_sleep=5, observation=NotApplied("stamp absent"))
    w = World(scripted_action(s, observe=True))
    w.create(timeout="100ms")
    assert await w.reconcile() == "Failed"
    assert w.condition("Completed") == ("True", "Timeout") and w.condition("Executed") == ("False", "Timeout")
    assert "observed not applied" in w.status()["message"] and len(s.executed) == 1


# --- crash and resume from each recorded intent -----------------------------------------------------


async def crash_at(w: World, point: str) -> None:
    async def die(obj: dict[str, Any]) -> None:
        raise Crash(point)

    w.engine.hooks[point] = die
    with pytest.raises(Crash):
        await w.reconcile()
    assert w.status()["phase"] == "Running" and w.status()["executor"] == w.engine.executor_id
    await asyncio.sleep(0.01)  # older than the successor's 3 x heartbeat_interval


def successor(w: World, name: str = "r") -> Lifecycle:
    """The next operator process, which has watched the dead one's heartbeat stay silent for a
    second by its own (monotonic) clock: first sight at t=0, now t=1."""
    engine = w.new_engine(executor_id="successor", heartbeat_interval=0.001)
    now = [0.0]
    engine.liveness.clock = lambda: now[0]
    assert engine.liveness.silent_for(("ns", name), w.status(name)) == 0.0
    now[0] = 1.0
    return engine


@pytest.mark.parametrize("point", ["after_intent", "after_action"])
async def test_crash_resume_idempotent_action_reruns_the_recorded_plan(point: str) -> None:
    s = Script()
    w = World(scripted_action(s, idempotent=True))
    w.create()
    await crash_at(w, point)
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    assert s.plans == 1, "resumed by planning again"
    assert s.executed == [s.executed[0]] * len(s.executed) and len(s.executed) == (1 if point == "after_intent" else 2)
    assert w.recorder.reasons("r").count("OutcomeUnknown") == 1 and "ReApplying" in w.recorder.reasons("r")
    # the re-run is counted as an interruption, not as a failed attempt
    assert (w.status()["attempts"], w.status()["interruptions"]) == (1, 1)


async def test_executor_deaths_do_not_use_up_the_attempt_budget() -> None:
    """A SIGKILL storm must not turn into RetriesExhausted without the plan ever being sent."""
    s = Script()
    w = World(scripted_action(s, idempotent=True))
    w.create()
    await crash_at(w, "after_intent")
    status = w.store.objects[(REMEDIATIONS, "ns", "r")]["status"]
    # as after many kills: every attempt budget spent, interruptions past max_attempts
    status["attempts"], status["interruptions"] = w.engine.max_attempts, w.engine.max_attempts + 1
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    assert s.plans == 1 and len(s.executed) == 1


async def test_poison_pill_stops_after_max_interruptions() -> None:
    s = Script()
    w = World(scripted_action(s, idempotent=True))
    w.create()
    await crash_at(w, "after_intent")
    engine = successor(w)
    w.store.objects[(REMEDIATIONS, "ns", "r")]["status"]["interruptions"] = engine.max_interruptions
    assert await w.reconcile(engine=engine) == "Failed"
    assert w.condition("Completed") == ("True", "InterruptionsExhausted") and s.executed == []


@pytest.mark.parametrize("point", ["after_intent", "after_action"])
async def test_crash_resume_non_idempotent_action_is_not_run_again(point: str) -> None:
    s = Script()
    w = World(scripted_action(s))
    w.create()
    await crash_at(w, point)
    executed_before = len(s.executed)
    assert await w.reconcile(engine=successor(w)) == "Failed"
    assert len(s.executed) == executed_before and s.plans == 1
    assert w.condition("Completed") == ("True", "OutcomeUnknown")
    assert "executor" in w.status()["message"] and "stopped during attempt" in w.status()["message"]
    assert "EscalationRequired" in w.recorder.reasons("r") and len(w.escalations) == 1


async def test_crash_resume_with_a_probe_that_sees_the_change_applied_does_not_resend() -> None:
    s = Script(observation=Applied("stamp is on the template"))
    w = World(scripted_action(s, observe=True))
    w.create()
    await crash_at(w, "after_action")
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    assert len(s.executed) == 1 and s.observed == 1 and "ObservedApplied" in w.recorder.reasons("r")


async def test_crash_during_verification_resumes_verification_only() -> None:
    s = Script()
    action = scripted_action(s, verify=True)
    w = World(action)
    w.create()
    calls = 0

    async def verify_dies_once(*args: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Crash("verifying")
        return {"ok": True}

    w.engine.registry[MEMBER] = ActionDef(**{**action.__dict__, "verify": verify_dies_once})
    with pytest.raises(Crash):
        await w.reconcile()
    assert w.status()["phase"] == "Verifying"
    await asyncio.sleep(0.01)
    nxt = successor(w)
    nxt.registry[MEMBER] = w.engine.registry[MEMBER]
    assert await w.reconcile(engine=nxt) == "Succeeded"
    assert len(s.executed) == 1 and s.plans == 1 and calls == 2


async def test_a_live_executor_elsewhere_is_left_alone() -> None:
    s = Script(execute_sleep=0.3, execute_errors=[])
    w = World(scripted_action(s, idempotent=True))
    w.create()
    running = asyncio.create_task(w.reconcile())
    while w.store.obj(REMEDIATIONS, "r").get("status", {}).get("phase") != "Running":
        await asyncio.sleep(0.01)
    other = w.new_engine(executor_id="other")  # default heartbeat: the first executor is fresh
    with pytest.raises(RetryableError) as info:
        await w.reconcile(engine=other)
    assert info.value.reason == "InProgressElsewhere"
    assert await running == "Succeeded" and len(s.executed) == 1
