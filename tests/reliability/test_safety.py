"""Safety: nothing runs away.

* A flapping alert for a simulated hour (60 distinct startsAt episodes, each delivered 3 times
  as Alertmanager resends) through the real webhook: children never exceed maxPerHour.
* A mass OOM: 30 pods of one Deployment marked OOMKilled, 30 alerts per wave (one per pod) for
  5 waves: children stay within maxPerHour (maxConcurrent 1: one active at a time),
  raiseMemoryOnOOM raises the limit up to maxLimit and then refuses (OverCap), the policy
  pauses itself after pauseAfterFailures consecutive failures, and later waves create nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv import kubelet
from tests.fixtures.operator import WebhookOperator, make_namespace, wait_phase

from ._util import FINAL, alert, cond, create_policy, get_policy, http, list_rems, make_deployment, payload, record, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(420)]

TOKEN = "safety-webhook-token"
PODS = 30


@pytest.fixture
def stack(kube_admin: client.ApiClient, webhook_operator: Callable[..., WebhookOperator]) -> Any:
    ns = make_namespace(kube_admin, "sf")
    hook = webhook_operator(ns, token=TOKEN)
    yield ns, hook.op, hook.base
    hook.stop()
    client.CoreV1Api(kube_admin).delete_namespace(ns)


def _policies_indexed(base: str, n: int) -> bool:
    return (http("GET", f"{base}/healthz")[1] or {}).get("policies") == n


def test_flapping_alert_for_an_hour_stays_within_budget(kube_admin: client.ApiClient, stack: Any) -> None:
    ns, op, base = stack
    create_policy(kube_admin, ns, "flappy", {
        "trigger": {"alert": {"alertname": "Flap", "matchLabels": {"svc": "flappy"}}},
        "template": {"action": {"notify": {"message": "flap {{ labels.svc }}"}}},
        "guards": {"cooldown": "0s", "maxPerHour": 4, "maxConcurrent": 100, "pauseAfterFailures": 100}})
    wait_for(lambda: _policies_indexed(base, 1), 30, "policy indexed")
    outcomes: dict[str, int] = {}
    for minute in range(60):  # one episode per simulated minute, each delivered 3 times
        ep = alert("flap", starts=f"2026-11-23T10:{minute:02d}:00Z", alertname="Flap", svc="flappy")
        for _ in range(3):
            status, body = http("POST", f"{base}/alertmanager", payload([ep]), token=TOKEN)
            assert status == 200, body
            for k, v in body["outcomes"].items():
                outcomes[k] = outcomes.get(k, 0) + v
    kids = wait_for(lambda: (k := list_rems(kube_admin, ns, "remedy.dev/policy=flappy")) and all(
        (c.get("status") or {}).get("phase") in FINAL for c in k) and k, 60, "flap children final")
    pol = wait_for(lambda: (p := get_policy(kube_admin, ns, "flappy")).get("status", {}).get("counters", {}).get("fired", 0) >= 180 and p,
                   30, "counters flushed")
    record("safety-flapping", {"episodes": 60, "deliveries": 180, "outcomes": outcomes, "children": len(kids),
                               "maxPerHour": 4, "counters": pol["status"]["counters"]})
    assert len(kids) == 4
    assert outcomes.get("created") == 4
    assert op.alive


def test_mass_oom_is_capped_and_pauses_the_policy(kube_admin: client.ApiClient, stack: Any) -> None:
    ns, op, base = stack
    apps, core = client.AppsV1Api(kube_admin), client.CoreV1Api(kube_admin)
    make_deployment(kube_admin, ns, "inv", replicas=PODS, memory="256Mi")
    create_policy(kube_admin, ns, "oom", {
        "trigger": {"alert": {"alertname": "KubePodOOMKilled"}},
        "template": {"action": {"raiseMemoryOnOOM": {"target": {"name": "{{ labels.deployment }}"}, "factor": 2,
                                                     "maxLimit": "1Gi"}}},
        "guards": {"cooldown": "0s", "maxPerHour": 10, "maxConcurrent": 1, "pauseAfterFailures": 2}})
    wait_for(lambda: _policies_indexed(base, 1), 30, "policy indexed")

    def running_pods() -> list[str]:
        dep = apps.read_namespaced_deployment("inv", ns)
        limit = dep.spec.template.spec.containers[0].resources.limits["memory"]
        pods = core.list_namespaced_pod(ns, label_selector="app=inv").items
        return [p.metadata.name for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
                and p.spec.containers[0].resources.limits["memory"] == limit]

    waves: list[dict[str, Any]] = []
    for wave in range(5):
        pods = wait_for(lambda: len(r := running_pods()) >= PODS and r, 120, f"{PODS} running pods (wave {wave})", interval=1)
        for name in pods:
            kubelet.mark_oomkilled(core, ns, name)
        if wave == 4:
            wait_for(lambda: cond(get_policy(kube_admin, ns, "oom"), "Paused").get("status") == "True", 30, "policy paused")
        alerts = [alert(f"oom-{name}", starts=f"2026-11-23T11:{wave:02d}:00Z", alertname="KubePodOOMKilled",
                        deployment="inv", pod=name) for name in pods[:PODS]]
        status, body = http("POST", f"{base}/alertmanager", payload(alerts), token=TOKEN, timeout=60)
        assert status == 200, body
        kids = list_rems(kube_admin, ns, "remedy.dev/policy=oom")
        for kid in kids:
            wait_phase(kube_admin, ns, kid["metadata"]["name"], FINAL, timeout=60)
        limit = apps.read_namespaced_deployment("inv", ns).spec.template.spec.containers[0].resources.limits["memory"]
        waves.append({"alerts": len(alerts), "outcomes": body["outcomes"], "limitAfter": limit})
        time.sleep(1.5)  # let the refresh loop see the outcome (pause is level-based on children)
    kids = list_rems(kube_admin, ns, "remedy.dev/policy=oom")
    results = sorted((k["metadata"]["creationTimestamp"], k["status"]["phase"], cond(k, "Completed").get("reason")) for k in kids)
    pol = get_policy(kube_admin, ns, "oom")
    paused = cond(pol, "Paused")
    executed = sum(1 for _, ph, _ in results if ph == "Succeeded")
    # pauseOvershoot: refused children beyond pauseAfterFailures (0 since the streak is also
    # checked at fire time, not only by the refresh loop).
    record("safety-mass-oom", {"pods": PODS, "pauseAfterFailures": 2, "maxPerHour": 10, "maxConcurrent": 1,
                               "pauseOvershoot": sum(1 for _, ph, _ in results if ph == "Failed") - 2, "waves": waves, "alertsSent": sum(w["alerts"] for w in waves),
                               "children": len(kids), "executed": executed,
                               "results": [[ph, r] for _, ph, r in results], "finalLimit": waves[-1]["limitAfter"],
                               "paused": [paused.get("status"), paused.get("reason")]})
    failed = [r for _, ph, r in results if ph == "Failed"]
    # Caps: the limit went 256Mi -> 512Mi -> 1Gi and never past maxLimit; every later plan was refused.
    assert waves[-1]["limitAfter"] == "1Gi" and all(w["limitAfter"] in ("512Mi", "1Gi") for w in waves)
    assert executed == 2, results
    assert failed and set(failed) == {"OverCap"}, results
    # Budgets: never more children than maxPerHour,
    assert len(kids) <= 10
    # ...and once paused, later waves create nothing.
    assert paused["status"] == "True" and paused["reason"] == "TooManyFailures"
    # The failure streak is checked when each child is created, so the pause lands exactly at
    # pauseAfterFailures (no overshoot) and every wave after the one that paused it creates nothing.
    assert len(failed) == 2, results
    first_paused = next(i for i, w in enumerate(waves) if w["outcomes"].get("blocked:paused"))
    assert all(w["outcomes"].get("created", 0) == 0 and w["outcomes"].get("blocked:paused") == PODS
               for w in waves[first_paused + 1:])
    # Alerts of one delivery are decided together (in memory, bounded concurrent creates), so with
    # maxConcurrent 1 each wave creates at most one child: the pause must come in the first wave
    # after the child that completed the streak, with no child created beyond it.
    assert all(w["outcomes"].get("created", 0) <= 1 for w in waves), waves
    assert sum(w["outcomes"].get("created", 0) for w in waves[:first_paused]) == executed + len(failed) == len(kids)
    assert op.alive
