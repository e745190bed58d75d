#!/usr/bin/env python3
"""Operator memory per object: RSS idle, per 100 RemediationPolicies and per 1,000 Remediations.

One operator process (namespace-scoped to a fresh namespace) on a real control plane
(remedy_devenv.cluster, or --kubeconfig). Steps, each followed by a settle time and a reading
of the operator's current RSS (VmRSS; the peak VmHWM too):

1. idle (no objects);
2. P RemediationPolicies created (alert trigger that never fires, notify template);
3. N Remediations (notify, a trivial action) created in steps of --step and run to a final
   phase; RSS read after each step.

Per-object figures are slopes between readings (MiB per 100 policies, per 1,000 Remediations).
``rss_mib_10k_remediations_1k_policies`` is measured when N >= 10,000 and P >= 1,000; otherwise
it is the straight-line estimate idle + 10 x per-1,000 + 10 x per-100 and says so (``estimated``).

    .venv/bin/python bench/memory.py                      # 2,000 Remediations + 200 policies
    .venv/bin/python bench/memory.py -n 10000 -p 1000     # the goal's size (about 15 min here)
    .venv/bin/python bench/memory.py -n 300 -p 30 --out /tmp/m.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "memory.json"
FINAL = {"Succeeded", "Failed", "Skipped"}


def measure(kubeconfig: Path, n: int, p: int, step: int, settle: float, log_dir: Path, workers: int = 8) -> dict[str, Any]:
    from kubernetes import client

    from remedy_devenv.operator import OperatorProcess
    from remedy_devenv.testkit import bench_module, rss_mib

    load: Any = bench_module("load")
    api = load._api(kubeconfig)
    co = client.CustomObjectsApi(api)
    ns = load._namespace(api, "mem")
    op = OperatorProcess(kubeconfig, log_dir / f"operator-memory-{ns}.log",
                         env={"REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": "0"}, args=["-n", ns])
    op.start()
    readings: list[dict[str, Any]] = []
    try:
        op.wait_ready(60)
        assert op.proc is not None
        pid = op.proc.pid

        def read(label: str, policies: int, remediations: int) -> None:
            time.sleep(settle)
            rss, hwm = rss_mib(pid)
            readings.append({"step": label, "policies": policies, "remediations": remediations,
                             "rss_mib": round(rss, 1), "peak_mib": round(hwm, 1)})
            print(f"{label}: {policies} policies, {remediations} Remediations -> RSS {rss:.1f} MiB (peak {hwm:.1f})", flush=True)

        read("idle", 0, 0)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: co.create_namespaced_custom_object(
                GROUP, VERSION, ns, "remediationpolicies", load._body(f"pol-{i:04d}", "RemediationPolicy", load._policy_spec(i))),
                range(p)))
        read("policies", p, 0)
        made = 0
        while made < n:
            batch = range(made, min(n, made + step))
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: co.create_namespaced_custom_object(
                    GROUP, VERSION, ns, "remediations", load._body(f"r-{i:05d}")), batch))
            made = batch.stop
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                listing: Any = co.list_namespaced_custom_object(GROUP, VERSION, ns, "remediations")
                items: list[dict[str, Any]] = listing["items"]
                if sum(1 for i in items if (i.get("status") or {}).get("phase") in FINAL) >= made:
                    break
                if not op.alive:
                    raise RuntimeError(f"operator died; see {op.log_path}")
                time.sleep(1.0)
            read(f"remediations-{made}", p, made)
    finally:
        op.stop()
        client.CoreV1Api(api).delete_namespace(ns)
        api.close()
    idle = readings[0]["rss_mib"]
    with_policies = readings[1]["rss_mib"]
    last = readings[-1]
    per_100_policies = (with_policies - idle) / p * 100 if p else None
    per_1000 = (last["rss_mib"] - with_policies) / n * 1000 if n else None
    measured = n >= 10_000 and p >= 1_000
    if measured:
        goal_figure = last["rss_mib"]
    elif per_1000 is not None and per_100_policies is not None:
        goal_figure = round(idle + 10 * per_1000 + 10 * per_100_policies, 1)
    else:
        goal_figure = None
    return {
        "remediations": n, "policies": p, "step": step, "settle_s": settle, "readings": readings,
        "rss_idle_mib": idle, "rss_mib_per_100_policies": None if per_100_policies is None else round(per_100_policies, 2),
        "rss_mib_per_1000_remediations": None if per_1000 is None else round(per_1000, 2),
        "rss_mib_10k_remediations_1k_policies": goal_figure, "estimated": not measured,
        "note": None if measured else (f"straight-line estimate from {n:,} Remediations and {p:,} policies "
                                       "(idle + 10 x per-1,000 + 10 x per-100), not a 10k/1k run"),
    }


GROUP, VERSION = "remedy.dev", "v1alpha1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--remediations", type=int, default=2000)
    ap.add_argument("-p", "--policies", type=int, default=200)
    ap.add_argument("--step", type=int, default=1000)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds to wait before each RSS reading")
    ap.add_argument("--kubeconfig", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from remedy_devenv import admission
    from remedy_devenv.cluster import ControlPlane, locate_binaries

    tmp = Path(tempfile.mkdtemp(prefix="remedy-memory-"))
    cp = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from remedy_devenv.testkit import free_ports

        etcd, peer, apiport, kcm = free_ports(4)
        cp = ControlPlane(state_dir=tmp / "cluster", etcd_port=etcd, etcd_peer_port=peer, apiserver_port=apiport,
                          controller_manager_port=kcm, fake_kubelet=False)
        cp.start(timeout=240)
        kubeconfig = cp.admin_kubeconfig
    t0 = time.time()
    try:
        kubectl = str(locate_binaries() / "kubectl")
        subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-f", str(REPO / "crds")],
                       check=True, capture_output=True)
        for _ in range(30):  # `kubectl wait` errors (instead of waiting) while a fresh CRD has no conditions
            done = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Established",
                                   "--timeout=60s", "crd/remediations.remedy.dev", "crd/remediationpolicies.remedy.dev"],
                                  capture_output=True)
            if done.returncode == 0:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"CRDs not established: {done.stderr.decode()[-500:]}")
        if cp is not None:
            admission.install(cp)
        else:
            subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "-k", str(admission.ADMISSION)], check=True,
                           capture_output=True)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        result = measure(Path(kubeconfig), args.remediations, args.policies, args.step, args.settle, tmp)
    finally:
        if cp is not None:
            cp.stop()
    result["command"] = "bench/memory.py " + " ".join(sys.argv[1:] if argv is None else argv)
    # The operator inherits this environment: record the settings that change its memory use.
    result["operator_env"] = {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "REMEDY_WORKER_LIMIT")}
    result["machine"] = {"nproc": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "wall_s": round(time.time() - t0, 1)}
    result["recordedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "readings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
