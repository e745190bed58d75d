"""Shared helpers of the reliability suite: waiting, listing, HTTP, alert payloads, results."""

from __future__ import annotations

import base64
import functools
import json
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from remedy_devenv import testkit
from tests.fixtures.helpers import results_dir, wait_for
from tests.fixtures.operator import GROUP, VERSION

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
    """Scaled to 0 by default: the suite's workloads need no pods."""
    testkit.make_deployment(api, ns, name, replicas=replicas, memory=memory)


http = testkit.http_json
payload = testkit.alert_payload
alert = functools.partial(testkit.alert, alertname="Rel")


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmHWM for pid {pid}")


def record(name: str, figures: dict[str, Any]) -> Path:
    """Print the figures and write them to <results>/reliability-<name>.json."""
    figures = {"test": name, "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    path = results_dir() / f"reliability-{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\n[reliability:{name}] " + json.dumps(figures, sort_keys=True))
    return path
