#!/usr/bin/env python3
"""Status size of terminatePostgresQueries and killSlowMongoOps at 10,000 planned identities.

Why: the plan and result of both actions live in the Remediation's status (etcd refuses objects
over 1.5 MiB; every watch pays for each byte). Issue 23 asks for < 65,536 bytes at 10,000
planned identities. Status bytes = ``len(json.dumps({"plan": plan, "result": result}))``, as
bench/bulk_redis.py counts them.

How each figure is obtained, honestly:

* **PostgreSQL, real** (``--pg-backends``, default 1,000): a throwaway server of its own
  (remedy_devenv.services.PostgresServer, ``max_connections`` raised to fit) holds that many
  real client backends in ``pg_sleep``; the action plans and executes against them (cancel,
  grace 1 s, terminate). The server is the witness: afterwards no planned backend is still
  running its query, while backends of another application and backends of the same
  application that started after the plan (past the threshold by execute time, not at plan
  time) still are.
* **PostgreSQL at 10,000**: no local server holds 10,000 backends (each is a process; this
  machine has 2 cores). The status at 10,000 is computed by the very builders the action uses
  (``remedy.actions.postgres_evidence``: ``terminate_plan_evidence`` and
  ``terminate_result_evidence``) on 10,000 synthetic rows shaped like ``_CANDIDATES_SQL``'s,
  every query preview at its full 120 characters (the worst case). The real run shows the same
  builders give the same shape on rows from a real server.
* **MongoDB at 10,000, real code path**: the wire-protocol double (remedy_devenv.mongowire)
  reports 10,000 slow client operations plus younger ones and its internal threads; the action
  plans and executes over real pymongo. The double's own kill list is the witness.

``--full-listing`` figures say what the same identities cost when every one is listed (the
format before this change), from the same entries.

    .venv/bin/python bench/database_status.py                  # writes bench/results/database-status.json
    .venv/bin/python bench/database_status.py --smoke --out /tmp/d.json   # 50 backends, 1,000 ops
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "database-status.json"
LIMIT = 65_536
SLOW_APP, OTHER_APP = "bench-slow", "bench-other"
PREVIEW = 120


def status_bytes(plan: dict[str, Any], result: dict[str, Any]) -> int:
    return len(json.dumps({"plan": plan, "result": result}))


def _ctx(secrets: dict[tuple[str, str], str]) -> Any:
    import uuid

    from remedy.actions.base import ActionContext
    from remedy.api.common import SecretKeyRef

    class Ctx(ActionContext):
        async def secret(self, ref: SecretKeyRef) -> str:
            return secrets[(ref.name, ref.key)]

    return Ctx(namespace="bench", name="bench", uid=str(uuid.uuid4()), kube=None)  # type: ignore[arg-type]


# --- PostgreSQL ---------------------------------------------------------------------------


async def _open_sleepers(dsn: str, app: str, n: int, tasks: list[asyncio.Task[Any]]) -> list[Any]:
    """``n`` client backends of ``app``, each running pg_sleep(600) in a task added to ``tasks``."""
    import psycopg

    conns = [await psycopg.AsyncConnection.connect(dsn, application_name=app, autocommit=True) for _ in range(n)]
    tasks += [asyncio.create_task(c.execute("SELECT pg_sleep(600)")) for c in conns]
    return conns


async def _wait_active(admin: Any, app: str, n: int, older_than: float, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while True:
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
            "AND now() - query_start >= make_interval(secs => %s)", [app, older_than])
        row = await cur.fetchone()
        if row and row[0] >= n:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"only {row[0] if row else 0} of {n} {app} backends became active")
        await asyncio.sleep(0.1)


async def _count_active(admin: Any, app: str, pids: list[int] | None = None) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'"
    args: list[Any] = [app]
    if pids is not None:
        sql += " AND pid = ANY(%s)"
        args.append(pids)
    row = await (await admin.execute(sql, args)).fetchone()
    return int(row[0]) if row else 0


async def postgres_real(n: int) -> dict[str, Any]:
    import psycopg

    from remedy.actions.postgres import TERMINATE_POSTGRES_QUERIES
    from remedy_devenv.services import PostgresServer, free_port

    others, late = 5, 5
    with tempfile.TemporaryDirectory(prefix="database-status-") as tmp:
        server = PostgresServer(Path(tmp) / "postgres", free_port(),
                                settings={"max_connections": str(n + others + late + 20)})
        server.start(timeout=120)
        conns: list[Any] = []
        tasks: list[asyncio.Task[Any]] = []
        try:
            admin = await psycopg.AsyncConnection.connect(server.dsn, application_name="bench-admin", autocommit=True)
            conns += await _open_sleepers(server.dsn, SLOW_APP, n, tasks)
            conns += await _open_sleepers(server.dsn, OTHER_APP, others, tasks)
            await _wait_active(admin, SLOW_APP, n, 1.0)
            await _wait_active(admin, OTHER_APP, others, 1.0)
            params = {"connection": {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "statementTimeout": "60s"},
                      "minDuration": "1s", "applicationName": SLOW_APP, "grace": "1s", "maxQueries": 10_000}
            spec = TERMINATE_POSTGRES_QUERIES.params.model_validate(params)
            ctx = _ctx({("pg", "dsn"): server.dsn})
            t0 = time.perf_counter()
            plan = await TERMINATE_POSTGRES_QUERIES.plan(ctx, spec)
            t1 = time.perf_counter()
            # Same application, started after the plan: past the threshold by execute, not at plan time.
            late_conns = await _open_sleepers(server.dsn, SLOW_APP, late, tasks)
            conns += late_conns
            await _wait_active(admin, SLOW_APP, n + late, 1.0)
            late_pids = [c.info.backend_pid for c in late_conns]
            planned_pids = [c.info.backend_pid for c in conns[:n]]
            t2 = time.perf_counter()
            result = await TERMINATE_POSTGRES_QUERIES.execute(ctx, spec, plan)
            t3 = time.perf_counter()
            checks = {
                "plan_counts_every_backend": plan["count"] == n,
                "every_planned_backend_signalled": result["cancelled"] + result["terminated"] == n,
                "server_no_planned_backend_still_active": await _count_active(admin, SLOW_APP, planned_pids) == 0,
                "server_late_backends_untouched": await _count_active(admin, SLOW_APP, late_pids) == late,
                "server_other_app_untouched": await _count_active(admin, OTHER_APP) == others,
                "found_same_set_as_planned": result["found"].get("sameSet") is True,
            }
            await admin.close()
        finally:
            server.stop()  # fast shutdown ends every backend; the sleeping statements then fail
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60) if tasks else None
            for c in conns:
                with contextlib.suppress(Exception):
                    await c.close()
            with contextlib.suppress(Exception):
                server.purge()
    return {"backends": n, "plan_s": round(t1 - t0, 3), "execute_s": round(t3 - t2, 3),
            "status_bytes": status_bytes(plan, result), "plan_bytes": len(json.dumps(plan)),
            "result": {k: result[k] for k in ("cancelled", "terminated", "gone", "signalledCount")},
            "checks": checks}


def synthetic_rows(n: int, min_secs: float = 30.0) -> list[tuple[Any, ...]]:
    """Rows as _CANDIDATES_SQL returns them, for ``n`` distinct backends (worst-case previews)."""
    now = datetime(2026, 12, 5, 12, 0, 0, 123456, tzinfo=UTC)
    bound = now - timedelta(seconds=min_secs)
    rows = []
    for i in range(n):
        query_start = bound - timedelta(seconds=i % 3600, microseconds=i * 7 % 1_000_000)
        backend_start = query_start - timedelta(minutes=5, microseconds=i * 13 % 1_000_000)
        query = (f"SELECT o.id, o.total FROM orders o JOIN order_lines l ON l.order_id = o.id "
                 f"WHERE o.customer_id = {100000 + i} ORDER BY o.created_at DESC")[:PREVIEW].ljust(PREVIEW, " ")
        rows.append((10_000 + i, "checkout_rw", "checkout-service", "app", "active", backend_start, query_start,
                     query_start, (now - query_start).total_seconds(), query, n, now, bound))
    rows.sort(key=lambda r: (-r[8], r[0]))
    return rows


def postgres_10k(n: int) -> dict[str, Any]:
    from remedy.actions.postgres import TERMINATE_POSTGRES_QUERIES
    from remedy.actions.postgres_evidence import (
        backend_evidence,
        identity,
        terminate_plan_evidence,
        terminate_result_evidence,
    )

    spec = TERMINATE_POSTGRES_QUERIES.params.model_validate(
        {"connection": {"dsnSecretRef": {"name": "pg", "key": "dsn"}}, "minDuration": "30s",
         "applicationName": "checkout-service", "queryPattern": "^SELECT", "maxQueries": 10_000})
    rows = synthetic_rows(n)
    plan = terminate_plan_evidence(rows, spec)
    backends = [backend_evidence(r) for r in rows]
    outcome = {identity(b): "terminated" for b in backends}
    result = terminate_result_evidence(plan, backends, outcome)
    full = {"plan": {**plan, "backends": backends},
            "result": {**result, "backends": [{**{k: b[k] for k in ("pid", "user", "applicationName", "database")},
                                               "outcome": "terminated"} for b in backends]}}
    return {"identities": n, "source": "synthetic rows through remedy.actions.postgres_evidence",
            "status_bytes": status_bytes(plan, result), "plan_bytes": len(json.dumps(plan)),
            "full_listing_status_bytes": len(json.dumps(full)),
            "checks": {"plan_counts_every_identity": plan["count"] == n, "sample_bounded": len(plan["backends"]) <= 20,
                       "result_found_same_set": result["found"]["sameSet"] is True}}


# --- MongoDB -----------------------------------------------------------------------------


async def mongo(n: int) -> dict[str, Any]:
    from remedy.actions.mongo import KILL_SLOW_MONGO_OPS
    from remedy_devenv.mongowire import MongoWireServer

    younger = 20
    server = MongoWireServer()
    with server.running():
        slow = {server.add_op(secs_running=60 + i % 3600, appName="inventory-service",
                              command={"find": "orders", "filter": {"customer": i}}) for i in range(n)}
        young = {server.add_op(secs_running=5, appName="inventory-service") for _ in range(younger)}
        internal = {d["opid"] for d in server.ops()} - slow - young
        params = {"connection": {"uriSecretRef": {"name": "mongo", "key": "uri"}, "timeout": "60s"},
                  "minSecsRunning": 30, "appName": "inventory-service", "maxOps": 10_000}
        spec = KILL_SLOW_MONGO_OPS.params.model_validate(params)
        ctx = _ctx({("mongo", "uri"): server.uri})
        t0 = time.perf_counter()
        plan = await KILL_SLOW_MONGO_OPS.plan(ctx, spec)
        t1 = time.perf_counter()
        reads = server.commands["aggregate"]
        result = await KILL_SLOW_MONGO_OPS.execute(ctx, spec, plan)
        t2 = time.perf_counter()
        left = {d["opid"] for d in server.ops()}
        full = {"plan": {**plan, "ops": []}, "result": {**result, "ops": []}}
        sample_entry = len(json.dumps(plan["ops"][0])) + 2
        result_entry = len(json.dumps(result["ops"][0])) + 2
        checks = {
            "plan_counts_every_op": plan["count"] == n,
            "server_killed_exactly_the_slow_ops": set(server.killed) == slow and len(server.killed) == n,
            "server_younger_and_internal_untouched": (young | internal) <= left,
            "found_same_set_as_planned": result["found"].get("sameSet") is True,
        }
        currentop_reads = server.commands["aggregate"] - reads
    return {"ops": n, "source": "real pymongo against remedy_devenv.mongowire", "plan_s": round(t1 - t0, 3),
            "execute_s": round(t2 - t1, 3), "execute_current_op_reads": currentop_reads,
            "status_bytes": status_bytes(plan, result), "plan_bytes": len(json.dumps(plan)),
            # every op listed in plan and result: the sample entries' sizes times n (an estimate)
            "full_listing_status_bytes_estimated": len(json.dumps(full)) + n * (sample_entry + result_entry),
            "checks": checks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg-backends", type=int, default=1000, help="real PostgreSQL backends (default 1,000)")
    ap.add_argument("-n", type=int, default=10_000, help="planned identities for the 10k figures (default 10,000)")
    ap.add_argument("--smoke", action="store_true", help="50 real backends, 1,000 identities (the CI smoke)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.smoke:
        args.pg_backends, args.n = 50, 1_000
    t0 = time.time()
    pg_real = asyncio.run(postgres_real(args.pg_backends))
    pg_10k = postgres_10k(args.n)
    mg = asyncio.run(mongo(args.n))
    checks = {f"postgres_real_{k}": v for k, v in pg_real.pop("checks").items()}
    checks |= {f"postgres_synthetic_{k}": v for k, v in pg_10k.pop("checks").items()}
    checks |= {f"mongo_{k}": v for k, v in mg.pop("checks").items()}
    data = {
        "recordedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "bench/database_status.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "identities": args.n,
        "postgres_status_bytes_10k": pg_10k["status_bytes"],
        "mongo_status_bytes_10k": mg["status_bytes"],
        "goal_bytes": f"< {LIMIT}",
        "postgres_real": pg_real,
        "postgres_synthetic": pg_10k,
        "mongo": mg,
        "checks": checks,
        "machine": {"nproc": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "wall_s": round(time.time() - t0, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"postgres: {pg_real['backends']} real backends: status {pg_real['status_bytes']} B "
          f"(plan {pg_real['plan_s']} s, execute {pg_real['execute_s']} s); {args.n} synthetic: "
          f"{pg_10k['status_bytes']} B (listing every one: {pg_10k['full_listing_status_bytes']} B)")
    print(f"mongo: {args.n} ops: status {mg['status_bytes']} B (listing every one: ~{mg['full_listing_status_bytes_estimated']} B); "
          f"plan {mg['plan_s']} s, execute {mg['execute_s']} s, {mg['execute_current_op_reads']} currentOp reads")
    bad = {k: v for k, v in checks.items() if not v}
    print("checks:", bad if bad else "all passed")
    return 0 if not bad and max(data["postgres_status_bytes_10k"], data["mongo_status_bytes_10k"]) < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
