#!/usr/bin/env python3
"""Shards benchmark (issue 16): two operator replicas with REMEDY_SHARDS=2 split N Remediations
over M namespaces on a real control plane; one replica is SIGKILLed mid-run and the other must
take over its shard's Lease within the lease time and finish its work. Every Remediation scales
its own Deployment from 1 to 2 replicas, so the API server's audit log is the witness: each
Deployment must be written by the operator exactly once (0 duplicates) and end at 2 replicas,
and every Remediation must end final (0 lost).

The baseline is the lease itself: takeover is reported as seconds and as a ratio to the lease
duration set in the same run (the physical floor: nobody may take a Lease before it expires).

    .venv/bin/python bench/shards.py                      # full: 2,000 Remediations, 20 namespaces
    .venv/bin/python bench/shards.py -n 200 -m 20         # the CI smoke size

Without --state a throwaway control plane (remedy_devenv.cluster, audit log on) is started.
Results are printed and written as JSON to bench/results/shards-<n>.json (REMEDY_RESULTS_DIR
overrides the folder). tests/e2e/test_shards.py imports run_shards() from here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FINAL = {"Succeeded", "Failed", "Skipped"}


def run_shards(cp: Any, n: int, namespaces: int, log_dir: Path, *, lease_seconds: float = 8.0,
               kill_at: float = 0.3, timeout: float = 600.0, seed: int | None = None) -> dict[str, Any]:
    """Run on ControlPlane ``cp`` (audit log on); returns the figures (asserts nothing)."""
    from kubernetes import client

    from remedy.base.constants import GROUP, SHARD_LEASE_PREFIX, VERSION
    from remedy.runtime.shards import shard_of
    from remedy_devenv.audit import AuditCounter
    from remedy_devenv.cluster import OPERATOR_USER
    from remedy_devenv.operator import OperatorProcess
    from remedy_devenv.testkit import deployment, executor_pid, free_ports

    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:6]
    api = _api(cp.admin_kubeconfig)
    core, apps, co = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    coord = client.CoordinationV1Api(api)
    names = [f"sh{run}-{i:02d}" for i in range(namespaces)]
    lease_ns = f"sh{run}-leases"
    for ns in [*names, lease_ns]:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    work = [(names[i % namespaces], f"d-{i:05d}") for i in range(n)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda w: apps.create_namespaced_deployment(w[0], deployment(w[1], 1, None)), work))

    ports = free_ports(4)
    kubeconfig = cp.user_kubeconfig(OPERATOR_USER)
    replicas: list[OperatorProcess] = []
    for index in (0, 1):
        env = {"REMEDY_SHARDS": "2", "REMEDY_SHARD_INDEX": str(index), "REMEDY_SHARD_LEASE_SECONDS": str(lease_seconds),
               "REMEDY_NAMESPACE": lease_ns, "REMEDY_HEARTBEAT_SECONDS": "1", "REMEDY_METRICS_PORT": "0",
               "REMEDY_WEBHOOK_PORT": str(ports[index]),
               "REMEDY_WEBHOOK_ADVERTISE_URL": f"http://127.0.0.1:{ports[index]}/alertmanager"}
        replicas.append(OperatorProcess(kubeconfig, log_dir / f"operator-shard-{index}-{run}.log", env=env,
                                        args=["-n", f"sh{run}-*"]))
    result: dict[str, Any] = {"seed": seed, "remediations": n, "namespaces": namespaces, "leaseSeconds": lease_seconds,
                              "killAtFraction": kill_at, "cpus": os.cpu_count(),
                              "recordedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def holder(shard: int) -> str | None:
        try:
            lease = coord.read_namespaced_lease(f"{SHARD_LEASE_PREFIX}{shard}", lease_ns)
        except client.ApiException:
            return None
        return lease.spec.holder_identity

    def finals() -> list[dict[str, Any]]:
        items = co.list_cluster_custom_object(GROUP, VERSION, "remediations")["items"]
        return [i for i in items if i["metadata"]["namespace"].startswith(f"sh{run}-")]

    try:
        for op in replicas:
            op.start()
        for op in replicas:
            op.wait_ready(60)
        pids = [op.proc.pid for op in replicas]  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and [executor_pid(holder(s)) for s in (0, 1)] != pids:
            time.sleep(0.2)
        result["leasesAtStart"] = [executor_pid(holder(s)) == pids[s] for s in (0, 1)]

        t0 = time.monotonic()
        # Created from a background pool while the loop below watches, so the kill lands while
        # both replicas are busy (creating 2,000 takes longer than running the first 30 %).
        pool = ThreadPoolExecutor(8)
        creates = [pool.submit(co.create_namespaced_custom_object, GROUP, VERSION, w[0], "remediations", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation", "metadata": {"name": w[1]},
            "spec": {"action": {"scaleWorkload": {"target": {"name": w[1]}, "replicas": 2}}}}) for w in work]
        pool.shutdown(wait=False)

        killed_at = None
        done: list[dict[str, Any]] = []
        before_kill: Counter[int | None] = Counter()
        takeover = None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "createSeconds" not in result and all(f.done() for f in creates):
                for f in creates:
                    f.result()  # a failed create is a failed run
                result["createSeconds"] = round(time.monotonic() - t0, 2)
            items = finals()
            done = [i for i in items if (i.get("status") or {}).get("phase") in FINAL]
            if killed_at is None and len(done) >= kill_at * n:
                before_kill = Counter(executor_pid((i.get("status") or {}).get("executor")) for i in done)
                replicas[1].kill()
                killed_at = time.monotonic()
                killed_wall = time.time()
                result["finalAtKill"] = len(done)
            if killed_at is not None and takeover is None and executor_pid(holder(1)) == pids[0]:
                takeover = time.monotonic() - killed_at
            if len(done) >= n and (killed_at is None or takeover is not None):
                break
            time.sleep(0.5)
        result["completionSeconds"] = round(time.monotonic() - t0, 2)
        if takeover is not None:
            # Read off the Lease itself: the survivor's acquireTime (same machine clock) minus the
            # SIGKILL, not this loop's polling period.
            lease = coord.read_namespaced_lease(f"{SHARD_LEASE_PREFIX}1", lease_ns)
            takeover = lease.spec.acquire_time.timestamp() - killed_wall
            result["leaseTransitions"] = lease.spec.lease_transitions
        result["takeoverSeconds"] = round(takeover, 2) if takeover is not None else None
        result["takeoverRatioVsLease"] = round(takeover / lease_seconds, 2) if takeover is not None else None
        result["final"] = len(done)
        result["lost"] = n - len(done)
        result["phases"] = dict(Counter(i["status"]["phase"] for i in done))
        by_shard = Counter(shard_of(ns, 2) for ns, _ in work)
        result["perShard"] = {"namespaces": [sum(1 for ns in names if shard_of(ns, 2) == s) for s in (0, 1)],
                              "remediations": [by_shard[s] for s in (0, 1)]}
        executors = Counter(executor_pid((i.get("status") or {}).get("executor")) for i in done)
        result["finishedBy"] = {"replica0": executors[pids[0]], "replica1": executors[pids[1]]}
        result["finishedBeforeKill"] = {"replica0": before_kill[pids[0]], "replica1": before_kill[pids[1]]}
        # Which replica finished what, against which shard owned its namespace at the start.
        wrong_shard_before_kill = sum(
            1 for i in done if executor_pid((i.get("status") or {}).get("executor")) == pids[1]
            and shard_of(i["metadata"]["namespace"], 2) != 1)
        result["finishedOutsideOwnShardByReplica1"] = wrong_shard_before_kill

        audit = AuditCounter(cp.audit_log, OPERATOR_USER)
        audit.settle(quiet_seconds=2.0, timeout=30)
        # Effective (2xx) writes are certainly applied: a Deployment with two is a duplicate.
        # Ambiguous ones (5xx: requests of the killed replica in flight, which storage may or may
        # not have committed) are counted apart: with an effective write to the same Deployment
        # they are a *possible* duplicate (the survivor observed "not applied" and sent again).
        effective: Counter[tuple[str, str]] = Counter()
        ambiguous: Counter[tuple[str, str]] = Counter()
        for w in audit.writes():
            if not (w.namespace.startswith(f"sh{run}-") and w.resource.startswith("deployments")):
                continue
            if w.effective:
                effective[(w.namespace, w.name)] += 1
            elif w.ambiguous:
                ambiguous[(w.namespace, w.name)] += 1
        reached = effective + ambiguous
        result["deploymentsWritten"] = len(reached)
        result["duplicates"] = sum(c - 1 for c in effective.values() if c > 1)
        result["possibleDuplicates"] = sum(1 for k, c in reached.items() if c > 1)
        result["ambiguousWrites"] = sum(ambiguous.values())
        scaled = 0
        for ns in names:
            scaled += sum(1 for d in apps.list_namespaced_deployment(ns).items if d.spec.replicas == 2)
        result["deploymentsAtTwoReplicas"] = scaled
        result["survivorAlive"] = replicas[0].alive
    finally:
        for op in replicas:
            op.stop()
        for ns in [*names, lease_ns]:
            try:
                core.delete_namespace(ns)
            except Exception:  # noqa: BLE001 - cleanup of a throwaway namespace
                pass
    return result


def _api(kubeconfig: Path) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--remediations", type=int, default=2000)
    ap.add_argument("-m", "--namespaces", type=int, default=20)
    ap.add_argument("--lease-seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    from remedy_devenv.cluster import ControlPlane
    from remedy_devenv.testkit import free_ports

    tmp = Path(tempfile.mkdtemp(prefix="remedy-shards-"))
    etcd, peer, apiport, kcm = free_ports(4)
    cp = ControlPlane(state_dir=tmp / "cluster", etcd_port=etcd, etcd_peer_port=peer, apiserver_port=apiport,
                      controller_manager_port=kcm, fake_kubelet=False)
    cp.start(timeout=240)
    try:
        sys.path.insert(0, str(REPO))
        from tests.fixtures.operator import install_remedy_api  # CRDs Established + admission policies

        install_remedy_api(cp)
        result = run_shards(cp, args.remediations, args.namespaces, tmp, lease_seconds=args.lease_seconds,
                            seed=args.seed, timeout=1800)
    finally:
        cp.stop()
    result["command"] = "bench/shards.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out_dir = Path(os.environ.get("REMEDY_RESULTS_DIR") or REPO / "bench" / "results")
    out = out_dir / f"shards-{args.remediations}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    ok = result["lost"] == 0 and result["duplicates"] == 0 and result["takeoverSeconds"] is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
