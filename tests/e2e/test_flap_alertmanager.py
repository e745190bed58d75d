"""A flapping alert through a real Alertmanager (0.25, the fixtures' binary) to the operator's
webhook: fire / resolve ten times with the same labels and the same startsAt (as a client that
keeps its startsAt across a flap sends), and the policy gets one child per episode up to its
maxPerHour, the rest counted blocked by the budget.

Observed behaviour of Alertmanager 0.25 (asserted below, so a change shows up as a failure):
re-posting an alert with the same labels and startsAt after it resolved does not merge it into
the resolved one (their activity ranges do not overlap) and keeps startsAt as posted; with
send_resolved and group_interval 1s every fire and every resolve is delivered as its own
notification. So each episode reaches remedy as a separate firing of one (fingerprint,
startsAt), told apart only by the resolve that came before it. Alertmanager's own counter
alertmanager_notifications_total{integration="webhook"} is the witness that the resolves were
really delivered (remedy does not control it)."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest
from kubernetes import client

from remedy_devenv.operator import OperatorProcess
from remedy_devenv.services import AlertmanagerServer, free_port
from tests.fixtures.helpers import http_json, wait_for
from tests.fixtures.operator import GROUP, VERSION, WebhookOperator, make_namespace

pytestmark = pytest.mark.cluster

EPISODES = 10
MAX_PER_HOUR = 4


@dataclass
class Stack:
    ns: str
    op: OperatorProcess
    am: AlertmanagerServer
    api: client.ApiClient


@pytest.fixture(scope="module")
def stack(kube_admin: client.ApiClient, webhook_operator: Callable[..., WebhookOperator],
          alertmanager_server: AlertmanagerServer) -> Iterator[Stack]:
    ns = make_namespace(kube_admin, "amflap")
    port = free_port()
    alertmanager_server.configure(webhook_url=f"http://127.0.0.1:{port}/alertmanager")
    alertmanager_server.reload()
    hook = webhook_operator(ns, token_file=alertmanager_server.token_file, port=port)
    yield Stack(ns, hook.op, alertmanager_server, kube_admin)
    hook.stop()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def am_webhook_notifications(am: AlertmanagerServer) -> tuple[int, int]:
    """Alertmanager's own count of webhook notifications sent and failed."""
    with urllib.request.urlopen(f"{am.url}/metrics", timeout=5) as r:
        text = r.read().decode()

    def total(metric: str) -> int:
        return sum(int(float(m.group(1))) for m in re.finditer(
            rf'^{metric}{{[^}}]*integration="webhook"[^}}]*}} (\S+)$', text, re.MULTILINE))
    return total("alertmanager_notifications_total"), total("alertmanager_notifications_failed_total")


def policy(s: Stack, name: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(s.api).get_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", name)
    return cast(dict[str, Any], obj)


def kids(s: Stack, name: str) -> list[dict[str, Any]]:
    res = client.CustomObjectsApi(s.api).list_namespaced_custom_object(
        GROUP, VERSION, s.ns, "remediations", label_selector=f"remedy.dev/policy={name}")
    return list(cast(dict[str, Any], res)["items"])


def am_alert(s: Stack, alertname: str) -> dict[str, Any] | None:
    return next((a for a in s.am.alerts() if a["labels"].get("alertname") == alertname), None)


def test_flap_through_real_alertmanager_is_one_child_per_episode_up_to_max_per_hour(stack: Stack) -> None:
    s = stack
    name, alertname = "amflap", "AmFlap"
    client.CustomObjectsApi(s.api).create_namespaced_custom_object(GROUP, VERSION, s.ns, "remediationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RemediationPolicy", "metadata": {"name": name},
        "spec": {"trigger": {"alert": {"alertname": alertname}},
                 "template": {"action": {"notify": {"message": "flap on {{ labels.instance }}"}}},
                 "guards": {"cooldown": "0s", "maxPerHour": MAX_PER_HOUR, "maxConcurrent": 100, "pauseAfterFailures": 100}}})
    wait_for(lambda: (policy(s, name).get("status") or {}).get("observedGeneration"), 20, "policy evaluated")
    starts = _iso(datetime.now(timezone.utc) - timedelta(minutes=1))  # kept for every episode
    labels = {"alertname": alertname, "instance": "web-flap", "namespace": s.ns}
    sent0, failed0 = am_webhook_notifications(s.am)
    sent = sent0

    def post(ends: datetime) -> None:
        code, body = http_json("POST", f"{s.am.url}/api/v2/alerts", [
            {"labels": labels, "annotations": {}, "startsAt": starts, "endsAt": _iso(ends), "generatorURL": "http://flap"}])
        assert code == 200, body

    def delivered(after: int, what: str) -> int:
        # One more webhook notification: Alertmanager flushed this state change to remedy.
        return int(wait_for(lambda: (n := am_webhook_notifications(s.am)[0]) > after and n, 15, what))

    for episode in range(1, EPISODES + 1):
        post(datetime.now(timezone.utc) + timedelta(minutes=5))
        live = wait_for(lambda: (a := am_alert(s, alertname)) and a["status"]["state"] == "active" and a, 10, f"episode {episode} active")
        assert live["startsAt"].startswith(starts[:19]), (live["startsAt"], starts)  # Alertmanager kept startsAt
        sent = delivered(sent, f"episode {episode} firing delivered")
        post(datetime.now(timezone.utc))  # resolve: endsAt now
        wait_for(lambda: (a := am_alert(s, alertname)) is None or a["status"]["state"] != "active", 10, f"episode {episode} resolved in AM")
        sent = delivered(sent, f"episode {episode} resolve delivered")
        if episode <= MAX_PER_HOUR:  # remedy saw the resolve: the episode's child is stamped
            wait_for(lambda n=episode: len([k for k in kids(s, name) if k["metadata"]["annotations"].get("remedy.dev/alert-resolved-at")]) == n,
                     10, f"episode {episode} child stamped resolved")

    sent_total, failed = am_webhook_notifications(s.am)
    assert failed == failed0, "Alertmanager failed to deliver some notifications"
    # Every fire and every resolve was its own notification: episodes were not merged. A lower
    # bound: the session's Alertmanager may also carry other modules' alerts (Prometheus rules of
    # earlier tests); fired == EPISODES below pins the count for this policy.
    assert sent_total - sent0 >= 2 * EPISODES, sent_total - sent0
    children = kids(s, name)
    assert len(children) == MAX_PER_HOUR, [c["metadata"]["name"] for c in children]
    kept = {c["metadata"]["annotations"]["remedy.dev/starts-at"] for c in children}
    assert len(kept) == 1 and next(iter(kept)).startswith(starts[:19]), (kept, starts)  # one startsAt, several episodes
    assert all(c["metadata"]["annotations"].get("remedy.dev/alert-resolved-at") for c in children)
    counters = wait_for(lambda: (c := (policy(s, name).get("status") or {}).get("counters") or {}).get("fired") == EPISODES and c,
                        20, "counters flushed")
    assert counters.get("created") == MAX_PER_HOUR
    assert counters.get("blockedRate") == EPISODES - MAX_PER_HOUR
    assert counters.get("deduplicated", 0) == 0  # no episode reached remedy twice
