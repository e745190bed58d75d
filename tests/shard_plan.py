"""Which test files run in which concurrent pytest process of `./scripts/test` (tests/shard_run.py).

Why: the suite spends most of its time waiting on real processes (control planes, operators,
servers) rather than computing, so a few pytest sessions side by side on two cores finish in far
less wall time than one. Each session starts its own fixtures on free loopback ports in its own
temp dirs, so the only things that decide the split are:

* balance: files are placed longest first onto the least loaded shard, by the seconds measured
  in a full run (SECONDS; a file not listed counts DEFAULT_SECONDS). Ties go to the lower shard
  and files are taken in path order, so the split is deterministic for a given set of files;
* the unit tests stay together in shard 0 and run first there (tests/conftest.py orders them),
  so a broken build still fails in seconds;
* every test that runs a real node (containerd + kubelet: the `node*` fixtures, the demo) is in
  ONE shard: their containers, cgroups and images are host-wide, so they never overlap.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Files whose tests start a real node (tests/fixtures/node.py, ./scripts/demo). A unit test
# scans every test file for the real-node fixtures and fails if one is missing here.
REAL_NODE = ("tests/e2e/test_argocd_chart.py", "tests/e2e/test_demo.py", "tests/e2e/test_real_node.py")

# Seconds per file (setup + call + teardown; refresh with REMEDY_TEST_DURATIONS=0 and sum each
# file's lines) measured by a full two-shard run on the 2-core machine; only the balance depends
# on them, never correctness. The unit tests are one block (shard 0); a file under a second is
# left to DEFAULT_SECONDS.
UNIT_SECONDS = 20.0
DEFAULT_SECONDS = 10.0
SECONDS: dict[str, float] = {
    "tests/e2e/test_demo.py": 131,
    "tests/e2e/test_argocd_chart.py": 130,
    "tests/e2e/test_argocd.py": 110,
    "tests/e2e/test_shards.py": 119,
    "tests/e2e/test_kubectl_plugin.py": 99,
    "tests/reliability/test_outages.py": 91,
    "tests/e2e/test_shipping.py": 86,
    "tests/reliability/test_fuzz.py": 80,
    "tests/e2e/test_history.py": 73,
    "tests/e2e/test_policies.py": 72,
    "tests/reliability/test_crash_consistency.py": 69,
    "tests/e2e/test_real_node.py": 62,
    "tests/reliability/test_faults.py": 61,
    "tests/security/test_validating_only.py": 60,
    "tests/reliability/test_ha.py": 57,
    "tests/e2e/test_lifecycle.py": 49,
    "tests/bench_smoke/test_alert_latency_smoke.py": 46,
    "tests/e2e/test_alertmanager_holds.py": 44,
    "tests/e2e/test_autonomy.py": 43,
    "tests/reliability/test_safety.py": 38,
    "tests/bench_smoke/test_memory_smoke.py": 35,
    "tests/security/test_requester.py": 34,
    "tests/e2e/test_examples.py": 30,
    "tests/reliability/test_load_smoke.py": 29,
    "tests/e2e/test_trust.py": 28,
    "tests/e2e/test_flap_alertmanager.py": 22,
    "tests/integration/test_control_plane.py": 15,
    "tests/integration/test_postgres_actions.py": 15,
    "tests/integration/test_bulk_million.py": 13,
    "tests/e2e/test_gitops_revert.py": 13,
    "tests/integration/test_services.py": 12,
    "tests/security/test_redaction_e2e.py": 8,
    "tests/security/test_receiver.py": 7,
    "tests/integration/test_idempotency_action.py": 6,
    "tests/integration/test_demoapp.py": 6,
    "tests/e2e/test_describe_keys.py": 6,
    "tests/e2e/test_notify_sinks.py": 4,
    "tests/reliability/test_security.py": 3,
    "tests/integration/test_redis_actions.py": 3,
    "tests/bench_smoke/test_bulk_redis_smoke.py": 2,
    "tests/integration/test_argocd_health.py": 1,
    "tests/integration/test_mongo_action.py": 1,
    "tests/security/test_policy_manifests.py": 1,
    "tests/integration/test_http_actions.py": 1,
}


def collected_files(root: Path = REPO) -> list[str]:
    """Every file pytest collects under tests/ (its default `test_*.py` rule), as repo paths."""
    return sorted(p.relative_to(root).as_posix() for p in (root / "tests").rglob("test_*.py"))


def is_unit(path: str) -> bool:
    return path.startswith("tests/unit/")


def plan(files: list[str], shards: int) -> list[list[str]]:
    """Split `files` into `shards` lists (each sorted), every file in exactly one."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    groups: list[tuple[float, list[str]]] = []
    unit = [f for f in files if is_unit(f)]
    node = [f for f in files if f in REAL_NODE]
    rest = [f for f in files if not is_unit(f) and f not in REAL_NODE]
    if node:
        groups.append((sum(SECONDS.get(f, DEFAULT_SECONDS) for f in node), node))
    groups += [(SECONDS.get(f, DEFAULT_SECONDS), [f]) for f in rest]
    groups.sort(key=lambda g: (-g[0], g[1][0]))
    out: list[list[str]] = [[] for _ in range(shards)]
    load = [0.0] * shards
    if unit:
        out[0] += unit
        load[0] += UNIT_SECONDS
    for seconds, members in groups:
        i = min(range(shards), key=lambda k: (load[k], k))
        out[i] += members
        load[i] += seconds
    return [sorted(s) for s in out]


def estimate(files: list[str]) -> float:
    """Serial seconds the table expects for `files` (for the runner's report)."""
    unit = UNIT_SECONDS if any(map(is_unit, files)) else 0.0
    return unit + sum(SECONDS.get(f, DEFAULT_SECONDS) for f in files if not is_unit(f))
