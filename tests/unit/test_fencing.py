"""Issue 21: one executor at a time by token (epoch, compare-and-swap), staleness by the
observer's own monotonic clock (engine/fencing.py), in process with the fake store.

The frozen executor is an engine whose pass blocks at a hook point (``after_fence``: its epoch
just confirmed, its write to the target not yet sent) while a successor takes the attempt
over; releasing it is SIGCONT. The same properties on the real control plane with two operator
processes and SIGSTOP/SIGCONT: tests/reliability/test_fencing.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from remedy.actions.base import ActionContext, ActionDef, NotApplied
from remedy.base.constants import REMEDIATIONS
from remedy.base.errors import RetryableError, TargetChangedError
from remedy.lifecycle.fencing import FencedOutError, Liveness, fenced_patch
from tests.fixtures.fakes import FakeStore
from tests.unit.test_engine_lifecycle import Script, World, scripted_action, successor


async def freeze_at(w: World, point: str) -> tuple[asyncio.Task[str | None], asyncio.Event]:
    """Start the first executor's pass and hold it at ``point`` (SIGSTOP); set the event to thaw."""
    frozen, thaw = asyncio.Event(), asyncio.Event()

    async def stop(obj: dict[str, Any]) -> None:
        frozen.set()
        await thaw.wait()

    w.engine.hooks[point] = stop
    task = asyncio.create_task(w.reconcile())
    await asyncio.wait_for(frozen.wait(), 5)
    return task, thaw


@pytest.mark.parametrize("woken_execute", ["precondition fails", "receiver deduplicates"])
async def test_a_woken_stale_executor_never_overwrites_the_successors_outcome(
        woken_execute: str, caplog: pytest.LogCaptureFixture) -> None:
    s = Script(observation=NotApplied("replicas still 2"))
    w = World(scripted_action(s, idempotent=True, observe=True))
    w.create()
    first, thaw = await freeze_at(w, "after_fence")  # epoch confirmed, write not sent
    assert w.status()["epoch"] == 1 and w.status()["phase"] == "Running"

    nxt = successor(w)
    assert await w.reconcile(engine=nxt) == "Succeeded"
    done = w.status()
    assert done["epoch"] == 2 and done["executor"] == "successor" and len(s.executed) == 1

    if woken_execute == "precondition fails":
        s.execute_errors.append(TargetChangedError("Deployment/web changed since the plan: spec.replicas was 2, now 3"))
    patches_before = len(w.store.patches)
    with caplog.at_level(logging.WARNING, logger="remedy.engine"):
        thaw.set()  # SIGCONT
        assert await asyncio.wait_for(first, 5) is None
    assert len(s.executed) == 2  # it did reach its (guarded) write
    assert len(w.store.patches) == patches_before, "the stale executor wrote status"
    assert w.status() == done and w.status()["phase"] == "Succeeded"
    line = next(r.getMessage() for r in caplog.records if "fenced out" in r.getMessage())
    assert "now belongs to executor successor epoch 2" in line and "stale epoch 1" in line
    assert await w.reconcile() == "Succeeded"  # its next pass reads the final object and stops


async def test_a_stale_executor_that_wakes_before_acting_stops_at_the_fence() -> None:
    """Frozen right after intent (before confirming): the confirmation itself fails."""
    s = Script(observation=NotApplied("not yet"))
    w = World(scripted_action(s, idempotent=True, observe=True))
    w.create()
    first, thaw = await freeze_at(w, "after_intent")
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    thaw.set()
    assert await asyncio.wait_for(first, 5) is None
    assert len(s.executed) == 1  # only the successor's


async def test_staleness_is_judged_by_the_observers_monotonic_clock_not_the_timestamp() -> None:
    s = Script(execute_sleep=0.2)
    w = World(scripted_action(s, idempotent=True))
    w.create()
    running = asyncio.create_task(w.reconcile())
    while (w.store.obj(REMEDIATIONS, "r").get("status") or {}).get("phase") != "Running":
        await asyncio.sleep(0.01)
    # The executor's host clock is an hour behind: by wall clocks its heartbeat looks dead.
    w.store.objects[(REMEDIATIONS, "ns", "r")]["status"]["heartbeatAt"] = "2026-01-01T00:00:00.000Z"
    other = w.new_engine(executor_id="other")
    now = [100.0]
    other.liveness.clock = lambda: now[0]
    with pytest.raises(RetryableError) as info:
        await w.reconcile(engine=other)  # first sight: it has not been silent for us at all
    assert info.value.reason == "InProgressElsewhere"
    now[0] += 3 * other.heartbeat_interval - 0.1
    with pytest.raises(RetryableError):
        await w.reconcile(engine=other)  # same heartbeat value, but not silent long enough yet
    assert await running == "Succeeded" and len(s.executed) == 1


def test_liveness_restarts_the_window_whenever_the_heartbeat_value_changes() -> None:
    now = [0.0]
    live = Liveness(clock=lambda: now[0])
    st = {"executor": "a", "epoch": 1, "heartbeatAt": "x"}
    assert live.silent_for(("ns", "r"), st) == 0.0
    now[0] = 5.0
    assert live.silent_for(("ns", "r"), st) == 5.0
    assert live.silent_for(("ns", "r"), {**st, "heartbeatAt": "y"}) == 0.0  # a beat: alive again
    now[0] = 6.0
    assert live.silent_for(("ns", "r"), {**st, "heartbeatAt": "y"}) == 1.0
    assert live.silent_for(("ns", "r"), {**st, "heartbeatAt": "y", "epoch": 2}) == 0.0  # a takeover


async def test_fenced_patch_is_a_compare_and_swap_on_the_epoch() -> None:
    store = FakeStore()
    obj = store.add(REMEDIATIONS, {"metadata": {"name": "r"}, "status": {"executor": "a", "epoch": 1}})
    store.touch(REMEDIATIONS, "r", annotations={"x": "y"})  # our copy is stale: 409, re-read, retry
    obj = await fenced_patch(store, REMEDIATIONS, obj, {"heartbeatAt": "t1"}, "a", 1)
    assert obj["status"]["heartbeatAt"] == "t1"
    await store.patch_status(REMEDIATIONS, "ns", "r", {"executor": "b", "epoch": 2})
    with pytest.raises(FencedOutError, match="executor b epoch 2"):
        await fenced_patch(store, REMEDIATIONS, obj, {"phase": "Pending"}, "a", 1)
    assert store.obj(REMEDIATIONS, "r")["status"].get("phase") is None


async def test_each_claim_takes_a_new_epoch() -> None:
    s = Script()
    w = World(scripted_action(s, idempotent=True))
    w.create()
    w.engine.hooks["after_intent"] = _crash
    with pytest.raises(_Crash):
        await w.reconcile()
    assert w.status()["epoch"] == 1
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    assert w.status()["epoch"] == 2 and w.status()["executor"] == "successor"


class _Crash(BaseException):
    pass


async def _crash(obj: dict[str, Any]) -> None:
    raise _Crash()


async def test_a_later_mutating_step_confirms_the_epoch_first() -> None:
    """An action with two mutating steps (memory: template then pods; terminate: cancel then
    terminate) frozen between them: after a takeover its second step never runs."""
    s = Script(observation=NotApplied("step one only"))
    base = scripted_action(s, idempotent=True, observe=True)
    steps: list[str] = []
    frozen, thaw = asyncio.Event(), asyncio.Event()

    async def two_steps(ctx: ActionContext, p: Any, plan: dict[str, Any]) -> dict[str, Any]:
        steps.append(f"one:{ctx.name}")
        if not frozen.is_set():
            frozen.set()
            await thaw.wait()
        await ctx.still_mine()
        steps.append("two")
        return {"summary": "both steps"}

    w = World(ActionDef(**{**base.__dict__, "execute": two_steps}))
    w.create()
    # Confirmations are rate-limited to one per interval / 5 of the executor's monotonic clock; a
    # takeover needs 3 silent intervals, so a real freeze always outlasts the limit: so does this one.
    clock = [0.0]
    w.engine.liveness.clock = lambda: clock[0]
    first = asyncio.create_task(w.reconcile())
    await asyncio.wait_for(frozen.wait(), 5)
    assert await w.reconcile(engine=successor(w)) == "Succeeded"
    assert steps == ["one:r", "one:r", "two"]
    clock[0] += 3 * w.engine.heartbeat_interval  # the freeze, by the frozen process's own clock
    thaw.set()
    assert await asyncio.wait_for(first, 5) is None
    assert steps == ["one:r", "one:r", "two"], "the stale executor ran its second step"
    assert w.status()["executor"] == "successor" and w.status()["phase"] == "Succeeded"
