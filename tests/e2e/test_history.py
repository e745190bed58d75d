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


def body(name: str, labels: dict[str, str] | None = None, owner: dict[str, Any] | None = None,
         **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation",
            "metadata": {"name": name, "labels": labels or {}, "ownerReferences": [owner] if owner else []},
            "spec": {"action": {"notify": {"message": f"history {name}", "severity": "info"}}, **spec}}


def policy_with_children(api: client.ApiClient, ns: str, policy: str,
                         plan: dict[str, tuple[str, timedelta]]) -> None:
    """A policy and finished children as the operator makes them (label, controller reference
    to the policy's uid, the policy's author as requester: admin created both, so the API
    server stamps the same name), each finished ``ago`` in the past. The history limits are
    set afterwards (``limit``) so none applies while the children are being prepared."""
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": policy},
        "spec": {"trigger": {"alert": {"alertname": f"NeverFires{uuid.uuid4().hex[:6]}"}},
                 "template": {"action": {"notify": {"message": "x"}}}}})
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "name": policy,
             "uid": created["metadata"]["uid"], "controller": True}
    now = datetime.now(timezone.utc)
    for name in plan:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body(name, {LABEL_POLICY: policy}, owner))
    for name, (phase, ago) in plan.items():
        wait_phase(api, ns, name, "Succeeded")
        stamp = (now - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "remediations", name,
                                                     {"status": {"phase": phase, "completedAt": stamp}})


def limit(api: client.ApiClient, ns: str, policy: str, succeeded: int, failed: int) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", policy, {
        "spec": {"successfulHistoryLimit": succeeded, "failedHistoryLimit": failed}})


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
    policy = f"hist-{uuid.uuid4().hex[:6]}"
    # name -> (phase, finished this long ago)
    plan = {"ok-recent": ("Succeeded", timedelta(minutes=10)), "ok-2h": ("Succeeded", timedelta(hours=2)),
            "ok-3h": ("Succeeded", timedelta(hours=3)), "ok-4h": ("Succeeded", timedelta(hours=4)),
            "ok-6h": ("Succeeded", timedelta(hours=6)), "fail-150m": ("Failed", timedelta(minutes=150)),
            "fail-210m": ("Failed", timedelta(minutes=210)), "fail-7h": ("Failed", timedelta(hours=7))}
    policy_with_children(kube_admin, namespace, policy, plan)
    limit(kube_admin, namespace, policy, 2, 1)
    # newest 2 succeeded kept (one of them inside the guard horizon anyway), newest failed kept
    wait_gone(kube_admin, namespace, {"ok-3h", "ok-4h", "ok-6h", "fail-210m", "fail-7h"}, timeout=60)
    assert all(exists(kube_admin, namespace, n) for n in ("ok-recent", "ok-2h", "fail-150m"))


def test_failure_streak_and_guard_horizon_are_kept(kube_admin: client.ApiClient, operator: OperatorProcess,
                                                   namespace: str) -> None:
    policy = f"streak-{uuid.uuid4().hex[:6]}"
    plan = {"ok-5h": ("Succeeded", timedelta(hours=5)), "fail-4h": ("Failed", timedelta(hours=4)),
            "fail-3h": ("Failed", timedelta(hours=3)), "fail-20m": ("Failed", timedelta(minutes=20)),
            "old-ok-9h": ("Succeeded", timedelta(hours=9))}
    policy_with_children(kube_admin, namespace, policy, plan)
    limit(kube_admin, namespace, policy, 0, 0)
    # limits of 0 would delete everything; the three failures after the last success are the
    # streak pauseAfterFailures counts, so only the succeeded ones outside the horizon go
    wait_gone(kube_admin, namespace, {"ok-5h", "old-ok-9h"}, timeout=60)
    assert all(exists(kube_admin, namespace, n) for n in ("fail-4h", "fail-3h", "fail-20m"))
