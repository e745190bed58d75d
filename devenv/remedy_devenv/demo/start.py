"""Bringing the demo's stack up, one step (and one progress line) per component: control
plane with a real node (remedy_devenv.node), Redis, PostgreSQL, the MongoDB wire double, Prometheus with the scenarios' alert
rules, Alertmanager routing to remedy's webhook, the demo services, their Deployments, the
operator. Every process lands in the Stack as soon as it exists, so an interrupt at any
point stops what was started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from remedy.base.constants import GROUP, POLICIES, REMEDIATIONS

from .. import demo_image
from ..cluster import REPO, ControlPlane
from ..node import NODE_NAME, Node, image_name
from ..scenarios import prometheus_rules
from ..scenarios.gitops import OPERATOR_ENV as GITOPS_OPERATOR_ENV
from .pods import PodService
from .stack import ADMIN_TOKEN, CRON_SECRET, INVENTORY_LIMIT, NS, WORKLOAD_LIMIT, WORKLOAD_MIB, Stack
from .support import DemoError, http, say, wait_until


def ensure_binaries() -> Path:
    """scripts/build-control-plane, with a progress line every 30s while it compiles."""
    env = os.environ.get("REMEDY_K8S_BIN")
    if env:
        return Path(env)
    script = REPO / "scripts" / "build-control-plane"
    proc = subprocess.Popen([str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    last: list[str] = ["starting"]

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                last[0] = line
                if line.startswith("[build-control-plane]") and "cached" not in line:
                    say(f"  {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    began, announced, next_tick = time.monotonic(), False, time.monotonic() + 30
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            if not announced and time.monotonic() - began > 1.5:
                announced = True
                say("building the Kubernetes control plane from Go modules (first run only, ~10 min)...")
            if time.monotonic() >= next_tick:
                next_tick += 30
                mins, secs = divmod(int(time.monotonic() - began), 60)
                say(f"  still building ({mins}m{secs:02d}s elapsed): {last[0][:120]}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    reader.join(5)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise DemoError(f"{script} failed ({proc.returncode}): {last[0]}")
    if announced:
        say(f"control plane binaries built in {time.monotonic() - began:.0f}s")
    return Path(out.strip().splitlines()[-1])


def _crds_established(stack: Stack) -> None:
    # `kubectl wait` errors (instead of waiting) while a fresh CRD has no conditions yet.
    crds = [f"crd/{REMEDIATIONS}.{GROUP}", f"crd/{POLICIES}.{GROUP}"]
    assert stack.cp is not None
    cp = stack.cp

    def established() -> bool:
        return cp.kubectl("wait", "--for=condition=Established", "--timeout=10s", *crds, check=False).returncode == 0

    wait_until(established, 60, "the CRDs to be Established", interval=0.5)


def start_stack(stack: Stack) -> None:
    from kubernetes import client, config

    from ..admission import install as install_admission
    from ..demoapp import DemoProcess
    from ..operator import OperatorProcess
    from ..services import AlertmanagerServer, PostgresServer, PrometheusServer, RedisServer

    p, s = stack.ports, stack.state

    def step(label: str, fn: Callable[[], str]) -> None:
        began = time.monotonic()
        detail = fn()
        stack.record()
        say(f"{label:<22} up in {time.monotonic() - began:4.1f}s  {detail}")

    stack.bin_dir = ensure_binaries()

    def control_plane() -> str:
        stack.cp = ControlPlane(state_dir=s / "cluster", etcd_port=p["etcd"], etcd_peer_port=p["etcd"] + 10,
                                apiserver_port=p["apiserver"], controller_manager_port=p["controller-manager"],
                                bin_dir=stack.bin_dir, fake_kubelet=False, real_node=True)
        stack.cp.start(timeout=180)
        stack.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        _crds_established(stack)
        # Requester identity stamped by the API server; without it the operator runs nothing.
        install_admission(stack.cp)
        stack.kubectl("create", "namespace", NS)
        stack.api = config.new_client_from_config(config_file=str(stack.cp.admin_kubeconfig))  # type: ignore[no-untyped-call]
        return (f"{stack.cp.server} (etcd, kube-apiserver, kube-controller-manager; real node {NODE_NAME}: "
                "kube-scheduler, containerd + runc, kubelet; CRDs and admission policies applied)")

    step("control plane", control_plane)

    def redis() -> str:
        stack.redis_password = os.urandom(12).hex()
        stack.redis = RedisServer(s / "redis", p["redis"], password=stack.redis_password)
        stack.redis.start()
        return f"redis://127.0.0.1:{p['redis']} (requirepass)"

    step("redis", redis)

    def postgres() -> str:
        stack.pg = PostgresServer(s / "postgres", p["postgres"])
        stack.pg.start(timeout=60)
        import psycopg

        with psycopg.connect(stack.pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS reservations (id int PRIMARY KEY, status text)")
            conn.execute("INSERT INTO reservations SELECT g, 'pending' FROM generate_series(1, 100) g "
                         "ON CONFLICT DO NOTHING")
        return f"127.0.0.1:{p['postgres']} database app"

    step("postgres", postgres)

    def mongo() -> str:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO / "operator"), os.environ.get("PYTHONPATH")])))
        (s / "logs").mkdir(parents=True, exist_ok=True)
        with open(s / "logs" / "mongowire.log", "ab") as log:
            stack.mongo = subprocess.Popen(
                [sys.executable, "-m", "remedy_devenv.mongowire", "--port", str(p["mongo"])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=s, start_new_session=True)

        def ping() -> bool:
            if stack.mongo is not None and stack.mongo.poll() is not None:
                raise DemoError(f"mongo wire server exited with {stack.mongo.returncode}")
            c = stack.mongo_admin()
            try:
                return bool(c.admin.command("ping").get("ok"))
            finally:
                c.close()

        wait_until(ping, 20, "mongo wire server")
        return f"mongodb://127.0.0.1:{p['mongo']} (wire-protocol test double: currentOp/killOp)"

    step("mongo wire server", mongo)

    token_file = s / "webhook-token"
    token_file.write_text(os.urandom(18).hex() + "\n")
    token_file.chmod(0o600)
    webhook = f"http://127.0.0.1:{p['webhook']}/alertmanager"
    scrape = [(role, [f"127.0.0.1:{p[role]}"]) for role in ("gateway", "orders", "payments", "inventory", "reconcile")]
    scrape.append(("remedy", [f"127.0.0.1:{p['metrics']}"]))

    def alertmanager() -> str:
        stack.am = AlertmanagerServer(s / "alertmanager", p["alertmanager"], webhook_url=webhook,
                                      token_file=token_file, group_wait="1s", group_interval="2s",
                                      repeat_interval="1m")
        stack.am.start()
        return f"{stack.am.url} -> {webhook} (bearer token file; group_wait 1s)"

    def prometheus() -> str:
        rules = prometheus_rules()
        text = "# The runbooks' alerts (remedy_devenv/scenarios). Thresholds and `for` are shortened for the demo.\n"
        stack.prom = PrometheusServer(s / "prometheus", p["prometheus"], scrape_configs=scrape,
                                      rules=[text + yaml.safe_dump(rules, sort_keys=False)],
                                      alertmanager_url=f"http://127.0.0.1:{p['alertmanager']}",
                                      scrape_interval="1s", evaluation_interval="1s")
        stack.prom.start()
        count = len(rules["groups"][0]["rules"])
        return f"{stack.prom.url} ({count} runbook alert rules; scrape + evaluation every 1s)"

    step("prometheus", prometheus)
    step("alertmanager", alertmanager)

    def services() -> str:
        logs = s / "logs"
        redis_url = f"redis://:{stack.redis_password}@127.0.0.1:{p['redis']}/0"
        upstreams = ["--upstream", f"payments={stack.url('payments')}", "--upstream", f"inventory={stack.url('inventory')}"]
        specs: dict[str, list[str]] = {
            "payments": ["--redis-url", redis_url],
            "gateway": ["--token", ADMIN_TOKEN, *upstreams],
            "reconcile": ["--token", CRON_SECRET],
        }
        for role, args in specs.items():
            proc = DemoProcess(role, p[role], args=args, log_path=str(logs / f"demo-{role}.log"))
            stack.apps[role] = proc
            proc.start()
        return ", ".join(f"{r} :{p[r]}" for r in specs) + " (local processes; orders and inventory run as pods, next step)"

    step("demo services", services)

    def deployments() -> str:
        assert stack.cp is not None
        apps: Any = client.AppsV1Api(stack.api)
        core: Any = client.CoreV1Api(stack.api)
        node = Node(stack.cp)
        # orders and inventory: the demo app itself in pods (remedy_devenv.demo_image: Debian's
        # python3.11 + the app, no registry), one replica each, Recreate, host network bound
        # to 127.0.0.1 (their ports, Prometheus' scrape and every URL stay as they were).
        # orders persists its outbox backlog on a hostPath, so the pod that replaces it
        # restores and drains it. inventory runs without --redis-url (its chaos config in memory;
        # no scenario sets inventory chaos): redis.asyncio on the image's Debian python 3.11.2
        # needs the async_timeout package, which the image (built from .venv, 3.11.7) lacks.
        image, archive = demo_image.build()
        node.import_image(archive)
        state_dir = s / "orders-state"
        state_dir.mkdir(exist_ok=True)

        def deployment(name: str, replicas: int, strategy: str, pod: dict[str, Any]) -> None:
            apps.create_namespaced_deployment(NS, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": {"type": strategy},
                         "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}})

        def demo_app(role: str, args: list[str], memory: str, **extra: Any) -> dict[str, Any]:
            return {"name": role, "image": image, "imagePullPolicy": "Never",
                    "args": ["--role", role, "--host", "127.0.0.1", "--port", str(p[role]), *args],
                    "resources": {"limits": {"memory": memory}, "requests": {"memory": "64Mi"}}, **extra}

        deployment("orders", 1, "Recreate", {
            "hostNetwork": True, "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "state", "hostPath": {"path": str(state_dir), "type": "Directory"}}],
            "containers": [demo_app("orders", ["--state-file", "/state/orders-outbox.json"], "256Mi",
                                    volumeMounts=[{"name": "state", "mountPath": "/state"}])]})
        deployment("inventory", 1, "Recreate", {
            "hostNetwork": True, "terminationGracePeriodSeconds": 2,
            "containers": [demo_app("inventory", [], INVENTORY_LIMIT)]})
        # payments: scripts/node/memhog.c holding WORKLOAD_MIB MiB (its HTTP side stays the local
        # process above); one replica, Recreate, so a bad release replaces its only pod (rollback).
        deployment("payments", 1, "Recreate", {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "payments", "image": image_name("memhog"), "imagePullPolicy": "Never", "args": [str(WORKLOAD_MIB)],
            "resources": {"limits": {"memory": WORKLOAD_LIMIT}, "requests": {"memory": "16Mi"}}}]})

        def all_running() -> bool:
            pods = core.list_namespaced_pod(NS).items
            return len(pods) == 3 and all(p.status.phase == "Running" and bool(p.status.container_statuses)
                                          and all(c.ready for c in p.status.container_statuses) for p in pods)

        wait_until(all_running, 90, "the orders, inventory and payments pods to run on the node")
        for role in ("orders", "inventory"):
            stack.apps[role] = PodService(role, NS, stack.api, str(node.containerd_socket))
            try:
                wait_until(lambda r=role: http("GET", f"{stack.url(r)}/admin/stats", timeout=2)[0] == 200, 30,  # type: ignore[misc]
                           f"the {role} pod to serve")
            except DemoError as exc:
                logs = stack.cp.kubectl("logs", "-n", NS, f"deploy/{role}", "--tail=8", check=False)
                raise DemoError(f"{exc}; its log: {(logs.stdout + logs.stderr).strip()[-900:]}") from exc
        return (f"real pods on {NODE_NAME} in namespace shop: orders, inventory (the demo app, image "
                f"{image.split(':')[0]}, host network :{p['orders']}, :{p['inventory']}); payments (Recreate) "
                f"runs memhog {WORKLOAD_MIB} MiB under {WORKLOAD_LIMIT}")

    step("workloads", deployments)

    def operator() -> str:
        assert stack.cp is not None
        env = {"REMEDY_WEBHOOK_PORT": str(p["webhook"]), "REMEDY_WEBHOOK_TOKEN_FILE": str(token_file),
               "REMEDY_PROMETHEUS_URL": stack.prom.url, "REMEDY_METRICS_PORT": str(p["metrics"]),
               "REMEDY_HEARTBEAT_SECONDS": "1", **GITOPS_OPERATOR_ENV}
        stack.op = OperatorProcess(stack.cp.admin_kubeconfig, s / "logs" / "operator.log", env=env,
                                   args=["-n", NS, "--liveness", f"http://127.0.0.1:{p['liveness']}/healthz"])
        stack.op.start()
        stack.record()
        stack.op.wait_ready(60)
        wait_until(lambda: http("GET", f"http://127.0.0.1:{p['webhook']}/healthz", timeout=2)[0] == 200, 30,
                   "operator webhook")
        return f"python -m remedy.cli run -n {NS} (admin kubeconfig); webhook :{p['webhook']}, metrics :{p['metrics']}"

    step("operator", operator)
