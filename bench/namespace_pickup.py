#!/usr/bin/env python3
"""Namespace pickup benchmark (issue 21): how long a namespace that matches the operator's watch
pattern (``-n 'np<run>-*'``) waits before a Remediation in it is Accepted.

A person creates a namespace and a Remediation in it together. The figure
(``namespace_pickup_p99_s``) is the time from the namespace's create call returning to the
Remediation's status phase being set (the operator's Accepted step), for namespaces created
after the operator is ready: densely at first, while its namespace watch is still starting
(where pickups were lost: runtime/namespaces.py), then spaced. Namespaces created while it
starts are reported apart, from the moment it was ready (it cannot act earlier), beside the
floor: a namespace that existed before the operator started (no discovery needed).

    .venv/bin/python bench/namespace_pickup.py            # 40 namespaces
    .venv/bin/python bench/namespace_pickup.py -n 8       # the smoke size

A throwaway control plane is started (fake kubelet off: nothing here needs pods). Results are
printed and written as JSON to bench/results/namespace-pickup.json (REMEDY_RESULTS_DIR
overrides the folder). tests/bench_smoke/test_namespace_pickup_smoke.py runs the smoke size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def run_pickup(cp: Any, n: int, log_dir: Path, *, timeout: float = 120.0) -> dict[str, Any]:
    """Create ``n`` matching namespaces (half while the operator starts, half after), each with a
    Remediation; returns the figures (asserts nothing)."""
    from kubernetes import client, config

    from remedy.base.constants import GROUP, VERSION
    from remedy_devenv.cluster import OPERATOR_USER
    from remedy_devenv.operator import OperatorProcess

    api = config.new_client_from_config(config_file=str(cp.admin_kubeconfig))  # type: ignore[no-untyped-call]
    core, co = client.CoreV1Api(api), client.CustomObjectsApi(api)
    run = uuid.uuid4().hex[:6]
    prefix = f"np{run}"
    rem = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation", "metadata": {"name": "hello"},
           "spec": {"reason": "pickup", "action": {"notify": {"message": "namespace picked up"}}}}
    created: dict[str, float] = {}
    lock = threading.Lock()

    def create(ns: str) -> None:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        with lock:
            created[ns] = time.monotonic()
        co.create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", rem)

    create(f"{prefix}-existing")  # the floor: known at startup, no discovery needed
    op = OperatorProcess(cp.user_kubeconfig(OPERATOR_USER), log_dir / f"operator-pickup-{run}.log",
                         env={"REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": "0"}, args=["-n", f"{prefix}-*"])
    accepted: dict[str, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            with lock:
                pending = [ns for ns in created if ns not in accepted]
            for ns in pending:
                try:
                    obj = co.get_namespaced_custom_object(GROUP, VERSION, ns, "remediations", "hello")
                except client.ApiException:
                    continue
                if (obj.get("status") or {}).get("phase"):
                    accepted[ns] = time.monotonic()
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    early, late = n // 2, n - n // 2
    try:
        started = time.monotonic()
        op.start()
        # While it starts: one namespace every 100 ms across its first seconds.
        for i in range(early):
            create(f"{prefix}-s{i:02d}")
            time.sleep(0.1)
        op.wait_ready(timeout=60)
        ready = time.monotonic() - started
        # After it is ready: densely at first (its namespace watch is still starting), then spaced.
        for i in range(late):
            create(f"{prefix}-r{i:02d}")
            time.sleep(0.03 if i < late // 2 else 0.3)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(accepted) < len(created):
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join(5)
        op.stop()
        for ns in list(created):
            try:
                core.delete_namespace(ns)
            except client.ApiException:
                pass
    ready_at = started + ready
    floor_ns = f"{prefix}-existing"
    after = {ns: round(accepted[ns] - created[ns], 3) for ns in created if "-r" in ns and ns in accepted}
    # Created while the operator started: measured from when it was ready (it could not act before).
    during = {ns: round(accepted[ns] - max(created[ns], ready_at), 3) for ns in created if "-s" in ns and ns in accepted}
    missing = sorted(ns for ns in created if ns not in accepted)
    values = list(after.values())
    return {
        "namespaces": n, "whileStarting": early, "afterReady": late, "operatorReadySeconds": round(ready, 2),
        "pickedUp": len(after) + len(during), "notPickedUpWithin": {"seconds": timeout, "namespaces": missing},
        "namespace_pickup_p50_s": _p(values, 0.5), "namespace_pickup_p99_s": _p(values, 0.99),
        "namespace_pickup_max_s": max(values) if values else None,
        "whileStarting_p99_s_from_ready": _p(list(during.values()), 0.99),
        "floorSeconds_from_ready": round(accepted[floor_ns] - ready_at, 3) if floor_ns in accepted else None,
        "waits": {**after, **during}, "cpus": os.cpu_count(),
        "recordedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--namespaces", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=120.0, help="wait this long for the last pickup")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from remedy_devenv.testkit import throwaway_control_plane

    sys.path.insert(0, str(REPO))
    from tests.fixtures.operator import install_remedy_api  # CRDs Established + admission policies

    with throwaway_control_plane("remedy-pickup-", install_remedy_api) as (cp, tmp):
        result = run_pickup(cp, args.namespaces, tmp, timeout=args.timeout)
    result["command"] = "bench/namespace_pickup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = args.out or Path(os.environ.get("REMEDY_RESULTS_DIR") or REPO / "bench" / "results") / "namespace-pickup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "waits"}, indent=2, sort_keys=True))
    return 0 if not result["notPickedUpWithin"]["namespaces"] else 1


if __name__ == "__main__":
    sys.exit(main())
