"""The MongoDB wire test double, driven by real pymongo clients over real sockets.

These pin the behaviour killSlowMongoOps relies on: currentOp filter semantics (including the
trap that the command name's value is ignored), $currentOp aggregation, killOp, the internal
operations a killer must skip, and MongoDB's error shape for unknown commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from pymongo.errors import OperationFailure

from remedy_devenv.mongowire import INTERNAL_APP, MongoWireServer

# What a careful killer asks for: slow, not internal, not replication.
SAFE_FILTER: dict[str, Any] = {
    "secs_running": {"$gte": 30},
    "op": {"$ne": "none"},
    "appName": {"$ne": INTERNAL_APP},
    "ns": {"$not": {"$regex": "^(local|admin|config)\\."}},
}


@pytest.fixture(scope="module")
def server() -> Iterator[MongoWireServer]:
    srv = MongoWireServer()
    with srv.running():
        yield srv


@pytest.fixture
def client(server: MongoWireServer) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    server.remove_injected()
    c: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        server.uri, serverSelectionTimeoutMS=5000, appname="remedy-test")
    yield c
    c.close()


def test_hello_and_ping(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True and hello["maxWireVersion"] >= 9
    assert client.admin.command("ping")["ok"] == 1.0
    assert client.admin.command("buildInfo")["version"].startswith("7.")


def test_current_op_filter_returns_slow_ops(server: MongoWireServer,
                                            client: pymongo.MongoClient[dict[str, Any]]) -> None:
    slow = {server.add_op(secs_running=45), server.add_op(secs_running=31, ns="inventory.stock")}
    server.add_op(secs_running=2)
    res = client.admin.command("currentOp", 1, secs_running={"$gte": 30})
    got = res["inprog"]
    # the runbook's naive filter also matches internal operations: the trap killers must avoid
    assert {d["desc"] for d in got} >= {"ReplBatcher", "WT RecordStoreThread: local.oplog.rs"}
    assert any(d.get("appName") == INTERNAL_APP for d in got)
    safe = client.admin.command({"currentOp": 1, **SAFE_FILTER})["inprog"]
    assert {d["opid"] for d in safe} == slow
    doc = safe[0]
    for name in ("type", "host", "desc", "connectionId", "client", "appName", "clientMetadata",
                 "active", "currentOpTime", "opid", "secs_running", "microsecs_running", "op",
                 "ns", "command", "planSummary", "numYields", "waitingForLock", "lockStats"):
        assert name in doc, name
    assert isinstance(doc["opid"], int) and doc["secs_running"] >= 30


def test_current_op_ignores_the_command_value_like_mongod(
        server: MongoWireServer, client: pymongo.MongoClient[dict[str, Any]]) -> None:
    fast = server.add_op(secs_running=1)
    res = client.admin.command("currentOp", {"secs_running": {"$gte": 30}})
    assert fast in {d.get("opid") for d in res["inprog"]}


def test_current_op_operators_and_all_flag(server: MongoWireServer,
                                           client: pymongo.MongoClient[dict[str, Any]]) -> None:
    a = server.add_op(secs_running=40, appName="orders-service", ns="orders.outbox")
    b = server.add_op(secs_running=50, appName="inventory-service")
    q = {"currentOp": 1, "appName": {"$in": ["orders-service"]},
         "clientMetadata.application.name": {"$exists": True}}
    assert [d["opid"] for d in client.admin.command(q)["inprog"]] == [a]
    q = {"currentOp": 1, "ns": {"$regex": "^inventory\\."}, "secs_running": {"$gt": 45, "$lt": 60}}
    assert [d["opid"] for d in client.admin.command(q)["inprog"]] == [b]
    default = client.admin.command("currentOp")["inprog"]
    everything = client.admin.command({"currentOp": 1, "$all": True})["inprog"]
    assert all(d["active"] for d in default)
    assert any(not d["active"] for d in everything)
    # the caller's own currentOp shows up, as on a real server, and is never slow
    own = [d for d in default if d.get("appName") == "remedy-test"]
    assert own and own[0]["secs_running"] == 0


def test_current_op_aggregate(server: MongoWireServer,
                              client: pymongo.MongoClient[dict[str, Any]]) -> None:
    slow = server.add_op(secs_running=90)
    pipeline: list[dict[str, Any]] = [
        {"$currentOp": {"allUsers": True, "idleConnections": False}}, {"$match": SAFE_FILTER}]
    docs = list(client.admin.aggregate(pipeline))
    assert [d["opid"] for d in docs] == [slow]
    raw = client.admin.command({"aggregate": 1, "pipeline": pipeline, "cursor": {}})
    assert raw["cursor"]["id"] == 0 and raw["cursor"]["ns"] == "admin.$cmd.aggregate"
    with pytest.raises(OperationFailure) as exc:
        client.inventory.command({"aggregate": 1, "pipeline": pipeline, "cursor": {}})
    assert exc.value.code == 73


def test_kill_op_removes_the_op(server: MongoWireServer,
                                client: pymongo.MongoClient[dict[str, Any]]) -> None:
    opid = server.add_op(secs_running=60)
    res = client.admin.command("killOp", 1, op=opid)
    assert res == {"info": "attempting to kill op", "ok": 1.0}
    assert opid not in {d.get("opid") for d in client.admin.command("currentOp")["inprog"]}
    stats = client.admin.command("remedyStats")
    assert stats["killed"] == [opid] and stats["killedOps"][0]["opid"] == opid
    # like mongod: killing an unknown opid still "attempts"; non-admin databases refuse
    assert client.admin.command("killOp", 1, op=424242)["ok"] == 1.0
    with pytest.raises(OperationFailure) as exc:
        client.inventory.command("killOp", 1, op=opid)
    assert exc.value.code == 13


def test_inject_over_the_wire(client: pymongo.MongoClient[dict[str, Any]]) -> None:
    opid = client.admin.command("remedyInjectOp", 1, ns="shop.carts", secs_running=120,
                                appName="cart-service")["opid"]
    got = client.admin.command("currentOp", 1, opid=opid)["inprog"]
    assert got[0]["ns"] == "shop.carts" and got[0]["secs_running"] >= 120


def test_unknown_command_is_command_not_found(
        client: pymongo.MongoClient[dict[str, Any]]) -> None:
    with pytest.raises(OperationFailure) as exc:
        client.admin.command("frobnicate")
    assert exc.value.code == 59
    # insert_many travels as an OP_MSG kind-1 document sequence: parsed, then refused cleanly
    with pytest.raises(OperationFailure) as exc:
        client.shop.carts.insert_many([{"a": 1}, {"a": 2}])
    assert exc.value.code == 59


async def test_async_client(server: MongoWireServer) -> None:
    server.remove_injected()
    opid = server.add_op(secs_running=33)
    client: pymongo.AsyncMongoClient[dict[str, Any]] = pymongo.AsyncMongoClient(
        server.uri, serverSelectionTimeoutMS=5000)
    try:
        res = await client.admin.command({"currentOp": 1, **SAFE_FILTER})
        assert [d["opid"] for d in res["inprog"]] == [opid]
        await client.admin.command("killOp", 1, op=opid)
        assert (await client.admin.command("remedyStats"))["killed"] == [opid]
    finally:
        await client.close()
