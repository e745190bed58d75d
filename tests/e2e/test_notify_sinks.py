"""notify sinks end to end: Remediations on the real control plane send to a local receiver
that validates each service's wire format (remedy_devenv.notify_receiver) and deduplicates
like the service does; the receiver is the witness. Secrets are referenced, never shown."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from remedy_devenv.notify_receiver import NotifyReceiver
from remedy_devenv.operator import OperatorProcess
from tests.fixtures.operator import condition, create_rem, wait_phase

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def receiver() -> Iterator[NotifyReceiver]:
    r = NotifyReceiver(slack_token=f"T0/B0/{secrets.token_hex(12)}", pagerduty_key=secrets.token_hex(16),
                       opsgenie_key=secrets.token_hex(18), teams_token=secrets.token_hex(16)).start()
    yield r
    r.stop()


def secret(api: client.ApiClient, ns: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(ns, {"metadata": {"name": name},
                                                        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def notify(message: str, severity: str, sink: dict[str, Any]) -> dict[str, Any]:
    return {"action": {"notify": {"message": message, "severity": severity, "sink": sink}}}


def events_text(api: client.ApiClient, ns: str) -> str:
    return json.dumps([e.to_dict() for e in client.CoreV1Api(api).list_namespaced_event(ns).items], default=str)


def test_every_format_reaches_its_receiver_valid_and_secrets_stay_hidden(
        kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str, receiver: NotifyReceiver) -> None:
    ns, api = namespace, kube_admin
    secret(api, ns, "sinks", {"slack-url": receiver.slack_url, "teams-url": receiver.teams_url,
                              "pd-key": receiver.pagerduty_key, "og-key": receiver.opsgenie_key})
    sinks = {
        "slack": {"format": "slack", "urlSecretRef": {"name": "sinks", "key": "slack-url"}},
        "pagerduty": {"format": "pagerduty", "url": f"{receiver.url}/v2/enqueue", "keySecretRef": {"name": "sinks", "key": "pd-key"}},
        "opsgenie": {"format": "opsgenie", "url": f"{receiver.url}/v2/alerts", "keySecretRef": {"name": "sinks", "key": "og-key"}},
        "teams": {"format": "teams", "urlSecretRef": {"name": "sinks", "key": "teams-url"}},
        "generic": {"format": "generic", "url": f"{receiver.url}/generic"},
    }
    long_message = "orders outbox stuck; restarted orders and verified. " * 70  # 3,570 chars: over Opsgenie's 130 and PagerDuty's 1,024
    for fmt, sink in sinks.items():
        create_rem(api, ns, f"n-{fmt}", notify(long_message, "critical", sink))
    for fmt in sinks:
        done = wait_phase(api, ns, f"n-{fmt}", {"Succeeded", "Failed"})
        assert done["status"]["phase"] == "Succeeded", (fmt, done["status"])
        assert done["status"]["result"]["sink"]["format"] == fmt
        got = receiver.of(fmt)
        assert len(got) == 1 and got[0].valid, (fmt, [d.errors for d in got])
    pd = receiver.of("pagerduty")[0].body
    assert pd["payload"]["severity"] == "critical" and pd["dedup_key"] == f"remedy/{ns}/n-pagerduty"
    og = receiver.of("opsgenie")[0]
    assert og.body["priority"] == "P1" and len(og.body["message"]) == 130 and og.body["alias"] == f"remedy/{ns}/n-opsgenie"
    assert receiver.of("generic")[0].headers["Idempotency-Key"] == f"remedy/{ns}/n-generic"
    # No secret value, in any encoding, in status or Events.
    shown = json.dumps([client.CustomObjectsApi(api).get_namespaced_custom_object("remedy.dev", "v1alpha1", ns, "remediations", f"n-{f}")
                        for f in sinks]) + events_text(api, ns)
    for value in (receiver.slack_token, receiver.teams_token, receiver.pagerduty_key, receiver.opsgenie_key):
        assert value not in shown and base64.b64encode(value.encode()).decode() not in shown


def test_same_dedup_key_updates_one_alert_instead_of_opening_two(
        kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str, receiver: NotifyReceiver) -> None:
    ns, api = namespace, kube_admin
    secret(api, ns, "pd", {"key": receiver.pagerduty_key})
    before = len(receiver.of("pagerduty"))
    sink = {"format": "pagerduty", "url": f"{receiver.url}/v2/enqueue", "keySecretRef": {"name": "pd", "key": "key"},
            "dedupKey": f"{ns}/outbox-stuck"}
    for name in ("dedup-1", "dedup-2"):
        create_rem(api, ns, name, notify("outbox stuck", "warning", sink))
        assert wait_phase(api, ns, name, {"Succeeded", "Failed"})["status"]["phase"] == "Succeeded"
    assert len(receiver.of("pagerduty")) == before + 2
    assert receiver.open_alerts["pagerduty"][f"{ns}/outbox-stuck"] == 2  # two events, one incident


def test_rejected_key_fails_with_the_receivers_answer_not_the_key(
        kube_admin: client.ApiClient, operator: OperatorProcess, namespace: str, receiver: NotifyReceiver) -> None:
    ns, api = namespace, kube_admin
    wrong = secrets.token_hex(18)
    secret(api, ns, "og-wrong", {"key": wrong})
    create_rem(api, ns, "og-bad", notify("m", "info", {"format": "opsgenie", "url": f"{receiver.url}/v2/alerts",
                                                       "keySecretRef": {"name": "og-wrong", "key": "key"}}))
    done = wait_phase(api, ns, "og-bad", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Failed" and condition(done, "Completed")["reason"] == "SinkRejected"
    assert "HTTP 401" in done["status"]["message"] and wrong not in json.dumps(done) + events_text(api, ns)
    # Bad input the schema cannot reject ends Failed with a reason, not a crash.
    create_rem(api, ns, "pd-nokey", notify("m", "info", {"format": "pagerduty"}))
    done = wait_phase(api, ns, "pd-nokey", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Failed" and "keySecretRef" in done["status"]["message"]
