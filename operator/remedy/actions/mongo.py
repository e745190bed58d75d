"""killSlowMongoOps (runbook 004): ``db.currentOp({secs_running: {$gte: 30}})`` then ``db.killOp``.

Why a module of its own: the runbook's one-liner also matches MongoDB's own machinery
(replication batchers, WiredTiger threads, the oplog fetchers of secondaries, monitors) and
killing those hurts more than the slow query. So every operation passes two filters: a
``$match`` the server applies, and the same rules re-checked here in Python, which are the
authority. Execute re-reads each planned opid right before killing it, and kills it only if
it is still the same operation (ns, op, connection, and running at least as long as planned),
because opids restart from zero when mongod restarts.

The client comes from ``ctx.connectors.mongo`` (pymongo's AsyncMongoClient, appName
``OPERATOR_APP_NAME``, timeouts applied). Evidence carries only the top-level command name of an
operation, never the command's values (they may hold customer data).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..clients.lazy import lazy_module

if TYPE_CHECKING:
    import pymongo
else:
    pymongo = lazy_module("pymongo")  # imported when a MongoDB action first runs (clients/lazy.py)

from ..api.common import parse_duration
from ..api.mongo import KillSlowMongoOps
from ..base.constants import OPERATOR_APP_NAME
from ..base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RetryableError,
    SkipError,
)
from .base import ActionContext, ActionDef, Applied, Evidence, NotApplied, Observation

OPERATOR_APP = OPERATOR_APP_NAME
INTERNAL_APP = "MongoDB Internal Client"
# ns prefixes of replication, auth and cluster metadata; config. is excluded too because
# config.system.sessions and config.transactions are maintained by the server itself.
INTERNAL_NS = re.compile(r"^(local|admin|config)\.")
# Server threads (not client connections) that show up in currentOp.
INTERNAL_DESC = re.compile(
    r"^(ReplBatcher|rsSync|rsBackgroundSync|ReplWriterWorker|repl|oplog|WT|monitoring|"
    r"TTLMonitor|clientcursormon|Checkpointer|JournalFlusher|FreeMonHTTP|LogicalSessionCache|"
    r"NoopWriter|SyncSourceFeedback|BackgroundSync|ApplyBatchFinalizer|replexec|ftdc|"
    r"waitForMajority|TopologyVersionObserver|PeriodicTask)",
    re.IGNORECASE,
)
# Codes meaning "this server has no $currentOp aggregation": fall back to the command.
NO_CURRENTOP_STAGE = frozenset({59, 168, 40324, 40602})
AUTH_CODES = frozenset({18})  # AuthenticationFailed
UNAUTHORIZED_CODES = frozenset({13})


def _target(p: KillSlowMongoOps) -> str:
    return f"mongo ops >= {p.min_secs_running}s" + (f" on /{p.namespace}/" if p.namespace else "")


def _server_match(p: KillSlowMongoOps) -> dict[str, Any]:
    """What the server filters on; a superset of what we kill (Python re-checks everything)."""
    ns: list[dict[str, Any]] = [{"ns": {"$not": {"$regex": INTERNAL_NS.pattern}}}]
    if p.namespace is not None:
        ns.append({"ns": {"$regex": p.namespace}})
    op: dict[str, Any] = {"$ne": "none"}
    if p.op_types:
        op = {"$in": list(p.op_types)}
    app: dict[str, Any] = {"$nin": [INTERNAL_APP, OPERATOR_APP]}
    if p.app_name is not None:
        app = {"$eq": p.app_name, "$nin": [INTERNAL_APP, OPERATOR_APP]}
    return {
        "opid": {"$exists": True},
        "secs_running": {"$gte": p.min_secs_running},
        "op": op,
        "appName": app,
        "$and": ns,
    }


def _internal_reason(doc: dict[str, Any]) -> str | None:
    """Why an operation must never be killed, or None if it is a client operation."""
    if doc.get("opid") is None or doc.get("secs_running") is None:
        return "no opid/secs_running"
    if doc.get("op") in (None, "none"):
        return "op none (server thread)"
    ns = doc.get("ns")
    if isinstance(ns, str) and INTERNAL_NS.match(ns):
        return f"internal namespace {ns}"
    app = doc.get("appName")
    if app == INTERNAL_APP:
        return "MongoDB Internal Client"
    if app == OPERATOR_APP:
        return "remedy's own connection"
    desc = doc.get("desc")
    if isinstance(desc, str) and (INTERNAL_DESC.match(desc) or not desc.startswith("conn")):
        return f"server thread {desc}"
    return None


def _wanted(doc: dict[str, Any], p: KillSlowMongoOps, ns_rx: re.Pattern[str] | None) -> bool:
    if _internal_reason(doc) is not None:
        return False
    if int(doc["secs_running"]) < p.min_secs_running:
        return False
    if p.op_types and doc.get("op") not in p.op_types:
        return False
    if p.app_name is not None and doc.get("appName") != p.app_name:
        return False
    return ns_rx is None or (isinstance(doc.get("ns"), str) and ns_rx.search(doc["ns"]) is not None)


def _jsonable(v: Any) -> Any:
    # opid is an int (Int64) on mongod and "shard:opid" on mongos; keep either as JSON.
    return v if isinstance(v, str) or v is None else int(v)


def _summary(doc: dict[str, Any]) -> Evidence:
    command = doc.get("command")
    return {
        "opid": _jsonable(doc.get("opid")),
        "ns": doc.get("ns"),
        "op": doc.get("op"),
        "secsRunning": int(doc.get("secs_running") or 0),
        "client": doc.get("client"),
        "appName": doc.get("appName"),
        "connectionId": _jsonable(doc.get("connectionId")),
        "command": next(iter(command), None) if isinstance(command, dict) else None,
    }


def _map_error(exc: pymongo.errors.PyMongoError, doing: str, p: KillSlowMongoOps, *, changed: bool) -> Exception:
    """A pymongo error as remedy's; messages never quote the URI (it may hold credentials)."""
    if isinstance(exc, pymongo.errors.OperationFailure):
        if exc.code in AUTH_CODES:
            ref = p.connection.uri_secret_ref
            return ForbiddenError(f"authentication failed for Secret {ref.name}/{ref.key}")
        if exc.code in UNAUTHORIZED_CODES:
            return ForbiddenError(f"{doing}: not authorized (code 13); the user needs inprog and killop")
        code_name = (exc.details or {}).get("codeName", "")
        return PermanentError(f"{doing} failed: code {exc.code} {code_name}".rstrip(), reason="CommandFailed")
    if isinstance(exc, pymongo.errors.ConnectionFailure) and not changed:
        return RetryableError(f"MongoDB unreachable while {doing}")
    return PermanentError(f"{doing} failed: {type(exc).__name__}", reason="CommandFailed")


async def _current_ops(client: Any, match: dict[str, Any]) -> list[dict[str, Any]]:
    """Operations matching ``match``: $currentOp (all users) if supported, else currentOp."""
    try:
        cursor = await client.admin.aggregate([{"$currentOp": {"allUsers": True, "idleConnections": False}},
                                              {"$match": match}])
        docs: list[dict[str, Any]] = await cursor.to_list(None)
        return docs
    except pymongo.errors.OperationFailure as exc:
        if exc.code not in NO_CURRENTOP_STAGE:
            raise
    # The command treats every field after the command name as the filter (and ignores the
    # value of the name itself), so the filter goes beside it, not inside it.
    reply = await client.admin.command({"currentOp": 1, "$all": False, **match})
    inprog: list[dict[str, Any]] = reply.get("inprog", [])
    return inprog


async def _client(ctx: ActionContext, p: KillSlowMongoOps) -> Any:
    uri = await ctx.secret(p.connection.uri_secret_ref)
    try:
        return ctx.connectors.mongo(uri, parse_duration(p.connection.timeout))
    except (pymongo.errors.PyMongoError, ValueError):  # InvalidURI and friends quote the URI, credentials included
        ref = p.connection.uri_secret_ref
        raise InvalidSpecError(f"Secret {ref.name}/{ref.key} does not hold a valid mongodb:// URI") from None


def _ns_regex(p: KillSlowMongoOps) -> re.Pattern[str] | None:
    if p.namespace is None:
        return None
    try:
        return re.compile(p.namespace)
    except re.error as exc:
        raise InvalidSpecError(f"namespace is not a valid regex: {exc}") from None


async def kill_plan(ctx: ActionContext, p: KillSlowMongoOps) -> Evidence:
    ns_rx = _ns_regex(p)
    client = await _client(ctx, p)
    try:
        docs = await _current_ops(client, _server_match(p))
    except pymongo.errors.PyMongoError as exc:
        raise _map_error(exc, "reading currentOp", p, changed=False) from None
    finally:
        await client.close()
    ops = [_summary(d) for d in docs if _wanted(d, p, ns_rx)]
    ops.sort(key=lambda o: (-o["secsRunning"], str(o["opid"])))
    if len(ops) > p.max_ops:
        raise OverCapError(f"{len(ops)} operations match, more than maxOps {p.max_ops}; refused, nothing killed")
    if not ops:
        raise SkipError("no operation matches the filters", reason="NothingToDo", evidence={"ops": []})
    return {"ops": ops, "count": len(ops),
            "change": f"killOp {len(ops)} operation(s), each only if still running as planned"}


def _same_op(now: dict[str, Any], planned: Evidence) -> bool:
    s = _summary(now)
    return (
        _internal_reason(now) is None
        and s["ns"] == planned["ns"] and s["op"] == planned["op"]
        and s["connectionId"] == planned.get("connectionId") and s["client"] == planned.get("client")
        # mongod restarts number opids from scratch: an op younger than planned is another op
        and s["secsRunning"] >= planned["secsRunning"]
    )


async def kill_execute(ctx: ActionContext, p: KillSlowMongoOps, plan: Evidence) -> Evidence:
    client = await _client(ctx, p)
    evidence: list[Evidence] = []
    killed_any = False
    try:
        for planned in plan["ops"]:
            found = await _current_ops(client, {"opid": planned["opid"]})
            current = next((d for d in found if _same_op(d, planned)), None)
            if current is None:
                evidence.append({**planned, "outcome": "gone"})
                continue
            await client.admin.command({"killOp": 1, "op": current["opid"]})
            killed_any = True
            evidence.append({**_summary(current), "outcome": "killed"})
    except pymongo.errors.ConnectionFailure:
        # A killOp may have reached the server before the connection broke: observe, never re-plan.
        raise AmbiguousOutcomeError("MongoDB connection lost while killing operations; a killOp may have run") from None
    except pymongo.errors.PyMongoError as exc:
        raise _map_error(exc, "killing operations", p, changed=killed_any) from None
    finally:
        await client.close()
    return {"ops": evidence, "killed": sum(1 for e in evidence if e["outcome"] == "killed"),
            "gone": sum(1 for e in evidence if e["outcome"] == "gone")}


async def kill_observe(ctx: ActionContext, p: KillSlowMongoOps, plan: Evidence) -> Observation:
    """Applied when no planned opid is still running as planned; otherwise the recorded plan
    is safe to apply again (execute re-checks each op's identity before killOp)."""
    client = await _client(ctx, p)
    try:
        running = []
        for planned in plan["ops"]:
            found = await _current_ops(client, {"opid": planned["opid"]})
            if any(_same_op(d, planned) for d in found):
                running.append(str(planned["opid"]))
    except pymongo.errors.PyMongoError as exc:
        raise RetryableError(f"MongoDB unreachable while observing: {type(exc).__name__}", reason="ObserveUnavailable") from None
    finally:
        await client.close()
    if not running:
        return Applied(f"none of the {len(plan['ops'])} planned operation(s) is still running")
    return NotApplied(f"{len(running)} planned operation(s) still running: opid {', '.join(running[:10])}")


KILL_SLOW_MONGO_OPS = ActionDef(
    name="killSlowMongoOps", params=KillSlowMongoOps, target=_target,
    plan=kill_plan, execute=kill_execute, observe=kill_observe, idempotent=True,
)
