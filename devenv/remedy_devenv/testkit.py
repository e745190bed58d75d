"""Helpers the tests, the benchmarks and the demo share, so each exists once: free loopback
ports, polling with a deadline, JSON over HTTP, a minimal Deployment, Alertmanager webhook
payloads, which operator process an executor identity names, a bench/ script as a module, and
a process's RSS.

Part of the development distribution (remedy_devenv), which tests/ and bench/ both import;
the operator never does.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HOST = "127.0.0.1"


# --- ports ---------------------------------------------------------------------------------------


def free_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct loopback ports free right now (held together while chosen, so distinct;
    racy by nature afterwards: whoever binds them must retry on failure)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


# --- processes -----------------------------------------------------------------------------------


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc: the one RSS sampler of bench/ and tests."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            vals[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return vals["VmRSS"], vals["VmHWM"]


# --- waiting -------------------------------------------------------------------------------------


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.2,
             error: type[Exception] = AssertionError) -> Any:
    """Poll ``fn`` until it returns something truthy and return that; raise ``error`` naming
    ``what`` (and the last value seen) after ``timeout`` seconds. Exceptions from ``fn`` propagate."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise error(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; last={last!r}" if last not in (None, False) else ""))


# --- HTTP ----------------------------------------------------------------------------------------


def http_json(method: str, url: str, body: Any = None, token: str | None = None, *, raw: bytes | None = None,
              timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON body, the text if not JSON, None if empty); HTTP errors are
    returned, not raised. ``raw`` sends bytes as they are instead of JSON-encoding ``body``."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), _decode(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), _decode(e.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


# --- Kubernetes objects --------------------------------------------------------------------------


def deployment(name: str, replicas: int = 2, memory: str | None = "128Mi", image: str = "example/app:1") -> dict[str, Any]:
    """A one-container Deployment selecting ``app=<name>`` (memory limit when ``memory`` is set)."""
    container: dict[str, Any] = {"name": "app", "image": image}
    if memory is not None:
        container["resources"] = {"limits": {"memory": memory}, "requests": {"memory": "64Mi"}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}},
    }


def make_deployment(api: Any, ns: str, name: str, replicas: int = 2, memory: str | None = "128Mi",
                    image: str = "example/app:1") -> dict[str, Any]:
    """Create ``deployment(...)`` in ``ns`` with a kubernetes ApiClient; returns the manifest."""
    from kubernetes import client

    body = deployment(name, replicas, memory, image)
    client.AppsV1Api(api).create_namespaced_deployment(ns, body)
    return body


def executor_pid(executor: str | None) -> int | None:
    """The process id in an operator identity ``<host>-<pid>-<start>`` (a Remediation's
    ``status.executor``, a shard Lease's holderIdentity); None when it has no such shape."""
    try:
        return int(str(executor).split("-")[-2])
    except (IndexError, ValueError):
        return None


# --- Alertmanager webhook payloads ---------------------------------------------------------------


def alert(fp: str, status: str = "firing", starts: str = "2026-11-23T10:00:00Z", alertname: str = "Storm",
          annotations: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    """One alert as Alertmanager's webhook (version 4) sends it."""
    return {"status": status, "labels": {"alertname": alertname, **labels}, "annotations": dict(annotations or {}),
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else starts,
            "generatorURL": "http://prometheus/graph", "fingerprint": fp}


def alert_payload(alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    """The webhook body around ``alerts`` (one group)."""
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "remedy",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
            "alerts": alerts}


# --- benchmarks ----------------------------------------------------------------------------------


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module: bench/ holds scripts, not a package, and the tests run
    each benchmark's smoke (and benchmarks reuse each other's helpers) through this."""
    import importlib.util

    from .cluster import REPO

    spec = importlib.util.spec_from_file_location(f"remedy_bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
