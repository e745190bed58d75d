"""History of finished Remediations on the real control plane: ttlSecondsAfterFinished deletes a
manual Remediation after it finished; a policy's successfulHistoryLimit / failedHistoryLimit
delete its oldest finished children, but never one a guard may still count (finished within
the guard horizon, or part of the current failure streak). The API server is the witness: the
deleted objects answer 404, the kept ones are still there."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from remedy_devenv.operator import OperatorProcess
from tests.fixtures.operator import GROUP, VERSION, wait_phase

pytestmark = pytest.mark.cluster

LABEL_POLICY = f"{GROUP}/policy"


def body(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"action": {"notify": {"message": f"history {name}", "severity": "info"}}, **spec}}


def exists(api: client.ApiClient, ns: str, name: str) -> bool:
    try:
        client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "remediations", name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def wait_gone(api: client.ApiClient, ns: str, names: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(exists(api, ns, n) for n in names):
            return
        time.sleep(0.5)
    raise AssertionError(f"still there after {timeout}s: {sorted(n for n in names if exists(api, ns, n))}")


def test_ttl_seconds_after_finished(kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str) -> None:
    custom = client.CustomObjectsApi(kube_admin)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediations", body("short", ttlSecondsAfterFinished=3))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediations", body("kept"))
    done = wait_phase(kube_admin, namespace, "short", "Succeeded")
    finished = datetime.fromisoformat(done["status"]["completedAt"].replace("Z", "+00:00"))
    wait_gone(kube_admin, namespace, {"short"}, timeout=40)
    assert datetime.now(timezone.utc) - finished >= timedelta(seconds=3)  # not before the TTL
    wait_phase(kube_admin, namespace, "kept", "Succeeded")
    time.sleep(3)
    assert exists(kube_admin, namespace, "kept")


def test_policy_history_limits_spare_what_guards_need(kube_admin: client.ApiClient, operator: OperatorProcess,
                                                      namespace: str) -> None:
    custom = client.CustomObjectsApi(kube_admin)
    policy = f"hist-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    # name -> (phase, finished this long ago)
    plan = {"ok-recent": ("Succeeded", timedelta(minutes=10)), "ok-2h": ("Succeeded", timedelta(hours=2)),
            "ok-3h": ("Succeeded", timedelta(hours=3)), "ok-4h": ("Succeeded", timedelta(hours=4)),
            "ok-6h": ("Succeeded", timedelta(hours=6)), "fail-150m": ("Failed", timedelta(minutes=150)),
            "fail-210m": ("Failed", timedelta(minutes=210)), "fail-7h": ("Failed", timedelta(hours=7))}
    for name in plan:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediations", body(name, {LABEL_POLICY: policy}))
    for name, (phase, ago) in plan.items():
        wait_phase(kube_admin, namespace, name, "Succeeded")
        stamp = (now - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "remediations", name,
                                                     {"status": {"phase": phase, "completedAt": stamp}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": policy},
        "spec": {"trigger": {"alert": {"alertname": f"NeverFires{uuid.uuid4().hex[:6]}"}},
                 "template": {"action": {"notify": {"message": "x"}}},
                 "successfulHistoryLimit": 2, "failedHistoryLimit": 1}})
    # newest 2 succeeded kept (one of them inside the guard horizon anyway), newest failed kept
    wait_gone(kube_admin, namespace, {"ok-3h", "ok-4h", "ok-6h", "fail-210m", "fail-7h"}, timeout=60)
    assert all(exists(kube_admin, namespace, n) for n in ("ok-recent", "ok-2h", "fail-150m"))


def test_failure_streak_and_guard_horizon_are_kept(kube_admin: client.ApiClient, operator: OperatorProcess,
                                                   namespace: str) -> None:
    custom = client.CustomObjectsApi(kube_admin)
    policy = f"streak-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    plan = {"ok-5h": ("Succeeded", timedelta(hours=5)), "fail-4h": ("Failed", timedelta(hours=4)),
            "fail-3h": ("Failed", timedelta(hours=3)), "fail-20m": ("Failed", timedelta(minutes=20)),
            "old-ok-9h": ("Succeeded", timedelta(hours=9))}
    for name in plan:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediations", body(name, {LABEL_POLICY: policy}))
    for name, (phase, ago) in plan.items():
        wait_phase(kube_admin, namespace, name, "Succeeded")
        stamp = (now - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "remediations", name,
                                                     {"status": {"phase": phase, "completedAt": stamp}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": policy},
        "spec": {"trigger": {"alert": {"alertname": f"NeverFires{uuid.uuid4().hex[:6]}"}},
                 "template": {"action": {"notify": {"message": "x"}}},
                 "successfulHistoryLimit": 0, "failedHistoryLimit": 0}})
    # limits of 0 would delete everything; the three failures after the last success are the
    # streak pauseAfterFailures counts, so only the succeeded ones outside the horizon go
    wait_gone(kube_admin, namespace, {"ok-5h", "old-ok-9h"}, timeout=60)
    assert all(exists(kube_admin, namespace, n) for n in ("fail-4h", "fail-3h", "fail-20m"))
