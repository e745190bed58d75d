"""Shared helpers of the reliability suite: waiting, listing, HTTP, alert payloads, results."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.fixtures.helpers import wait_for
from tests.fixtures.operator import GROUP, REPO, VERSION

__all__ = ["wait_for"]  # re-exported for the suite's modules

FINAL = {"Succeeded", "Failed", "Skipped"}


def list_rems(api: client.ApiClient, ns: str, selector: str = "") -> list[dict[str, Any]]:
    res = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, "remediations",
                                                                     label_selector=selector)
    return list(res["items"])


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def all_final(api: client.ApiClient, ns: str, expected: int, selector: str = "") -> list[dict[str, Any]] | None:
    items = list_rems(api, ns, selector)
    if len(items) >= expected and all(phase(i) in FINAL for i in items):
        return items
    return None


def create_secret(api: client.ApiClient, ns: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(ns, {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def create_policy(api: client.ApiClient, ns: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name}, "spec": spec})


def get_policy(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "remediationpolicies", name)
    return obj


def make_deployment(api: client.ApiClient, ns: str, name: str, replicas: int = 0, memory: str = "128Mi") -> None:
    client.AppsV1Api(api).create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": "app", "image": "example/app:1",
                      "resources": {"limits": {"memory": memory}, "requests": {"memory": "64Mi"}}}]}}}})


def http(method: str, url: str, body: Any = None, token: str | None = None, raw: bytes | None = None,
         timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return r.status, _json(text)
    except urllib.error.HTTPError as e:
        return e.code, _json(e.read())


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def alert(fp: str, status: str = "firing", starts: str = "2026-11-23T10:00:00Z", alertname: str = "Rel",
          **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": alertname, **labels}, "annotations": {},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else starts,
            "generatorURL": "http://prom/graph", "fingerprint": fp}


def payload(alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "remedy",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": alerts}


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmHWM for pid {pid}")


def results_dir() -> Path:
    d = Path(os.environ.get("REMEDY_RESULTS_DIR") or REPO / "bench" / "results")
    d.mkdir(parents=True, exist_ok=True)
    return d


def record(name: str, figures: dict[str, Any]) -> Path:
    """Print the figures and write them to <results>/reliability-<name>.json."""
    figures = {"test": name, "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    path = results_dir() / f"reliability-{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\n[reliability:{name}] " + json.dumps(figures, sort_keys=True))
    return path
