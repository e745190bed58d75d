#!/usr/bin/env python3
"""Where the operator's memory per Remediation goes: a tracemalloc diff between two points.

Starts a throwaway control plane and an operator (namespace-scoped) under tracemalloc; runs 500
`notify` Remediations to completion, snapshots (SIGUSR1 to the operator), runs 1,000 more,
snapshots again, and prints the growth by file and by allocation traceback. Slow (tracemalloc
roughly doubles the operator's CPU and memory); about 15 minutes on the development machine.

    .venv/bin/python bench/memory_profile.py > bench/results/memory-profile.txt

Why: bench/memory.py measures RSS per object; this says which code holds it (see
docs/benchmarks.md, "Operator memory per object").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FINAL = ("Succeeded", "Failed", "Skipped")

WRAPPER = '''
import signal, sys, tracemalloc
tracemalloc.start(12)
count = [0]
def dump(*_):
    count[0] += 1
    tracemalloc.take_snapshot().dump(f"{out}/snap{count[0]}.bin")
    open(f"{out}/snap{count[0]}.done", "w").write("ok")
signal.signal(signal.SIGUSR1, dump)
from remedy.cli import main
sys.exit(main(["run", "-n", sys.argv[1]]))
'''


def main() -> int:
    from kubernetes import client

    from remedy_devenv import admission
    from remedy_devenv.cluster import ControlPlane, locate_binaries
    from remedy_devenv.testkit import bench_module, free_ports, rss_mib

    load: Any = bench_module("load")
    out = Path(tempfile.mkdtemp(prefix="remedy-memprof-"))
    wrapper = out / "opwrap.py"
    wrapper.write_text(WRAPPER.replace("{out}", str(out)))
    etcd, peer, apiport, kcm = free_ports(4)
    cp = ControlPlane(state_dir=out / "cluster", etcd_port=etcd, etcd_peer_port=peer, apiserver_port=apiport,
                      controller_manager_port=kcm, fake_kubelet=False)
    cp.start(timeout=240)
    try:
        kc = cp.admin_kubeconfig
        kubectl = str(locate_binaries() / "kubectl")
        subprocess.run([kubectl, f"--kubeconfig={kc}", "apply", "--server-side", "-f", str(REPO / "crds")],
                       check=True, capture_output=True)
        for _ in range(30):  # `kubectl wait` errors while a fresh CRD has no conditions yet
            if subprocess.run([kubectl, f"--kubeconfig={kc}", "wait", "--for=condition=Established", "--timeout=60s",
                               "crd/remediations.remedy.dev"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        admission.install(cp)
        api = load._api(kc)
        co = client.CustomObjectsApi(api)
        ns = load._namespace(api, "prof")
        env = {**os.environ, "KUBECONFIG": str(kc), "REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": "0"}
        with open(out / "operator.log", "w") as log:
            op = subprocess.Popen([sys.executable, str(wrapper), ns], env=env, stdout=log, stderr=subprocess.STDOUT)
            time.sleep(15)

            def batch(start: int, n: int) -> None:
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda i: co.create_namespaced_custom_object(
                        load.GROUP, load.VERSION, ns, "remediations", load._body(f"r-{i:05d}")), range(start, start + n)))
                while True:
                    listing: Any = co.list_namespaced_custom_object(load.GROUP, load.VERSION, ns, "remediations")
                    if sum(1 for i in listing["items"] if (i.get("status") or {}).get("phase") in FINAL) >= start + n:
                        return
                    time.sleep(1)

            def snap(k: int) -> None:
                time.sleep(10)
                op.send_signal(signal.SIGUSR1)
                while not (out / f"snap{k}.done").exists():
                    time.sleep(0.5)
                rss, _ = rss_mib(op.pid)
                print("snap", k, f"{rss:.1f} MiB", flush=True)

            batch(0, 500)
            snap(1)
            batch(500, 1000)
            snap(2)
            op.terminate()
            op.wait(30)
    finally:
        cp.stop()
    a = tracemalloc.Snapshot.load(str(out / "snap1.bin"))
    b = tracemalloc.Snapshot.load(str(out / "snap2.bin"))
    print("total traced MiB", sum(s.size for s in a.statistics("filename")) / 2**20,
          sum(s.size for s in b.statistics("filename")) / 2**20)
    for st in b.compare_to(a, "filename")[:15]:
        print(st)
    print("---- by traceback (top 8)")
    for st in b.compare_to(a, "traceback")[:8]:
        print(st.size_diff / 1024, "KiB", st.count_diff)
        for line in st.traceback.format()[-12:]:
            print("   ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
