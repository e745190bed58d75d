"""Security: RBAC confines a user to her namespace, a Remediation cannot reach another
namespace's Secrets or workloads, secret values never leak into status, events, logs or
/metrics, the webhook demands its token, and the chart runs non-root on a read-only root fs."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from remedy_devenv.cluster import ControlPlane
from remedy_devenv.demoapp import DemoProcess
from remedy_devenv.services import RedisServer, free_port
from tests.fixtures.chart import helm
from tests.fixtures.cluster import api_client_for
from tests.fixtures.operator import GROUP, REPO, VERSION, make_namespace, wait_phase

from ._util import alert, cond, create_secret, http, make_deployment, payload, record, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.reliability, pytest.mark.timeout(300)]

CRON_TOKEN = "sEcReT-cron-7d1e0c55a9"
B_SECRET = "sEcReT-of-namespace-b-41f0"
WEBHOOK_TOKEN = "sEcReT-webhook-93bb1d"


def _rem(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Remediation", "metadata": {"name": name}, "spec": spec}


def test_namespace_isolation_and_no_secret_leaks(control_plane: ControlPlane, kube_admin: client.ApiClient,
                                                 operator_factory: Any, redis_server: RedisServer, tmp_path: Path) -> None:
    ns_a, ns_b = make_namespace(kube_admin, "sa"), make_namespace(kube_admin, "sb")
    assert redis_server.password
    redis_password = redis_server.password
    control_plane.kubectl("apply", "-n", ns_a, "-f", "-", input="""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: remediation-author}
rules:
- apiGroups: [remedy.dev]
  resources: [remediations]
  verbs: [create, get, list, watch]
# A Remediation runs with its requester's rights (docs/security.md): alice may run every
# action, read exactly the Secrets her Remediations use, and patch workloads, all in A only.
- apiGroups: [remedy.dev]
  resources: [remediationactions]
  verbs: [use]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [redis, cron, db]
  verbs: [get]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-remediation-author}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: remediation-author}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
""")
    demo = DemoProcess("reconcile", args=["--token", CRON_TOKEN])
    demo.start()
    token_file = tmp_path / "webhook-token"
    token_file.write_text(WEBHOOK_TOKEN + "\n")
    metrics_port, webhook_port = free_port(), free_port()
    op = operator_factory(env={"REMEDY_METRICS_PORT": str(metrics_port), "REMEDY_WEBHOOK_PORT": str(webhook_port),
                               "REMEDY_WEBHOOK_TOKEN_FILE": str(token_file)}, args=["-n", ns_a, "-n", ns_b])
    alice = api_client_for(control_plane.user_kubeconfig("alice"))
    alice_co = client.CustomObjectsApi(alice)
    try:
        # Secrets the Remediations use, each with a distinctive value to grep for.
        create_secret(kube_admin, ns_a, "redis", {"url": f"redis://{redis_server.host}:{redis_server.port}/0",
                                                  "password": redis_password})
        create_secret(kube_admin, ns_a, "cron", {"token": CRON_TOKEN})
        create_secret(kube_admin, ns_b, "db", {"token": B_SECRET, "password": B_SECRET})
        make_deployment(kube_admin, ns_b, "web-b")
        op.start()
        op.wait_ready()
        r = redis.Redis.from_url(redis_server.url)
        r.set("sec:lock:1", "x")
        r.set("sec:lock:2", "x")

        # RBAC: alice may create in A, not in B; may not read B's Secrets.
        with pytest.raises(ApiException) as denied:
            alice_co.create_namespaced_custom_object(GROUP, VERSION, ns_b, "remediations",
                                                     _rem("nope", {"action": {"notify": {"message": "hi"}}}))
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied_secret:
            client.CoreV1Api(alice).read_namespaced_secret("db", ns_b)
        assert denied_secret.value.status == 403

        # The API has no namespace field: path-like names are rejected by the schema.
        rejection_codes: dict[str, int] = {}
        for name, spec in {
            "dotdot-secret": {"action": {"httpRequest": {"url": f"{demo.url}/api/cron/reconcile",
                                                         "bearerTokenSecretRef": {"name": f"../{ns_b}/db", "key": "token"}}}},
            "slash-target": {"action": {"restartWorkload": {"target": {"name": f"{ns_b}/web-b"}}}},
            "ns-field": {"action": {"restartWorkload": {"target": {"name": "web-b", "namespace": ns_b}}}},
        }.items():
            with pytest.raises(ApiException) as rejected:
                alice_co.create_namespaced_custom_object(GROUP, VERSION, ns_a, "remediations", _rem(name, spec),
                                                         field_validation="Strict")
            assert rejected.value.status in (400, 422), (name, rejected.value.body)  # 400: unknown field (strict)
            rejection_codes[name] = int(rejected.value.status)
        # Without strict field validation an unknown `namespace` field is pruned by the API server
        # (structural schema), so the target still resolves in A only (checked below).
        alice_co.create_namespaced_custom_object(GROUP, VERSION, ns_a, "remediations", _rem(
            "ns-field-pruned", {"action": {"restartWorkload": {"target": {"name": "web-b", "namespace": ns_b}}}}))
        pruned = alice_co.get_namespaced_custom_object(GROUP, VERSION, ns_a, "remediations", "ns-field-pruned")
        assert "namespace" not in pruned["spec"]["action"]["restartWorkload"]["target"]

        # Accepted by the schema, but resolved in A only: B's Secret and Deployment are not found.
        created = {
            "b-secret": {"action": {"httpRequest": {"url": f"{demo.url}/api/cron/reconcile",
                                                    "bearerTokenSecretRef": {"name": "db", "key": "token"}}}},
            "b-target": {"action": {"restartWorkload": {"target": {"name": "web-b"}}}},
            "ns-field-pruned": None,
            "redis-ok": {"action": {"deleteRedisKeys": {"connection": {
                "urlSecretRef": {"name": "redis", "key": "url"}, "passwordSecretRef": {"name": "redis", "key": "password"}},
                "pattern": "sec:lock:*"}}},
            "cron-ok": {"action": {"httpRequest": {"url": f"{demo.url}/api/cron/reconcile",
                                                   "bearerTokenSecretRef": {"name": "cron", "key": "token"}}}},
        }
        for name, spec in created.items():
            if spec is None:
                continue
            alice_co.create_namespaced_custom_object(GROUP, VERSION, ns_a, "remediations", _rem(name, spec))
        out = {n: wait_phase(alice, ns_a, n, {"Succeeded", "Failed", "Skipped"}, timeout=60) for n in created}
        assert out["b-secret"]["status"]["phase"] == "Failed" and cond(out["b-secret"], "Completed")["reason"] == "SecretNotFound"
        for name in ("b-target", "ns-field-pruned"):
            assert out[name]["status"]["phase"] == "Failed" and cond(out[name], "Completed")["reason"] == "TargetNotFound"
        assert out["redis-ok"]["status"]["phase"] == "Succeeded", out["redis-ok"]["status"]
        assert out["cron-ok"]["status"]["phase"] == "Succeeded", out["cron-ok"]["status"]
        assert client.AppsV1Api(kube_admin).read_namespaced_deployment("web-b", ns_b).metadata.generation == 1

        # Webhook: token required.
        url = f"http://127.0.0.1:{webhook_port}/alertmanager"
        wait_for(lambda: http("GET", f"http://127.0.0.1:{webhook_port}/healthz")[0] == 200, 30, "webhook up")
        body = payload([alert("sec", alertname="Sec")])
        codes = {"missing": http("POST", url, body)[0], "wrong": http("POST", url, body, token="not-the-token")[0],
                 "wrongScheme": http("POST", url, body, headers={"Authorization": f"Basic {WEBHOOK_TOKEN}"})[0],
                 "right": http("POST", url, body, token=WEBHOOK_TOKEN)[0]}
        assert codes["missing"] == codes["wrong"] == codes["wrongScheme"] == 401 and codes["right"] == 200, codes

        # Grep everything we can collect for every secret value.
        co = client.CustomObjectsApi(kube_admin)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        outputs = {
            "remediations": json.dumps([co.list_namespaced_custom_object(GROUP, VERSION, ns, "remediations")
                                        for ns in (ns_a, ns_b)]),
            "events": json.dumps([kube_admin.sanitize_for_serialization(client.CoreV1Api(kube_admin).list_namespaced_event(ns))
                                  for ns in (ns_a, ns_b)]),
            "operatorLog": op.log_path.read_text(errors="replace"),
            "metrics": metrics,
        }
        secrets_ = {"redisPassword": redis_password, "cronToken": CRON_TOKEN, "bSecret": B_SECRET, "webhookToken": WEBHOOK_TOKEN}
        leaks = [(where, which) for where, text in outputs.items() for which, value in secrets_.items() if value in text]
        record("security", {"rbacCreateInB": denied.value.status, "schemaRejections": len(rejection_codes),
                            "schemaRejectionCodes": rejection_codes,
                            "outcomes": {n: [o["status"]["phase"], cond(o, "Completed").get("reason")] for n, o in out.items()},
                            "webhookCodes": codes, "secretsSeeded": len(secrets_),
                            "outputsGrepped": {k: len(v) for k, v in outputs.items()}, "leaks": len(leaks)})
        assert not leaks, leaks
    finally:
        op.stop()
        demo.stop()
        alice.close()  # type: ignore[no-untyped-call]
        for ns in (ns_a, ns_b):
            client.CoreV1Api(kube_admin).delete_namespace(ns)


def test_chart_runs_non_root_with_read_only_root_fs(tmp_path: Path) -> None:
    env = {"HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "g"), "HELM_DATA_HOME": str(tmp_path / "d"),
           "PATH": "/usr/bin:/bin"}
    res = subprocess.run([str(helm()), "template", "rel", str(REPO / "charts" / "remedy"), "-n", "remedy-system"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    deployments = [d for d in yaml.safe_load_all(res.stdout) if d and d.get("kind") == "Deployment"]
    assert deployments
    checked: dict[str, int] = {"containers": 0, "runAsNonRoot": 0, "readOnlyRootFilesystem": 0}
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = {**(pod.get("securityContext") or {}), **(c.get("securityContext") or {})}
            checked["containers"] += 1
            checked["runAsNonRoot"] += sc.get("runAsNonRoot") is True
            checked["readOnlyRootFilesystem"] += (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True
            assert sc.get("runAsNonRoot") is True, (c["name"], sc)
            assert (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True, (c["name"], sc)
            assert (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is False
            assert "ALL" in ((c.get("securityContext") or {}).get("capabilities") or {}).get("drop", [])
    record("chart-security", {"deployments": len(deployments), **checked})
