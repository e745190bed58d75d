"""Every manifest in docs/examples/ reaches Succeeded on the real control plane (issue 3).

Each example file is applied with `kubectl apply` through the real API server into a fresh
namespace (prefix ``ex-``, watched only by this module's operator), after its incident has been
injected into local stand-ins: the demo gateway / payments / reconcile services, Redis,
PostgreSQL, the mongowire test double, a webhook relay, and Deployments driven by the control
plane's controllers and fake kubelet.

The examples keep real-cluster hostnames (``gateway.shop.svc:8000``); ``CASES`` below holds, per
file, an explicit substitution table (example text -> local address or credential) and the
incident to prepare. Every substitution must match the example text, and every example file
must have a case, so an example can neither go untested nor silently drift from its test.

Approval-gated examples are approved with the ``remedy.dev/approved-by`` annotation and the spec digest (after
checking they waited); dry-run examples must end Succeeded with Executed reason DryRun.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from kubernetes import client

from remedy.api.digest import spec_digest
from remedy_devenv.cluster import ControlPlane
from remedy_devenv.demoapp import DemoProcess
from remedy_devenv.kubelet import mark_oomkilled
from remedy_devenv.mongowire import MongoWireServer
from remedy_devenv.operator import OperatorProcess
from remedy_devenv.services import PostgresServer, PrometheusServer, RedisServer
from tests.fixtures.helpers import http_json as _http
from tests.fixtures.helpers import wait_for as _wait
from tests.fixtures.operator import condition, get_rem, make_namespace, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
PREFIX = "ex"              # namespaces ex-xxxxxxxx: only this module's operator watches them
REDIS_DB = 9               # a database of the shared Redis that only this module uses
TOKEN = "change-me"        # the examples' placeholder tokens: the local services accept it
PG_ROLE, PG_PASSWORD = "remedy_ops", "change-me"
APPROVER = "admin"  # the API server only accepts the approving user's own name (deploy/admission)
SETTLED = {"AwaitingApproval", "Succeeded", "Failed", "Skipped"}
FINAL = {"Succeeded", "Failed", "Skipped"}


# --------------------------------------------------------------------------- local world


class Relay:
    """A Slack-compatible webhook relay: POSTs with the right bearer token are recorded."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.received.append({"path": self.path, "body": json.loads(body or b"{}")})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    api: client.ApiClient
    cp: ControlPlane
    op: OperatorProcess
    redis_server: RedisServer
    redis: Any
    pg: PostgresServer
    mongo: MongoWireServer
    gateway: DemoProcess
    payments: DemoProcess
    reconcile: DemoProcess
    relay: Relay
    prom: PrometheusServer
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)  # what prepare() hands to check()

    @property
    def redis_url(self) -> str:
        return _redis_url(self.redis_server)

    def pg_connect(self, db: str, user: str | None = None, password: str | None = None, **kw: Any) -> Any:
        dsn = self.pg.dsn_for(user or self.pg.superuser, password or self.pg.password, db)
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5, **kw)


def _redis_url(s: RedisServer) -> str:
    return f"redis://:{urllib.parse.quote(s.password or '', safe='')}@{s.host}:{s.port}/{REDIS_DB}"


def _setup_postgres(pg: PostgresServer) -> None:
    """Databases of the examples (nexnum, orders), the examples' role and a checkout app role."""
    from psycopg import sql

    with psycopg.connect(pg.dsn_for(pg.superuser, pg.password, "postgres"), autocommit=True) as conn:
        for db in ("nexnum", "orders"):
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    pg.create_role(PG_ROLE, PG_PASSWORD, grant_database=False)
    pg.create_role("checkout_app", "checkout-pw", grant_database=False)
    with psycopg.connect(pg.dsn_for(pg.superuser, pg.password, "postgres"), autocommit=True) as conn:
        # terminatePostgresQueries: signal other roles' backends and see their query text
        conn.execute(f"GRANT pg_signal_backend, pg_read_all_stats TO {PG_ROLE}")
    with psycopg.connect(pg.dsn_for(pg.superuser, pg.password, "nexnum"), autocommit=True) as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS "providers" ("name" text PRIMARY KEY, "is_active" boolean NOT NULL)')
        conn.execute(f'GRANT SELECT, UPDATE ON "providers" TO {PG_ROLE}')
    with psycopg.connect(pg.dsn_for(pg.superuser, pg.password, "orders"), autocommit=True) as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS "reservations" ("id" int PRIMARY KEY)')
        conn.execute('INSERT INTO "reservations" VALUES (1) ON CONFLICT DO NOTHING')
        conn.execute('GRANT SELECT ON "reservations" TO checkout_app')


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, kube_admin: client.ApiClient, operator_factory: Any,
          redis_server: RedisServer, postgres_server: PostgresServer,
          prometheus_server: PrometheusServer) -> Iterator[World]:
    r = redis.Redis(host=redis_server.host, port=redis_server.port, password=redis_server.password,
                    db=REDIS_DB, decode_responses=True)
    r.flushdb()
    _setup_postgres(postgres_server)
    mongo = MongoWireServer()
    relay = Relay()
    started: list[DemoProcess] = []
    with mongo.running():
        try:
            payments = DemoProcess("payments", args=["--redis-url", _redis_url(redis_server)])
            payments.start()
            started.append(payments)
            gateway = DemoProcess("gateway", args=["--token", TOKEN, "--redis-url", _redis_url(redis_server),
                                                   "--upstream", f"payments={payments.url}"])
            gateway.start()
            started.append(gateway)
            reconcile = DemoProcess("reconcile", args=["--token", TOKEN])
            reconcile.start()
            started.append(reconcile)
            # The examples' spec.verify PromQL runs against real Prometheus scraping the demo.
            prometheus_server.configure(scrape_configs=[("gateway", [f"127.0.0.1:{gateway.port}"]),
                                                        ("payments", [f"127.0.0.1:{payments.port}"])], rules=[])
            op = operator_factory(env={"REMEDY_PROMETHEUS_URL": prometheus_server.url}, args=["-n", f"{PREFIX}-*"]).start()
            op.wait_ready()
            yield World(kube_admin, control_plane, op, redis_server, r, postgres_server, mongo,
                        gateway, payments, reconcile, relay, prometheus_server)
            op.stop()
        finally:
            for p in started:
                p.stop()
            relay.stop()
            r.close()


# --------------------------------------------------------------------------- Deployments


def make_deployment(w: World, ns: str, name: str, *, replicas: int = 2, image: str = "example/app:1",
                    container: str = "app", memory: str = "256Mi", request: str = "128Mi") -> None:
    client.AppsV1Api(w.api).create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": container, "image": image,
                      "resources": {"limits": {"memory": memory}, "requests": {"memory": request}}}]}}}})


def replicasets(w: World, ns: str, app: str) -> list[Any]:
    return list(client.AppsV1Api(w.api).list_namespaced_replica_set(ns, label_selector=f"app={app}").items)


def running_pods(w: World, ns: str, app: str, count: int) -> list[Any]:
    core = client.CoreV1Api(w.api)
    return _wait(lambda: (pods := [p for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
                                   if p.status.phase == "Running" and not p.metadata.deletion_timestamp])
                 and len(pods) >= count and pods, what=f"{count} running pods of {app}")


def deployment(w: World, ns: str, name: str) -> Any:
    return client.AppsV1Api(w.api).read_namespaced_deployment(name, ns)


# --------------------------------------------------------------------------- cases

Objs = dict[str, dict[str, Any]]


@dataclass
class Case:
    """How to run one example file locally.

    subs: example text -> local text (addresses, credentials; each must occur in the file).
    prepare: inject the incident the example remediates (namespace already exists).
    check: the incident is gone / the effect is visible (after every Remediation Succeeded).
    """

    subs: Callable[[World], dict[str, str]]
    prepare: Callable[[World, str], None]
    check: Callable[[World, str, Objs], None]


# ---- deleteRedisKeys: 25 stuck lock:purchase:* keys and chaos left enabled on payments


def prep_delete_redis_keys(w: World, ns: str) -> None:
    for i in range(25):
        w.redis.set(f"lock:purchase:{i:04d}", "held-by-orders-1")
    w.redis.set("lock:refund:0001", "unrelated")
    w.redis.mset({"chaos:payments:error_rate": "1", "chaos:payments:latency_ms": "50"})
    assert _http("GET", f"{w.payments.url}/health")[0] == 503  # the chaos is live
    _http("POST", f"{w.gateway.url}/admin/breakers/payments/force", {"state": "CLOSED"}, token=TOKEN)


def check_delete_redis_keys(w: World, ns: str, objs: Objs) -> None:
    assert list(w.redis.scan_iter("lock:purchase:*")) == []
    assert w.redis.get("lock:refund:0001") == "unrelated"
    assert list(w.redis.scan_iter("chaos:payments:*")) == []
    assert _http("GET", f"{w.payments.url}/health")[0] == 200
    assert objs["flush-purchase-locks"]["status"]["result"]["deleted"] == 25
    assert objs["clear-payments-chaos"]["status"]["result"]["deleted"] == 2
    assert condition(objs["clear-payments-chaos"], "Verified")["status"] == "True"


# ---- httpRequest: 60 stuck reservations; chaos config left on payments


def prep_http_request(w: World, ns: str) -> None:
    assert _http("POST", f"{w.reconcile.url}/admin/reservations/stick", {"count": 60})[0] == 200
    assert _http("PUT", f"{w.payments.url}/chaos/config", {"latency_ms": 20})[0] == 200


def check_http_request(w: World, ns: str, objs: Objs) -> None:
    _, stats = _http("GET", f"{w.reconcile.url}/admin/stats")
    assert stats["stuck_reservations"] == 0
    assert stats["succeeded"].get("POST /api/cron/reconcile") == 1
    _, chaos = _http("GET", f"{w.payments.url}/chaos/config")
    assert chaos["config"] == {}
    assert objs["reconcile-stuck-reservations"]["status"]["result"]["status"] == 200
    assert TOKEN not in json.dumps(objs["reconcile-stuck-reservations"]["status"])


# ---- killSlowMongoOps: slow inventory-service queries, plus ops that must survive


def prep_kill_slow_mongo_ops(w: World, ns: str) -> None:
    w.mongo.remove_injected()
    w.scratch["targets"] = [
        w.mongo.add_op(ns="inventory.orders", op="query", secs_running=45, appName="inventory-service"),
        w.mongo.add_op(ns="inventory.stock", op="getmore", secs_running=300, appName="inventory-service"),
    ]
    w.scratch["survivors"] = [
        w.mongo.add_op(ns="inventory.orders", op="query", secs_running=5, appName="inventory-service"),
        w.mongo.add_op(ns="orders.orders", op="query", secs_running=120, appName="inventory-service"),
        w.mongo.add_op(ns="inventory.orders", op="update", secs_running=120, appName="inventory-service"),
        w.mongo.add_op(ns="inventory.orders", op="query", secs_running=120, appName="reporting"),
    ]


def check_kill_slow_mongo_ops(w: World, ns: str, objs: Objs) -> None:
    assert sorted(w.mongo.killed) == sorted(w.scratch["targets"])
    alive = {d["opid"] for d in w.mongo.ops()}
    assert set(w.scratch["survivors"]) <= alive
    assert objs["kill-slow-inventory-queries"]["status"]["result"]["killed"] == 2


# ---- notify: the relay gets the message


def prep_notify(w: World, ns: str) -> None:
    w.relay.received.clear()


def check_notify(w: World, ns: str, objs: Objs) -> None:
    assert len(w.relay.received) == 1
    got = w.relay.received[0]
    assert got["path"] == "/slack/alerts-warning"
    assert got["body"]["text"].startswith("payments circuit breaker forced HALF_OPEN")


# ---- postgresStatement: bad_provider still active


def prep_postgres_statement(w: World, ns: str) -> None:
    with w.pg_connect("nexnum") as conn:
        conn.execute('DELETE FROM "providers"')
        conn.execute('INSERT INTO "providers" VALUES (%s, true), (%s, true)', ("bad_provider", "good_provider"))


def check_postgres_statement(w: World, ns: str, objs: Objs) -> None:
    with w.pg_connect("nexnum") as conn:
        rows = dict(conn.execute('SELECT "name", "is_active" FROM "providers"').fetchall())
    assert rows == {"bad_provider": False, "good_provider": True}
    obj = objs["disable-bad-provider"]
    assert obj["status"]["approvedBy"] == APPROVER
    assert obj["status"]["result"]["rowsAffected"] == 1


# ---- purgeIdempotencyKeys: stale in_progress locks of tenant t1 behind the gateway


def prep_purge_idempotency_keys(w: World, ns: str) -> None:
    status, body = _http("POST", f"{w.gateway.url}/admin/idempotency/_inject",
                         {"count": 4, "stale": True, "prefix": "order-", "tenant": "t1"}, token=TOKEN)
    assert status == 201
    w.scratch["stale_keys"] = set(body["created"])
    _http("POST", f"{w.gateway.url}/admin/idempotency/_inject",
          {"count": 2, "stale": False, "prefix": "fresh-", "tenant": "t1"}, token=TOKEN)
    # The symptom the example's spec.verify watches is visible in Prometheus before remedy acts.
    _wait(lambda: w.prom.query("idemp_lock_wait_p95_seconds > 1"), 30, "lock-wait p95 firing in Prometheus")


def check_purge_idempotency_keys(w: World, ns: str, objs: Objs) -> None:
    http_obj, redis_obj = objs["purge-stale-idem-locks"], objs["purge-stale-idem-locks-redis"]
    assert {e["key"] for e in http_obj["status"]["result"]["purged"]} == w.scratch["stale_keys"]
    assert condition(http_obj, "Verified")["status"] == "True"
    # The dry run ran before the approval: it planned the same keys through Redis.
    assert {e["key"] for e in redis_obj["status"]["plan"]["keys"]} == w.scratch["stale_keys"]
    _, recent = _http("GET", f"{w.gateway.url}/admin/idempotency/recent", token=TOKEN)
    keys = {i["key"] for i in recent["items"]}
    assert not keys & w.scratch["stale_keys"]
    assert sum(1 for k in keys if k.startswith("fresh-")) == 2


# ---- resetCircuitBreaker: payments breaker stuck OPEN while payments is healthy


def prep_reset_circuit_breaker(w: World, ns: str) -> None:
    for key in w.redis.scan_iter("chaos:payments:*"):
        w.redis.delete(key)
    _http("POST", f"{w.payments.url}/admin/up")
    assert _http("GET", f"{w.payments.url}/health")[0] == 200
    assert _http("POST", f"{w.gateway.url}/admin/breakers/payments/trip", {}, token=TOKEN)[0] == 200
    time.sleep(1)  # stuck: the demo gateway never leaves OPEN by itself
    assert _http("GET", f"{w.gateway.url}/status/breakers")[1]["payments"]["state"] == "OPEN"


def check_reset_circuit_breaker(w: World, ns: str, objs: Objs) -> None:
    obj = objs["payments-breaker-reset"]
    assert obj["status"]["plan"]["stateBefore"] == "OPEN"
    assert obj["status"]["result"]["sent"] is True
    _wait(lambda: _http("GET", f"{w.gateway.url}/status/breakers")[1]["payments"]["state"] == "CLOSED",
          30, "payments breaker CLOSED after the HALF_OPEN probe")


# ---- terminatePostgresQueries: a pg_sleep from application 'checkout', an idle transaction


def prep_terminate_postgres_queries(w: World, ns: str) -> None:
    checkout = w.pg_connect("orders", "checkout_app", "checkout-pw", application_name="checkout")
    idle = w.pg_connect("orders", "checkout_app", "checkout-pw", application_name="reservations-worker")
    w.scratch["checkout_pid"], w.scratch["idle_pid"] = checkout.info.backend_pid, idle.info.backend_pid
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            checkout.execute('SELECT pg_sleep(600) FROM "reservations"')
            outcome["result"] = "finished"
        except psycopg.Error as exc:
            outcome["result"] = type(exc).__name__

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    w.scratch["checkout_outcome"] = outcome
    w.scratch["checkout_thread"] = thread
    idle.autocommit = False
    idle.execute('SELECT "id" FROM "reservations"')  # now idle in transaction

    def cleanup() -> None:
        if thread.is_alive():
            checkout.cancel_safe()
            thread.join(10)
        checkout.close()
        idle.rollback()
        idle.close()

    w.cleanups.append(cleanup)
    # both must be older than the (substituted) minDuration: 2s
    with w.pg_connect("postgres") as admin:
        _wait(lambda: admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND now() - xact_start > interval '3 seconds'",
            ([w.scratch["checkout_pid"], w.scratch["idle_pid"]],)).fetchone()[0] == 2, 30, "sessions older than minDuration")


def check_terminate_postgres_queries(w: World, ns: str, objs: Objs) -> None:
    backends = objs["terminate-slow-checkout-queries"]["status"]["result"]["backends"]
    assert [(b["pid"], b["outcome"]) for b in backends] == [(w.scratch["checkout_pid"], "cancelled")]
    w.scratch["checkout_thread"].join(10)
    assert w.scratch["checkout_outcome"] == {"result": "QueryCanceled"}
    planned = objs["terminate-idle-transactions"]["status"]["plan"]
    assert [b["pid"] for b in planned["backends"]] == [w.scratch["idle_pid"]]
    with w.pg_connect("postgres") as admin:  # the dry run left it alone
        state = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (w.scratch["idle_pid"],)).fetchone()
    assert state == ("idle in transaction",)


# ---- workloads


def prep_restart(w: World, ns: str) -> None:
    make_deployment(w, ns, "orders", replicas=2, image="example/orders:1")
    running_pods(w, ns, "orders", 2)
    _wait(lambda: len(replicasets(w, ns, "orders")) == 1, what="first ReplicaSet")


def check_restart(w: World, ns: str, objs: Objs) -> None:
    obj = objs["restart-stuck-outbox"]
    assert condition(obj, "Verified")["status"] == "True"
    dep = deployment(w, ns, "orders")
    assert dep.spec.template.metadata.annotations["remedy.dev/restarted-by"] == obj["metadata"]["uid"]
    assert len(replicasets(w, ns, "orders")) == 2
    assert (dep.status.updated_replicas, dep.status.available_replicas) == (2, 2)
    assert obj["status"]["evidence"]["podCount"] == 2


def prep_scale(w: World, ns: str) -> None:
    make_deployment(w, ns, "inventory", replicas=1)
    make_deployment(w, ns, "gateway", replicas=2)


def check_scale(w: World, ns: str, objs: Objs) -> None:
    assert deployment(w, ns, "inventory").spec.replicas == 3
    assert deployment(w, ns, "gateway").spec.replicas == 4
    plan = objs["scale-out-gateway"]["status"]["plan"]
    assert (plan["from"], plan["to"], plan["clamped"]) == (2, 4, False)


def prep_rollback(w: World, ns: str) -> None:
    make_deployment(w, ns, "checkout", image="example/checkout:2.3.1")
    _wait(lambda: len(replicasets(w, ns, "checkout")) == 1, what="revision 1")
    client.AppsV1Api(w.api).patch_namespaced_deployment("checkout", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "example/checkout:2.4.0"}]}}}})
    _wait(lambda: (deployment(w, ns, "checkout").metadata.annotations or {}).get(
        "deployment.kubernetes.io/revision") == "2", what="revision 2")


def check_rollback(w: World, ns: str, objs: Objs) -> None:
    plan = objs["rollback-checkout"]["status"]["plan"]
    assert (plan["fromRevision"], plan["toRevision"]) == (2, 1)
    assert deployment(w, ns, "checkout").spec.template.spec.containers[0].image == "example/checkout:2.3.1"


def prep_raise_memory(w: World, ns: str) -> None:
    make_deployment(w, ns, "inventory-service", replicas=2, container="inventory-service",
                    memory="1Gi", request="512Mi")
    core = client.CoreV1Api(w.api)
    for pod in running_pods(w, ns, "inventory-service", 2):
        mark_oomkilled(core, ns, pod.metadata.name)


def check_raise_memory(w: World, ns: str, objs: Objs) -> None:
    change = objs["inventory-service-oom"]["status"]["plan"]["containers"][0]
    assert (change["container"], change["oldLimit"], change["newLimit"]) == ("inventory-service", "1Gi", "1536Mi")
    assert len(change["oomKilledPods"]) == 2
    c = deployment(w, ns, "inventory-service").spec.template.spec.containers[0]
    assert c.resources.limits["memory"] == "1536Mi" and c.resources.requests["memory"] == "512Mi"


def _none(w: World) -> dict[str, str]:
    return {}


CASES: dict[str, Case] = {
    "deleteRedisKeys.yaml": Case(
        subs=lambda w: {
            "redis://redis.shop.svc:6379/0": f"redis://{w.redis_server.host}:{w.redis_server.port}/{REDIS_DB}",
            "password: change-me": f'password: "{w.redis_server.password}"',
        },
        prepare=prep_delete_redis_keys, check=check_delete_redis_keys),
    "httpRequest.yaml": Case(
        subs=lambda w: {"http://nexnum-app.shop.svc:3000": w.reconcile.url,
                        "http://payments.shop.svc:8002": w.payments.url},
        prepare=prep_http_request, check=check_http_request),
    "killSlowMongoOps.yaml": Case(
        # the test double has no authentication: the URI's credentials are dropped
        subs=lambda w: {"mongodb://remedy_ops:change-me@mongodb-0.mongodb.inventory.svc:27017/?authSource=admin": w.mongo.uri},
        prepare=prep_kill_slow_mongo_ops, check=check_kill_slow_mongo_ops),
    "notify.yaml": Case(
        subs=lambda w: {"http://alerts-relay.ops.svc:8080": w.relay.url},
        prepare=prep_notify, check=check_notify),
    "postgresStatement.yaml": Case(
        subs=lambda w: {"host=nexnum-db.shop.svc port=5432": f"host={w.pg.host} port={w.pg.port}",
                        "sslmode=require": "sslmode=disable"},
        prepare=prep_postgres_statement, check=check_postgres_statement),
    "purgeIdempotencyKeys.yaml": Case(
        subs=lambda w: {"http://gateway.shop.svc:8000": w.gateway.url,
                        "redis://:change-me@redis.shop.svc:6379/0": w.redis_url},
        prepare=prep_purge_idempotency_keys, check=check_purge_idempotency_keys),
    "resetCircuitBreaker.yaml": Case(
        subs=lambda w: {"http://gateway.shop.svc:8000": w.gateway.url,
                        "http://payments.shop.svc:8002": w.payments.url},
        prepare=prep_reset_circuit_breaker, check=check_reset_circuit_breaker),
    "terminatePostgresQueries.yaml": Case(
        subs=lambda w: {"orders-db.shop.svc:5432": f"{w.pg.host}:{w.pg.port}",
                        "sslmode=require": "sslmode=disable",
                        # time scale only: a test cannot wait 5 and 10 minutes for a stuck session
                        "minDuration: 5m": "minDuration: 2s",
                        "minDuration: 10m": "minDuration: 2s"},
        prepare=prep_terminate_postgres_queries, check=check_terminate_postgres_queries),
    "restartWorkload.yaml": Case(subs=_none, prepare=prep_restart, check=check_restart),
    "scaleWorkload.yaml": Case(subs=_none, prepare=prep_scale, check=check_scale),
    "rollbackWorkload.yaml": Case(subs=_none, prepare=prep_rollback, check=check_rollback),
    "raiseMemoryOnOOM.yaml": Case(subs=_none, prepare=prep_raise_memory, check=check_raise_memory),
}


# --------------------------------------------------------------------------- tests


def test_every_example_has_a_case() -> None:
    """A new example without a preparation entry (or a stale entry) fails here."""
    assert EXAMPLE_FILES, "docs/examples/ is empty"
    files = {p.name for p in EXAMPLE_FILES}
    assert not files - set(CASES), f"add a Case to CASES in {__file__} for {sorted(files - set(CASES))}"
    assert not set(CASES) - files, f"CASES has entries for missing examples: {sorted(set(CASES) - files)}"


def localize(text: str, subs: dict[str, str], ns: str) -> tuple[str, list[dict[str, Any]]]:
    """Apply the substitution table (each entry must match) and move every object into ns."""
    for old, new in subs.items():
        assert old in text, f"substitution {old!r} no longer matches the example: update CASES"
        text = text.replace(old, new)
    docs = [d for d in yaml.safe_load_all(text) if d]
    for d in docs:
        d["metadata"]["namespace"] = ns
    return yaml.safe_dump_all(docs, sort_keys=False), docs


def _operator_tail(w: World) -> str:
    return w.op.log_path.read_text(errors="replace")[-4000:]


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_example_reaches_succeeded(example: Path, world: World) -> None:
    case = CASES.get(example.name)
    assert case is not None, f"{example.name} has no preparation entry in CASES: add one so it is tested"
    w = world
    ns = make_namespace(w.api, PREFIX)
    try:
        manifest, docs = localize(example.read_text(), case.subs(w), ns)
        case.prepare(w, ns)
        applied = w.cp.kubectl("apply", "-n", ns, "-f", "-", input=manifest, check=False)
        assert applied.returncode == 0, applied.stderr
        rems = [d for d in docs if d["kind"] == "Remediation"]
        assert rems, f"{example.name} holds no Remediation"
        # Let every Remediation of the file settle first (a dry run must plan before an approved
        # sibling changes the world), then approve the gated ones.
        for r in rems:
            name = r["metadata"]["name"]
            obj = wait_phase(w.api, ns, name, SETTLED, timeout=120)
            gated = bool((r["spec"].get("approval") or {}).get("required")) or "postgresStatement" in r["spec"]["action"]
            if gated:
                assert obj["status"]["phase"] == "AwaitingApproval", obj["status"]
                assert condition(obj, "Approved")["status"] == "False"
            else:
                assert obj["status"]["phase"] != "AwaitingApproval", obj["status"]
        for r in rems:
            if get_rem(w.api, ns, r["metadata"]["name"])["status"]["phase"] == "AwaitingApproval":
                waiting = get_rem(w.api, ns, r["metadata"]["name"])
                w.cp.kubectl("annotate", "-n", ns, f"remediation/{r['metadata']['name']}",
                             f"remedy.dev/approved-by={APPROVER}",
                             f"remedy.dev/approved-spec-digest={spec_digest(waiting['spec'])}")
        objs: Objs = {}
        for r in rems:
            name = r["metadata"]["name"]
            obj = wait_phase(w.api, ns, name, FINAL, timeout=240)
            assert obj["status"]["phase"] == "Succeeded", (
                f"{example.name} {name}: {json.dumps(obj['status'], indent=1)}\n--- operator log tail:\n{_operator_tail(w)}")
            executed = condition(obj, "Executed")
            if r["spec"].get("dryRun"):
                assert (executed["status"], executed["reason"]) == ("False", "DryRun"), executed
                assert obj["status"].get("plan"), obj["status"]
            else:
                assert executed["status"] == "True", executed
            objs[name] = obj
            status_text = json.dumps(obj["status"])
            for secret in {TOKEN, PG_PASSWORD, w.redis_server.password or TOKEN}:
                assert secret not in status_text, f"{name}: status echoes a secret value"
        case.check(w, ns, objs)
    finally:
        while w.cleanups:
            w.cleanups.pop()()
        client.CoreV1Api(w.api).delete_namespace(ns)

