#!/usr/bin/env python3
"""Bulk Redis benchmark: remedy's purgeIdempotencyKeys and deleteRedisKeys vs the same-run floor.

What it measures, on a throwaway redis-server (remedy_devenv.services.RedisServer) it starts:

* purge: N idempotency records (hashes; a seeded half are stale locks, the rest completed or
  locked into the future). Floor: a pipelined redis-py pass, SCAN COUNT 1000 -> pipelined
  HMGET -> judge in Python -> UNLINK the stale ones (no safety re-check). remedy: the action's
  plan + execute (server-side judge, atomic re-check and UNLINK per batch), run in a child
  process so its peak RSS (ru_maxrss) is its own.
* prefix delete: N string keys under one prefix. Floor: ``redis-cli --scan --pattern p | xargs
  redis-cli unlink``. remedy: deleteRedisKeys plan + execute, in a child process.

Each side runs ``--rounds`` times, interleaved, on freshly filled data; the ratio is
floor seconds / remedy seconds of the best round of each (>= 1 means remedy is as fast as the
floor). Every run is checked by the server: DBSIZE and a server-side count of stale records
afterwards. Results go to bench/results/bulk-redis.json (or --out).

    .venv/bin/python bench/bulk_redis.py                  # full: 1,000,000 keys, 2 rounds
    .venv/bin/python bench/bulk_redis.py --smoke --out /tmp/b.json   # 20,000 keys, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "bulk-redis.json"
PURGE_PATTERN = "idem:bench:*"
PREFIX_PATTERN = "chaos:bench:*"
GRACE_S = 30

# Fills N records server-side (a Python client would take longer than the runs it prepares).
# stale iff a seeded hash of i falls in the lower half; the others are completed, or in progress
# with a lock expiring in the future: both must survive a purge.
FILL_RECORDS_LUA = r"""
local start, stop, seed, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stale = 0
for i = start, stop do
  local h = (i * 2654435761 + seed) % 4294967296
  local r = h % 1000
  local state, lock
  if r < 500 then
    state, lock = 'in_progress', now - 120 - (h % 3600)
    stale = stale + 1
  elseif r < 800 then
    state, lock = 'completed', now - 60
  else
    state, lock = 'in_progress', now + 600
  end
  local iso = string.format('%d', lock)
  redis.call('HSET', 'idem:bench:' .. i, 'key', 'order-' .. i, 'tenant', 't' .. (h % 7), 'state', state,
             'lock_expires_at', iso, 'replay_count', tostring(h % 20),
             'payload_fingerprint', string.format('%08x%08x', h, i), 'response', string.rep('x', 64))
end
return stale
"""

FILL_STRINGS_LUA = r"""
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('SET', 'chaos:bench:' .. i, 'v')
end
return 0
"""

# A server-side count of stale records left (the witness remedy does not control).
COUNT_STALE_LUA = r"""
local cursor, n = '0', 0
local now = tonumber(ARGV[1])
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', 'idem:bench:*', 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    local v = redis.call('HMGET', k, 'state', 'lock_expires_at')
    if v[1] == 'in_progress' and tonumber(v[2]) < now - tonumber(ARGV[2]) then n = n + 1 end
  end
until cursor == '0'
return n
"""


def fill_records(r: Any, n: int, seed: int) -> int:
    r.flushall()
    now, stale, step = int(time.time()), 0, 50_000
    for start in range(0, n, step):
        stale += int(r.eval(FILL_RECORDS_LUA, 0, start, min(n, start + step) - 1, seed, now))
    return stale


def fill_strings(r: Any, n: int) -> None:
    r.flushall()
    for start in range(0, n, 50_000):
        r.eval(FILL_STRINGS_LUA, 0, start, min(n, start + 50_000) - 1)


def count_stale(r: Any) -> int:
    return int(r.eval(COUNT_STALE_LUA, 0, int(time.time()), GRACE_S))


# --- floors ----------------------------------------------------------------------------


def floor_purge(r: Any) -> tuple[float, int]:
    """The same-run floor: SCAN + pipelined HMGET + UNLINK of the stale ones, no re-check."""
    fields = ["key", "tenant", "state", "lock_expires_at", "replay_count"]
    t0 = time.perf_counter()
    cursor, deleted = 0, 0
    while True:
        cursor, names = r.scan(cursor=cursor, match=PURGE_PATTERN, count=1000)
        if names:
            pipe = r.pipeline(transaction=False)
            for k in names:
                pipe.hmget(k, fields)
            limit = time.time() - GRACE_S
            stale = [k for k, v in zip(names, pipe.execute(), strict=True)
                     if v[2] == "in_progress" and v[3] is not None and float(v[3]) < limit]
            if stale:
                deleted += int(r.unlink(*stale))
        if int(cursor) == 0:
            return time.perf_counter() - t0, deleted


def floor_prefix_delete(port: int) -> float:
    cli = shlex.quote(subprocess.run(["which", "redis-cli"], capture_output=True, text=True, check=True).stdout.strip())
    cmd = f"{cli} -p {port} --scan --pattern '{PREFIX_PATTERN}' | xargs {cli} -p {port} unlink > /dev/null"
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], check=True)
    return time.perf_counter() - t0


# --- remedy, in a child process ----------------------------------------------------------


def child(action: str, url: str, max_keys: int) -> None:
    """Run one action's plan + execute as the operator would; print timings, RSS, status size."""
    sys.path.insert(0, str(REPO / "operator"))
    from remedy.actions.base import ActionContext
    from remedy.actions.idempotency import PURGE_IDEMPOTENCY_KEYS
    from remedy.actions.redis_keys import DELETE_REDIS_KEYS
    from remedy.api.common import SecretKeyRef

    class Ctx(ActionContext):
        async def secret(self, ref: SecretKeyRef) -> str:
            return url

    conn = {"urlSecretRef": {"name": "redis", "key": "url"}, "timeout": "30s"}
    if action == "purge":
        act: Any = PURGE_IDEMPOTENCY_KEYS
        spec: dict[str, Any] = {"backend": "redis", "redis": {"connection": conn, "pattern": PURGE_PATTERN},
                                "grace": f"{GRACE_S}s", "maxKeys": max_keys}
    else:
        act = DELETE_REDIS_KEYS
        spec = {"connection": conn, "pattern": PREFIX_PATTERN, "maxKeys": max_keys}
    ctx = Ctx(namespace="bench", name="bench", uid="bench", kube=None)  # type: ignore[arg-type]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def run() -> dict[str, Any]:
        p = act.params.model_validate(spec)
        t0 = time.perf_counter()
        plan = await act.plan(ctx, p)
        t1 = time.perf_counter()
        result = await act.execute(ctx, p, plan)
        t2 = time.perf_counter()
        status = {"plan": plan, "result": result}
        return {"plan_s": t1 - t0, "execute_s": t2 - t1, "seconds": t2 - t0,
                "status_bytes": len(json.dumps(status)), "plan_count": plan.get("stale", plan.get("matched")),
                "acted": result.get("purgedCount", result.get("deleted")), "drift": result.get("drift")}

    out = asyncio.run(run())
    out["rss_after_import_kib"] = rss_before
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))


def run_child(action: str, url: str, max_keys: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", action, "--url", url, "--max-keys", str(max_keys)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"remedy {action} child failed: {proc.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


# --- the benchmark -------------------------------------------------------------------------


def bench(n: int, rounds: int, seed: int) -> dict[str, Any]:
    import redis

    from remedy_devenv.services import RedisServer, free_port

    with tempfile.TemporaryDirectory(prefix="bulk-redis-") as tmp:
        server = RedisServer(Path(tmp) / "redis", free_port())
        server.start(timeout=60)
        try:
            r = redis.Redis(host=server.host, port=server.port, decode_responses=True)
            purge: dict[str, Any] = {"floor_s": [], "remedy_s": [], "remedy_runs": []}
            prefix: dict[str, Any] = {"floor_s": [], "remedy_s": [], "remedy_runs": []}
            checks: dict[str, bool] = {}
            stale = 0
            for rnd in range(rounds):
                for side in ("floor", "remedy"):
                    stale = fill_records(r, n, seed)
                    if side == "floor":
                        secs, deleted = floor_purge(r)
                        purge["floor_s"].append(secs)
                        checks[f"purge_floor_deleted_all_stale_r{rnd}"] = deleted == stale
                    else:
                        out = run_child("purge", server.url, max_keys=n)
                        purge["remedy_s"].append(out["seconds"])
                        purge["remedy_runs"].append(out)
                        checks[f"purge_remedy_purged_all_stale_r{rnd}"] = out["acted"] == stale
                    checks[f"purge_{side}_server_counts_no_stale_left_r{rnd}"] = count_stale(r) == 0
                    checks[f"purge_{side}_server_dbsize_r{rnd}"] = int(r.dbsize()) == n - stale
                    fill_strings(r, n)
                    if side == "floor":
                        prefix["floor_s"].append(floor_prefix_delete(server.port))
                    else:
                        out = run_child("prefix", server.url, max_keys=n)
                        prefix["remedy_s"].append(out["seconds"])
                        prefix["remedy_runs"].append(out)
                    checks[f"prefix_{side}_server_dbsize_zero_r{rnd}"] = int(r.dbsize()) == 0
            r.close()
        finally:
            server.stop()
    for d in (purge, prefix):
        d["floor_best_s"] = min(d["floor_s"])
        d["remedy_best_s"] = min(d["remedy_s"])
        d["ratio_vs_floor"] = d["floor_best_s"] / d["remedy_best_s"]
        d["peak_rss_mib"] = max(run["peak_rss_kib"] for run in d["remedy_runs"]) / 1024
        d["rss_after_import_mib"] = max(run["rss_after_import_kib"] for run in d["remedy_runs"]) / 1024
        d["max_status_bytes"] = max(run["status_bytes"] for run in d["remedy_runs"])
    return {"n": n, "stale": stale, "seed": seed, "rounds": rounds, "purge": purge, "prefix_delete": prefix,
            "checks": checks}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1_000_000, help="keys per run (default 1,000,000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="fill seed (default: random, recorded)")
    ap.add_argument("--smoke", action="store_true", help="20,000 keys, 1 round (the CI smoke)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", choices=["purge", "prefix"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--max-keys", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.url, args.max_keys)
        return 0
    if args.smoke:
        args.n, args.rounds = 20_000, 1
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    t0 = time.time()
    data = bench(args.n, args.rounds, seed)
    data["command"] = "bench/bulk_redis.py " + " ".join(sys.argv[1:])
    data["goals"] = {"ratio_vs_floor_min": 0.9, "peak_rss_mib_max": 100, "status_bytes_max": 65536}
    data["machine"] = {"nproc": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "wall_s": time.time() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    p, d = data["purge"], data["prefix_delete"]
    print(f"purge {args.n}: floor {p['floor_best_s']:.2f}s remedy {p['remedy_best_s']:.2f}s ratio {p['ratio_vs_floor']:.2f}x "
          f"peak RSS {p['peak_rss_mib']:.1f} MiB status {p['max_status_bytes']} B")
    print(f"prefix delete {args.n}: floor {d['floor_best_s']:.2f}s remedy {d['remedy_best_s']:.2f}s ratio {d['ratio_vs_floor']:.2f}x "
          f"peak RSS {d['peak_rss_mib']:.1f} MiB")
    print("checks:", "all passed" if all(data["checks"].values()) else {k: v for k, v in data["checks"].items() if not v})
    return 0 if all(data["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
