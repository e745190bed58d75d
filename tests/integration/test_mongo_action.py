"""killSlowMongoOps through real pymongo (AsyncMongoClient) against the wire-protocol double.

Why a double: no MongoDB server that implements currentOp/killOp installs from the registries
available here, so remedy_devenv.mongowire speaks the protocol and simulates running
operations, including the internal ones (ReplBatcher, WiredTiger threads, the oplog getMore of
a secondary's "MongoDB Internal Client") that the naive runbook filter would also match.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from remedy.actions.base import Applied, NotApplied
from remedy.actions.keyset import SAMPLE_SIZE, KeySetTally
from remedy.actions.mongo import KILL_SLOW_MONGO_OPS
from remedy.base.errors import InvalidSpecError, OverCapError, RetryableError, SkipError
from remedy_devenv.mongowire import CommandError, Conn, MongoWireServer
from tests.fixtures.actions import make_ctx, run_action

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wire() -> Iterator[MongoWireServer]:
    srv = MongoWireServer()
    with srv.running():
        yield srv


@pytest.fixture
def server(wire: MongoWireServer) -> MongoWireServer:
    wire.remove_injected()
    wire.__dict__.pop("COMMANDS", None)
    return wire


def ctx_for(server: MongoWireServer) -> Any:
    return make_ctx({("mongo", "uri"): server.uri})


def params(**kw: Any) -> dict[str, Any]:
    return {"connection": {"uriSecretRef": {"name": "mongo", "key": "uri"}, "timeout": "3s"},
            "minSecsRunning": 30, **kw}


def internal_opids(server: MongoWireServer) -> set[int]:
    return {d["opid"] for d in server.ops() if d.get("ns", "").startswith("local.")}


async def test_slow_ops_killed_fast_and_internal_untouched(server: MongoWireServer) -> None:
    slow = server.add_op(secs_running=45, command={"find": "orders", "filter": {"email": "a@b.c"}})
    slower = server.add_op(secs_running=300, op="update", ns="inventory.stock")
    fast = server.add_op(secs_running=3)
    admin_op = server.add_op(secs_running=400, ns="admin.system.users")
    ours = server.add_op(secs_running=400, appName="remedy-operator")
    internals = internal_opids(server)
    assert len(internals) == 3

    plan, result = await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params())

    assert [o["opid"] for o in plan["ops"]] == [slower, slow]
    assert result is not None and result["killed"] == 2
    assert sorted(server.killed) == sorted([slow, slower])
    assert {fast, admin_op, ours} | internals <= {d["opid"] for d in server.ops()}
    ev = {e["opid"]: e for e in result["ops"]}
    assert ev[slow]["outcome"] == "killed" and ev[slow]["ns"] == "inventory.orders" and ev[slow]["op"] == "query"
    assert ev[slow]["secsRunning"] >= 45 and ev[slow]["client"] == "10.0.0.5:5000"
    assert ev[slow]["appName"] == "inventory-service" and ev[slow]["command"] == "find"
    assert "a@b.c" not in repr(plan) + repr(result)  # command values never leave the server


async def test_filters_ns_op_type_and_app(server: MongoWireServer) -> None:
    target = server.add_op(secs_running=60, ns="inventory.orders", op="query", appName="inventory-service")
    server.add_op(secs_running=60, ns="billing.invoices", op="query", appName="inventory-service")
    server.add_op(secs_running=60, ns="inventory.orders", op="insert", appName="inventory-service")
    server.add_op(secs_running=60, ns="inventory.orders", op="query", appName="reporting")

    plan, _ = await run_action(
        KILL_SLOW_MONGO_OPS, ctx_for(server),
        params(namespace=r"^inventory\.", opTypes=["query", "getmore"], appName="inventory-service"), dry_run=True,
    )
    assert [o["opid"] for o in plan["ops"]] == [target]


async def test_dry_run_kills_nothing(server: MongoWireServer) -> None:
    server.add_op(secs_running=90)
    kills_before = server.commands["killOp"]
    plan, result = await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params(), dry_run=True)
    assert plan["count"] == 1 and result is None
    assert server.killed == [] and server.commands["killOp"] == kills_before


async def test_over_cap_refused_nothing_killed(server: MongoWireServer) -> None:
    for _ in range(3):
        server.add_op(secs_running=90)
    with pytest.raises(OverCapError, match="3 operations match, more than maxOps 2"):
        await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params(maxOps=2))
    assert server.killed == []


async def test_only_internal_slow_ops_is_nothing_to_do(server: MongoWireServer) -> None:
    with pytest.raises(SkipError):
        await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params())
    assert server.killed == []


async def test_execute_skips_ops_gone_or_replaced(server: MongoWireServer) -> None:
    finished = server.add_op(secs_running=60)
    recycled = server.add_op(secs_running=60)
    plan, _ = await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params(), dry_run=True)
    server.kill(finished)  # it ended on its own between plan and execute
    # "mongod restarted": the same opid now belongs to a younger operation
    server._ops[recycled].started = server.clock() - 5
    server.killed.clear()

    p = KILL_SLOW_MONGO_OPS.params.model_validate(params())
    result = await KILL_SLOW_MONGO_OPS.execute(ctx_for(server), p, plan)
    assert {e["outcome"] for e in result["ops"]} == {"gone"}
    assert server.killed == [] and recycled in {d["opid"] for d in server.ops()}
    # idempotent: running the recorded plan again is harmless
    again = await KILL_SLOW_MONGO_OPS.execute(ctx_for(server), p, plan)
    assert again["killed"] == 0


async def test_falls_back_to_current_op_command(server: MongoWireServer) -> None:
    def no_stage(self: MongoWireServer, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        raise CommandError(40324, "Location40324", "Unrecognized pipeline stage name: '$currentOp'")

    server.COMMANDS = {**MongoWireServer.COMMANDS, "aggregate": no_stage}
    slow = server.add_op(secs_running=50)
    server.add_op(secs_running=2)
    _, result = await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params())
    assert result is not None and [e["opid"] for e in result["ops"]] == [slow]
    assert server.killed == [slow] and server.commands["currentOp"] >= 2


async def test_invalid_namespace_regex(server: MongoWireServer) -> None:
    with pytest.raises(InvalidSpecError):
        await run_action(KILL_SLOW_MONGO_OPS, ctx_for(server), params(namespace="(oops"))


async def test_unreachable_is_retryable_without_credentials() -> None:
    from remedy_devenv.services import free_port

    ctx = make_ctx({("mongo", "uri"): f"mongodb://admin:hunter2pw@127.0.0.1:{free_port()}/?directConnection=true"})
    p = params()
    p["connection"]["timeout"] = "1s"
    with pytest.raises(RetryableError) as info:
        await run_action(KILL_SLOW_MONGO_OPS, ctx, p)
    assert "hunter2pw" not in str(info.value)


async def test_many_ops_leave_a_bounded_plan_and_one_current_op_per_batch(
    server: MongoWireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 ops, more than the sample: status holds the count, 20 of them and a digest of all 60;
    execute re-derives them in one currentOp and re-reads them in batches of 25 (the server's
    own command counter is the witness), then kills each once."""
    from remedy.actions import mongo as mongo_action

    monkeypatch.setattr(mongo_action, "BATCH", 25)
    opids = [server.add_op(secs_running=40 + i) for i in range(SAMPLE_SIZE + 40)]
    ctx, p = ctx_for(server), KILL_SLOW_MONGO_OPS.params.model_validate(params(maxOps=100))
    plan = await KILL_SLOW_MONGO_OPS.plan(ctx, p)
    expected = KeySetTally()
    for d in server.ops():
        if d["opid"] in opids:
            expected.add(f"{d['opid']}|{d['connectionId']}|{d['client']}|{d['ns']}|{d['op']}")
    assert plan["count"] == 60 and len(plan["ops"]) == SAMPLE_SIZE and plan["opsDigest"] == expected.digest
    assert plan["opsSampleComplete"] is False and plan["filters"]["minSecsRunning"] == 30
    reads_before = server.commands["aggregate"]

    result = await KILL_SLOW_MONGO_OPS.execute(ctx, p, plan)

    assert server.commands["aggregate"] - reads_before == 1 + 3  # re-derive once, re-read 60 in batches of 25
    assert sorted(server.killed) == sorted(opids)
    assert result["killed"] == 60 and result["gone"] == 0 and result["signalledDigest"] == expected.digest
    assert result["found"] == {"sameSet": True, "planned": 60, "acted": 60, "difference": 0}
    assert len(result["ops"]) == SAMPLE_SIZE and {o["outcome"] for o in result["ops"]} == {"killed"}


async def test_op_past_the_threshold_only_after_the_plan_is_left_alone(server: MongoWireServer) -> None:
    """An op 29.5 s old at plan time (threshold 30 s) matches the filters by the time execute
    runs, but was not past the threshold at plan time: it is not killed."""
    planned = server.add_op(secs_running=45)
    younger = server.add_op(secs_running=29.5)
    ctx, p = ctx_for(server), KILL_SLOW_MONGO_OPS.params.model_validate(params())
    plan = await KILL_SLOW_MONGO_OPS.plan(ctx, p)
    assert [o["opid"] for o in plan["ops"]] == [planned]
    loop = asyncio.get_running_loop()
    end = loop.time() + 5
    while not any(d["opid"] == younger and d["secs_running"] >= 30 for d in server.ops()):
        assert loop.time() < end, "the younger op never crossed 30 s"
        await asyncio.sleep(0.05)

    result = await KILL_SLOW_MONGO_OPS.execute(ctx, p, plan)
    assert server.killed == [planned] and result["killed"] == 1
    assert younger in {d["opid"] for d in server.ops()}


async def test_execute_uses_the_plans_filters_not_a_later_spec_edit(server: MongoWireServer) -> None:
    target = server.add_op(secs_running=60, appName="inventory-service")
    other = server.add_op(secs_running=60, appName="reporting")
    ctx = ctx_for(server)
    plan, _ = await run_action(KILL_SLOW_MONGO_OPS, ctx, params(appName="inventory-service"), dry_run=True)
    widened = KILL_SLOW_MONGO_OPS.params.model_validate(params(maxOps=100))
    result = await KILL_SLOW_MONGO_OPS.execute(ctx, widened, plan)
    assert server.killed == [target] and result["killed"] == 1
    assert other in {d["opid"] for d in server.ops()}


async def test_observe_before_and_after_execute(server: MongoWireServer) -> None:
    slow = server.add_op(secs_running=60)
    ctx, p = ctx_for(server), KILL_SLOW_MONGO_OPS.params.model_validate(params())
    plan = await KILL_SLOW_MONGO_OPS.plan(ctx, p)
    assert KILL_SLOW_MONGO_OPS.observe is not None
    before = await KILL_SLOW_MONGO_OPS.observe(ctx, p, plan)
    assert isinstance(before, NotApplied) and str(slow) in before.detail
    await KILL_SLOW_MONGO_OPS.execute(ctx, p, plan)
    assert isinstance(await KILL_SLOW_MONGO_OPS.observe(ctx, p, plan), Applied)
    again = await KILL_SLOW_MONGO_OPS.execute(ctx, p, plan)  # re-running the recorded plan kills nothing
    assert again["killed"] == 0 and server.killed == [slow]


async def test_a_plan_that_lists_every_op_still_resumes(server: MongoWireServer) -> None:
    """An attempt Running across an upgrade carries the old plan (every op listed, no bound)."""
    slow = server.add_op(secs_running=60)
    later = server.add_op(secs_running=60)
    ctx, p = ctx_for(server), KILL_SLOW_MONGO_OPS.params.model_validate(params())
    plan = await KILL_SLOW_MONGO_OPS.plan(ctx, p)
    old = {"ops": [o for o in plan["ops"] if o["opid"] == slow], "count": 1, "change": "as before"}
    assert KILL_SLOW_MONGO_OPS.observe is not None
    assert isinstance(await KILL_SLOW_MONGO_OPS.observe(ctx, p, old), NotApplied)
    result = await KILL_SLOW_MONGO_OPS.execute(ctx, p, old)
    assert result["killed"] == 1 and result["found"]["sameSet"] is None and server.killed == [slow]
    assert isinstance(await KILL_SLOW_MONGO_OPS.observe(ctx, p, old), Applied)
    assert later in {d["opid"] for d in server.ops()}
