"""Everything the demo started (so one ``stop()`` undoes it all) and what scenarios use of it:
URLs, kubectl, the cookbook manifests with their placeholders filled, API and database clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remedy.base.constants import GROUP, LABEL_POLICY, REMEDIATIONS, VERSION

from ..cluster import REPO, ControlPlane
from .support import DemoError, http, say

NS = "shop"
COOKBOOK = REPO / "docs" / "cookbook"
ADMIN_TOKEN = "demo-admin-token"
CRON_SECRET = "demo-cron-secret"
# The orders/inventory Deployments' pods on the real node: memhog holding this much, under this limit.
WORKLOAD_MIB = 24
WORKLOAD_LIMIT = "64Mi"
# The inventory pod (the demo app, ~40 MiB resident) before the OOM scenario raises it.
INVENTORY_LIMIT = "128Mi"


def render(name: str, values: dict[str, str]) -> str:
    """docs/cookbook/<name>.yaml with ${NAME} placeholders filled (unknown names are an error)."""
    text = (COOKBOOK / f"{name}.yaml").read_text()

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise DemoError(f"docs/cookbook/{name}.yaml: unknown placeholder ${{{m.group(1)}}}")
        return values[m.group(1)]

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", sub, text)


@dataclass
class Stack:
    """Every process the demo started, so one `stop()` undoes it all."""

    state: Path
    ports: dict[str, int]
    record_path: Path | None = None
    cp: ControlPlane | None = None
    redis: Any = None
    redis_password: str = ""
    pg: Any = None
    prom: Any = None
    am: Any = None
    mongo: subprocess.Popen[bytes] | None = None
    apps: dict[str, Any] = field(default_factory=dict)
    op: Any = None
    bridge: Any = None
    api: Any = None
    bin_dir: Path | None = None
    extra_stops: list[Callable[[], None]] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)  # per-scenario notes (pids, opids, ...)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- bookkeeping for tests and for humans ------------------------------------------------
    def pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.cp is not None:
            for f in sorted((self.cp.state_dir / "pids").glob("*.pid")):
                with contextlib.suppress(ValueError, OSError):
                    out[f.stem] = int(f.read_text())
        for name, server in (("redis", self.redis), ("postgres", self.pg),
                             ("prometheus", self.prom), ("alertmanager", self.am)):
            if server is not None and server.pid():
                out[name] = int(server.pid())
        if self.mongo is not None:
            out["mongowire"] = self.mongo.pid
        for role, proc in self.apps.items():
            if proc.pid:
                out[f"demo-{role}"] = int(proc.pid)
        if self.op is not None and self.op.proc is not None:
            out["operator"] = self.op.proc.pid
        argo = self.scratch.get("argocd")  # the gitops scenario's Argo CD (remedy_devenv.argocd)
        for proc in (argo.controller, argo.repo_server, argo.redis) if argo is not None else ():
            if proc is not None and proc.pid():
                out[proc.name if proc.name.startswith("argocd") else "argocd-redis"] = int(proc.pid())
        return out

    def record(self) -> None:
        if self.record_path is None:
            return
        with self._lock:
            doc = {"state_dir": str(self.state), "pid": os.getpid(), "pids": self.pids(), "ports": self.ports}
            tmp = self.record_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(self.record_path)

    # -- teardown -------------------------------------------------------------------------------
    def stop(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = []
        steps += [("scenario leftovers", f) for f in reversed(self.extra_stops)]
        if self.bridge is not None:
            steps.append(("rollout bridge", self.bridge.stop))
        if self.op is not None:
            steps.append(("operator", self.op.stop))
        for role, proc in self.apps.items():
            steps.append((f"demo {role}", proc.stop))
        if self.mongo is not None:
            steps.append(("mongo wire server", self._stop_mongo))
        for name, server in (("alertmanager", self.am), ("prometheus", self.prom),
                             ("postgres", self.pg), ("redis", self.redis)):
            if server is not None:
                steps.append((name, server.purge if name == "postgres" else server.stop))
        if self.cp is not None:
            steps.append(("control plane", self.cp.stop))
        for what, fn in steps:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                say(f"  (stopping {what}: {exc})")
        shutil.rmtree(self.state, ignore_errors=True)

    def _stop_mongo(self) -> None:
        proc = self.mongo
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    # -- helpers the scenarios use --------------------------------------------------------------
    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.cp is not None
        return self.cp.kubectl(*args, input=input)

    def apply(self, scenario: str) -> str:
        res = self.kubectl("apply", "-n", NS, "-f", "-", input=render(scenario, self.values()))
        return res.stdout.strip()

    def values(self) -> dict[str, str]:
        assert self.pg is not None and self.redis is not None
        return {
            "NAMESPACE": NS,
            "GATEWAY_URL": self.url("gateway"), "PAYMENTS_URL": self.url("payments"),
            "ORDERS_URL": self.url("orders"), "INVENTORY_URL": self.url("inventory"),
            "RECONCILE_URL": self.url("reconcile"),
            "GATEWAY_TOKEN": ADMIN_TOKEN, "CRON_SECRET": CRON_SECRET,
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "REDIS_PASSWORD": self.redis_password,
            "PG_DSN": self.pg.dsn,
            "MONGO_URI": f"mongodb://127.0.0.1:{self.ports['mongo']}/?directConnection=true",
        }

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def remediation(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: dict[str, Any] = self.custom().get_namespaced_custom_object(GROUP, VERSION, NS, REMEDIATIONS, name)
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def children(self, policy: str) -> list[dict[str, Any]]:
        res = self.custom().list_namespaced_custom_object(GROUP, VERSION, NS, REMEDIATIONS,
                                                          label_selector=f"{LABEL_POLICY}={policy}")
        return list(res["items"])

    def prom_query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.prom.query(promql))

    def firing(self, alertname: str) -> bool:
        return any(a.get("labels", {}).get("alertname") == alertname and a.get("state") == "firing"
                   for a in self.prom.alerts())

    def in_alertmanager(self, alertname: str) -> bool:
        return any(a.get("labels", {}).get("alertname") == alertname
                   and (a.get("status") or {}).get("state") == "active" for a in self.am.alerts())

    def redis_client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.ports["redis"], password=self.redis_password,
                           decode_responses=True)

    def mongo_admin(self) -> Any:
        import pymongo

        c: Any = pymongo.MongoClient(self.values()["MONGO_URI"], serverSelectionTimeoutMS=3000)
        return c

    def stats(self, role: str) -> dict[str, Any]:
        """A demo service's /admin/stats (its own counters: the witness the operator does not control)."""
        status, body = http("GET", f"{self.url(role)}/admin/stats")
        if status != 200:
            raise DemoError(f"{role} /admin/stats answered {status}")
        return dict(body)
