#!/usr/bin/env python3
"""Load benchmark: N Remediations (trivial `notify` action) + P RemediationPolicies handled by
one operator process; prints throughput (Remediations completed per second) and the operator's
peak RSS (VmHWM), against a baseline measured in the same run: a plain client (no operator)
doing the same API round-trips per object (create, get, 3 status patches: Pending, Running,
Succeeded) for the same number of objects, with the same client concurrency.

    .venv/bin/python bench/load.py                          # full: 2,000 + 500, own control plane
    .venv/bin/python bench/load.py -n 200 -p 50             # the CI smoke size
    .venv/bin/python bench/load.py --kubeconfig ~/.local/state/remedy/cluster/admin.kubeconfig

Without --kubeconfig a throwaway control plane (remedy_devenv.cluster) is started in a temp
dir. Results are printed and written as JSON to bench/results/load-<n>-<p>.json.
tests/reliability/test_load_smoke.py imports run_load() from here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

from remedy.base.constants import GROUP, VERSION
from remedy_devenv.testkit import free_ports

REPO = Path(__file__).resolve().parents[1]
FINAL = {"Succeeded", "Failed", "Skipped"}


def _api(kubeconfig: Path) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    api.configuration.connection_pool_maxsize = 16
    return api


def _namespace(api: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _body(name: str, kind: str = "Remediation", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name},
            "spec": spec or {"action": {"notify": {"message": f"load {name}", "severity": "info"}}}}


def _policy_spec(i: int) -> dict[str, Any]:
    return {"trigger": {"alert": {"alertname": f"Load{i}", "matchLabels": {"svc": f"s{i}"}}},
            "template": {"action": {"notify": {"message": "load {{ labels.svc }}"}}}}


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def baseline(api: client.ApiClient, n: int, workers: int) -> float:
    """Seconds for a plain client to do the operator's per-object API round-trips for n objects."""
    ns = _namespace(api, "ldb")
    co = client.CustomObjectsApi(api)

    def one(i: int) -> None:
        name = f"b-{i:05d}"
        co.create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", _body(name))
        co.get_namespaced_custom_object(GROUP, VERSION, ns, "remediations", name)
        for phase in ("Pending", "Running", "Succeeded"):
            co.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "remediations", name,
                                                     {"status": {"phase": phase, "message": phase}})

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))
    elapsed = time.monotonic() - t0
    client.CoreV1Api(api).delete_namespace(ns)
    return elapsed


def run_load(kubeconfig: Path, n: int, p: int, log_dir: Path, workers: int = 8, timeout: float = 900.0,
             with_baseline: bool = True) -> dict[str, Any]:
    from remedy_devenv.operator import OperatorProcess

    api = _api(kubeconfig)
    co = client.CustomObjectsApi(api)
    ns = _namespace(api, "ld")
    op = OperatorProcess(kubeconfig, log_dir / f"operator-load-{ns}.log",
                         env={"REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": "0"}, args=["-n", ns])
    op.start()
    try:
        op.wait_ready(60)
        assert op.proc is not None
        rss_idle = _peak_rss_mb(op.proc.pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: co.create_namespaced_custom_object(
                GROUP, VERSION, ns, "remediationpolicies", _body(f"pol-{i:04d}", "RemediationPolicy", _policy_spec(i))), range(p)))
        policies_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: co.create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", _body(f"r-{i:05d}")), range(n)))
        created_seconds = time.monotonic() - t1
        done: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = co.list_namespaced_custom_object(GROUP, VERSION, ns, "remediations")["items"]
            done = [i for i in items if (i.get("status") or {}).get("phase") in FINAL]
            if len(done) >= n:
                break
            if not op.alive:
                raise RuntimeError(f"operator died; see {op.log_path}")
            time.sleep(0.5)
        elapsed = time.monotonic() - t1
        peak = _peak_rss_mb(op.proc.pid)
        phases: dict[str, int] = {}
        for i in done:
            phases[i["status"]["phase"]] = phases.get(i["status"]["phase"], 0) + 1
        policies = co.list_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies")["items"]
        ready = sum(1 for x in policies if any(c.get("type") == "Ready" and c.get("status") == "True"
                                               for c in (x.get("status") or {}).get("conditions") or []))
        result: dict[str, Any] = {
            "remediations": n, "policies": p, "completed": len(done), "phases": phases, "policiesReady": ready,
            "policiesCreateSeconds": round(policies_seconds, 2), "createSeconds": round(created_seconds, 2),
            "completionSeconds": round(elapsed, 2), "throughputPerSecond": round(len(done) / elapsed, 1),
            "peakRssMiB": round(peak, 1), "idleRssMiB": round(rss_idle, 1), "operatorAlive": op.alive,
            "clientWorkers": workers,
        }
    finally:
        op.stop()
        client.CoreV1Api(api).delete_namespace(ns)
    if with_baseline:
        b = baseline(api, n, workers)
        result.update({"baselineSeconds": round(b, 2), "baselinePerSecond": round(n / b, 1),
                       "ratioVsBaseline": round(result["completionSeconds"] / b, 2)})
    api.close()  # type: ignore[no-untyped-call]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--remediations", type=int, default=2000)
    ap.add_argument("-p", "--policies", type=int, default=500)
    ap.add_argument("--workers", type=int, default=8, help="client threads creating objects (and in the baseline)")
    ap.add_argument("--kubeconfig", type=Path, default=None, help="reuse a cluster (CRDs applied here)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "operator"))
    from remedy_devenv.cluster import ControlPlane

    tmp = Path(tempfile.mkdtemp(prefix="remedy-load-"))
    cp = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        etcd, peer, apiport, kcm = free_ports(4)
        cp = ControlPlane(state_dir=tmp / "cluster", etcd_port=etcd, etcd_peer_port=peer, apiserver_port=apiport,
                          controller_manager_port=kcm, fake_kubelet=False)
        cp.start(timeout=240)
        kubeconfig = cp.admin_kubeconfig
    try:
        import subprocess

        from remedy_devenv.cluster import locate_binaries
        kubectl = str(locate_binaries() / "kubectl")
        subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-f", str(REPO / "crds")], check=True,
                       capture_output=True)
        subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Established", "--timeout=60s",
                        "crd/remediations.remedy.dev", "crd/remediationpolicies.remedy.dev"], check=True, capture_output=True)
        # Requester identity stamped by the API server: the operator runs nothing without it.
        from remedy_devenv import admission

        if cp is not None:
            admission.install(cp)
        else:
            subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "apply", "-k", str(admission.ADMISSION)], check=True,
                           capture_output=True)
        os.environ["KUBECONFIG"] = str(kubeconfig)
        result = run_load(Path(kubeconfig), args.remediations, args.policies, tmp, workers=args.workers)
    finally:
        if cp is not None:
            cp.stop()
    result["cpus"] = os.cpu_count()
    out = REPO / "bench" / "results" / f"load-{args.remediations}-{args.policies}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"\n{result['completed']}/{result['remediations']} Remediations completed in {result['completionSeconds']}s "
          f"({result['throughputPerSecond']}/s) with {result['policies']} policies; operator peak RSS "
          f"{result['peakRssMiB']} MiB; plain-client baseline {result.get('baselineSeconds')}s "
          f"-> {result.get('ratioVsBaseline')}x the baseline")
    return 0 if result["completed"] == result["remediations"] else 1


if __name__ == "__main__":
    sys.exit(main())
