"""killSlowMongoOps (runbook 004): ``db.currentOp({secs_running: {$gte: 30}})`` then ``db.killOp``.

Why a module of its own: the runbook's one-liner also matches MongoDB's own machinery
(replication batchers, WiredTiger threads, the oplog fetchers of secondaries, monitors) and
killing those hurts more than the slow query. So every operation passes two filters: a
``$match`` the server applies, and the same rules re-checked here in Python, which are the
authority. The plan records a count, a sample, a digest of the opids and the bound
``startedBefore`` (its currentOpTime minus minSecsRunning, on the server's clock), never a list
of every opid (planned_set.py): execute re-derives the set with the plan's filters and bound,
then re-reads each batch of opids right before killing them, and kills an op only if it is
still the same operation (ns, op, connection, and started by the bound), because opids restart
from zero when mongod restarts.

The client comes from ``ctx.connectors.mongo`` (pymongo's AsyncMongoClient, appName
``OPERATOR_APP_NAME``, timeouts applied). Evidence carries only the top-level command name of an
operation, never the command's values (they may hold customer data).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..clients.lazy import lazy_module

if TYPE_CHECKING:
    import pymongo
else:
    pymongo = lazy_module("pymongo")  # imported when a MongoDB action first runs (clients/lazy.py)

from ..api.common import parse_duration
from ..api.mongo import KillSlowMongoOps
from ..base import rfc3339
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
from .keyset import SAMPLE_SIZE, KeySetTally
from .planned_set import bounded, plan_evidence, planned_params, result_evidence

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
BATCH = 500  # opids per currentOp re-read before killing
# An op's start is currentOpTime (millisecond resolution) minus microsecs_running, read a moment
# apart: the same op can come out a millisecond or so later on a second read.
START_SLACK_US = 5_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The spec fields that choose operations; the plan records them and execute uses the recorded ones.
FILTER_FIELDS = frozenset({"min_secs_running", "namespace", "op_types", "app_name", "max_ops"})


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


def _micros(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def _iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat()


def _server_now_us(doc: dict[str, Any]) -> int | None:
    """The server's clock when it reported ``doc`` (currentOpTime), in microseconds."""
    t = rfc3339.parse(doc.get("currentOpTime"))
    return None if t is None else _micros(t)


def _started_us(doc: dict[str, Any], fallback_now_us: int) -> int:
    """When the operation started, on the server's clock: currentOpTime - microsecs_running."""
    now = _server_now_us(doc) or fallback_now_us
    micros = doc.get("microsecs_running")
    return now - (int(micros) if micros is not None else int(doc.get("secs_running") or 0) * 1_000_000)


def _identity(op: Evidence) -> str:
    """What the digest counts: the fields that stay put while one operation runs (its start is
    derived from two clock readings, so it guards each killOp but is not hashed)."""
    return f"{op['opid']}|{op.get('connectionId')}|{op.get('client')}|{op['ns']}|{op['op']}"


def kill_plan_evidence(ops: list[Evidence], p: KillSlowMongoOps, plan_time_us: int) -> Evidence:
    """The bounded plan for the wanted operations (sorted): count, sample, digest, plan time and
    bound (``minSecsRunning`` before the plan time), filters. Public so bench/database_status.py
    measures this very code."""
    tally = KeySetTally()
    for o in ops:
        tally.add(_identity(o), o)
    started_before = _iso(plan_time_us - p.min_secs_running * 1_000_000)
    return {
        **plan_evidence("ops", tally, plan_time=_iso(plan_time_us), started_before=started_before,
                        filters=p.model_dump(by_alias=True, include=set(FILTER_FIELDS), mode="json")),
        "change": f"killOp the {tally.count} operation(s) matching the filters that started at or before "
        f"{started_before} (server clock), each only if still running as the same operation",
    }


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
    # Every wanted op ran >= minSecsRunning by its own currentOpTime, so it started by the
    # latest stamp minus the threshold: that bound is what execute re-derives the set with.
    now = max((t for d in docs if (t := _server_now_us(d)) is not None), default=_micros(datetime.now(UTC)))
    return kill_plan_evidence(ops, p, now)


def _within_bound(doc: dict[str, Any], plan: Evidence) -> bool:
    """Started at or before the plan's bound (server clock): already past the threshold at plan time."""
    bound = rfc3339.parse(plan["startedBefore"])
    return bound is not None and _started_us(doc, _micros(datetime.now(UTC))) <= _micros(bound) + START_SLACK_US


def _same_op(now: dict[str, Any], planned: Evidence, plan: Evidence) -> bool:
    s = _summary(now)
    same = (
        _internal_reason(now) is None
        and s["ns"] == planned["ns"] and s["op"] == planned["op"]
        and s["connectionId"] == planned.get("connectionId") and s["client"] == planned.get("client")
    )
    # mongod restarts number opids from scratch: an op that started after the plan's bound (or,
    # for a plan that lists every op, one younger than planned) is another op
    if bounded(plan):
        return same and _within_bound(now, plan)
    return same and s["secsRunning"] >= planned["secsRunning"]


async def _planned_ops(client: Any, p: KillSlowMongoOps, plan: Evidence) -> list[Evidence]:
    """The planned set, re-derived with the plan's filters and bound (an older plan: its recorded list)."""
    if not bounded(plan):
        listed: list[Evidence] = plan["ops"]
        return listed
    q = planned_params(p, plan)
    ns_rx = _ns_regex(q)
    docs = await _current_ops(client, _server_match(q))
    ops = [_summary(d) for d in docs if _wanted(d, q, ns_rx) and _within_bound(d, plan)]
    ops.sort(key=lambda o: (-o["secsRunning"], str(o["opid"])))
    return ops


async def _still_running(client: Any, ops: list[Evidence], plan: Evidence) -> list[tuple[Evidence, dict[str, Any]]]:
    """Each of ``ops`` still running as the same operation, with its current document; one
    currentOp per batch of opids, not one per operation."""
    out: list[tuple[Evidence, dict[str, Any]]] = []
    for i in range(0, len(ops), BATCH):
        batch = ops[i:i + BATCH]
        docs = await _current_ops(client, {"opid": {"$in": [o["opid"] for o in batch]}})
        by_opid: dict[Any, list[dict[str, Any]]] = {}
        for d in docs:
            by_opid.setdefault(_jsonable(d.get("opid")), []).append(d)
        for o in batch:
            current = next((d for d in by_opid.get(o["opid"], []) if _same_op(d, o, plan)), None)
            if current is not None:
                out.append((o, current))
    return out


def kill_result_evidence(plan: Evidence, found: list[Evidence], outcome: dict[str, str]) -> Evidence:
    """The bounded result: the plan's sample with each one's outcome, counts, the digest of what
    was killed and how the set found at execute compares with the planned one. Public so
    bench/database_status.py measures this very code."""
    found_tally, killed = KeySetTally(sample_size=0), KeySetTally(sample_size=0)
    for o in found:
        found_tally.add(_identity(o))
        if outcome.get(_identity(o)) == "killed":
            killed.add(_identity(o))
    return {
        "ops": [{**o, "outcome": outcome.get(_identity(o), "gone")} for o in plan["ops"][:SAMPLE_SIZE]],
        "killed": killed.count,
        # planned operations not killed (ended before execute reached them); exact when found.sameSet
        "gone": max(0, int(plan.get("count", len(plan["ops"]))) - killed.count),
        **result_evidence("ops", plan, found_tally, killed),
    }


async def kill_execute(ctx: ActionContext, p: KillSlowMongoOps, plan: Evidence) -> Evidence:
    client = await _client(ctx, p)
    outcome: dict[str, str] = {}
    found: list[Evidence] = []
    killed_any = False
    try:
        found = await _planned_ops(client, p, plan)
        cap = planned_params(p, plan).max_ops
        if len(found) > cap:
            raise OverCapError(f"{len(found)} operations past the plan's bound match now, more than maxOps {cap}; "
                               "refused, nothing killed")
        for i in range(0, len(found), BATCH):
            # Re-read right before killing, a batch at a time: the window in which a restarted
            # mongod could hand a planned opid to another operation stays one batch long.
            for planned, current in await _still_running(client, found[i:i + BATCH], plan):
                if killed_any:
                    await ctx.still_mine()  # each later killOp: still this executor's attempt?
                await client.admin.command({"killOp": 1, "op": current["opid"]})
                killed_any = True
                outcome[_identity(planned)] = "killed"
    except pymongo.errors.ConnectionFailure:
        # A killOp may have reached the server before the connection broke: observe, never re-plan.
        raise AmbiguousOutcomeError("MongoDB connection lost while killing operations; a killOp may have run") from None
    except pymongo.errors.PyMongoError as exc:
        raise _map_error(exc, "killing operations", p, changed=killed_any) from None
    finally:
        await client.close()
    return kill_result_evidence(plan, found, outcome)


async def kill_observe(ctx: ActionContext, p: KillSlowMongoOps, plan: Evidence) -> Observation:
    """Applied when no operation matching the plan's filters and bound (an older plan: no planned
    opid) is still running as planned; otherwise the recorded plan is safe to apply again
    (execute re-checks each op's identity before killOp)."""
    client = await _client(ctx, p)
    try:
        running = [str(o["opid"]) for o, _ in await _still_running(client, await _planned_ops(client, p, plan), plan)]
    except pymongo.errors.PyMongoError as exc:
        raise RetryableError(f"MongoDB unreachable while observing: {type(exc).__name__}", reason="ObserveUnavailable") from None
    finally:
        await client.close()
    if not running:
        return Applied(f"none of the {plan.get('count', len(plan['ops']))} planned operation(s) is still running")
    return NotApplied(f"{len(running)} planned operation(s) still running: opid {', '.join(running[:10])}")


KILL_SLOW_MONGO_OPS = ActionDef(
    name="killSlowMongoOps", params=KillSlowMongoOps, target=_target,
    plan=kill_plan, execute=kill_execute, observe=kill_observe, idempotent=True,
)
