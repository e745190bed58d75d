"""A MongoDB wire-protocol test double that answers currentOp, $currentOp and killOp.

Why this exists: remedy's killSlowMongoOps (runbook 004: ``db.currentOp({secs_running:
{$gte: 30}})`` then ``db.killOp(opid)``) must be exercised through a real pymongo client over a
real socket, but no MongoDB that implements currentOp/killOp installs from the package
registries available here, and the embeddable alternatives do not help (FerretDB and
mongo-java-server return an empty currentOp and have no killOp). So this module speaks just
enough of the protocol (OP_MSG with kind-0 and kind-1 sections, legacy OP_QUERY for the
handshake, OP_REPLY) for pymongo >= 4.9, and simulates the operations that a server would be
running. It is a TEST DOUBLE, not a database: there are no collections.

What it does faithfully, because a killer's safety depends on it:

* ``currentOp`` (admin only): every field of the command except the command name itself,
  ``$all``, ``$ownOps``, ``$truncateOps`` and generic arguments (lsid, $db, comment, ...) is the
  filter, exactly like mongod. NB: ``db.command("currentOp", {"secs_running": ...})`` therefore
  does NOT filter (the value of the command name is ignored), as on a real server; use
  ``db.command("currentOp", 1, secs_running={"$gte": 30})`` or
  ``{"currentOp": 1, "secs_running": {...}}``.
* ``aggregate: 1`` on admin with a first stage ``$currentOp`` (then $match, $project, $sort,
  $skip, $limit); the reply is a cursor with id 0 and ns ``admin.$cmd.aggregate``.
* ``killOp {killOp: 1, op: <opid>}`` (admin only) answers ``{info: "attempting to kill op"}``
  whether or not the op exists, like mongod; the op disappears and is recorded.
* Realistic internal operations that a killer must never touch: ReplBatcher and
  ``WT RecordStoreThread`` (op "none" on local.oplog.rs, running for hours) and an oplog
  getMore from ``appName: "MongoDB Internal Client"``; plus an idle connection (only with
  ``$all``/``idleConnections``) and the caller's own currentOp operation.
* Unknown commands fail with ``ok: 0, code: 59, codeName: CommandNotFound``.

Test-only commands (not MongoDB's; admin db) so another process such as the demo can drive it
over the wire: ``remedyInjectOp`` (fields as ``add_op``; answers ``{opid}``), ``remedyStats``
(``killed`` opids, ``killedOps`` documents, per-command ``commands`` counts) and
``remedyReset`` (drops injected ops and the kill record).

Run: ``python -m remedy_devenv.mongowire --port 27117``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import logging
import os
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import bson
from bson.int64 import Int64
from bson.regex import Regex

log = logging.getLogger("remedy.mongowire")

OP_REPLY, OP_QUERY, OP_COMPRESSED, OP_MSG = 1, 2004, 2012, 2013
HEADER = struct.Struct("<iiii")
MAX_MESSAGE = 48_000_000
SERVER_VERSION = "7.0.14"
MAX_WIRE_VERSION = 21  # MongoDB 7.0; pymongo 4.9+ needs >= 9 (4.4)
INTERNAL_APP = "MongoDB Internal Client"

# Arguments any command may carry; mongod never treats them as part of a currentOp filter.
GENERIC_ARGS = frozenset({
    "$db", "lsid", "txnNumber", "autocommit", "startTransaction", "$clusterTime",
    "$readPreference", "readConcern", "writeConcern", "comment", "maxTimeMS", "apiVersion",
    "apiStrict", "apiDeprecationErrors", "$audit", "$client", "$configServerState",
    "$queryOptions", "mayBypassWriteBlocking",
})
CURRENT_OP_FLAGS = frozenset({"$all", "$ownOps", "$truncateOps"})


class CommandError(Exception):
    def __init__(self, code: int, code_name: str, errmsg: str) -> None:
        super().__init__(errmsg)
        self.code, self.code_name, self.errmsg = code, code_name, errmsg


def bad_value(msg: str) -> CommandError:
    return CommandError(2, "BadValue", msg)


# --------------------------------------------------------------------------- query matching
# Enough of MongoDB's match language for currentOp filters: dotted paths through documents and
# arrays, comparison across numeric types only, regexes, $and/$or/$nor/$not.


def _walk(value: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        return _walk(value[head], rest) if head in value else []
    if isinstance(value, list):
        out: list[Any] = []
        if head.isdigit() and int(head) < len(value):
            out += _walk(value[int(head)], rest)
        for elem in value:
            if isinstance(elem, dict):
                out += _walk(elem, parts)
        return out
    return []


def _candidates(values: list[Any]) -> list[Any]:
    # a query on an array field matches the array itself or any of its elements
    out = list(values)
    for v in values:
        if isinstance(v, list):
            out += v
    return out


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, datetime):
        return "date"
    return type(v).__name__


def _compare(a: Any, b: Any) -> int | None:
    if _kind(a) != _kind(b) or _kind(a) not in ("number", "string", "date", "bool"):
        return None
    return int((a > b) - (a < b))


def _regex(pattern: Any, options: str = "") -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    flags = 0
    if isinstance(pattern, Regex):
        flags, pattern = pattern.flags, pattern.pattern
    for ch, flag in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)):
        if ch in options:
            flags |= flag
    return re.compile(str(pattern), flags)


def _eq(values: list[Any], target: Any) -> bool:
    if isinstance(target, Regex | re.Pattern):
        rx = _regex(target)
        return any(isinstance(c, str) and rx.search(c) for c in _candidates(values))
    if target is None:
        return not values or any(c is None for c in _candidates(values))
    return any(_compare(c, target) == 0 if _kind(c) == _kind(target) == "number" else c == target
               for c in _candidates(values))


CMP_OPS: dict[str, Callable[[int], bool]] = {
    "$gt": lambda c: c > 0, "$gte": lambda c: c >= 0,
    "$lt": lambda c: c < 0, "$lte": lambda c: c <= 0}


_last_in: tuple[list[Any], frozenset[Any] | None] | None = None


def _scalar_set(arg: list[Any]) -> frozenset[Any] | None:
    """An $in list of numbers and strings as a set (numbers hash by value; bools excluded), or
    None. Kept for the last list seen: one query tests the same list against every op (500
    opids x 10,000 ops when killSlowMongoOps re-reads a batch)."""
    global _last_in
    if _last_in is None or _last_in[0] is not arg:
        scalar = all(_kind(x) in ("number", "string") for x in arg)
        _last_in = (arg, frozenset(arg) if scalar else None)
    return _last_in[1]


def _apply(op: str, arg: Any, values: list[Any], cond: dict[str, Any]) -> bool:
    cands = _candidates(values)
    if op == "$eq":
        return _eq(values, arg)
    if op == "$ne":
        return not _eq(values, arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        ok = CMP_OPS[op]
        return any((c := _compare(v, arg)) is not None and ok(c) for v in cands)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise bad_value(f"{op} needs an array")
        wanted = _scalar_set(arg)
        if wanted is not None:
            found = any(_kind(c) in ("number", "string") and c in wanted for c in cands)
        else:
            found = any(_eq(values, x) for x in arg)
        return found if op == "$in" else not found
    if op == "$exists":
        return bool(values) == bool(arg)
    if op == "$regex":
        rx = _regex(arg, str(cond.get("$options", "")))
        return any(isinstance(c, str) and rx.search(c) for c in cands)
    if op == "$options":
        if "$regex" not in cond:
            raise bad_value("$options needs a $regex")
        return True
    if op == "$not":
        if isinstance(arg, dict):
            return not all(_apply(o, a, values, arg) for o, a in arg.items())
        return not _eq(values, arg)
    if op == "$size":
        return any(isinstance(v, list) and len(v) == arg for v in values)
    raise bad_value(f"unknown operator: {op}")


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    """MongoDB query semantics for the subset currentOp filters use."""
    for key, cond in query.items():
        if key == "$and":
            ok = all(matches(doc, q) for q in cond)
        elif key == "$or":
            ok = any(matches(doc, q) for q in cond)
        elif key == "$nor":
            ok = not any(matches(doc, q) for q in cond)
        elif key == "$comment":
            ok = True
        elif key.startswith("$"):
            raise bad_value(f"unknown top level operator: {key}")
        else:
            values = _walk(doc, key.split("."))
            if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
                ok = all(_apply(op, arg, values, cond) for op, arg in cond.items())
            else:
                ok = _eq(values, cond)
        if not ok:
            return False
    return True


def _sort_key(spec: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        for path, direction in spec.items():
            va, vb = _walk(a, path.split(".")), _walk(b, path.split("."))
            x, y = (va[0] if va else None), (vb[0] if vb else None)
            c = _compare(x, y)
            if c is None:  # missing sorts first, then by type name: stable, like BSON order
                c = (_kind(x) > _kind(y)) - (_kind(x) < _kind(y)) if x is not None and y \
                    is not None else (x is not None) - (y is not None)
            if c:
                return c * (1 if direction >= 0 else -1)
        return 0
    return functools.cmp_to_key(cmp)


def _project(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    include = [k for k, v in spec.items() if v and k != "_id"]
    if not include:
        return {k: v for k, v in doc.items() if k not in spec}
    out: dict[str, Any] = {}
    for path in include:
        parts = path.split(".")
        src: Any = doc
        for p in parts:
            src = src.get(p) if isinstance(src, dict) else None
        if src is None and not _walk(doc, parts):
            continue
        dst = out
        for p in parts[:-1]:
            dst = dst.setdefault(p, {})
        dst[parts[-1]] = src
    return out


# --------------------------------------------------------------------------- simulated ops


@dataclass
class SimOp:
    opid: int
    doc: dict[str, Any]
    started: float
    internal: bool = False


@dataclass
class Conn:
    id: int
    peer: str
    app_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class MongoWireServer:
    """The server. ``add_op``/``killed`` are thread-safe; tests may run it with ``running()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, internal_ops: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self.clock = clock
        self.hostname = f"{socket.gethostname()}:{port}"
        self.started_at = clock()
        self.killed: list[int] = []
        self.killed_ops: list[dict[str, Any]] = []
        self.commands: Counter[str] = Counter()
        self._ops: dict[int, SimOp] = {}
        self._lock = threading.Lock()
        self._opids = itertools.count(1000)
        self._conn_ids = itertools.count(20)
        self._fake_conn_ids = itertools.count(100)
        self._request_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._idle: list[dict[str, Any]] = []
        if internal_ops:
            self._add_internal_ops()

    # ---- op store

    def add_op(self, ns: str = "inventory.orders", op: str = "query", secs_running: float = 45,
               client: str | None = "10.0.0.5:5000", appName: str | None = "inventory-service",  # noqa: N803 - currentOp field names
               desc: str | None = None, command: dict[str, Any] | None = None,
               planSummary: str | None = "COLLSCAN", *, internal: bool = False,  # noqa: N803 - currentOp field name
               **extra: Any) -> int:
        """Simulate an operation already running for ``secs_running``; returns its opid."""
        with self._lock:
            opid = next(self._opids)
            conn_id = next(self._fake_conn_ids)
            doc: dict[str, Any] = {"type": "op", "host": self.hostname,
                                   "desc": desc or f"conn{conn_id}", "connectionId": conn_id}
            if client is not None:
                doc["client"] = client
            if appName is not None:
                doc["appName"] = appName
                doc["clientMetadata"] = {
                    "application": {"name": appName},
                    "driver": {"name": "nodejs", "version": "6.3.0"},
                    "os": {"type": "Linux", "name": "linux", "architecture": "x64"}}
            doc.update({"active": True, "opid": opid, "op": op, "ns": ns,
                        "command": command if command is not None else
                        {"find": ns.partition(".")[2], "filter": {"status": "pending"},
                         "$db": ns.partition(".")[0]}})
            if planSummary is not None:
                doc["planSummary"] = planSummary
            doc.update({"numYields": 120, "locks": {"FeatureCompatibilityVersion": "r",
                                                   "Global": "r"},
                        "waitingForLock": False, "lockStats": {
                            "Global": {"acquireCount": {"r": Int64(121)}}}})
            doc.update(extra)
            self._ops[opid] = SimOp(opid, doc, self.clock() - float(secs_running), internal)
            return opid

    def _add_internal_ops(self) -> None:
        # Shapes taken from real mongod currentOp output on a replica-set member.
        for desc in ("ReplBatcher", "WT RecordStoreThread: local.oplog.rs"):
            self.add_op(ns="local.oplog.rs", op="none", secs_running=86_400, client=None,
                        appName=None, desc=desc, command={}, planSummary=None, internal=True)
        self.add_op(ns="local.oplog.rs", op="getmore", secs_running=3_600,
                    client="10.0.0.2:41822", appName=INTERNAL_APP, planSummary="COLLSCAN",
                    command={"getMore": Int64(7365122947231), "collection": "oplog.rs",
                             "batchSize": 13981010, "maxTimeMS": Int64(5000), "$db": "local"},
                    internal=True, clientMetadata={
                        "driver": {"name": "NetworkInterfaceTL-ReplNetwork",
                                   "version": SERVER_VERSION},
                        "os": {"type": "Linux", "name": "Ubuntu", "architecture": "x86_64"}})
        self._idle.append({"type": "op", "host": self.hostname, "desc": "conn7",
                           "connectionId": 7, "client": "10.0.0.9:41000",
                           "appName": "orders-service", "active": False})

    def remove_injected(self) -> int:
        with self._lock:
            gone = [k for k, o in self._ops.items() if not o.internal]
            for k in gone:
                del self._ops[k]
            self.killed.clear()
            self.killed_ops.clear()
            return len(gone)

    def ops(self, include_idle: bool = False) -> list[dict[str, Any]]:
        """What currentOp would show now (without the caller's own operation)."""
        now = self.clock()
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._lock:
            out = []
            for sim in self._ops.values():
                elapsed = max(0.0, now - sim.started)
                doc = dict(sim.doc)
                doc["currentOpTime"] = stamp
                # field order of a real currentOp document: timings sit right after opid
                doc["secs_running"] = Int64(int(elapsed))
                doc["microsecs_running"] = Int64(int(elapsed * 1_000_000))
                out.append(doc)
        if include_idle:
            out += [dict(d, currentOpTime=stamp) for d in self._idle]
        return out

    def kill(self, opid: int) -> None:
        with self._lock:
            sim = self._ops.pop(opid, None)
            self.killed.append(opid)
            if sim is not None:
                self.killed_ops.append(dict(sim.doc))
        log.info("killOp opid=%s (%s)", opid, "killed" if sim else "no such op")

    # ---- commands

    def _self_op(self, conn: Conn, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "op", "host": self.hostname, "desc": f"conn{conn.id}",
                               "connectionId": conn.id, "client": conn.peer}
        if conn.app_name:
            doc["appName"] = conn.app_name
        if conn.metadata:
            doc["clientMetadata"] = conn.metadata
        doc.update({"active": True, "currentOpTime": datetime.now(UTC).isoformat(),
                    "opid": next(self._opids), "secs_running": Int64(0),
                    "microsecs_running": Int64(37), "op": "command", "ns": ns,
                    "command": {k: v for k, v in body.items() if k not in GENERIC_ARGS},
                    "numYields": 0, "locks": {}, "waitingForLock": False, "lockStats": {}})
        return doc

    def _require_admin(self, db: str, name: str) -> None:
        if db != "admin":
            raise CommandError(13, "Unauthorized",
                               f"{name} may only be run against the admin database.")

    def cmd_hello(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        client = body.get("client")
        if isinstance(client, dict):
            conn.metadata = client
            app = client.get("application")
            conn.app_name = app.get("name") if isinstance(app, dict) else None
        primary_key = "isWritablePrimary" if next(iter(body)) == "hello" else "ismaster"
        return {primary_key: True, "helloOk": True, "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": MAX_MESSAGE, "maxWriteBatchSize": 100_000,
                "localTime": datetime.now(UTC), "logicalSessionTimeoutMinutes": 30,
                "connectionId": conn.id, "minWireVersion": 0,
                "maxWireVersion": MAX_WIRE_VERSION, "readOnly": False, "ok": 1.0}

    def cmd_ping(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": 1.0}

    def cmd_build_info(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"version": SERVER_VERSION, "gitVersion": "remedy-mongowire",
                "versionArray": [7, 0, 14, 0], "bits": 64, "debug": False,
                "maxBsonObjectSize": 16 * 1024 * 1024, "modules": [], "ok": 1.0}

    def cmd_server_status(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        uptime = self.clock() - self.started_at
        return {"host": self.hostname, "version": SERVER_VERSION, "process": "mongod",
                "uptime": float(int(uptime)), "uptimeMillis": Int64(int(uptime * 1000)),
                "localTime": datetime.now(UTC),
                "connections": {"current": len(self._writers), "available": 838_000},
                "ok": 1.0}

    def cmd_current_op(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(db, "currentOp")
        # like mongod: skip the first element (the command name, whatever its value), the
        # currentOp flags and generic arguments; everything else is the filter
        query = {k: v for i, (k, v) in enumerate(body.items())
                 if i > 0 and k not in CURRENT_OP_FLAGS and k not in GENERIC_ARGS}
        docs = self.ops(include_idle=bool(body.get("$all")))
        docs.append(self._self_op(conn, "admin.$cmd", body))
        return {"inprog": [d for d in docs if matches(d, query)], "ok": 1.0}

    def cmd_aggregate(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        pipeline = body.get("pipeline")
        if not isinstance(pipeline, list):
            raise CommandError(14, "TypeMismatch", "'pipeline' option must be specified as an array")
        if "cursor" not in body and not body.get("explain"):
            raise CommandError(9, "FailedToParse", "The 'cursor' option is required, except for "
                               "aggregate with the explain argument")
        for i, stage in enumerate(pipeline):
            if "$currentOp" in stage and i > 0:
                raise CommandError(40602, "Location40602",
                                   "$currentOp is only valid as the first stage in a pipeline")
        docs: list[dict[str, Any]] = []
        stages = pipeline
        if pipeline and "$currentOp" in pipeline[0]:
            if db != "admin" or body["aggregate"] != 1:
                raise CommandError(73, "InvalidNamespace", "$currentOp must be run against the "
                                   "'admin' database with {aggregate: 1}")
            opts = pipeline[0]["$currentOp"]
            docs = self.ops(include_idle=bool(opts.get("idleConnections", False)))
            docs.append(self._self_op(conn, "admin.$cmd.aggregate", body))
            stages = pipeline[1:]
        for stage in stages:
            (name, spec), = stage.items()
            if name == "$match":
                docs = [d for d in docs if matches(d, spec)]
            elif name == "$project":
                docs = [_project(d, spec) for d in docs]
            elif name == "$sort":
                docs.sort(key=_sort_key(spec))
            elif name == "$skip":
                docs = docs[int(spec):]
            elif name == "$limit":
                docs = docs[:int(spec)]
            elif name == "$count":
                docs = [{spec: len(docs)}]
            else:
                raise CommandError(40324, "Location40324",
                                   f"Unrecognized pipeline stage name: '{name}'")
        ns = "admin.$cmd.aggregate" if body["aggregate"] == 1 else f"{db}.{body['aggregate']}"
        return {"cursor": {"firstBatch": docs, "id": Int64(0), "ns": ns}, "ok": 1.0}

    def cmd_kill_op(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(db, "killOp")
        if "op" not in body:
            raise CommandError(4, "NoSuchKey", 'Did not provide "op" field')
        op = body["op"]
        if isinstance(op, bool) or not isinstance(op, int | float):
            raise CommandError(14, "TypeMismatch", f'"op" field must be a number, not {op!r}')
        self.kill(int(op))
        return {"info": "attempting to kill op", "ok": 1.0}

    def cmd_end_sessions(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": 1.0}

    def cmd_inject(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(db, "remedyInjectOp")
        fields = {k: v for i, (k, v) in enumerate(body.items()) if i > 0 and k not in GENERIC_ARGS}
        try:
            return {"opid": self.add_op(**fields), "ok": 1.0}
        except TypeError as exc:
            raise bad_value(str(exc)) from None

    def cmd_stats(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {"killed": list(self.killed), "killedOps": list(self.killed_ops),
                    "ops": len(self._ops), "commands": dict(self.commands), "ok": 1.0}

    def cmd_reset(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(db, "remedyReset")
        return {"removed": self.remove_injected(), "ok": 1.0}

    COMMANDS: ClassVar[dict[str, Callable[[MongoWireServer, Conn, str, dict[str, Any]], dict[str, Any]]]] = {
        "hello": cmd_hello, "isMaster": cmd_hello, "ismaster": cmd_hello, "ping": cmd_ping,
        "buildInfo": cmd_build_info, "buildinfo": cmd_build_info,
        "serverStatus": cmd_server_status, "currentOp": cmd_current_op,
        "aggregate": cmd_aggregate, "killOp": cmd_kill_op, "endSessions": cmd_end_sessions,
        "remedyInjectOp": cmd_inject, "remedyStats": cmd_stats, "remedyReset": cmd_reset,
    }

    def run_command(self, conn: Conn, db: str, body: dict[str, Any]) -> dict[str, Any]:
        if not body:
            return {"ok": 0.0, "errmsg": "no command", "code": 59, "codeName": "CommandNotFound"}
        name = next(iter(body))
        self.commands[name] += 1
        handler = self.COMMANDS.get(name)
        try:
            if handler is None:
                raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
            return handler(self, conn, db, body)
        except CommandError as exc:
            return {"ok": 0.0, "errmsg": exc.errmsg, "code": exc.code, "codeName": exc.code_name}
        except Exception as exc:  # a test double must answer, not drop the connection
            log.exception("command %s failed", name)
            return {"ok": 0.0, "errmsg": f"{type(exc).__name__}: {exc}", "code": 1,
                    "codeName": "InternalError"}

    # ---- wire protocol

    def _frame(self, response_to: int, opcode: int, payload: bytes) -> bytes:
        return HEADER.pack(16 + len(payload), next(self._request_ids), response_to,
                           opcode) + payload

    def handle_message(self, conn: Conn, request_id: int, opcode: int,
                       payload: bytes) -> bytes | None:
        if opcode == OP_MSG:
            flags, = struct.unpack_from("<I", payload, 0)
            pos, end = 4, len(payload) - (4 if flags & 1 else 0)  # bit 0: trailing CRC-32C
            body: dict[str, Any] = {}
            sequences: dict[str, list[Any]] = {}
            while pos < end:
                kind = payload[pos]
                pos += 1
                size, = struct.unpack_from("<i", payload, pos)
                if kind == 0:
                    body = bson.decode(payload[pos:pos + size])
                    pos += size
                elif kind == 1:
                    section_end = pos + size
                    nul = payload.index(b"\x00", pos + 4)
                    ident = payload[pos + 4:nul].decode()
                    pos, docs = nul + 1, []
                    while pos < section_end:
                        dsize, = struct.unpack_from("<i", payload, pos)
                        docs.append(bson.decode(payload[pos:pos + dsize]))
                        pos += dsize
                    sequences[ident] = docs
                else:
                    raise ValueError(f"unknown OP_MSG section kind {kind}")
            body.update(sequences)  # mongod merges document sequences into the body
            reply = self.run_command(conn, str(body.get("$db", "admin")), body)
            if flags & 2:  # moreToCome: the client expects no answer
                return None
            return self._frame(request_id, OP_MSG, struct.pack("<I", 0) + b"\x00" +
                               bson.encode(reply))
        if opcode == OP_QUERY:
            nul = payload.index(b"\x00", 4)
            collection = payload[4:nul].decode()
            query = bson.decode(payload[nul + 9:nul + 9 +
                                        struct.unpack_from("<i", payload, nul + 9)[0]])
            if "$query" in query:
                query = query["$query"]
            reply = self.run_command(conn, collection.partition(".")[0], query)
            # responseFlags 8 = AwaitCapable, as mongod sets; one document, no cursor
            return self._frame(request_id, OP_REPLY, struct.pack("<iqii", 8, 0, 0, 1) +
                               bson.encode(reply))
        raise ValueError(f"unsupported opcode {opcode}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        conn = Conn(id=next(self._conn_ids), peer=f"{peer[0]}:{peer[1]}")
        self._writers.add(writer)
        try:
            while True:
                length, request_id, _, opcode = HEADER.unpack(await reader.readexactly(16))
                if not 16 < length <= MAX_MESSAGE:
                    break
                payload = await reader.readexactly(length - 16)
                reply = self.handle_message(conn, request_id, opcode, payload)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ValueError as exc:  # malformed or unsupported message: drop the connection
            log.warning("connection %s: %s", conn.id, exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.hostname = f"{socket.gethostname()}:{self.port}"
        with self._lock:
            for sim in self._ops.values():
                sim.doc["host"] = self.hostname
        for idle in self._idle:
            idle["host"] = self.hostname

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> MongoWireServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @contextlib.contextmanager
    def running(self) -> Iterator[MongoWireServer]:
        """Serve from a background thread, so synchronous pymongo can block freely."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="mongowire", daemon=True)
        thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _serve_forever(host: str, port: int, internal_ops: bool) -> None:
    server = MongoWireServer(host, port, internal_ops=internal_ops)
    await server.start()
    print(f"mongowire listening on {server.uri}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m remedy_devenv.mongowire",
                                description="MongoDB wire-protocol test double (currentOp/killOp)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("REMEDY_MONGO_PORT", "27117")))
    p.add_argument("--no-internal-ops", action="store_true",
                   help="do not simulate ReplBatcher / internal client operations")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(a.host, a.port, not a.no_internal_ops))


if __name__ == "__main__":
    main()
