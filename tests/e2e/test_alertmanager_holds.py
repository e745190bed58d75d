"""Living beside Alertmanager, against the real Alertmanager the fixtures start: a silence
exists exactly while a child runs (also across a SIGKILL of the operator), and holdWhile /
windows hold starts and count them. Alertmanager's own API is the witness for silences."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.operator import OperatorProcess
from remedy_devenv.services import AlertmanagerServer, PrometheusServer
from tests.fixtures.helpers import http_json, wait_for
from tests.fixtures.operator import GROUP, VERSION, WebhookOperator, condition, make_namespace, wait_phase

pytestmark = pytest.mark.cluster


@dataclass
class Stack:
    ns: str
    op: OperatorProcess
    webhook: str
    token: str
    am: AlertmanagerServer
    api: client.ApiClient


@pytest.fixture(scope="module")
def stack(kube_admin: client.ApiClient, webhook_operator: Callable[..., WebhookOperator], prometheus_server: PrometheusServer,
          alertmanager_server: AlertmanagerServer) -> Iterator[Stack]:
    ns = make_namespace(kube_admin, "am")
    hook = webhook_operator(ns, token="holds-token", env={
        "REMEDY_PROMETHEUS_URL": prometheus_server.url, "REMEDY_ALERTMANAGER_URL": alertmanager_server.url,
        "REMEDY_SILENCE_SWEEP_SECONDS": "2"})
    yield Stack(ns, hook.op, hook.url, hook.token, alertmanager_server, kube_admin)
    hook.stop()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_policy(s: Stack, name: str, spec: dict[str, Any]) -> None:
    base = {"trigger": {"alert": {"alertname": name}}, "template": {"action": {"notify": {"message": "{{ labels.instance }}"}}},
            "guards": {"cooldown": "0s", "maxPerHour": 100, "maxConcurrent": 100, "pauseAfterFailures": 100}}
    client.CustomObjectsApi(s.api).create_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name}, "spec": {**base, **spec}})
    wait_for(lambda: (policy(s, name).get("status") or {}).get("observedGeneration"), 20, "policy evaluated")


def policy(s: Stack, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(s.api).get_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", name)
    return obj


def fire(s: Stack, alertname: str, fp: str, starts: str, **labels: str) -> dict[str, int]:
    alert = {"status": "firing", "labels": {"alertname": alertname, **labels}, "annotations": {}, "startsAt": starts,
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": fp}
    code, body = http_json("POST", s.webhook, {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
                                               "receiver": "remedy", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                                               "externalURL": "http://am", "alerts": [alert]}, token=s.token)
    assert code == 200, body
    return dict(body["outcomes"])


def kids(s: Stack, name: str) -> list[dict[str, Any]]:
    return list(client.CustomObjectsApi(s.api).list_namespaced_custom_object(
        GROUP, VERSION, s.ns, "remediations", label_selector=f"remedy.dev/policy={name}")["items"])


def am_silences(s: Stack) -> list[dict[str, Any]]:
    code, body = http_json("GET", f"{s.am.url}/api/v2/silences")
    assert code == 200
    return list(body)


def silences_of(s: Stack, child: str) -> list[dict[str, Any]]:
    return [x for x in am_silences(s) if f"{s.ns}/{child} " in x.get("comment", "") and x.get("createdBy") == "remedy"]


def events(s: Stack, name: str, reason: str) -> list[str]:
    evs = client.CoreV1Api(s.api).list_namespaced_event(s.ns, field_selector=f"involvedObject.name={name},reason={reason}")
    return [e.message or "" for e in evs.items]


SILENCE = {"matchers": [{"name": "alertname", "value": "TargetDown"}, {"name": "instance", "value": "{{ labels.instance }}"}],
           "duration": "10m", "comment": "restart in progress"}


def test_silence_exists_exactly_while_the_child_runs(stack: Stack) -> None:
    s = stack
    # verify that cannot pass keeps the child Verifying (running) for its timeout, then Failed
    create_policy(s, "silenced", {"silence": SILENCE, "verify": {"promql": "vector(1) > 0", "timeout": "5s", "interval": "1s"}})
    assert fire(s, "silenced", "sil-1", "2026-11-30T10:00:00Z", instance="web-1") == {"created": 1}
    child = wait_for(lambda: kids(s, "silenced"), 10, "child")[0]["metadata"]["name"]
    running = wait_phase(s.api, s.ns, child, "Verifying", timeout=20)
    assert json.loads(running["metadata"]["annotations"]["remedy.dev/silence"])["matchers"][1] == {
        "name": "instance", "value": "web-1", "isRegex": False, "isEqual": True}
    live = wait_for(lambda: [x for x in silences_of(s, child) if x["status"]["state"] == "active"], 10, "silence active")
    assert len(live) == 1
    assert sorted((m["name"], m["value"]) for m in live[0]["matchers"]) == [("alertname", "TargetDown"), ("instance", "web-1")]
    assert "restart in progress" in live[0]["comment"]
    obj = client.CustomObjectsApi(s.api).get_namespaced_custom_object(GROUP, VERSION, s.ns, "remediations", child)
    assert obj["metadata"]["annotations"]["remedy.dev/silence-id"] == live[0]["id"]
    done = wait_phase(s.api, s.ns, child, {"Failed", "Succeeded"}, timeout=30)
    assert done["status"]["phase"] == "Failed" and condition(done, "Completed")["reason"] == "VerificationFailed"
    wait_for(lambda: all(x["status"]["state"] == "expired" for x in silences_of(s, child)), 10, "silence expired")
    assert len(silences_of(s, child)) == 1, "exactly one silence was created"
    assert any(live[0]["id"] in m for m in events(s, child, "Silenced"))


def test_silence_is_expired_after_the_operator_is_killed_mid_run(stack: Stack) -> None:
    s = stack
    create_policy(s, "crashy", {"silence": SILENCE, "verify": {"promql": "vector(1) > 0", "timeout": "12s", "interval": "1s"}})
    fire(s, "crashy", "crash-1", "2026-11-30T10:00:00Z", instance="web-2")
    child = wait_for(lambda: kids(s, "crashy"), 10, "child")[0]["metadata"]["name"]
    wait_for(lambda: [x for x in silences_of(s, child) if x["status"]["state"] == "active"], 20, "silence active")
    s.op.kill()  # SIGKILL mid-verification
    assert [x for x in silences_of(s, child) if x["status"]["state"] == "active"], "still active while the operator is down"
    s.op.start()
    s.op.wait_ready()
    wait_phase(s.api, s.ns, child, {"Failed", "Succeeded"}, timeout=60)
    wait_for(lambda: all(x["status"]["state"] == "expired" for x in silences_of(s, child)), 15, "silence expired after restart")
    # A child deleted while the operator is down: the startup sweep expires its silence.
    fire(s, "crashy", "crash-2", "2026-11-30T10:05:00Z", instance="web-3")
    second = wait_for(lambda: [k for k in kids(s, "crashy") if k["metadata"]["name"] != child], 10, "second child")[0]["metadata"]["name"]
    wait_for(lambda: [x for x in silences_of(s, second) if x["status"]["state"] == "active"], 20, "second silence active")
    s.op.kill()
    client.CustomObjectsApi(s.api).delete_namespaced_custom_object(GROUP, VERSION, s.ns, "remediations", second)
    s.op.start()
    s.op.wait_ready()
    wait_for(lambda: all(x["status"]["state"] == "expired" for x in silences_of(s, second)), 20, "orphan silence expired by the sweep")
    assert not [x for x in am_silences(s) if x.get("createdBy") == "remedy" and s.ns in x.get("comment", "")
                and x["status"]["state"] != "expired"], "no remedy silence left behind"


def test_hold_while_another_alert_fires_then_start_when_it_resolves(stack: Stack) -> None:
    s = stack
    create_policy(s, "held", {"holdWhile": {"alerts": [[{"name": "alertname", "value": "DatabaseMaintenance"}]]}})
    now = datetime.now(timezone.utc)
    maintenance = [{"labels": {"alertname": "DatabaseMaintenance", "cluster": "c1"}, "annotations": {},
                    "startsAt": _iso(now), "endsAt": _iso(now + timedelta(minutes=10)), "generatorURL": "http://x"}]
    assert http_json("POST", f"{s.am.url}/api/v2/alerts", maintenance)[0] == 200
    wait_for(lambda: [a for a in s.am.alerts() if a["labels"].get("alertname") == "DatabaseMaintenance"], 10, "alert in AM")
    assert fire(s, "held", "held-1", "2026-11-30T10:00:00Z", instance="db-1") == {"blocked:hold": 1}
    assert fire(s, "held", "held-1", "2026-11-30T10:00:00Z", instance="db-1") == {"blocked:hold": 1}  # Alertmanager resends
    assert kids(s, "held") == []
    pol = wait_for(lambda: (p := policy(s, "held"))["status"].get("counters", {}).get("blockedHold") == 2 and p, 15, "blockedHold counted")
    assert pol["status"]["counters"].get("created", 0) == 0
    assert any("DatabaseMaintenance" in m for m in events(s, "held", "BlockedHold"))
    maintenance[0]["endsAt"] = _iso(datetime.now(timezone.utc))  # resolved
    assert http_json("POST", f"{s.am.url}/api/v2/alerts", maintenance)[0] == 200
    wait_for(lambda: not [a for a in s.am.alerts() if a["labels"].get("alertname") == "DatabaseMaintenance"
                          and a["status"]["state"] == "active"], 10, "alert resolved in AM")
    assert fire(s, "held", "held-1", "2026-11-30T10:00:00Z", instance="db-1") == {"created": 1}


def test_hold_while_a_maintenance_silence_matches_the_target(stack: Stack) -> None:
    s = stack
    create_policy(s, "maint", {"holdWhile": {"silenced": True}})
    now = datetime.now(timezone.utc)
    code, body = http_json("POST", f"{s.am.url}/api/v2/silences", {
        "matchers": [{"name": "instance", "value": "db-9", "isRegex": False, "isEqual": True}],
        "startsAt": _iso(now), "endsAt": _iso(now + timedelta(minutes=10)), "createdBy": "alice", "comment": "planned maintenance"})
    assert code == 200
    try:
        assert fire(s, "maint", "m-1", "2026-11-30T10:00:00Z", instance="db-9") == {"blocked:hold": 1}
        assert any("alice" in m and "planned maintenance" in m for m in wait_for(lambda: events(s, "maint", "BlockedHold"), 10, "event"))
        assert fire(s, "maint", "m-2", "2026-11-30T10:00:00Z", instance="db-8") == {"created": 1}  # not silenced
    finally:
        http_json("DELETE", f"{s.am.url}/api/v2/silence/{body['silenceID']}")
    assert fire(s, "maint", "m-1", "2026-11-30T10:00:00Z", instance="db-9") == {"created": 1}
    wait_for(lambda: policy(s, "maint")["status"].get("counters", {}).get("blockedHold") == 1, 15, "blockedHold counted")


def test_windows_block_outside_and_allow_inside(stack: Stack) -> None:
    s = stack
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%A").lower()
    create_policy(s, "windowed", {"windows": [{"weekdays": [tomorrow], "timeZone": "UTC"}]})
    assert fire(s, "windowed", "w-1", "2026-11-30T10:00:00Z", instance="a") == {"blocked:window": 1}
    pol = wait_for(lambda: (p := policy(s, "windowed"))["status"].get("counters", {}).get("blockedWindow") == 1 and p, 15, "counted")
    assert any(tomorrow in m for m in events(s, "windowed", "BlockedWindow"))
    client.CustomObjectsApi(s.api).patch_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", "windowed", {
        "spec": {"windows": [{"times": [{"start": "00:00", "end": "24:00"}], "timeZone": "Asia/Tokyo"}]}})
    wait_for(lambda: policy(s, "windowed")["status"].get("observedGeneration") == pol["metadata"]["generation"] + 1, 15, "re-evaluated")
    assert fire(s, "windowed", "w-1", "2026-11-30T10:00:00Z", instance="a") == {"created": 1}


def test_unknown_time_zone_marks_the_policy_invalid(stack: Stack) -> None:
    s = stack
    client.CustomObjectsApi(s.api).create_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": "badzone"},
        "spec": {"trigger": {"alert": {"alertname": "X"}}, "template": {"action": {"notify": {"message": "m"}}},
                 "windows": [{"timeZone": "Mars/Olympus_Mons"}]}})
    ready = wait_for(lambda: [c for c in (policy(s, "badzone").get("status") or {}).get("conditions") or []
                              if c["type"] == "Ready" and c["status"] == "False"], 20, "Ready False")[0]
    assert ready["reason"] == "InvalidSpec" and "Mars/Olympus_Mons" in ready["message"]
