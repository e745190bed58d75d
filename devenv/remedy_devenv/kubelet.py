"""A kubelet stand-in for the local control plane (remedy_devenv.cluster).

Why this exists: there is no container runtime or scheduler here, so nothing would ever
run a pod. Controllers, rollouts and the operator only see pods through the API, so doing
through the API what a kubelet does is enough to exercise them for real:

* register a Ready Node (`remedy-node-0`);
* bind pods to it (pods/binding subresource, as the scheduler would);
* write pod status (pods/status subresource): phase, conditions, containerStatuses,
  including lastState.terminated.reason=OOMKilled to fake an out-of-memory kill;
* finish graceful deletion of pods on the node (delete with grace period 0), without which
  deleted pods, and therefore namespaces, would stay Terminating forever.

`run()` (also `python -m remedy_devenv.kubelet`) does this in a loop for every pod that uses
the default scheduler; pods with another `spec.schedulerName` are left for tests to drive
with `write_pod_status` / `mark_oomkilled`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import threading
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

NODE = "remedy-node-0"
log = logging.getLogger("remedy_devenv.kubelet")


_TS = "%Y-%m-%dT%H:%M:%SZ"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime(_TS)


def ensure_node(core: client.CoreV1Api, name: str = NODE) -> None:
    """Create the node if missing and report it Ready with some allocatable capacity."""
    try:
        core.read_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        try:
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64"})))
        except ApiException as exc2:
            if exc2.status != 409:
                raise
    now = _now()
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    core.patch_node_status(name, {"status": {
        "capacity": capacity, "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "remedy fake kubelet", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "fake", "containerRuntimeVersion": "fake://0",
                     "operatingSystem": "linux", "architecture": "amd64"},
    }})


@dataclasses.dataclass(frozen=True)
class _PodView:
    """The fields a kubelet looks at, with the generated client's Optionals resolved."""

    namespace: str
    name: str
    uid: str
    node_name: str
    scheduler_name: str
    phase: str
    deleting: bool
    containers: list[tuple[str, str]]  # (name, image)
    restart_count: int
    start_time: str | None

    @classmethod
    def of(cls, pod: client.V1Pod) -> _PodView:
        meta, spec, status = pod.metadata, pod.spec, pod.status or client.V1PodStatus()
        assert meta is not None and spec is not None and meta.name and meta.namespace and meta.uid
        return cls(meta.namespace, meta.name, meta.uid, spec.node_name or "",
                   spec.scheduler_name or "default-scheduler", status.phase or "Pending",
                   meta.deletion_timestamp is not None,
                   [(c.name, c.image or "") for c in spec.containers],
                   max((c.restart_count for c in status.container_statuses or []), default=0),
                   status.start_time.strftime(_TS) if status.start_time else None)


def bind_pod(core: client.CoreV1Api, pod: client.V1Pod, node: str = NODE) -> None:
    """Bind an unscheduled pod to `node` through pods/binding (409 if already bound)."""
    p = _PodView.of(pod)
    body = client.V1Binding(
        metadata=client.V1ObjectMeta(name=p.name, uid=p.uid),
        target=client.V1ObjectReference(api_version="v1", kind="Node", name=node))
    # The generated client cannot deserialize the Status this returns; skip decoding.
    core.create_namespaced_pod_binding(p.name, p.namespace, body, _preload_content=False)


def write_pod_status(core: client.CoreV1Api, pod: client.V1Pod, *, phase: str = "Running",
                     ready: bool = True, restart_count: int = 0,
                     last_terminated_reason: str | None = None, exit_code: int = 137,
                     node: str = NODE) -> client.V1Pod:
    """Write pod status as a kubelet would; binds the pod to `node` first if unscheduled.

    `last_terminated_reason="OOMKilled"` (exit code 137) fakes an out-of-memory kill.
    """
    p = _PodView.of(pod)
    if not p.node_name:
        ensure_node(core, node)
        try:
            bind_pod(core, pod, node)
        except ApiException as exc:
            if exc.status != 409:  # someone (the fake kubelet loop) bound it already
                raise
    now = _now()
    running = phase == "Running"
    is_ready = "True" if ready and running else "False"
    statuses: list[dict[str, Any]] = []
    for i, (cname, image) in enumerate(p.containers):
        st: dict[str, Any] = {
            "name": cname, "image": image, "imageID": f"fake://{image}",
            "containerID": f"fake://{p.uid}-{i}-{restart_count}",
            "ready": is_ready == "True", "started": running, "restartCount": restart_count,
            "state": {"running": {"startedAt": now}} if running else
            {"waiting": {"reason": "ContainerCreating"}},
        }
        if last_terminated_reason:
            st["lastState"] = {"terminated": {"reason": last_terminated_reason, "exitCode": exit_code,
                                              "startedAt": now, "finishedAt": now}}
        statuses.append(st)
    conditions = [{"type": t, "status": s, "lastTransitionTime": now} for t, s in (
        ("PodScheduled", "True"), ("Initialized", "True"),
        ("ContainersReady", is_ready), ("Ready", is_ready))]
    ip = f"10.244.0.{int(p.uid.replace('-', '')[:4], 16) % 250 + 2}"
    body = {"status": {"phase": phase, "conditions": conditions, "containerStatuses": statuses,
                       "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
                       "startTime": p.start_time or now}}
    return core.patch_namespaced_pod_status(p.name, p.namespace, body)


def mark_pods_running(core: client.CoreV1Api, namespace: str, selector: str) -> list[str]:
    """Bind and mark Running+Ready every live pod matching `selector`; returns their names."""
    names = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        p = _PodView.of(pod)
        if not p.deleting:
            write_pod_status(core, pod)
            names.append(p.name)
    return names


def mark_oomkilled(core: client.CoreV1Api, namespace: str, name: str,
                   restarts: int | None = None) -> client.V1Pod:
    """Record that the pod's containers were OOM-killed and restarted (restartCount + 1)."""
    pod = core.read_namespaced_pod(name, namespace)
    current = _PodView.of(pod).restart_count
    return write_pod_status(core, pod, restart_count=current + 1 if restarts is None else restarts,
                            last_terminated_reason="OOMKilled")


def sync_once(core: client.CoreV1Api, node: str = NODE) -> None:
    """One kubelet pass: run pending default-scheduler pods, finish deletions on `node`."""
    for pod in core.list_pod_for_all_namespaces().items:
        p = _PodView.of(pod)
        try:
            if p.node_name == node and p.deleting:
                core.delete_namespaced_pod(
                    p.name, p.namespace, grace_period_seconds=0,
                    body=client.V1DeleteOptions(grace_period_seconds=0,
                                                preconditions=client.V1Preconditions(uid=p.uid)))
            elif (not p.deleting and p.phase == "Pending" and p.node_name in ("", node)
                  and p.scheduler_name == "default-scheduler"):
                write_pod_status(core, pod, node=node)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: %s", p.namespace, p.name, exc.reason)


def run(core: client.CoreV1Api, node: str = NODE, interval: float = 0.5,
        stop: threading.Event | None = None) -> None:
    """Loop `sync_once` until `stop` is set; API errors are logged and retried."""
    stop = stop or threading.Event()
    registered = False
    while not stop.is_set():
        try:
            if not registered:
                ensure_node(core, node)
                registered = True
            sync_once(core, node)
        except Exception as exc:  # noqa: BLE001 - apiserver restarting etc.; keep going
            log.warning("fake kubelet pass failed: %s", exc)
        stop.wait(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description="remedy fake kubelet")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", default=NODE)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    core = client.CoreV1Api(config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=args.kubeconfig))
    log.info("fake kubelet for node %s", args.node)
    run(core, args.node, args.interval)


if __name__ == "__main__":
    main()
