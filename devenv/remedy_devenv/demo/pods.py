"""A demo service that runs as a pod on the demo's real node instead of a local process.

Why this exists: the outbox-stuck scenario's fix is "restart orders"; with orders in a pod,
remedy's restartWorkload is what really replaces the process (new ReplicaSet, new pod, new
container) and nothing else restarts it. The pod uses the host network and binds 127.0.0.1,
so the service keeps its docs/ports.md port, Prometheus scrapes it as before and no traffic
leaves the machine. This handle gives the stack what it gives for local processes: the pid
(the container's main process as containerd reports it) and a stop (nothing to do: stopping
the node kills every pod process)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any


@dataclass
class PodService:
    role: str
    namespace: str
    api: Any  # kubernetes.client.ApiClient
    containerd_socket: str

    def pod(self) -> Any | None:
        """The role's running pod (one replica), or None while there is none."""
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api)
        for p in core.list_namespaced_pod(self.namespace, label_selector=f"app={self.role}").items:
            cs = (p.status.container_statuses or [None])[0]
            if p.metadata.deletion_timestamp is None and cs is not None and cs.state.running is not None:
                return p
        return None

    @property
    def pid(self) -> int | None:
        """Host pid of the running container's main process (`ctr tasks ls`)."""
        try:
            pod = self.pod()
        except Exception:  # noqa: BLE001 - bookkeeping only; the API may be stopping
            return None
        if pod is None:
            return None
        cid = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
        out = subprocess.run(["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", "tasks", "ls"],
                             capture_output=True, text=True, check=False, timeout=10).stdout
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == cid:
                return int(fields[1])
        return None

    def stop(self) -> None:
        """Nothing: the control plane's stop ends the node, which kills every pod process."""
