#!/usr/bin/env python3
"""Assemble bench/results/summary.json: the latest figure of each scale goal (issue 16), taken
from the individual benchmark result files, never typed by hand.

Each key holds a number, or null when nothing measured it; ``reasons`` says why a figure is
null (or what to keep in mind about it) and ``sources`` names the result file, its recorded
date and the command that produced it. docs/benchmarks.md renders it (bench/render.py).

    .venv/bin/python bench/summary.py            # rewrite bench/results/summary.json
    .venv/bin/python bench/summary.py --check    # exit 1 when the committed summary is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
OUT = RESULTS / "summary.json"

KEYS = ("purge_ratio_vs_floor", "prefix_delete_ratio_vs_redis_cli", "purge_peak_rss_mib", "storm_alerts_per_s",
        "storm_remediations", "alert_p99_ms", "alert_p99_ratio_vs_floor", "rss_mib_10k_remediations_1k_policies",
        "shard_takeover_s", "shard_duplicates", "namespace_pickup_p99_s", "postgres_status_bytes_10k",
        "mongo_status_bytes_10k", "rss_mib_idle", "rss_mib_per_replica_2_shards", "ci_pytest_seconds")

GOALS = {
    "purge_ratio_vs_floor": ">= 1", "prefix_delete_ratio_vs_redis_cli": ">= 0.9", "purge_peak_rss_mib": "< 100",
    "storm_alerts_per_s": ">= 10000", "storm_remediations": "== 100 (10,000 alerts over 100 fingerprints)",
    "alert_p99_ms": "< 40", "alert_p99_ratio_vs_floor": "<= 2", "rss_mib_10k_remediations_1k_policies": "< 200",
    "shard_takeover_s": "<= lease time", "shard_duplicates": "== 0",
    "namespace_pickup_p99_s": "<= 5 (a matching namespace is picked up within seconds)",
    "postgres_status_bytes_10k": "< 65536", "mongo_status_bytes_10k": "< 65536",
    "rss_mib_idle": "beside the 10k figure", "rss_mib_per_replica_2_shards": "< 0.6x the single-replica figure",
    "ci_pytest_seconds": "< 720 (fresh clone, this machine kind)",
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _newest(results: Path, pattern: str) -> tuple[Path | None, dict[str, Any]]:
    paths = sorted(results.glob(pattern))
    return (paths[-1], _load(paths[-1])) if paths else (None, {})


def build(results: Path = RESULTS) -> dict[str, Any]:
    figures: dict[str, Any] = dict.fromkeys(KEYS)
    reasons: dict[str, str] = {}
    sources: dict[str, dict[str, Any]] = {}

    def source(keys: tuple[str, ...], path: Path, data: dict[str, Any]) -> None:
        for k in keys:
            sources[k] = {"file": path.name, "recorded": data.get("recordedAt") or data.get("date"),
                          "command": data.get("command")}

    path = results / "bulk-redis.json"
    if path.exists():
        d = _load(path)
        figures["purge_ratio_vs_floor"] = round(d["purge"]["ratio_vs_floor"], 3)
        figures["prefix_delete_ratio_vs_redis_cli"] = round(d["prefix_delete"]["ratio_vs_floor"], 3)
        figures["purge_peak_rss_mib"] = round(d["purge"]["peak_rss_mib"], 1)
        source(("purge_ratio_vs_floor", "prefix_delete_ratio_vs_redis_cli", "purge_peak_rss_mib"), path, d)
        if not all(d.get("checks", {}).values()):
            reasons["purge_ratio_vs_floor"] = "a server-side check of that run failed: see checks in bulk-redis.json"
    else:
        for k in ("purge_ratio_vs_floor", "prefix_delete_ratio_vs_redis_cli", "purge_peak_rss_mib"):
            reasons[k] = "no bench/results/bulk-redis.json: run bench/bulk_redis.py"

    newest, d = _newest(results, "alert_latency-*.json")
    if newest is not None:
        path = newest
        storm, lat = d.get("storm", {}).get("remedy", {}), d.get("latency", {})
        figures["storm_alerts_per_s"] = storm.get("alerts_per_s")
        # Counted by LIST on the API server after the queued work settled (the webhook answers
        # before every create is done); older result files only have the webhook's own count.
        figures["storm_remediations"] = d.get("storm", {}).get("children_created", (storm.get("outcomes") or {}).get("created"))
        if lat.get("remedy", {}).get("p99") is not None:
            figures["alert_p99_ms"] = round(lat["remedy"]["p99"] * 1000, 1)
        figures["alert_p99_ratio_vs_floor"] = lat.get("ratio", {}).get("p99")
        keys = ("storm_alerts_per_s", "storm_remediations", "alert_p99_ms", "alert_p99_ratio_vs_floor")
        source(keys, path, d)
        missed = {
            "storm_alerts_per_s": (figures.get("storm_alerts_per_s") or 0) < 10000,
            "storm_remediations": figures.get("storm_remediations") != 100,
            "alert_p99_ms": (figures.get("alert_p99_ms") or 1e9) >= 40,
            "alert_p99_ratio_vs_floor": (figures.get("alert_p99_ratio_vs_floor") or 1e9) > 2,
        }
        for k in keys:
            if missed[k]:
                reasons[k] = (f"from {path.name} (bench/alert_latency.py): goal {GOALS[k]} missed; see "
                              "docs/benchmarks.md (alert storms) for where the time goes")
    else:
        for k in ("storm_alerts_per_s", "storm_remediations", "alert_p99_ms", "alert_p99_ratio_vs_floor"):
            reasons[k] = "no alert_latency-*.json: run bench/alert_latency.py"

    path = results / "memory.json"
    if path.exists():
        d = _load(path)
        figures["rss_mib_10k_remediations_1k_policies"] = d.get("rss_mib_10k_remediations_1k_policies")
        figures["rss_mib_idle"] = d.get("rss_idle_mib")
        source(("rss_mib_10k_remediations_1k_policies", "rss_mib_idle"), path, d)
        if d.get("note"):
            reasons["rss_mib_10k_remediations_1k_policies"] = str(d["note"])
        elif (d.get("rss_mib_10k_remediations_1k_policies") or 0) >= 200:
            reasons["rss_mib_10k_remediations_1k_policies"] = (
                f"goal not met: idle {d.get('rss_idle_mib')} MiB, {d.get('rss_mib_per_100_policies')} MiB per 100 policies, "
                f"{d.get('rss_mib_per_1000_remediations')} MiB per 1,000 Remediations (objects held, no history limits); "
                "profile and what holds the rest: docs/benchmarks.md (memory) and docs/scale.md")
    else:
        reasons["rss_mib_10k_remediations_1k_policies"] = (
            "not measured: bench/memory.py (issue 16 item 2/3: history limits, GC, untracked final objects) "
            "is not built yet")

    newest, d = _newest(results, "shards-[0-9]*.json")
    if newest is not None:
        figures["shard_takeover_s"] = d.get("takeoverSeconds")
        figures["shard_duplicates"] = d.get("duplicates")
        source(("shard_takeover_s", "shard_duplicates"), newest, d)
        ratio = d.get("takeoverRatioVsLease")
        reasons["shard_takeover_s"] = (
            f"{d.get('remediations')} Remediations over {d.get('namespaces')} namespaces, lease "
            f"{d.get('leaseSeconds')} s: takeover = {ratio}x the lease, from the SIGKILL to the survivor's "
            "acquireTime on the Lease. The survivor counts the lease from when it first saw the dead replica's "
            "last renewal: up to one lease round (a tenth of the lease) longer than the lease, and shorter when "
            "the dead replica's renewals were already late under load before the kill")
        if d.get("lost") or d.get("possibleDuplicates"):
            reasons["shard_duplicates"] = (f"lost {d.get('lost')}, possible duplicates (an ambiguous 5xx write of the "
                                           f"killed replica plus a re-send) {d.get('possibleDuplicates')}")
    else:
        for k in ("shard_takeover_s", "shard_duplicates"):
            reasons[k] = "no bench/results/shards-<n>.json: run bench/shards.py"

    path = results / "namespace-pickup.json"
    if path.exists():
        d = _load(path)
        figures["namespace_pickup_p99_s"] = d.get("namespace_pickup_p99_s")
        source(("namespace_pickup_p99_s",), path, d)
        reasons["namespace_pickup_p99_s"] = (
            f"namespace created -> Remediation Accepted, {d.get('afterReady')} namespaces created after the operator "
            f"was ready (half 30 ms apart while its namespace watch starts); p50 {d.get('namespace_pickup_p50_s')} s. "
            f"{d.get('whileStarting')} more created while it started were all picked up "
            f"(p99 {d.get('whileStarting_p99_s_from_ready')} s from ready)")
        if d.get("notPickedUpWithin", {}).get("namespaces"):
            reasons["namespace_pickup_p99_s"] += f"; NOT picked up: {d['notPickedUpWithin']}"
    else:
        reasons["namespace_pickup_p99_s"] = "no bench/results/namespace-pickup.json: run bench/namespace_pickup.py"
    path = results / "database-status.json"
    db_keys = ("postgres_status_bytes_10k", "mongo_status_bytes_10k")
    if path.exists():
        d = _load(path)
        for k in db_keys:
            figures[k] = d.get(k)
        source(db_keys, path, d)
        real = d.get("postgres_real", {})
        reasons["postgres_status_bytes_10k"] = (
            f"{d.get('identities')} identities through the action's own evidence builders on synthetic rows (no "
            f"local server holds 10,000 backends); {real.get('backends')} real backends on a real PostgreSQL: "
            f"{real.get('status_bytes')} B")
        reasons["mongo_status_bytes_10k"] = (f"{d.get('identities')} operations reported by the wire double "
                                             "(remedy_devenv.mongowire), plan and execute over real pymongo")
        failed = [k for k, ok in d.get("checks", {}).items() if not ok]
        if failed:
            for k in db_keys:
                reasons[k] += f"; checks failed: {', '.join(failed)}"
    else:
        for k in db_keys:
            reasons[k] = "no bench/results/database-status.json: run bench/database_status.py"

    reasons["rss_mib_per_replica_2_shards"] = (
        "not measured: each shard replica still watches every namespace (kopf's watch is per process, not per "
        "shard), so two replicas hold the same objects; the lever is a watch per held shard's namespaces, "
        "started on takeover (docs/scale.md)")
    path = results / "ci-pytest.json"
    if path.exists():
        d = _load(path)
        figures["ci_pytest_seconds"] = d.get("ci_pytest_seconds")
        source(("ci_pytest_seconds",), path, d)
        reasons["ci_pytest_seconds"] = (f"{d.get('shards')} concurrent pytest sessions on {d.get('cores')} cores, "
                                        f"commit {str(d.get('commit'))[:12]}, all passed: {d.get('passed')}")
    else:
        reasons["ci_pytest_seconds"] = "no bench/results/ci-pytest.json: copy it from a fresh clone's ./scripts/test"
    return {**figures, "goals": GOALS, "reasons": reasons, "sources": sources}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=2) + "\n"
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run bench/summary.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
