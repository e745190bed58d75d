"""The demo's explicit stand-in for a container runtime: when a Deployment on the real API
server rolls (its pod template changes, so the controller-manager makes a new ReplicaSet),
restart the local process that plays that Deployment's pods.

Kubernetes does the Kubernetes side for real (Deployment, ReplicaSet, rollout); only "the
container restarted" is simulated, by restarting a local demo service process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client

log = logging.getLogger("remedy_devenv.rollout")


def template_hash(dep: Any) -> str:
    api = client.ApiClient()
    tpl = api.sanitize_for_serialization(dep.spec.template)  # type: ignore[no-untyped-call]
    return hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).hexdigest()[:12]


class RolloutBridge:
    """Polls Deployments; calls ``on_rollout(name)`` when one's pod template changes."""

    def __init__(self, apps: client.AppsV1Api, namespace: str, on_rollout: Callable[[str], None],
                 names: list[str], interval: float = 0.5) -> None:
        self.apps, self.namespace, self.on_rollout, self.names, self.interval = apps, namespace, on_rollout, names, interval
        self.seen: dict[str, str] = {}
        self.rollouts: dict[str, int] = dict.fromkeys(names, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-bridge", daemon=True)

    def start(self) -> RolloutBridge:
        self._poll()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        for name in self.names:
            try:
                dep = self.apps.read_namespaced_deployment(name, self.namespace)
            except client.exceptions.ApiException:
                continue
            h = template_hash(dep)
            if name in self.seen and self.seen[name] != h:
                self.rollouts[name] += 1
                log.info("deployment %s rolled (template %s -> %s): restarting its process", name, self.seen[name], h)
                try:
                    self.on_rollout(name)
                except Exception as exc:  # noqa: BLE001 - keep bridging other deployments
                    log.warning("restart for %s failed: %s", name, exc)
            self.seen[name] = h

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()
