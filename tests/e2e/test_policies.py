"""RemediationPolicy end to end: real Prometheus and Alertmanager scraping and alerting on the
demo services, the operator's webhook receiving, children remediating and verifying."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from kubernetes import client

from remedy_devenv.demoapp import DemoProcess
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.rollout_bridge import RolloutBridge
from remedy_devenv.services import AlertmanagerServer, PrometheusServer, free_port
from tests.fixtures.helpers import alert, alert_payload
from tests.fixtures.helpers import http_json as _http
from tests.fixtures.helpers import wait_for as _wait
from tests.fixtures.operator import GROUP, VERSION, WebhookOperator, condition, make_namespace, wait_phase

pytestmark = pytest.mark.cluster

RULES = """
groups:
- name: runbooks
  rules:
  - alert: IdempotencyHighLockWaitP95
    expr: idemp_lock_wait_p95_seconds > 1
    for: 2s
    labels: {severity: page, team: payments}
    annotations: {summary: "idempotency lock wait p95 high"}
"""


@dataclass
class Stack:
    ns: str
    op: OperatorProcess
    gateway: DemoProcess
    orders: DemoProcess
    webhook: str
    token: str
    prom: PrometheusServer
    api: client.ApiClient


@pytest.fixture(scope="module")
def stack(kube_admin: client.ApiClient, webhook_operator: Callable[..., WebhookOperator], prometheus_server: PrometheusServer,
          alertmanager_server: AlertmanagerServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ns = make_namespace(kube_admin, "p")
    core = client.CoreV1Api(kube_admin)
    core.create_namespaced_secret(ns, {"metadata": {"name": "idem-admin"},
                                       "data": {"token": base64.b64encode(b"demo-admin-token").decode()}})
    gateway = DemoProcess("gateway")
    gateway.start()
    state = tmp_path_factory.mktemp("orders") / "outbox.json"
    orders = DemoProcess("orders", args=["--state-file", str(state), "--outbox-rate", "200"])
    orders.start()
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/alertmanager"
    alertmanager_server.configure(webhook_url=webhook)
    alertmanager_server.reload()
    prometheus_server.configure(scrape_configs=[("gateway", [f"127.0.0.1:{gateway.port}"]),
                                                ("orders", [f"127.0.0.1:{orders.port}"])],
                                rules=[RULES], alertmanager_url=alertmanager_server.url)
    hook = webhook_operator(ns, token_file=alertmanager_server.token_file, port=port,
                            env={"REMEDY_PROMETHEUS_URL": prometheus_server.url})
    yield Stack(ns, hook.op, gateway, orders, webhook, hook.token, prometheus_server, kube_admin)
    hook.stop()
    gateway.stop()
    orders.stop()


def create_policy(api: client.ApiClient, ns: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name}, "spec": spec})


def get_policy(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "remediationpolicies", name)
    return obj


def children(api: client.ApiClient, ns: str, policy: str) -> list[dict[str, Any]]:
    res = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, ns, "remediations",
                                                                     label_selector=f"remedy.dev/policy={policy}")
    return list(res["items"])


def policy_condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return condition(obj, type_)


payload = alert_payload  # the webhook body: remedy_devenv.testkit


def test_runbook_000_lock_wait_alert_purges_stale_keys_without_a_person(stack: Stack) -> None:
    gw = stack.gateway.url
    create_policy(stack.api, stack.ns, "idem-stuck-locks", {
        "trigger": {"alert": {"alertname": "IdempotencyHighLockWaitP95", "matchLabels": {"team": "payments"}}},
        "template": {"action": {"purgeIdempotencyKeys": {
            "backend": "http", "grace": "5s", "maxKeys": 50,
            "http": {"baseUrl": gw, "tokenSecretRef": {"name": "idem-admin", "key": "token"}}}},
            "reason": "runbook 000: {{ annotations.summary }}"},
        "verify": {"promql": "idemp_lock_wait_p95_seconds > 1", "timeout": "60s", "interval": "1s"},
        "guards": {"cooldown": "1m"},
    })
    status, created = _http("POST", f"{gw}/admin/idempotency/_inject", {"count": 4, "stale": True, "prefix": "order-"}, token="demo-admin-token")
    assert status == 201 and len(created["created"]) == 4
    _http("POST", f"{gw}/admin/idempotency/_inject", {"count": 2, "stale": False, "prefix": "fresh-"}, token="demo-admin-token")
    kids = _wait(lambda: children(stack.api, stack.ns, "idem-stuck-locks"), 90, "policy child from the alert")
    assert len(kids) == 1
    done = wait_phase(stack.api, stack.ns, kids[0]["metadata"]["name"], {"Succeeded", "Failed"}, timeout=90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"]["purgedCount"] == 4
    assert all(e["key"].startswith("order-") for e in done["status"]["result"]["purged"])
    assert condition(done, "Verified")["status"] == "True"
    _, recent = _http("GET", f"{gw}/admin/idempotency/recent", token="demo-admin-token")
    states = {i["key"]: i["state"] for i in recent["items"]}
    assert not any(k.startswith("order-") for k in states), states
    assert sum(1 for k in states if k.startswith("fresh-")) == 2
    assert done["spec"]["reason"] == "runbook 000: idempotency lock wait p95 high"
    pol = _wait(lambda: (p := get_policy(stack.api, stack.ns, "idem-stuck-locks")).get("status", {}).get("counters", {}).get("succeeded") == 1 and p, 30, "policy counters")
    assert pol["status"]["counters"]["created"] == 1
    assert policy_condition(pol, "Ready")["status"] == "True"
    assert policy_condition(pol, "Degraded")["status"] == "False"
    # The alert resolves through the real chain once the metric drops.
    _wait(lambda: not [a for a in stack.prom.alerts() if a.get("labels", {}).get("alertname") == "IdempotencyHighLockWaitP95"], 60, "alert resolved")


def test_runbook_001_stuck_outbox_restarts_orders_via_prometheus_trigger(stack: Stack) -> None:
    apps = client.AppsV1Api(stack.api)
    apps.create_namespaced_deployment(stack.ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "orders"}},
                 "template": {"metadata": {"labels": {"app": "orders"}},
                              "spec": {"containers": [{"name": "orders", "image": "example/orders:1"}]}}}})
    bridge = RolloutBridge(apps, stack.ns, lambda _: stack.orders.restart(), ["orders"]).start()
    try:
        create_policy(stack.api, stack.ns, "outbox-stuck", {
            "trigger": {"prometheus": {"query": "outbox_pending > 500 and deriv(outbox_pending[10s]) >= 0", "for": "3s", "interval": "1s"}},
            "template": {"action": {"restartWorkload": {"target": {"kind": "Deployment", "name": "orders"}}}},
            "verify": {"promql": "outbox_pending > 500", "timeout": "60s", "interval": "1s"},
        })
        assert _http("POST", f"{stack.orders.url}/admin/outbox/stick", {})[0] == 200
        kids = _wait(lambda: children(stack.api, stack.ns, "outbox-stuck"), 90, "restart remediation")
        done = wait_phase(stack.api, stack.ns, kids[0]["metadata"]["name"], {"Succeeded", "Failed"}, timeout=90)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert bridge.rollouts["orders"] == 1
        time.sleep(3)
        assert len(children(stack.api, stack.ns, "outbox-stuck")) == 1, "fired twice for one episode"
        _wait(lambda: not (get_policy(stack.api, stack.ns, "outbox-stuck")["status"].get("activeSeries") or {}), 40, "series cleared")
        assert len(children(stack.api, stack.ns, "outbox-stuck")) == 1, "fired twice for one episode"
    finally:
        bridge.stop()


async def _storm(url: str, token: str, payloads: list[dict[str, Any]], concurrency: int) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def send(p: dict[str, Any]) -> int:
            async with sem, session.post(url, json=p, headers={"Authorization": f"Bearer {token}"}) as r:
                await r.read()
                return r.status
        return await asyncio.gather(*(send(p) for p in payloads))


def test_storm_of_10000_alerts_over_100_fingerprints_creates_exactly_100(stack: Stack) -> None:
    create_policy(stack.api, stack.ns, "storm", {
        "trigger": {"alert": {"alertname": "Storm"}},
        "template": {"action": {"notify": {"message": "instance {{ labels.instance }} alerting"}}},
        "guards": {"cooldown": "0s", "maxPerHour": 1000, "maxConcurrent": 1000, "pauseAfterFailures": 1000},
    })
    time.sleep(1.5)
    alerts = [alert(f"fp{i:03d}", instance=f"i-{i}") for i in range(100)] * 100
    payloads = [payload(alerts[i:i + 50]) for i in range(0, len(alerts), 50)]
    started = time.monotonic()
    codes = asyncio.run(_storm(stack.webhook, stack.token, payloads, 20))
    elapsed = time.monotonic() - started
    assert set(codes) == {200}
    # The webhook answers before every create is done (queued work continues in the operator).
    kids = _wait(lambda: len(k := children(stack.api, stack.ns, "storm")) >= 100 and k, 60, "100 children")
    time.sleep(1.0)  # a late duplicate would show now
    kids = children(stack.api, stack.ns, "storm")
    assert len(kids) == 100, len(kids)
    assert len({k["metadata"]["annotations"]["remedy.dev/fingerprint"] for k in kids}) == 100
    # Repeat delivery (Alertmanager resends): still 100.
    asyncio.run(_storm(stack.webhook, stack.token, payloads[:40], 20))
    assert len(children(stack.api, stack.ns, "storm")) == 100
    pol = _wait(lambda: (p := get_policy(stack.api, stack.ns, "storm")).get("status", {}).get("counters", {}).get("fired", 0) >= 12000 and p, 30, "counters flushed")
    assert pol["status"]["counters"]["created"] == 100
    assert pol["status"]["counters"]["deduplicated"] == pol["status"]["counters"]["fired"] - 100
    print(f"storm: 10,000 alerts in {elapsed:.1f}s ({10000 / elapsed:.0f} alerts/s)")


def test_flapping_alert_stays_within_hourly_budget(stack: Stack) -> None:
    create_policy(stack.api, stack.ns, "flappy", {
        "trigger": {"alert": {"alertname": "Flap", "matchLabels": {"svc": "flappy"}}},
        "template": {"action": {"notify": {"message": "flap"}}},
        "guards": {"cooldown": "0s", "maxPerHour": 5, "maxConcurrent": 100, "pauseAfterFailures": 100},
    })
    time.sleep(1.5)
    # One episode every 3 simulated minutes over an hour: 20 distinct firings of one alert.
    episodes = [alert("flap", starts=f"2026-11-23T10:{m:02d}:00Z", svc="flappy", alertname="Flap") for m in range(0, 60, 3)]
    for ep in episodes:
        _http("POST", stack.webhook, payload([ep]), token=stack.token)
    assert len(children(stack.api, stack.ns, "flappy")) == 5
    pol = _wait(lambda: (p := get_policy(stack.api, stack.ns, "flappy")).get("status", {}).get("counters", {}).get("blockedRate") == 15 and p, 20, "blocked counter")
    assert pol["status"]["counters"]["created"] == 5


def test_repeated_failures_pause_the_policy_until_resumed(stack: Stack) -> None:
    create_policy(stack.api, stack.ns, "doomed", {
        "trigger": {"alert": {"alertname": "Doomed", "matchLabels": {"svc": "doomed"}}},
        "template": {"action": {"restartWorkload": {"target": {"name": "does-not-exist"}}}},
        "guards": {"cooldown": "0s", "maxPerHour": 100, "maxConcurrent": 1, "pauseAfterFailures": 3},
    })
    time.sleep(1.5)
    created = 0
    for m in range(10):
        _, body = _http("POST", stack.webhook, payload([alert("doom", starts=f"2026-11-23T11:{m:02d}:00Z", svc="doomed", alertname="Doomed")]), token=stack.token)
        created += body["outcomes"].get("created", 0)
        _wait(lambda: all((c.get("status") or {}).get("phase") in ("Failed", "Succeeded", "Skipped") for c in children(stack.api, stack.ns, "doomed")), 30, "children final")
        time.sleep(1.5)  # let the refresh loop see the outcome
    assert created == 3
    pol = get_policy(stack.api, stack.ns, "doomed")
    paused = policy_condition(pol, "Paused")
    assert paused["status"] == "True" and paused["reason"] == "TooManyFailures"
    assert "3 consecutive failed" in paused["message"] and "TargetNotFound" in paused["message"]
    assert pol["status"]["counters"]["blockedPaused"] >= 5
    # A person resumes it (what `kubectl remedy resume` does): firings create again.
    client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(GROUP, VERSION, stack.ns, "remediationpolicies", "doomed", {
        "metadata": {"annotations": {"remedy.dev/resumed-at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))}}})
    _wait(lambda: policy_condition(get_policy(stack.api, stack.ns, "doomed"), "Paused")["status"] == "False", 20, "resumed")
    _, body = _http("POST", stack.webhook, payload([alert("doom", starts="2026-11-23T12:00:00Z", svc="doomed", alertname="Doomed")]), token=stack.token)
    assert body["outcomes"] == {"created": 1}


def test_resolved_alert_cancels_unstarted_child_awaiting_approval(stack: Stack) -> None:
    create_policy(stack.api, stack.ns, "careful", {
        "trigger": {"alert": {"alertname": "Careful", "matchLabels": {"svc": "careful"}}},
        "template": {"action": {"notify": {"message": "careful"}}},
        "requireApproval": True, "guards": {"cooldown": "0s"},
    })
    time.sleep(1.5)
    a = alert("care", starts="2026-11-23T13:00:00Z", svc="careful", alertname="Careful")
    _http("POST", stack.webhook, payload([a]), token=stack.token)
    kid = _wait(lambda: children(stack.api, stack.ns, "careful"), 10, "child")[0]["metadata"]["name"]
    wait_phase(stack.api, stack.ns, kid, "AwaitingApproval")
    _, body = _http("POST", stack.webhook, payload([{**a, "status": "resolved", "endsAt": "2026-11-23T13:05:00Z"}], "resolved"), token=stack.token)
    assert body["outcomes"] == {"cancelled": 1}
    obj = wait_phase(stack.api, stack.ns, kid, "Skipped")
    assert condition(obj, "Completed")["reason"] == "AlertResolved"


def test_escalation_runs_next_step_after_failure(stack: Stack) -> None:
    create_policy(stack.api, stack.ns, "escalating", {
        "trigger": {"alert": {"alertname": "Esc", "matchLabels": {"svc": "esc"}}},
        "template": {"action": {"restartWorkload": {"target": {"name": "gone-{{ labels.svc }}"}}}},
        "escalate": [{"after": "1s", "action": {"notify": {"message": "restart of {{ labels.svc }} failed; paging", "severity": "critical"}}}],
        "guards": {"cooldown": "0s", "pauseAfterFailures": 10},
    })
    time.sleep(1.5)
    _http("POST", stack.webhook, payload([alert("esc", starts="2026-11-23T14:00:00Z", svc="esc", alertname="Esc")]), token=stack.token)
    kids = _wait(lambda: [k for k in children(stack.api, stack.ns, "escalating") if k["metadata"]["name"].endswith("-e1")], 40, "escalation step")
    obj = wait_phase(stack.api, stack.ns, kids[0]["metadata"]["name"], {"Succeeded", "Failed"})
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["spec"]["action"]["notify"]["message"] == "restart of esc failed; paging"


@pytest.mark.parametrize("case", ["malformed", "wrong-version", "oversized", "no-token", "wrong-token"])
def test_webhook_rejects_bad_input_with_4xx(stack: Stack, case: str) -> None:
    token: str | None = stack.token
    data: bytes = json.dumps(payload([alert("x")])).encode()
    expected = {"malformed": 400, "wrong-version": 422, "oversized": 413, "no-token": 401, "wrong-token": 401}[case]
    if case == "malformed":
        data = b"{not json"
    elif case == "wrong-version":
        data = json.dumps({**payload([alert("x")]), "version": "3"}).encode()
    elif case == "oversized":
        data = b"{" + b" " * (17 << 20) + b"}"  # over the 16 MiB default (sized for 10,000-alert groups)
    elif case == "no-token":
        token = None
    else:
        token = "nope"
    req = urllib.request.Request(stack.webhook, data=data, method="POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except (ConnectionResetError, urllib.error.URLError):
        code = 413 if case == "oversized" else -1
    assert code == expected
    assert stack.op.alive


def test_template_with_absent_label_degrades_policy(stack: Stack) -> None:
    create_policy(stack.api, stack.ns, "bad-template", {
        "trigger": {"alert": {"alertname": "Tmpl", "matchLabels": {"svc": "tmpl"}}},
        "template": {"action": {"restartWorkload": {"target": {"name": "{{ labels.deployment }}"}}}},
    })
    time.sleep(1.5)
    _, body = _http("POST", stack.webhook, payload([alert("tmpl", svc="tmpl", alertname="Tmpl")]), token=stack.token)
    assert body["outcomes"] == {"error:TemplateError": 1}
    pol = _wait(lambda: (p := get_policy(stack.api, stack.ns, "bad-template")).get("status", {}).get("conditions") and
                any(c["type"] == "Degraded" and c["status"] == "True" for c in p["status"]["conditions"]) and p, 10, "degraded")
    deg = policy_condition(pol, "Degraded")
    assert deg["reason"] == "TemplateError" and "deployment" in deg["message"]
    assert children(stack.api, stack.ns, "bad-template") == []
    assert stack.op.alive
