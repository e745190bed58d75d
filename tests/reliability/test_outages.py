"""Outages of every dependency while remediations and policies are active: Redis, PostgreSQL,
Prometheus and Alertmanager (stop()/start() of the session servers), and the Kubernetes API
server (only the kube-apiserver process of a dedicated control plane, so other tests' cluster
is untouched). While a dependency is down the Remediation that needs it waits visibly
(Executed=Unknown with a reason, attempts counting up, retried with backoff) and completes once
it is back; the operator never dies and no Remediation is lost.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from kubernetes import client

from remedy_devenv.audit import AuditCounter
from remedy_devenv.cluster import OPERATOR_USER, ControlPlane
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.services import AlertmanagerServer, PostgresServer, PrometheusServer, RedisServer
from remedy_devenv.testkit import free_port, free_ports
from tests.fixtures.cluster import api_client_for
from tests.fixtures.operator import create_rem, get_rem, install_remedy_api, make_namespace, wait_phase

from ._util import (
    FINAL,
    all_final,
    cond,
    create_policy,
    create_secret,
    get_policy,
    http,
    list_rems,
    make_deployment,
    phase,
    record,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(540)]


def _waiting_with_reason(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    obj = get_rem(api, ns, name)
    ex = cond(obj, "Executed")
    if phase(obj) in ("Pending", "Running") and ex.get("status") == "Unknown" and int(obj["status"].get("attempts") or 0) >= 1 \
            and ex.get("reason") not in (None, "", "InProgress", "NotStarted"):
        return obj
    return None


def test_data_plane_outages_wait_and_recover(kube_admin: client.ApiClient, operator_factory: Any, redis_server: RedisServer,
                                             postgres_server: PostgresServer, prometheus_server: PrometheusServer,
                                             alertmanager_server: AlertmanagerServer) -> None:
    ns = make_namespace(kube_admin, "ou")
    port = free_port()
    op = operator_factory(env={"REMEDY_MAX_ATTEMPTS": "12", "REMEDY_PROMETHEUS_URL": prometheus_server.url,
                               "REMEDY_WEBHOOK_PORT": str(port), "REMEDY_WEBHOOK_TOKEN_FILE": str(alertmanager_server.token_file)},
                          args=["-n", ns])
    figures: dict[str, Any] = {}
    try:
        create_secret(kube_admin, ns, "redis", {"url": f"redis://{redis_server.host}:{redis_server.port}/0",
                                                "password": redis_server.password or ""})
        create_secret(kube_admin, ns, "pg", {"dsn": postgres_server.dsn})
        op.start()
        op.wait_ready()
        create_policy(kube_admin, ns, "prom-poll", {
            "trigger": {"prometheus": {"query": "vector(1) > 2", "interval": "1s"}},
            "template": {"action": {"notify": {"message": "never"}}}})
        create_policy(kube_admin, ns, "am", {"trigger": {"alert": {"alertname": "RelOutage"}},
                                             "template": {"action": {"notify": {"message": "{{ labels.svc }} alert"}}},
                                             "guards": {"cooldown": "0s"}})

        # --- Redis ---------------------------------------------------------------------------
        r = redis.Redis.from_url(redis_server.url)
        redis_server.stop()
        t0 = time.monotonic()
        create_rem(kube_admin, ns, "redis-down", {"action": {"deleteRedisKeys": {"connection": {
            "urlSecretRef": {"name": "redis", "key": "url"}, "passwordSecretRef": {"name": "redis", "key": "password"},
            "timeout": "1s"}, "pattern": "out:lock:*"}}})
        waiting = wait_for(lambda: _waiting_with_reason(kube_admin, ns, "redis-down"), 60, "redis-down waiting with a reason")
        assert op.alive
        redis_server.start(timeout=60)
        for i in range(3):
            r.set(f"out:lock:{i}", "x")
        done = wait_phase(kube_admin, ns, "redis-down", FINAL, timeout=120)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        figures["redis"] = {"waitingReason": cond(waiting, "Executed")["reason"], "attempts": done["status"]["attempts"],
                            "deleted": (done["status"].get("result") or {}).get("deleted"),
                            "recoverySeconds": round(time.monotonic() - t0, 1)}
        assert r.keys("out:lock:*") == []

        # --- PostgreSQL ----------------------------------------------------------------------
        postgres_server.stop()
        t0 = time.monotonic()
        create_rem(kube_admin, ns, "pg-down", {"action": {"terminatePostgresQueries": {
            "connection": {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "connectTimeout": "1s"},
            "minDuration": "1h", "applicationName": "rel-outage-none"}}})
        waiting = wait_for(lambda: _waiting_with_reason(kube_admin, ns, "pg-down"), 60, "pg-down waiting with a reason")
        assert op.alive
        postgres_server.start(timeout=90)
        done = wait_phase(kube_admin, ns, "pg-down", FINAL, timeout=150)
        assert done["status"]["phase"] in ("Succeeded", "Skipped"), done["status"]
        figures["postgres"] = {"waitingReason": cond(waiting, "Executed")["reason"], "attempts": done["status"]["attempts"],
                               "final": [done["status"]["phase"], cond(done, "Completed")["reason"]],
                               "recoverySeconds": round(time.monotonic() - t0, 1)}
        with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        # --- Prometheus ----------------------------------------------------------------------
        prometheus_server.stop()
        t0 = time.monotonic()
        create_rem(kube_admin, ns, "prom-down", {"action": {"notify": {"message": "verify through an outage"}},
                                                 "verify": {"promql": "vector(1) > 2", "timeout": "120s", "interval": "1s"}})
        wait_phase(kube_admin, ns, "prom-down", "Verifying", timeout=60)
        degraded = wait_for(lambda: (c := cond(get_policy(kube_admin, ns, "prom-poll"), "Degraded")).get("status") == "True" and c,
                            60, "prometheus-triggered policy Degraded while Prometheus is down")
        time.sleep(3)
        assert phase(get_rem(kube_admin, ns, "prom-down")) == "Verifying"
        assert op.alive
        prometheus_server.start(timeout=60)
        done = wait_phase(kube_admin, ns, "prom-down", FINAL, timeout=120)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        figures["prometheus"] = {"policyDegradedReason": degraded.get("reason"), "final": cond(done, "Verified")["reason"],
                                 "polls": done["status"]["result"]["verification"]["promql"]["polls"],
                                 "recoverySeconds": round(time.monotonic() - t0, 1)}

        # --- Alertmanager --------------------------------------------------------------------
        alertmanager_server.stop()
        assert op.alive and http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200
        alertmanager_server.configure(webhook_url=f"http://127.0.0.1:{port}/alertmanager")
        alertmanager_server.start(timeout=60)
        t0 = time.monotonic()
        status, _ = http("POST", f"{alertmanager_server.url}/api/v2/alerts",
                         [{"labels": {"alertname": "RelOutage", "svc": "after-restart"}, "annotations": {}}])
        assert status == 200
        kids = wait_for(lambda: list_rems(kube_admin, ns, "remedy.dev/policy=am"), 90, "child from Alertmanager after its restart")
        kid = wait_phase(kube_admin, ns, kids[0]["metadata"]["name"], FINAL, timeout=60)
        assert kid["status"]["phase"] == "Succeeded"
        figures["alertmanager"] = {"childAfterRestart": kid["metadata"]["name"], "deliverySeconds": round(time.monotonic() - t0, 1)}

        items = list_rems(kube_admin, ns)
        figures["remediations"] = len(items)
        figures["lost"] = sum(1 for i in items if phase(i) not in FINAL)
        figures["operatorAlive"] = op.alive
        figures["operatorStarts"] = op.starts
        record("outages-data-plane", figures)
        assert figures["lost"] == 0 and op.alive and op.starts == 1
    finally:
        op.stop()
        for server in (redis_server, prometheus_server, alertmanager_server):
            if not server.running:
                server.start(timeout=60)
        if not postgres_server.running:
            postgres_server.start(timeout=90)
        alertmanager_server.configure(webhook_url="http://127.0.0.1:9/unconfigured")
        client.CoreV1Api(kube_admin).delete_namespace(ns)


def test_apiserver_outage_operator_survives_and_loses_nothing(tmp_path: Path) -> None:
    etcd, peer, apiport, kcm = free_ports(4)
    cp = ControlPlane(state_dir=tmp_path / "cluster", etcd_port=etcd, etcd_peer_port=peer, apiserver_port=apiport,
                      controller_manager_port=kcm, fake_kubelet=False)
    cp.start(timeout=240)
    op: OperatorProcess | None = None
    try:
        # CRDs Established (kubectl wait errors while a fresh CRD has no conditions yet: the helper
        # retries) and the admission policies that stamp requester identity.
        install_remedy_api(cp)
        api = api_client_for(cp.admin_kubeconfig)
        ns = make_namespace(api, "oa")
        for i in range(10):
            make_deployment(api, ns, f"d{i}")
        op = OperatorProcess(cp.user_kubeconfig(OPERATOR_USER), tmp_path / "operator.log",
                             env={"REMEDY_METRICS_PORT": "0", "REMEDY_WEBHOOK_PORT": "0", "REMEDY_HEARTBEAT_SECONDS": "1",
                                  "REMEDY_FAULT_INJECT": "after_action:6", "REMEDY_MAX_ATTEMPTS": "20"}, args=["-n", ns])
        op.start()
        op.wait_ready(60)
        for i in range(10):  # idempotent, held after acting so the outage hits them mid-attempt
            create_rem(api, ns, f"scale-{i}", {"action": {"scaleWorkload": {"target": {"name": f"d{i}"}, "replicas": 2}}},
                       annotations={"remedy.dev/fault-inject": "true"})
        for i in range(10):
            create_rem(api, ns, f"before-{i}", {"action": {"notify": {"message": f"before {i}"}}})
        wait_for(lambda: sum(1 for o in list_rems(api, ns) if phase(o) == "Running") >= 5, 60, "attempts in flight")
        in_flight = Counter(phase(o) or "new" for o in list_rems(api, ns))

        proc = cp._procs["kube-apiserver"]
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        # SIGKILL: kube-apiserver's graceful shutdown drains watches for longer than the outage we
        # want; a killed API server is also the harsher case (connections reset, no goodbye).
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        down_at = time.monotonic()
        time.sleep(15)  # the operator's heartbeats, patches and watches all fail meanwhile
        assert op.alive, "operator died while the API server was down"
        cp._spawn("kube-apiserver", [a.decode() for a in argv])
        wait_for(lambda: _readyz(cp), 120, "kube-apiserver back")
        outage = time.monotonic() - down_at
        def create_after(i: int) -> bool:
            try:
                create_rem(api, ns, f"after-{i}", {"action": {"notify": {"message": f"after {i}"}}})
                return True
            except client.exceptions.ApiException as exc:
                if exc.status == 503:  # readyz is ok before the CRD handlers serve again
                    return False
                raise

        for i in range(10):
            wait_for(lambda i=i: create_after(i), 60, "Remediations served again")  # type: ignore[misc]
        # Bounded wait, then count independently: "lost" = created - final at the deadline.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all_final(api, ns, 30):
            time.sleep(1)
        listed = list_rems(api, ns)
        items = [o for o in listed if phase(o) in FINAL]
        phases = Counter(phase(o) for o in listed)
        reasons = Counter(cond(o, "Completed").get("reason") for o in items)
        audit = AuditCounter(cp.audit_log, OPERATOR_USER, ns)
        audit.settle()
        scale_writes = [audit.count("deployments/scale", f"d{i}") + audit.count("deployments", f"d{i}") for i in range(10)]
        record("outages-apiserver", {"remediations": 30, "inFlightAtOutage": dict(in_flight), "outageSeconds": round(outage, 1),
                                     "phases": dict(phases), "reasons": dict(reasons), "operatorAlive": op.alive,
                                     "operatorStarts": op.starts, "scaleWritesAudit": sum(scale_writes),
                                     "duplicates_audit": sum(1 for n in scale_writes if n > 1),
                                     "auditMissedInFlight": sum(1 for n in scale_writes if n == 0),
                                     "lost": 30 - len(items)})
        assert op.alive and op.starts == 1
        assert len(items) == 30, phases
        # Never twice. Zero is possible: a write in flight when the API server is SIGKILLed can be
        # committed to etcd while its ResponseComplete audit event is never written (the server
        # died first); the Deployment's own spec then shows that the one write happened.
        assert all(n <= 1 for n in scale_writes), scale_writes
        apps = client.AppsV1Api(api)
        replicas = [apps.read_namespaced_deployment(f"d{i}", ns).spec.replicas for i in range(10)]
        assert replicas == [2] * 10, (replicas, scale_writes)
        assert all(phase(o) == "Succeeded" for o in items if o["metadata"]["name"].startswith(("scale-", "after-"))), \
            [(o["metadata"]["name"], o["status"]) for o in items if phase(o) != "Succeeded"][:3]
        api.close()  # type: ignore[no-untyped-call]
    finally:
        if op is not None:
            op.stop()
        cp.stop()


def _readyz(cp: ControlPlane) -> bool:
    try:
        return cp._get(f"{cp.server}/readyz") == b"ok"
    except Exception:  # noqa: BLE001 - not up yet
        return False
