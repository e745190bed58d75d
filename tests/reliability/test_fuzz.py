"""Property-based fuzzing (hypothesis) through the real API server and the real webhook.

1. Remediation specs: valid specs built from the remedy.api models' shapes, mutated with junk
   (missing and extra fields, wrong types, negative and huge numbers, huge strings, unicode,
   two actions). Every case is either rejected at create with a readable message (HTTP 422/400
   with a non-empty message) or, if accepted, ends in a final phase with Completed=True
   (or waits in AwaitingApproval with Approved=False when the spec asks for a person).
2. Alertmanager webhook payloads: malformed JSON, wrong types, huge labels, missing fields ->
   always 2xx/4xx within the client timeout, never 5xx or a hang.

Afterwards the operator is alive and a canary Remediation still completes.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.operator import GROUP, VERSION, WebhookOperator, create_rem, make_namespace, wait_phase

from ._util import FINAL, alert, cond, create_policy, http, list_rems, payload, record, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(540)]

SPEC_CASES = 1000
WEBHOOK_CASES = 1200
DEAD = "http://127.0.0.1:9"  # nothing listens: fuzzed HTTP actions never reach a real service

BASES: list[dict[str, Any]] = [
    {"action": {"notify": {"message": "fuzz", "severity": "info"}}},
    {"action": {"scaleWorkload": {"target": {"kind": "Deployment", "name": "web"}, "replicas": 2, "maxReplicas": 5}}},
    {"action": {"restartWorkload": {"target": {"name": "web"}}}, "reason": "INC-1"},
    {"action": {"rollbackWorkload": {"target": {"name": "web"}, "toRevision": 1}}},
    {"action": {"raiseMemoryOnOOM": {"target": {"name": "web"}, "factor": 1.5, "maxLimit": "1Gi"}}},
    {"action": {"deleteRedisKeys": {"connection": {"urlSecretRef": {"name": "redis", "key": "url"}},
                                    "pattern": "lock:x:*", "maxKeys": 10}}},
    {"action": {"httpRequest": {"url": f"{DEAD}/hook", "method": "POST", "headers": {"X-A": "b"},
                                "expectStatus": [200], "timeout": "1s"}}, "timeout": "30s"},
    {"dryRun": True, "action": {"scaleWorkload": {"target": {"name": "web"}, "replicas": 1}}},
]

junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF, blacklist_categories=("Cs",)), max_size=20),
    st.integers(min_value=1000, max_value=80_000).map(lambda n: "x" * n),  # huge strings
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    st.sampled_from(["", "-1", "5m", "1ms", "../b/secret", "b/web", "Web", "a" * 254, "🙂", "web\n", "0s"]),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    return out


def _get_parent(obj: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    for k in path[:-1]:
        obj = obj[k]
    return obj


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(spec)
        kind = draw(st.sampled_from(["drop", "junk", "extra", "second_action", "negative"]))
        if kind == "second_action":
            other = draw(st.sampled_from(BASES))["action"]
            spec.setdefault("action", {}) if isinstance(spec.get("action"), dict) else None
            if isinstance(spec.get("action"), dict):
                spec["action"].update(json.loads(json.dumps(other)))
            continue
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent = _get_parent(spec, path)
        if not isinstance(parent, dict):
            continue
        if kind == "drop":
            parent.pop(path[-1], None)
        elif kind == "junk":
            parent[path[-1]] = draw(junk)
        elif kind == "negative":
            parent[path[-1]] = draw(st.integers(min_value=-10**12, max_value=-1))
        else:
            parent[draw(st.text(min_size=1, max_size=12))] = draw(junk)
    return spec


def test_fuzzed_specs_are_rejected_readably_or_complete(kube_admin: client.ApiClient, operator_factory: Any) -> None:
    ns = make_namespace(kube_admin, "fz")
    op = operator_factory(env={"REMEDY_MAX_ATTEMPTS": "2"}, args=["-n", ns]).start()
    op.wait_ready()
    api = client.CustomObjectsApi(kube_admin)
    accepted: list[str] = []
    outcomes: Counter[str] = Counter()
    unreadable: list[str] = []
    counter = iter(range(10**6))

    @settings(max_examples=SPEC_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(spec=specs())
    def case(spec: dict[str, Any]) -> None:
        name = f"fz-{next(counter):05d}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation", "metadata": {"name": name}, "spec": spec}
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, ns, "remediations", body)
        except ApiException as exc:
            outcomes[f"rejected:{exc.status}"] += 1
            assert exc.status in (400, 422), (exc.status, exc.body[:500] if exc.body else None)
            try:
                message = json.loads(exc.body).get("message", "")
            except ValueError:
                message = ""
            if not message or ("spec" not in message and "body" not in message):
                unreadable.append(f"{exc.status}: {exc.body[:300]!r}")
            return
        outcomes["accepted"] += 1
        accepted.append(name)

    started = time.monotonic()
    try:
        case()
        fuzz_seconds = time.monotonic() - started

        def settled() -> list[dict[str, Any]] | None:
            items = list_rems(kube_admin, ns)
            done = [i for i in items if (i.get("status") or {}).get("phase") in FINAL | {"AwaitingApproval"}]
            return items if len(done) == len(accepted) else None

        items = wait_for(settled, 300, f"{len(accepted)} accepted fuzz cases settled", interval=2)
        phases = Counter((i.get("status") or {}).get("phase") for i in items)
        for obj in items:
            st_ = obj["status"]
            if st_["phase"] == "AwaitingApproval":
                assert cond(obj, "Approved")["status"] == "False"
            else:
                c = cond(obj, "Completed")
                assert c.get("status") == "True" and c.get("reason"), st_
                if st_["phase"] == "Failed":
                    assert c.get("message"), st_
        assert op.alive, "operator crashed during the fuzz"
        create_rem(kube_admin, ns, "canary", {"action": {"notify": {"message": "still alive"}}})
        assert wait_phase(kube_admin, ns, "canary", FINAL, timeout=60)["status"]["phase"] == "Succeeded"
        record("fuzz-specs", {"cases": sum(outcomes.values()), "outcomes": dict(outcomes), "acceptedPhases": dict(phases),
                              "unreadableRejections": len(unreadable), "fuzzSeconds": round(fuzz_seconds, 1),
                              "settleSeconds": round(time.monotonic() - started - fuzz_seconds, 1),
                              "operatorAlive": op.alive, "canary": "Succeeded"})
        assert sum(outcomes.values()) >= SPEC_CASES
        assert outcomes["accepted"] > 0 and sum(v for k, v in outcomes.items() if k.startswith("rejected")) > 0
        assert not unreadable, unreadable[:5]
    finally:
        op.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)


# --- webhook ----------------------------------------------------------------------------------

labelsets = st.dictionaries(st.text(max_size=20), st.one_of(st.text(max_size=30), junk), max_size=5)
alert_like = st.fixed_dictionaries({}, optional={
    "status": st.one_of(st.sampled_from(["firing", "resolved", "FIRING", ""]), junk),
    "labels": st.one_of(labelsets, st.just({"alertname": "Fz", "svc": "x"}),
                        st.integers(1, 5000).map(lambda n: {"alertname": "Fz", "big": "y" * n * 50}), junk),
    "annotations": st.one_of(labelsets, junk),
    "startsAt": st.one_of(st.sampled_from(["2026-11-23T10:00:00Z", "yesterday", ""]), junk),
    "endsAt": junk,
    "fingerprint": st.one_of(st.text(min_size=1, max_size=20), st.text(min_size=129, max_size=200), junk),
})
payload_like = st.fixed_dictionaries({}, optional={
    "version": st.one_of(st.just("4"), junk), "status": st.one_of(st.sampled_from(["firing", "resolved"]), junk),
    "alerts": st.one_of(st.lists(alert_like, max_size=6), junk), "groupKey": junk, "receiver": junk,
})
bodies = st.one_of(
    payload_like.map(lambda p: json.dumps(p).encode()),
    st.binary(max_size=300),  # malformed JSON / garbage
    st.text(max_size=200).map(str.encode),
    junk.map(lambda j: json.dumps(j).encode()),
    st.builds(lambda fp, m: json.dumps(payload([alert(fp, starts=f"2026-11-23T10:{m:02d}:00Z", alertname="Fz", svc="x")])).encode(),
              st.text(min_size=1, max_size=30), st.integers(0, 59)),
)


def test_fuzzed_webhook_payloads_never_5xx_or_hang(kube_admin: client.ApiClient,
                                                   webhook_operator: Callable[..., WebhookOperator]) -> None:
    ns = make_namespace(kube_admin, "fw")
    # A 1 MiB limit (the default is 16 MiB, sized for 10,000-alert groups) keeps the oversized
    # cases below small.
    hook = webhook_operator(ns, token="fuzz-webhook-token", env={"REMEDY_WEBHOOK_MAX_BODY": str(1 << 20)})
    op, port, url = hook.op, hook.port, hook.url
    create_policy(kube_admin, ns, "fz", {"trigger": {"alert": {"alertname": "Fz"}},
                                         "template": {"action": {"notify": {"message": "fz {{ labels.svc }}"}}},
                                         "guards": {"cooldown": "0s", "maxPerHour": 20, "maxConcurrent": 5}})
    wait_for(lambda: (http("GET", f"http://127.0.0.1:{port}/healthz")[1] or {}).get("policies") == 1, 30, "policy indexed")
    codes: Counter[int] = Counter()
    slowest = 0.0
    rng = random.Random(0)
    try:
        @settings(max_examples=WEBHOOK_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(body=bodies)
        def case(body: bytes) -> None:
            nonlocal slowest
            token = "fuzz-webhook-token" if rng.random() > 0.05 else rng.choice(["", "wrong"])
            t0 = time.monotonic()
            status, _ = http("POST", url, raw=body, token=token or None, timeout=15)
            slowest = max(slowest, time.monotonic() - t0)
            codes[status] += 1
            assert status < 500, (status, body[:300])

        case()
        # Oversized bodies (limit 1 MiB) -> 413, not a crash.
        for size in (1 << 20, (1 << 20) + 1, 3 << 20):
            status, _ = http("POST", url, raw=b"{" + b" " * size + b"}", token="fuzz-webhook-token", timeout=30)
            codes[status] += 1
            assert status in (400, 413), status
        assert op.alive
        assert http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200
        create_rem(kube_admin, ns, "canary", {"action": {"notify": {"message": "still alive"}}})
        assert wait_phase(kube_admin, ns, "canary", FINAL, timeout=60)["status"]["phase"] == "Succeeded"
        created = len(list_rems(kube_admin, ns, "remedy.dev/policy=fz"))
        record("fuzz-webhook", {"cases": sum(codes.values()), "codes": {str(k): v for k, v in sorted(codes.items())},
                                "slowestSeconds": round(slowest, 2), "childrenCreated": created,
                                "fiveHundreds": sum(v for k, v in codes.items() if k >= 500), "operatorAlive": op.alive})
        assert sum(codes.values()) >= 1000
        assert created <= 20, "maxPerHour exceeded by fuzzed alerts"
    finally:
        op.stop()
        client.CoreV1Api(kube_admin).delete_namespace(ns)
