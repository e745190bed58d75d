"""Workload actions against pods that really run: containerd + runc + kubelet (remedy_devenv.node).

Each test states what a fake kubelet could not show. Witnesses the operator does not control:
the kernel log (which container the kernel OOM-killed), the kernel's memory cgroup limit of
the running container, and containerd's task list (which containers run).
The workload is scripts/node/memhog.c: `memhog MIB` holds MIB MiB, `memhog --exit N` exits.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv import demo_image
from remedy_devenv.cluster import ControlPlane
from remedy_devenv.node import Node, image_name
from remedy_devenv.operator import OperatorProcess
from tests.fixtures.helpers import wait_for
from tests.fixtures.operator import create_rem, wait_phase

pytestmark = pytest.mark.cluster

MIB = 1024 * 1024


def memhog(args: list[str], memory: str, request: str = "16Mi") -> dict[str, Any]:
    return {"name": "app", "image": image_name("memhog"), "imagePullPolicy": "Never", "args": args,
            "resources": {"limits": {"memory": memory}, "requests": {"memory": request}}}


def deployment(name: str, container: dict[str, Any], replicas: int = 1, recreate: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]}},
    }
    if recreate:
        spec["strategy"] = {"type": "Recreate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def pods(api: client.ApiClient, ns: str, app: str) -> list[Any]:
    return [p for p in client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"app={app}").items
            if p.metadata.deletion_timestamp is None]


def running_ready(api: client.ApiClient, ns: str, app: str) -> list[Any]:
    out = []
    for p in pods(api, ns, app):
        cs = (p.status.container_statuses or [None])[0]
        if p.status.phase == "Running" and cs is not None and cs.ready and cs.state.running is not None:
            out.append(p)
    return out


def oom_killed(api: client.ApiClient, ns: str, app: str) -> list[tuple[Any, Any]]:
    """(pod, container status) whose last termination the kubelet reports as OOMKilled."""
    out = []
    for p in pods(api, ns, app):
        for cs in p.status.container_statuses or []:
            term = cs.last_state.terminated if cs.last_state else None
            if term is not None and term.reason == "OOMKilled" and cs.restart_count >= 1:
                out.append((p, cs))
    return out


def stays_up(api: client.ApiClient, ns: str, pod_name: str, seconds: float) -> Any:
    """The pod's container keeps running, with the same container id and restart count."""
    core = client.CoreV1Api(api)
    first = core.read_namespaced_pod(pod_name, ns).status.container_statuses[0]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cs = core.read_namespaced_pod(pod_name, ns).status.container_statuses[0]
        assert cs.state.running is not None, f"{pod_name} stopped: {cs.state}"
        assert (cs.container_id, cs.restart_count) == (first.container_id, first.restart_count), cs
        time.sleep(1)
    return first


def test_node_is_real_and_ready(node_cluster: ControlPlane) -> None:
    obj = json.loads(node_cluster.kubectl("get", "node", "remedy-node-0", "-o", "json").stdout)
    info = obj["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.35.4"
    assert info["containerRuntimeVersion"].startswith("containerd://")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready


def _oom_then_raise(api: client.ApiClient, ns: str, node: Node, app: str) -> tuple[Any, Any]:
    """A container that needs ~96 MiB under a 64Mi limit: wait for the kernel to kill it and
    the kubelet to report it; return (pod, container status)."""
    (pod, cs) = wait_for(lambda: oom_killed(api, ns, app), timeout=90, what=f"{app} OOMKilled")[0]
    killed = node.kernel_oom_kills(pod.metadata.uid)
    # The kernel's own record names the container the kubelet reports as OOMKilled.
    assert cs.last_state.terminated.container_id.removeprefix("containerd://") in killed, (killed, cs)
    assert cs.last_state.terminated.exit_code == 137
    return pod, cs


def test_raise_memory_on_real_oom_kill_rollout(node_admin: client.ApiClient, node: Node,
                                               node_operator: OperatorProcess, node_namespace: str) -> None:
    """Real: kernel OOM kill, kubelet's OOMKilled + restart count, then a new ReplicaSet's pod
    that holds the same 96 MiB under the raised limit and stays up."""
    ns, apps = node_namespace, client.AppsV1Api(node_admin)
    apps.create_namespaced_deployment(ns, deployment("inventory", memhog(["96"], "64Mi")))
    old_pod, _ = _oom_then_raise(node_admin, ns, node, "inventory")

    create_rem(node_admin, ns, "oom", {"action": {"raiseMemoryOnOOM": {
        "target": {"name": "inventory"}, "factor": 2, "minStep": "16Mi", "maxLimit": "256Mi"}}})
    obj = wait_phase(node_admin, ns, "oom", {"Succeeded", "Failed"}, timeout=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    change = obj["status"]["plan"]["containers"][0]
    assert (change["oldLimit"], change["newLimit"]) == ("64Mi", "128Mi")
    assert old_pod.metadata.name in change["oomKilledPods"]

    new = wait_for(lambda: [p for p in running_ready(node_admin, ns, "inventory")
                            if p.metadata.uid != old_pod.metadata.uid], timeout=90,
                   what="a running pod of the new ReplicaSet")[0]
    assert new.spec.containers[0].resources.limits["memory"] == "128Mi"
    assert new.metadata.labels["pod-template-hash"] != old_pod.metadata.labels["pod-template-hash"]
    cs = stays_up(node_admin, ns, new.metadata.name, 8)
    assert cs.restart_count == 0
    assert node.memory_limit_bytes(cs.container_id.removeprefix("containerd://")) == 128 * MIB
    assert not node.kernel_oom_kills(new.metadata.uid)
    wait_for(lambda: not any(p.metadata.uid == old_pod.metadata.uid for p in pods(node_admin, ns, "inventory")),
             timeout=60, what="the OOM-looping pod to be replaced")


def test_raise_memory_in_place_resizes_the_running_pod(node_admin: client.ApiClient, node: Node,
                                                      node_operator: OperatorProcess, node_namespace: str) -> None:
    """strategy inPlace on cgroup v1: the kubelet resizes the pod itself (same pod, same running
    container, no restart) and the kernel's limits change. The container spiked past its limit
    once (kernel OOM kill, kubelet OOMKilled) and now runs close to it. A StatefulSet with
    OnDelete updates, so the template patch alone does not roll the pod.

    Not covered, because kubelet 1.35 does not do it (seen here): resizing a container that is
    in CrashLoopBackOff updates its status to the new limit ("ResizeCompleted") but leaves the
    pod-level memory cgroup at the old sum, so it keeps being OOM-killed; only a running
    container's resize raises the pod cgroup. For a crash-looping pod, `rollout` is the fix."""
    ns = node_namespace
    container = memhog(["40", "--spike-once", "96", "/data/spiked"], "64Mi")
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    client.AppsV1Api(node_admin).create_namespaced_stateful_set(ns, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "cache"},
        "spec": {"replicas": 1, "serviceName": "cache", "selector": {"matchLabels": {"app": "cache"}},
                 "updateStrategy": {"type": "OnDelete"},
                 "template": {"metadata": {"labels": {"app": "cache"}},
                              "spec": {"terminationGracePeriodSeconds": 1, "containers": [container],
                                       "volumes": [{"name": "data", "emptyDir": {}}]}}}})
    pod, _ = _oom_then_raise(node_admin, ns, node, "cache")
    running = wait_for(lambda: running_ready(node_admin, ns, "cache"), timeout=60, what="cache running again")[0]
    before = running.status.container_statuses[0]
    cid = before.container_id.removeprefix("containerd://")
    assert node.memory_limit_bytes(cid) == 64 * MIB

    create_rem(node_admin, ns, "oom-inplace", {"action": {"raiseMemoryOnOOM": {
        "target": {"kind": "StatefulSet", "name": "cache"}, "factor": 2, "minStep": "16Mi", "maxLimit": "256Mi",
        "strategy": "inPlace"}}})
    obj = wait_phase(node_admin, ns, "oom-inplace", {"Succeeded", "Failed"}, timeout=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert (obj["status"].get("result") or {}).get("resizedInPlace") == [pod.metadata.name], json.dumps(obj["status"])

    # The kubelet applies the resize to the running container: the kernel's limits change.
    wait_for(lambda: node.memory_limit_bytes(cid) == 128 * MIB, timeout=60, what="the container cgroup at 128Mi")
    assert node.memory_limit_bytes(f"pod{pod.metadata.uid}") == 128 * MIB
    core = client.CoreV1Api(node_admin)
    wait_for(lambda: core.read_namespaced_pod(pod.metadata.name, ns).status.container_statuses[0]
             .resources.limits["memory"] == "128Mi", timeout=30, what="the kubelet to report 128Mi")
    after = stays_up(node_admin, ns, pod.metadata.name, 5)
    assert core.read_namespaced_pod(pod.metadata.name, ns).metadata.uid == pod.metadata.uid
    assert (after.container_id, after.restart_count) == (before.container_id, before.restart_count), "resized, not restarted"


def test_restart_workload_runs_new_containers(node_cluster: ControlPlane, node_admin: client.ApiClient, node: Node,
                                              node_operator: OperatorProcess, node_namespace: str) -> None:
    """restartWorkload: new pods from a new ReplicaSet, new containers running in containerd,
    the old containers gone from containerd (not just from the API)."""
    ns, apps = node_namespace, client.AppsV1Api(node_admin)
    apps.create_namespaced_deployment(ns, deployment("orders", memhog(["8"], "64Mi"), replicas=2))
    before = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(running_ready(node_admin, ns, "orders")),
                      timeout=60, what="2 orders pods running")
    old_ids = {p.status.container_statuses[0].container_id.removeprefix("containerd://") for p in before}
    assert old_ids <= node.running_containers()

    create_rem(node_admin, ns, "restart", {"action": {"restartWorkload": {
        "target": {"name": "orders"}, "waitForRollout": "90s"}}})
    obj = wait_phase(node_admin, ns, "restart", {"Succeeded", "Failed"}, timeout=120)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]

    after = wait_for(lambda: (lambda r: r if len(r) == 2 and not {p.metadata.uid for p in r} & {p.metadata.uid for p in before} else None)(
        running_ready(node_admin, ns, "orders")), timeout=60, what="2 new orders pods")
    new_ids = {p.status.container_statuses[0].container_id.removeprefix("containerd://") for p in after}
    assert {p.metadata.labels["pod-template-hash"] for p in after} != {p.metadata.labels["pod-template-hash"] for p in before}
    wait_for(lambda: new_ids <= node.running_containers() and not old_ids & node.running_containers(),
             timeout=60, what="containerd to run the new containers and not the old ones")
    # The process's own output, read from the kubelet through the apiserver (kubectl logs).
    assert "holding 8 MiB" in node_cluster.kubectl("logs", "-n", ns, after[0].metadata.name).stdout


def test_rollback_workload_after_a_crashing_release(node_admin: client.ApiClient, node: Node,
                                                    node_operator: OperatorProcess, node_namespace: str) -> None:
    """A release whose process exits (real exit code 3, CrashLoopBackOff from the kubelet);
    rollbackWorkload brings back revision 1's template and new pods of it run."""
    ns, apps = node_namespace, client.AppsV1Api(node_admin)
    apps.create_namespaced_deployment(ns, deployment("api", memhog(["8"], "64Mi"), recreate=True))
    good = wait_for(lambda: running_ready(node_admin, ns, "api"), timeout=60, what="api rev 1 running")[0]
    good_hash = good.metadata.labels["pod-template-hash"]

    apps.patch_namespaced_deployment("api", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "args": ["--exit", "3"]}]}}}})

    def crashing() -> Any:
        for p in pods(node_admin, ns, "api"):
            for cs in p.status.container_statuses or []:
                term = cs.last_state.terminated if cs.last_state else None
                if term is not None and term.exit_code == 3 and p.metadata.labels["pod-template-hash"] != good_hash:
                    return p
        return None

    bad = wait_for(crashing, timeout=60, what="the bad release to crash")
    assert not running_ready(node_admin, ns, "api")

    create_rem(node_admin, ns, "undo", {"action": {"rollbackWorkload": {"target": {"name": "api"}}}})
    obj = wait_phase(node_admin, ns, "undo", {"Succeeded", "Failed"}, timeout=60)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert (obj["status"]["plan"]["fromRevision"], obj["status"]["plan"]["toRevision"]) == (2, 1)

    back = wait_for(lambda: running_ready(node_admin, ns, "api"), timeout=90, what="rev 1 pods running again")[0]
    assert back.metadata.labels["pod-template-hash"] == good_hash
    assert back.metadata.uid not in (good.metadata.uid, bad.metadata.uid), "a new pod, not a survivor"
    assert back.spec.containers[0].args == ["8"]
    stays_up(node_admin, ns, back.metadata.name, 5)
    wait_for(lambda: all(p.metadata.labels["pod-template-hash"] == good_hash for p in pods(node_admin, ns, "api")),
             timeout=60, what="the crashing pods to be gone")


def test_demo_app_image_serves_from_a_pod(node_admin: client.ApiClient, node: Node, node_namespace: str) -> None:
    """The demo services' image (Debian's python3.11 + the demo app, built here without a
    registry) runs as a pod: the kubelet's HTTP readiness probe passes and this host reaches
    the service on the pod's own address."""
    name, archive = demo_image.build()
    node.import_image(archive)
    ns = node_namespace
    container = {"name": "inventory", "image": name, "imagePullPolicy": "Never",
                 "args": ["--role", "inventory", "--host", "0.0.0.0", "--port", "8080"],
                 "ports": [{"containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
                 "resources": {"limits": {"memory": "128Mi"}, "requests": {"memory": "64Mi"}}}
    client.AppsV1Api(node_admin).create_namespaced_deployment(ns, deployment("inventory", container))
    pod = wait_for(lambda: running_ready(node_admin, ns, "inventory"), timeout=90, what="inventory pod Ready")[0]
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod IPs are local
    with direct.open(f"http://{pod.status.pod_ip}:8080/health", timeout=5) as resp:
        assert resp.status == 200
    with direct.open(f"http://{pod.status.pod_ip}:8080/metrics", timeout=5) as resp:
        assert b"# TYPE" in resp.read()
