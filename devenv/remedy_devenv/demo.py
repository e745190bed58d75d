"""`./scripts/demo`: a live incident demo on a real local control plane.

Starts (one progress line each) the Kubernetes control plane, Redis, PostgreSQL, the MongoDB
wire server, Prometheus (the runbooks' alert rules), Alertmanager (routing to remedy's
webhook), the demo services and the operator, then injects the runbooks' incidents one after
another and prints, for each, a timeline: incident injected -> metric/alert -> Remediation
(created by a RemediationPolicy, or applied with kubectl) -> plan -> action -> verification ->
resolved. Ends with a summary table; exits 1 if a scenario did not end as expected.

The Remediation / RemediationPolicy / Secret manifests are docs/cookbook/<scenario>.yaml, with
${PLACEHOLDERS} filled in here and applied with the built kubectl, so the cookbook is tested by
this demo. Thresholds are shortened (1s scrape/evaluation, alerts `for` 2-3s) so a full run
takes a couple of minutes.

Everything runs on 127.0.0.1 in a temporary state dir; Ctrl-C (SIGINT/SIGTERM) at any time
stops every process started here and removes that dir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import REPO, ControlPlane

NS = "shop"
GROUP, VERSION = "remedy.dev", "v1alpha1"
COOKBOOK = REPO / "docs" / "cookbook"
ADMIN_TOKEN = "demo-admin-token"
CRON_SECRET = "demo-cron-secret"

# docs/ports.md: name -> (env override, default)
PORTS: dict[str, tuple[str | None, int]] = {
    "etcd": ("REMEDY_ETCD_PORT", 23790),
    "apiserver": ("REMEDY_APISERVER_PORT", 16443),
    "controller-manager": ("REMEDY_KCM_PORT", 16444),
    "redis": ("REMEDY_REDIS_PORT", 16379),
    "postgres": ("REMEDY_PG_PORT", 15432),
    "mongo": ("REMEDY_MONGO_PORT", 27117),
    "prometheus": ("REMEDY_PROM_PORT", 19090),
    "alertmanager": ("REMEDY_AM_PORT", 19093),
    "gateway": (None, 18000),
    "orders": (None, 18001),
    "payments": (None, 18002),
    "inventory": (None, 18003),
    "reconcile": (None, 18005),
    "webhook": ("REMEDY_WEBHOOK_PORT", 18080),
    "metrics": ("REMEDY_METRICS_PORT", 18081),
    "liveness": (None, 18082),
}

RULES = """\
# The runbooks' alerts. Thresholds and `for` are shortened for the demo.
groups:
- name: runbooks
  rules:
  - alert: IdempotencyHighLockWaitP95          # runbook 000
    expr: idemp_lock_wait_p95_seconds > 1
    for: 3s
    labels: {severity: page, team: payments}
    annotations: {summary: "idempotency lock wait p95 above 1s"}
  - alert: PaymentsBreakerOpen                 # runbook 001: breaker_state{downstream=payments} = 1
    expr: breaker_state{downstream="payments"} == 1
    for: 2s
    labels: {severity: warning, team: payments}
    annotations: {summary: "payments circuit breaker open"}
  - alert: PaymentsChaosLeftEnabled            # runbook 001: chaos config left enabled
    expr: max(chaos_setting{job="payments"}) > 0
    for: 2s
    labels: {severity: warning, team: payments}
    annotations: {summary: "chaos injection still active on payments"}
  - alert: OutboxBacklog                       # runbook 001: outbox_pending > 500
    expr: outbox_pending > 500
    for: 3s
    labels: {severity: warning, team: orders}
    annotations: {summary: "outbox backlog above 500"}
  - alert: StuckReservations                   # runbook 002: > 50 pending
    expr: stuck_reservations > 50
    for: 2s
    labels: {severity: high, team: purchasing}
    annotations: {summary: "more than 50 reservations stuck"}
"""


class DemoError(RuntimeError):
    """A step of the demo failed."""


class Interrupted(BaseException):
    """SIGINT / SIGTERM: stop everything and leave."""


# ----------------------------------------------------------------------------- output

T0 = time.monotonic()


def say(msg: str = "") -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}" if msg else "", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def choose_ports() -> tuple[dict[str, int], list[str]]:
    """docs/ports.md defaults (or REMEDY_* overrides); a free port where one is taken."""
    ports: dict[str, int] = {}
    moved: list[str] = []
    used: set[int] = set()
    for name, (env, default) in PORTS.items():
        want = int(os.environ.get(env) or default) if env else default
        ok = want not in used and _port_free(want)
        if name == "etcd":  # etcd's peer port is client + 10
            ok = ok and want + 10 not in used and _port_free(want + 10)
        port = want
        while not ok:
            port = _free_port()
            ok = port not in used and (name != "etcd" or (port + 10 not in used and _port_free(port + 10)))
        if port != want:
            moved.append(f"{name} {want}->{port}")
        ports[name] = port
        used.add(port)
        if name == "etcd":
            used.add(port + 10)
    return ports, moved


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return int(r.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return int(e.code), json.loads(raw) if raw else None
        except ValueError:
            return int(e.code), raw.decode(errors="replace")


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - not there yet
            last = exc
        time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def render(name: str, values: dict[str, str]) -> str:
    """docs/cookbook/<name>.yaml with ${NAME} placeholders filled (unknown names are an error)."""
    text = (COOKBOOK / f"{name}.yaml").read_text()

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise DemoError(f"docs/cookbook/{name}.yaml: unknown placeholder ${{{m.group(1)}}}")
        return values[m.group(1)]

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", sub, text)


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Every process the demo started, so one `stop()` undoes it all."""

    state: Path
    ports: dict[str, int]
    record_path: Path | None = None
    cp: ControlPlane | None = None
    redis: Any = None
    redis_password: str = ""
    pg: Any = None
    prom: Any = None
    am: Any = None
    mongo: subprocess.Popen[bytes] | None = None
    apps: dict[str, Any] = field(default_factory=dict)
    op: Any = None
    bridge: Any = None
    api: Any = None
    bin_dir: Path | None = None
    extra_stops: list[Callable[[], None]] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)  # per-scenario notes (pids, opids, ...)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- bookkeeping for tests and for humans ------------------------------------------------
    def pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.cp is not None:
            for f in sorted((self.cp.state_dir / "pids").glob("*.pid")):
                with contextlib.suppress(ValueError, OSError):
                    out[f.stem] = int(f.read_text())
        for name, server in (("redis", self.redis), ("postgres", self.pg),
                             ("prometheus", self.prom), ("alertmanager", self.am)):
            if server is not None and server.pid():
                out[name] = int(server.pid())
        if self.mongo is not None:
            out["mongowire"] = self.mongo.pid
        for role, proc in self.apps.items():
            if proc.pid:
                out[f"demo-{role}"] = int(proc.pid)
        if self.op is not None and self.op.proc is not None:
            out["operator"] = self.op.proc.pid
        return out

    def record(self) -> None:
        if self.record_path is None:
            return
        with self._lock:
            doc = {"state_dir": str(self.state), "pid": os.getpid(), "pids": self.pids(), "ports": self.ports}
            tmp = self.record_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(self.record_path)

    # -- teardown -------------------------------------------------------------------------------
    def stop(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = []
        steps += [("scenario leftovers", f) for f in reversed(self.extra_stops)]
        if self.bridge is not None:
            steps.append(("rollout bridge", self.bridge.stop))
        if self.op is not None:
            steps.append(("operator", self.op.stop))
        for role, proc in self.apps.items():
            steps.append((f"demo {role}", proc.stop))
        if self.mongo is not None:
            steps.append(("mongo wire server", self._stop_mongo))
        for name, server in (("alertmanager", self.am), ("prometheus", self.prom),
                             ("postgres", self.pg), ("redis", self.redis)):
            if server is not None:
                steps.append((name, server.purge if name == "postgres" else server.stop))
        if self.cp is not None:
            steps.append(("control plane", self.cp.stop))
        for what, fn in steps:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                say(f"  (stopping {what}: {exc})")
        shutil.rmtree(self.state, ignore_errors=True)

    def _stop_mongo(self) -> None:
        proc = self.mongo
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    # -- helpers the scenarios use --------------------------------------------------------------
    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.cp is not None
        return self.cp.kubectl(*args, input=input)

    def apply(self, scenario: str) -> str:
        res = self.kubectl("apply", "-n", NS, "-f", "-", input=render(scenario, self.values()))
        return res.stdout.strip()

    def values(self) -> dict[str, str]:
        assert self.pg is not None and self.redis is not None
        return {
            "NAMESPACE": NS,
            "GATEWAY_URL": self.url("gateway"), "PAYMENTS_URL": self.url("payments"),
            "ORDERS_URL": self.url("orders"), "INVENTORY_URL": self.url("inventory"),
            "RECONCILE_URL": self.url("reconcile"),
            "GATEWAY_TOKEN": ADMIN_TOKEN, "CRON_SECRET": CRON_SECRET,
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "REDIS_PASSWORD": self.redis_password,
            "PG_DSN": self.pg.dsn,
            "MONGO_URI": f"mongodb://127.0.0.1:{self.ports['mongo']}/?directConnection=true",
        }

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def remediation(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: dict[str, Any] = self.custom().get_namespaced_custom_object(GROUP, VERSION, NS, "remediations", name)
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def children(self, policy: str) -> list[dict[str, Any]]:
        res = self.custom().list_namespaced_custom_object(GROUP, VERSION, NS, "remediations",
                                                          label_selector=f"remedy.dev/policy={policy}")
        return list(res["items"])

    def prom_query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.prom.query(promql))

    def firing(self, alertname: str) -> bool:
        return any(a.get("labels", {}).get("alertname") == alertname and a.get("state") == "firing"
                   for a in self.prom.alerts())

    def in_alertmanager(self, alertname: str) -> bool:
        return any(a.get("labels", {}).get("alertname") == alertname
                   and (a.get("status") or {}).get("state") == "active" for a in self.am.alerts())

    def redis_client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.ports["redis"], password=self.redis_password,
                           decode_responses=True)

    def mongo_admin(self) -> Any:
        import pymongo

        c: Any = pymongo.MongoClient(self.values()["MONGO_URI"], serverSelectionTimeoutMS=3000)
        return c


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


def start_stack(stack: Stack) -> None:
    from kubernetes import client, config

    from .demoapp import DemoProcess
    from .operator import OperatorProcess
    from .rollout_bridge import RolloutBridge
    from .services import AlertmanagerServer, PostgresServer, PrometheusServer, RedisServer

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
                                bin_dir=stack.bin_dir)
        stack.cp.start()
        stack.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        stack.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                      "crd/remediations.remedy.dev", "crd/remediationpolicies.remedy.dev")
        # Requester identity stamped by the API server; without it the operator runs nothing.
        from .admission import install as install_admission

        install_admission(stack.cp)
        stack.kubectl("create", "namespace", NS)
        stack.api = config.new_client_from_config(config_file=str(stack.cp.admin_kubeconfig))  # type: ignore[no-untyped-call]
        return f"{stack.cp.server} (etcd, kube-apiserver, kube-controller-manager, fake kubelet; CRDs and admission policies applied)"

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
        stack.prom = PrometheusServer(s / "prometheus", p["prometheus"], scrape_configs=scrape, rules=[RULES],
                                      alertmanager_url=f"http://127.0.0.1:{p['alertmanager']}",
                                      scrape_interval="1s", evaluation_interval="1s")
        stack.prom.start()
        return f"{stack.prom.url} (5 runbook alert rules; scrape + evaluation every 1s)"

    step("prometheus", prometheus)
    step("alertmanager", alertmanager)

    def services() -> str:
        logs = s / "logs"
        redis_url = f"redis://:{stack.redis_password}@127.0.0.1:{p['redis']}/0"
        upstreams = ["--upstream", f"payments={stack.url('payments')}", "--upstream", f"inventory={stack.url('inventory')}"]
        specs: dict[str, list[str]] = {
            "payments": ["--redis-url", redis_url],
            "inventory": ["--redis-url", redis_url],
            "gateway": ["--token", ADMIN_TOKEN, *upstreams],
            "orders": ["--state-file", str(s / "orders-outbox.json")],
            "reconcile": ["--token", CRON_SECRET],
        }
        for role, args in specs.items():
            proc = DemoProcess(role, p[role], args=args, log_path=str(logs / f"demo-{role}.log"))
            stack.apps[role] = proc
            proc.start()
        return ", ".join(f"{r} :{p[r]}" for r in specs)

    step("demo services", services)

    def deployments() -> str:
        apps: Any = client.AppsV1Api(stack.api)
        for name, memory in (("orders", "256Mi"), ("inventory", "256Mi")):
            apps.create_namespaced_deployment(NS, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                             "name": name, "image": f"registry.invalid/{name}:1",
                             "resources": {"limits": {"memory": memory}, "requests": {"memory": "128Mi"}}}]}}}})

        def on_rollout(name: str) -> None:
            stack.apps[name].restart()
            stack.record()

        assert stack.cp is not None
        bridge_api = config.new_client_from_config(config_file=str(stack.cp.admin_kubeconfig))  # type: ignore[no-untyped-call]
        stack.bridge = RolloutBridge(client.AppsV1Api(bridge_api), NS, on_rollout, ["orders", "inventory"]).start()
        return "Deployments orders, inventory in namespace shop; rollout bridge restarts their processes"

    step("workloads", deployments)

    def operator() -> str:
        assert stack.cp is not None
        env = {"REMEDY_WEBHOOK_PORT": str(p["webhook"]), "REMEDY_WEBHOOK_TOKEN_FILE": str(token_file),
               "REMEDY_PROMETHEUS_URL": stack.prom.url, "REMEDY_METRICS_PORT": str(p["metrics"]),
               "REMEDY_HEARTBEAT_SECONDS": "1"}
        stack.op = OperatorProcess(stack.cp.admin_kubeconfig, s / "logs" / "operator.log", env=env,
                                   args=["-n", NS, "--liveness", f"http://127.0.0.1:{p['liveness']}/healthz"])
        stack.op.start()
        stack.record()
        stack.op.wait_ready(60)
        wait_until(lambda: http("GET", f"http://127.0.0.1:{p['webhook']}/healthz", timeout=2)[0] == 200, 30,
                   "operator webhook")
        return f"python -m remedy.cli run -n {NS} (admin kubeconfig); webhook :{p['webhook']}, metrics :{p['metrics']}"

    step("operator", operator)


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Outcome:
    name: str
    trigger: str
    action: str
    seconds: float | None
    result: str
    ok: bool


@dataclass
class Scenario:
    name: str
    runbook: str
    title: str
    trigger: str  # for the summary
    action: str
    inject: Callable[[Stack], str]
    detect: list[tuple[str, Callable[[Stack], str | None]]]  # milestones before the Remediation
    check: Callable[[Stack, dict[str, Any]], str]  # after the Remediation ended; raises DemoError
    policy: str | None = None  # automatic: children of this RemediationPolicy
    remediation: str | None = None  # manual: applied with kubectl once detected
    approve: bool = False
    expect_phase: str = "Succeeded"
    expect_reason: str | None = None
    cleanup: Callable[[Stack], None] | None = None


def _promql(expr: str, label: str) -> Callable[[Stack], str | None]:
    def fn(st: Stack) -> str | None:
        res = st.prom_query(expr)
        if not res:
            return None
        vals = ", ".join(str(r.get("value", [0, "?"])[1]) for r in res[:3])
        return f"{label}: {expr} = {vals}"

    return fn


def _alert(name: str) -> Callable[[Stack], str | None]:
    return lambda st: f"Prometheus alert {name} firing" if st.firing(name) else None


def _am(name: str) -> Callable[[Stack], str | None]:
    return lambda st: (f"Alertmanager active {name} -> remedy webhook" if st.in_alertmanager(name) else None)


def _stats(st: Stack, role: str) -> dict[str, Any]:
    status, body = http("GET", f"{st.url(role)}/admin/stats")
    if status != 200:
        raise DemoError(f"{role} /admin/stats answered {status}")
    return dict(body)


# -- 000 idempotency-locks
def inject_idem(st: Stack) -> str:
    gw = st.url("gateway")
    s1, stale = http("POST", f"{gw}/admin/idempotency/_inject", {"count": 4, "stale": True, "prefix": "order-"}, ADMIN_TOKEN)
    s2, _ = http("POST", f"{gw}/admin/idempotency/_inject", {"count": 2, "stale": False, "prefix": "fresh-"}, ADMIN_TOKEN)
    if (s1, s2) != (201, 201):
        raise DemoError(f"inject failed: {s1} {s2}")
    return "4 stale idempotency locks (in_progress, lock expired 60s ago) + 2 healthy keys into the gateway"


def check_idem(st: Stack, obj: dict[str, Any]) -> str:
    _, recent = http("GET", f"{st.url('gateway')}/admin/idempotency/recent", token=ADMIN_TOKEN)
    keys = [i["key"] for i in recent["items"]]
    stale = [k for k in keys if k.startswith("order-")]
    fresh = [k for k in keys if k.startswith("fresh-")]
    if stale or len(fresh) != 2:
        raise DemoError(f"stale keys left {stale}, fresh keys {fresh}")
    purged = (obj.get("status", {}).get("result") or {}).get("purgedCount")
    return f"{purged} stale keys purged, 2 healthy keys kept; p95 back below 1s"


# -- 001/003 breaker-stuck and the refused case
def inject_breaker(st: Stack) -> str:
    status, _ = http("POST", f"{st.url('gateway')}/admin/breakers/payments/trip", {}, ADMIN_TOKEN)
    if status != 200:
        raise DemoError(f"trip failed: {status}")
    return "payments breaker tripped OPEN in the gateway while payments is healthy (stays OPEN: stuck)"


def _breaker_state(st: Stack) -> str:
    _, doc = http("GET", f"{st.url('gateway')}/status/breakers")
    return str(doc["payments"]["state"])


def check_breaker(st: Stack, obj: dict[str, Any]) -> str:
    wait_until(lambda: _breaker_state(st) == "CLOSED", 15, "breaker CLOSED after HALF_OPEN probe")
    return "forced HALF_OPEN after 3/3 health checks; the gateway's probe closed it: CLOSED"


_FORCE = "POST /admin/breakers/{name}/force"


def inject_breaker_down(st: Stack) -> str:
    before = _stats(st, "gateway").get("received", {}).get(_FORCE, 0)
    st.scratch["force_before"] = before
    http("POST", f"{st.url('payments')}/admin/down", {})
    inject_breaker(st)
    return "payments really down (/health 503) and its breaker OPEN"


def check_breaker_down(st: Stack, obj: dict[str, Any]) -> str:
    after = _stats(st, "gateway").get("received", {}).get(_FORCE, 0)
    if after != st.scratch.get("force_before", 0):
        raise DemoError("a reset request reached the gateway")
    if _breaker_state(st) != "OPEN":
        raise DemoError("breaker is no longer OPEN")
    return "refused: upstream unhealthy, no reset request sent, breaker left OPEN"


def cleanup_breaker_down(st: Stack) -> None:
    http("POST", f"{st.url('payments')}/admin/up", {})
    http("POST", f"{st.url('gateway')}/admin/breakers/payments/force", {"state": "HALF_OPEN"}, ADMIN_TOKEN)


# -- 001 chaos-keys
def inject_chaos(st: Stack) -> str:
    status, _ = http("PUT", f"{st.url('payments')}/chaos/config", {"error_rate": 0.3, "latency_ms": 150})
    if status != 200:
        raise DemoError(f"chaos PUT failed: {status}")
    return "chaos left enabled on payments: chaos:payments:error_rate=0.3, chaos:payments:latency_ms=150 in Redis"


def check_chaos(st: Stack, obj: dict[str, Any]) -> str:
    left = sorted(st.redis_client().scan_iter("chaos:payments:*"))
    if left:
        raise DemoError(f"chaos keys left: {left}")
    _, view = http("GET", f"{st.url('payments')}/chaos/config")
    if view.get("enabled"):
        raise DemoError(f"payments still reports chaos {view}")
    return "chaos:payments:* deleted; payments reports chaos disabled"


# -- 001/004 outbox-stuck
def inject_outbox(st: Stack) -> str:
    st.scratch["orders_pid"] = st.apps["orders"].pid
    status, _ = http("POST", f"{st.url('orders')}/admin/outbox/stick", {"rate": 200})
    if status != 200:
        raise DemoError(f"stick failed: {status}")
    return "orders outbox publisher wedged: backlog grows 200 events/s"


def check_outbox(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    rs = client.AppsV1Api(st.api).list_namespaced_replica_set(NS, label_selector="app=orders").items
    wait_until(lambda: st.apps["orders"].pid not in (None, st.scratch.get("orders_pid")), 30,
               "the rollout bridge to restart the orders process")
    pid = st.apps["orders"].pid
    stats = wait_until(lambda: _stats(st, "orders")["outbox"], 30, "the new orders process")
    if stats["stuck"]:
        raise DemoError("the orders publisher is still stuck")
    wait_until(lambda: _stats(st, "orders")["outbox"]["pending"] < 100, 30, "outbox drained")
    return (f"Deployment orders rolled ({len(rs)} ReplicaSets); new orders process pid {pid} "
            f"restored {stats['restored_from_state']} pending events and drained them")


# -- 002 purchase-locks
def inject_locks(st: Stack) -> str:
    r = st.redis_client()
    for i in range(12):
        r.set(f"lock:purchase:{1000 + i}", "valid-purchase", ex=3600)
    for i in range(3):
        r.set(f"lock:checkout:{i}", "held", ex=3600)
    return "12 stuck lock:purchase:* keys (and 3 unrelated lock:checkout:* keys) in Redis"


def detect_locks(st: Stack) -> str | None:
    n = sum(1 for _ in st.redis_client().scan_iter("lock:purchase:*"))
    return f"symptom: {n} lock:purchase:* keys held for an hour (redis SCAN)" if n else None


def check_locks(st: Stack, obj: dict[str, Any]) -> str:
    r = st.redis_client()
    left = sum(1 for _ in r.scan_iter("lock:purchase:*"))
    other = sum(1 for _ in r.scan_iter("lock:checkout:*"))
    if left or other != 3:
        raise DemoError(f"lock:purchase left {left}, lock:checkout {other}")
    return "0 lock:purchase:* keys left; the 3 lock:checkout:* keys untouched"


def cleanup_locks(st: Stack) -> None:
    r = st.redis_client()
    for k in list(r.scan_iter("lock:checkout:*")):
        r.delete(k)


# -- 002/003 long-transactions
def inject_pg(st: Stack) -> str:
    import psycopg

    dsn = st.pg.dsn
    holder = psycopg.connect(dsn, application_name="checkout")
    holder.execute("SELECT * FROM reservations WHERE id = 1 FOR UPDATE")  # stays idle in transaction
    reporting = psycopg.connect(dsn, application_name="reporting")
    reporting.execute("SELECT count(*) FROM reservations")  # idle in transaction too, other app
    sleeper = psycopg.connect(dsn, application_name="checkout", autocommit=True)

    def sleep() -> None:
        with contextlib.suppress(Exception):
            sleeper.execute("SELECT pg_sleep(600) /* checkout: reserve stock */")

    threading.Thread(target=sleep, daemon=True).start()

    def close() -> None:
        for c in (holder, reporting, sleeper):
            with contextlib.suppress(Exception):
                c.close()

    st.extra_stops.append(close)
    st.scratch["pg_close"] = close
    return ("checkout holds a row lock idle in transaction + runs pg_sleep(600); "
            "a 'reporting' session is idle in transaction too")


def detect_pg(st: Stack) -> str | None:
    import psycopg

    with psycopg.connect(st.pg.dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT state, extract(epoch FROM now() - coalesce(xact_start, query_start))::int FROM pg_stat_activity "
            "WHERE application_name = 'checkout' AND state IN ('active', 'idle in transaction') "
            "AND now() - coalesce(xact_start, query_start) >= interval '3 seconds'").fetchall()
    if len(rows) < 2:
        return None
    return "symptom: pg_stat_activity shows " + ", ".join(f"checkout {s} for {d}s" for s, d in rows)


def check_pg(st: Stack, obj: dict[str, Any]) -> str:
    import psycopg

    with psycopg.connect(st.pg.dsn, autocommit=True) as c:
        rows = c.execute("SELECT application_name, state FROM pg_stat_activity "
                         "WHERE application_name IN ('checkout', 'reporting')").fetchall()
    busy = [r for r in rows if r[0] == "checkout" and r[1] in ("active", "idle in transaction")]
    reporting = [r for r in rows if r[0] == "reporting" and r[1] == "idle in transaction"]
    if busy or not reporting:
        raise DemoError(f"pg_stat_activity after: {rows}")
    res = obj.get("status", {}).get("result") or {}
    return f"{res.get('summary') or 'checkout backends cancelled/terminated'}; 'reporting' untouched"


def cleanup_pg(st: Stack) -> None:
    close = st.scratch.get("pg_close")
    if close:
        close()


# -- 004 oom
def inject_oom(st: Stack) -> str:
    from kubernetes import client

    from .kubelet import mark_oomkilled

    core: Any = client.CoreV1Api(st.api)
    pods = wait_until(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="app=inventory").items
                               if p.status.phase == "Running"], 30, "inventory pods Running")
    for pod in pods:
        mark_oomkilled(core, NS, pod.metadata.name)
    return f"{len(pods)} inventory pods OOMKilled (status written through the API: lastState OOMKilled, restartCount+1)"


def detect_oom(st: Stack) -> str | None:
    from kubernetes import client

    core: Any = client.CoreV1Api(st.api)
    n = 0
    for p in core.list_namespaced_pod(NS, label_selector="app=inventory").items:
        for cs in p.status.container_statuses or []:
            term = cs.last_state.terminated if cs.last_state else None
            if term is not None and term.reason == "OOMKilled":
                n += 1
    return f"symptom: kubectl describe pod shows OOMKilled on {n} inventory pods (limit 256Mi)" if n else None


def check_oom(st: Stack, obj: dict[str, Any]) -> str:
    from kubernetes import client

    apps: Any = client.AppsV1Api(st.api)
    dep = apps.read_namespaced_deployment("inventory", NS)
    limit = dep.spec.template.spec.containers[0].resources.limits["memory"]
    change = (obj["status"].get("plan") or {}).get("containers", [{}])[0]

    def new_rs() -> Any:
        for rs in apps.list_namespaced_replica_set(NS, label_selector="app=inventory").items:
            c = rs.spec.template.spec.containers[0]
            want = dep.spec.replicas or 1
            if c.resources.limits.get("memory") == limit and rs.spec.replicas == want \
                    and (rs.status.ready_replicas or 0) >= want:
                return rs
        return None

    rs = wait_until(new_rs, 30, "new inventory ReplicaSet ready")
    return (f"memory limit {change.get('oldLimit')} -> {change.get('newLimit')} (Deployment now {limit}); "
            f"new ReplicaSet {rs.metadata.name} {rs.status.ready_replicas}/{rs.spec.replicas} ready")


# -- 004 slow-mongo
def inject_mongo(st: Stack) -> str:
    c = st.mongo_admin()
    try:
        slow = [c.admin.command({"remedyInjectOp": 1, "ns": "inventory.product_stocks", "secs_running": 45 + i,
                                 "appName": "inventory-service"})["opid"] for i in range(2)]
        fast = c.admin.command({"remedyInjectOp": 1, "ns": "inventory.product_stocks", "secs_running": 2,
                                "appName": "inventory-service"})["opid"]
        other = c.admin.command({"remedyInjectOp": 1, "ns": "analytics.events", "secs_running": 120,
                                 "appName": "nightly-report"})["opid"]
    finally:
        c.close()
    st.scratch["mongo"] = (slow, [fast, other])
    return (f"2 slow COLLSCAN queries (opids {slow}, 45s+) from inventory-service; also a 2s query, "
            "a 120s analytics query of another app, and MongoDB's internal threads")


def detect_mongo(st: Stack) -> str | None:
    c = st.mongo_admin()
    try:
        ops = c.admin.command({"currentOp": 1, "secs_running": {"$gte": 30}, "appName": "inventory-service"})["inprog"]
    finally:
        c.close()
    return f"symptom: db.currentOp({{secs_running: {{$gte: 30}}}}) lists {len(ops)} inventory-service ops" if ops else None


def check_mongo(st: Stack, obj: dict[str, Any]) -> str:
    slow, _keep = st.scratch["mongo"]
    c = st.mongo_admin()
    try:
        killed = list(c.admin.command({"remedyStats": 1})["killed"])
    finally:
        c.close()
    if sorted(killed) != sorted(slow):
        raise DemoError(f"killed {killed}, expected exactly {slow}")
    return f"killOp {sorted(killed)}; the 2s query, the other app's op and internal threads untouched"


def cleanup_mongo(st: Stack) -> None:
    c = st.mongo_admin()
    try:
        c.admin.command({"remedyReset": 1})
    finally:
        c.close()


# -- 002 reconcile
def inject_reconcile(st: Stack) -> str:
    status, _ = http("POST", f"{st.url('reconcile')}/admin/reservations/stick", {"count": 60})
    if status != 200:
        raise DemoError(f"stick failed: {status}")
    return "60 reservations stuck pending (reconciliation worker not running)"


def check_reconcile(st: Stack, obj: dict[str, Any]) -> str:
    stats = _stats(st, "reconcile")
    if stats["reconcile_runs"] != 1 or stats["stuck_reservations"] != 0:
        raise DemoError(f"reconcile stats {stats}")
    return "POST /api/cron/reconcile with the Secret's bearer token ran once; 0 stuck reservations"


SCENARIOS: list[Scenario] = [
    Scenario(
        "idempotency-locks", "000", "stale idempotency locks",
        "alert IdempotencyHighLockWaitP95", "purgeIdempotencyKeys",
        inject_idem,
        [("metric", _promql("idemp_lock_wait_p95_seconds > 1", "metric")),
         ("alert", _alert("IdempotencyHighLockWaitP95")), ("alertmanager", _am("IdempotencyHighLockWaitP95"))],
        check_idem, policy="idem-stuck-locks"),
    Scenario(
        "breaker-stuck", "001/003", "payments breaker stuck OPEN, payments healthy",
        "alert PaymentsBreakerOpen -> kubectl apply", "resetCircuitBreaker",
        inject_breaker,
        [("metric", _promql('breaker_state{downstream="payments"} == 1', "metric")),
         ("alert", _alert("PaymentsBreakerOpen"))],
        check_breaker, remediation="payments-breaker-reset"),
    Scenario(
        "chaos-keys", "001", "chaos config left enabled on payments",
        "alert PaymentsChaosLeftEnabled", "deleteRedisKeys",
        inject_chaos,
        [("metric", _promql('max(chaos_setting{job="payments"}) > 0', "metric")),
         ("alert", _alert("PaymentsChaosLeftEnabled")), ("alertmanager", _am("PaymentsChaosLeftEnabled"))],
        check_chaos, policy="clear-payments-chaos"),
    Scenario(
        "outbox-stuck", "001/004", "orders outbox publisher stuck",
        "PromQL outbox_pending > 500", "restartWorkload",
        inject_outbox,
        [("metric", _promql("outbox_pending > 500", "metric"))],
        check_outbox, policy="outbox-stuck"),
    Scenario(
        "purchase-locks", "002", "lock:purchase:* keys stuck",
        "kubectl apply + approval", "deleteRedisKeys",
        inject_locks, [("symptom", detect_locks)], check_locks,
        remediation="flush-purchase-locks", approve=True, cleanup=cleanup_locks),
    Scenario(
        "long-transactions", "002/003", "checkout transactions holding locks",
        "kubectl apply", "terminatePostgresQueries",
        inject_pg, [("symptom", detect_pg)], check_pg,
        remediation="terminate-checkout-transactions", cleanup=cleanup_pg),
    Scenario(
        "oom", "004", "inventory pods OOMKilled",
        "kubectl apply", "raiseMemoryOnOOM",
        inject_oom, [("symptom", detect_oom)], check_oom, remediation="inventory-oom"),
    Scenario(
        "slow-mongo", "004", "slow MongoDB queries on inventory",
        "kubectl apply", "killSlowMongoOps",
        inject_mongo, [("symptom", detect_mongo)], check_mongo,
        remediation="kill-slow-inventory-queries", cleanup=cleanup_mongo),
    Scenario(
        "reconcile", "002", "stuck reservations",
        "alert StuckReservations", "httpRequest",
        inject_reconcile,
        [("metric", _promql("stuck_reservations > 50", "metric")),
         ("alert", _alert("StuckReservations")), ("alertmanager", _am("StuckReservations"))],
        check_reconcile, policy="reconcile-stuck-reservations"),
    Scenario(
        "breaker-upstream-down", "001", "breaker OPEN and payments really down (must refuse)",
        "kubectl apply", "resetCircuitBreaker",
        inject_breaker_down,
        [("metric", _promql('breaker_state{downstream="payments"} == 1 and on() service_up{job="payments"} == 0',
                            "metric"))],
        check_breaker_down, remediation="payments-breaker-reset-while-down",
        expect_phase="Skipped", expect_reason="UpstreamUnhealthy", cleanup=cleanup_breaker_down),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def run_scenario(st: Stack, sc: Scenario, timeout: float) -> Outcome:
    say()
    say(f"=== {sc.name} (runbook {sc.runbook}): {sc.title}")
    trig = f"{sc.trigger}" + (f" -> policy {sc.policy}" if sc.policy else "")
    seen: set[str] = set()
    t0 = 0.0

    def mark(key: str, text: str) -> None:
        if key in seen:
            return
        seen.add(key)
        print(f"    +{time.monotonic() - t0:6.1f}s  {text}", flush=True)

    try:
        if sc.policy:
            st.apply(sc.name)
            say(f"    RemediationPolicy {sc.policy} applied (kubectl apply -f docs/cookbook/{sc.name}.yaml)")
            wait_until(lambda: (_cond(st.custom().get_namespaced_custom_object(
                GROUP, VERSION, NS, "remediationpolicies", sc.policy), "Ready") or {}).get("status") == "True",
                20, f"policy {sc.policy} Ready")
        t0 = time.monotonic()
        deadline = t0 + timeout
        mark("inject", f"incident injected: {sc.inject(st)}")
        name: str | None = None
        obj: dict[str, Any] | None = None
        ended: float | None = None
        while time.monotonic() < deadline:
            for key, fn in sc.detect:
                if key not in seen:
                    with contextlib.suppress(DemoError, OSError, ValueError, KeyError):
                        text = fn(st)
                        if text:
                            mark(key, text)
            detected = all(k in seen for k, _ in sc.detect)
            if name is None and sc.remediation and detected:
                st.apply(sc.name)
                name = sc.remediation
                mark("created", f"Remediation {name} applied with kubectl (docs/cookbook/{sc.name}.yaml)")
            if name is None and sc.policy:
                kids = st.children(sc.policy)
                if kids:
                    name = kids[0]["metadata"]["name"]
                    mark("created", f"Remediation {name} created by policy {sc.policy}")
            if name is not None:
                obj = st.remediation(name)
                status = (obj or {}).get("status") or {}
                plan = status.get("plan") or {}
                if plan:
                    mark("plan", f"plan: {plan.get('change') or json.dumps(plan)[:160]}")
                if status.get("phase") == "AwaitingApproval" and "awaiting" not in seen:
                    mark("awaiting", "phase AwaitingApproval: nothing runs until a person approves")
                    continue
                if status.get("phase") == "AwaitingApproval" and sc.approve and "approved" not in seen:
                    time.sleep(1)
                    st.kubectl("annotate", "-n", NS, f"remediation/{name}", "remedy.dev/approved-by=oncall@demo")
                    mark("approved", "approved by oncall@demo (kubectl annotate remedy.dev/approved-by)")
                ex = _cond(obj or {}, "Executed")
                if ex and ex.get("status") == "True":
                    result = status.get("result") or {}
                    counts = ", ".join(f"{k} {v}" for k, v in result.items()
                                       if isinstance(v, int) and not isinstance(v, bool) and k != "durationMs")
                    summary = result.get("summary") or (f"{ex.get('message')} ({counts})" if counts else ex.get("message"))
                    mark("action", f"action: {summary}")
                ver = _cond(obj or {}, "Verified")
                if ver and ver.get("status") in ("True", "False") and status.get("phase") not in (None, "Running", "Pending"):
                    mark("verify", f"verification: {ver.get('status')} {ver.get('reason')}: {ver.get('message')}"[:200])
                if status.get("phase") in ("Succeeded", "Failed", "Skipped"):
                    ended = time.monotonic()
                    comp = _cond(obj or {}, "Completed") or {}
                    mark("phase", f"phase {status['phase']} ({comp.get('reason')}): {comp.get('message', '')}"[:200])
                    break
            time.sleep(0.25)
        if ended is None or obj is None:
            missing = [k for k, _ in sc.detect if k not in seen] or (["Remediation"] if name is None else ["end"])
            raise DemoError(f"no outcome within {timeout:.0f}s (waiting for: {', '.join(missing)})")
        status = obj["status"]
        reason = (_cond(obj, "Completed") or {}).get("reason")
        if status["phase"] != sc.expect_phase or (sc.expect_reason and reason != sc.expect_reason):
            raise DemoError(f"ended {status['phase']}/{reason}, expected {sc.expect_phase}"
                            + (f"/{sc.expect_reason}" if sc.expect_reason else "") + f": {status.get('message')}")
        detail = sc.check(st, obj)
        took = ended - t0
        verdict = "refused as expected" if sc.expect_phase == "Skipped" else "remediated"
        mark("resolved", detail if sc.expect_phase == "Skipped" else f"resolved: {detail}")
        say(f"    => {verdict} in {took:.1f}s")
        return Outcome(sc.name, trig, sc.action, took, verdict if sc.expect_phase != "Skipped" else
                       f"refused ({reason}) as expected", True)
    except DemoError as exc:
        say(f"    => FAILED: {exc}")
        return Outcome(sc.name, trig, sc.action, None, f"FAILED: {exc}"[:100], False)
    except Exception as exc:  # noqa: BLE001 - one broken scenario must not stop the others
        say(f"    => FAILED: {type(exc).__name__}: {exc}")
        return Outcome(sc.name, trig, sc.action, None, f"FAILED: {type(exc).__name__}: {exc}"[:100], False)
    finally:
        if sc.cleanup is not None:
            with contextlib.suppress(Exception):
                sc.cleanup(st)


def summary(outcomes: Sequence[Outcome]) -> None:
    say()
    say("summary (thresholds shortened for the demo):")
    rows = [("scenario", "trigger", "action", "time to remediate", "result")]
    rows += [(o.name, o.trigger, o.action, f"{o.seconds:.1f}s" if o.seconds is not None else "-", o.result)
             for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), flush=True)
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths), flush=True)
    ok = sum(o.ok for o in outcomes)
    print(f"  {ok}/{len(outcomes)} scenarios ended as expected", flush=True)


def keep_running(st: Stack) -> None:
    assert st.cp is not None and st.bin_dir is not None
    p = st.ports
    say()
    say("everything keeps running (--keep). Point kubectl and a browser at it:")
    print(f"    export KUBECONFIG={st.cp.admin_kubeconfig}", flush=True)
    print(f"    export PATH={st.bin_dir}:$PATH      # the built kubectl", flush=True)
    print(f"    kubectl -n {NS} get remediations,remediationpolicies,deployments,replicasets", flush=True)
    print(f"    Prometheus:       http://127.0.0.1:{p['prometheus']}/alerts", flush=True)
    print(f"    Alertmanager:     http://127.0.0.1:{p['alertmanager']}/#/alerts", flush=True)
    print(f"    operator metrics: http://127.0.0.1:{p['metrics']}/metrics", flush=True)
    print(f"    demo services:    " + ", ".join(f"{r} {st.url(r)}" for r in st.apps), flush=True)
    print(f"    logs:             {st.state / 'logs'}", flush=True)
    say("press Ctrl-C to stop everything and remove the state dir")
    while True:
        time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./scripts/demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", action="append", choices=list(BY_NAME), metavar="NAME",
                        help="run only these (repeatable): " + ", ".join(BY_NAME))
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=90.0, help="per-scenario limit in seconds (default 90)")
    parser.add_argument("--record", type=Path, help="write pids, ports and the state dir as JSON here (for tests)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `./scripts/demo -- --scenario x`
        argv = argv[1:]
    args = parser.parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:24} runbook {sc.runbook:8} {sc.action:26} {sc.title}")
        return 0
    chosen = [BY_NAME[n] for n in dict.fromkeys(args.scenario)] if args.scenario else list(SCENARIOS)
    chosen.sort(key=SCENARIOS.index)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    ports, moved = choose_ports()
    state = Path(tempfile.mkdtemp(prefix="remedy-demo-"))
    stack = Stack(state=state, ports=ports, record_path=args.record)
    stack.record()
    began = time.monotonic()
    rc, kept = 1, False
    try:
        say(f"demo: {len(chosen)} scenario(s); state dir {state}")
        say("thresholds are shortened for the demo: scrape/evaluation 1s, alerts `for` 2-3s, "
            "Alertmanager group_wait 1s, durations of seconds instead of minutes")
        if moved:
            say(f"ports in use, using free ones instead: {', '.join(moved)}")
        start_stack(stack)
        say(f"stack ready in {time.monotonic() - began:.1f}s")
        outcomes = [run_scenario(stack, sc, args.timeout) for sc in chosen]
        summary(outcomes)
        rc = 0 if all(o.ok for o in outcomes) else 1
        say(f"total {time.monotonic() - began:.1f}s")
        if args.keep:
            kept = True
            keep_running(stack)
    except Interrupted as exc:
        say(f"interrupted ({exc}): stopping everything")
        rc = rc if kept else 130
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        say(f"demo failed: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        say("stopping everything the demo started...")
        with contextlib.suppress(Exception):
            stack.record()
        stack.stop()
        stack.record_path = None
        for sig, handler in old.items():
            signal.signal(sig, handler)
        say(f"stopped; removed {state}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
