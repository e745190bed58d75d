"""Runbook 004 on the real node: a new inventory release (the demo app in a pod) needs more
memory than its limit, the kernel OOM-kills its container, the kubelet reports OOMKilled with
restart counts; raiseMemoryOnOOM raises the limit and the new ReplicaSet's pod runs within it,
stays up and serves.

Everything shown comes from real pod status (the kubelet's report of what containerd saw) and
from the kernel log (`dmesg`: the kill of that very container); nothing is written by hand."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

from ..demo.stack import INVENTORY_LIMIT, NS, Stack
from ..demo.support import DemoError, http, wait_until
from .base import Scenario

# What the bad release holds on top of the app's ~40 MiB: above the 128Mi limit, within the
# raised one (cookbook: x1.5 or +100Mi, whichever is more: 228Mi).
RELEASE_MIB = 120


def _pods(st: Stack) -> list[Any]:
    from kubernetes import client

    core: Any = client.CoreV1Api(st.api)
    return [p for p in core.list_namespaced_pod(NS, label_selector="app=inventory").items
            if p.metadata.deletion_timestamp is None]


def kernel_kill_line(container_id: str) -> str | None:
    """The kernel's own record of killing this container: the `Killed process` line that
    follows the `oom-kill:` line naming the container's memory cgroup."""
    lines = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout.splitlines()
    for i, line in enumerate(lines):
        if "oom-kill:" in line and f"/{container_id}," in line + ",":
            for follow in lines[i + 1:i + 4]:
                m = re.search(r"Memory cgroup out of memory: (Killed process \d+ \(\S+\)[^,]*, anon-rss:\d+kB)", follow)
                if m:
                    return m.group(1)
    return None


def inject(st: Stack) -> str:
    from kubernetes import client

    apps: Any = client.AppsV1Api(st.api)
    args = list(apps.read_namespaced_deployment("inventory", NS).spec.template.spec.containers[0].args)
    apps.patch_namespaced_deployment("inventory", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "inventory", "args": [*args, "--hold-mib", str(RELEASE_MIB)]}]}}}})
    return (f"new inventory release rolled out: its process holds {RELEASE_MIB} MiB more (--hold-mib) "
            f"under the {INVENTORY_LIMIT} memory limit")


def detect(st: Stack) -> str | None:
    for p in _pods(st):
        for cs in p.status.container_statuses or []:
            term = cs.last_state.terminated if cs.last_state else None
            if term is not None and term.reason == "OOMKilled" and cs.restart_count >= 1:
                cid = (term.container_id or "").removeprefix("containerd://")
                st.scratch["oom_pod"] = p.metadata.name
                kernel = kernel_kill_line(cid) if cid else None
                return (f"kubelet: pod {p.metadata.name} lastState OOMKilled (exit {term.exit_code}), "
                        f"restartCount {cs.restart_count}" + (f"; kernel: {kernel}" if kernel else ""))
    return None


def check(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    apps: Any = client.AppsV1Api(st.api)
    dep = apps.read_namespaced_deployment("inventory", NS)
    limit = dep.spec.template.spec.containers[0].resources.limits["memory"]
    change = (obj["status"].get("plan") or {}).get("containers", [{}])[0]
    want = dep.spec.replicas or 1

    def new_pods_running() -> list[Any] | None:
        pods = _pods(st)
        good = [p for p in pods if p.spec.containers[0].resources.limits.get("memory") == limit
                and p.status.phase == "Running" and p.status.container_statuses
                and p.status.container_statuses[0].ready and p.status.container_statuses[0].state.running]
        # Only the new template's pods left: the OOM-looping pod and the old release are gone.
        return good if len(good) == want == len(pods) else None

    pods = wait_until(new_pods_running, 60, "the new inventory pods to run (and only them)")
    first = {p.metadata.name: p.status.container_statuses[0] for p in pods}
    time.sleep(5)  # stays up: same container, no restart, no new kernel kill
    for p in _pods(st):
        cs = p.status.container_statuses[0]
        was = first.get(p.metadata.name)
        if was is None or cs.state.running is None or (cs.container_id, cs.restart_count) != (was.container_id, was.restart_count):
            raise DemoError(f"inventory pod {p.metadata.name} did not stay up: {cs.state} restarts {cs.restart_count}")
        if kernel_kill_line(cs.container_id.removeprefix("containerd://")):
            raise DemoError(f"the kernel OOM-killed {p.metadata.name} again")
    status, _ = http("GET", f"{st.url('inventory')}/admin/stats")
    if status != 200:
        raise DemoError(f"the new inventory pod answers {status}")
    names = ", ".join(f"{n} restarts {cs.restart_count}" for n, cs in sorted(first.items()))
    return (f"memory limit {change.get('oldLimit')} -> {change.get('newLimit')} (Deployment now {limit}); "
            f"new pod holding {RELEASE_MIB} MiB more Running within it for 5s+ and serving: {names}")


SCENARIO = Scenario(
    "oom", "004", "inventory release OOMKilled by the kernel (real node)", "kubectl apply", "raiseMemoryOnOOM",
    inject, [("symptom", detect)], check, remediation="inventory-oom")
