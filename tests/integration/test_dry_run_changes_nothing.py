"""Issue 21 item 4: a dry run, and a child of a policy in shadow mode, never change anything.

One table: every action of the registry, planned by the real engine (engine/lifecycle.py with
the real registry; the Remediation store is the in-process fake, the targets are real) once as
``dryRun: true`` and once as the child a ``mode: shadow`` policy creates
(``autonomy.apply_mode``). Each case has something to act on (an OPEN breaker, stale
idempotency keys, slow Mongo ops, a long PostgreSQL query, Redis keys, OOMKilled pods, an older
revision), so each plan is a real plan, not a skip; the test fails if one is skipped.

The witnesses are the servers' own counters, read before and after every run: Redis
``rdb_changes_since_last_save`` (its dirty counter) and DBSIZE; PostgreSQL ``pg_stat_database``
tuple counters and ``sessions_killed``, the target sessions' pid and backend_start, a sequence
and the advisory locks; the Mongo double's killOp list; every HTTP service's count of mutating
requests received; and each Deployment's generation, spec and managedFields as stored by the
API server (no ``remedy`` manager appears). Among the PostgreSQL cases is a statement calling
``pg_terminate_backend``, whose target session must survive (before issue 21, a dry run killed it).

A positive control runs last: the same witness sees a real execute, so it can fail.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from kubernetes import client

from remedy.actions.registry import REGISTRY
from remedy.api.digest import spec_digest
from remedy.base.constants import OPERATOR_APP_NAME, REMEDIATIONS
from remedy.clients.kube import KubeClient
from remedy.lifecycle.machine import Lifecycle as Engine
from remedy.policies.autonomy import apply_mode
from remedy_devenv.demoapp import DEFAULT_ADMIN_TOKEN, runner_port, start_demo_service
from remedy_devenv.kubelet import mark_oomkilled, mark_pods_running
from remedy_devenv.mongowire import MongoWireServer
from remedy_devenv.services import PostgresServer, RedisServer
from remedy_devenv.testkit import make_deployment, wait_for
from tests.fixtures.actions import make_ctx
from tests.fixtures.fakes import FakeRecorder, FakeStore
from tests.reliability._util import record

pytestmark = [pytest.mark.services, pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]

CRON = "cron-dry-run-secret"
SECRETS = {("gw", "token"): DEFAULT_ADMIN_TOKEN, ("cron", "token"): CRON, ("sink", "token"): "sink-token"}
VICTIM_APP = "dry-run-victim"


@dataclass
class Env:
    ns: str
    kube: KubeClient
    api: client.ApiClient
    pg: PostgresServer
    redis: RedisServer
    mongo: MongoWireServer
    urls: dict[str, str]
    sink_hits: list[str]
    victims: list[psycopg.AsyncConnection[Any]] = field(default_factory=list)
    victim_ids: list[tuple[int, str]] = field(default_factory=list)

    @property
    def secrets(self) -> dict[tuple[str, str], str]:
        return {**SECRETS, ("pg", "dsn"): self.pg.dsn, ("redis", "url"): self.redis.url, ("mongo", "uri"): self.mongo.uri}


# --- the table -----------------------------------------------------------------------------------

PG = {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "connectTimeout": "3s", "statementTimeout": "10s"}
REDIS = {"urlSecretRef": {"name": "redis", "key": "url"}, "timeout": "3s"}


def cases(e: Env) -> dict[str, dict[str, Any]]:
    """spec.action of every case; every registry member appears at least once."""
    gw, pay, rec, sink = e.urls["gateway"], e.urls["payments"], e.urls["reconcile"], e.urls["sink"]
    return {
        "restartWorkload": {"restartWorkload": {"target": {"kind": "Deployment", "name": "web"}}},
        "scaleWorkload": {"scaleWorkload": {"target": {"kind": "Deployment", "name": "web"}, "delta": 2}},
        "rollbackWorkload": {"rollbackWorkload": {"target": {"name": "web"}}},
        "raiseMemoryOnOOM": {"raiseMemoryOnOOM": {"target": {"kind": "Deployment", "name": "web"}, "maxLimit": "1Gi",
                                                  "strategy": "inPlace"}},
        "terminatePostgresQueries": {"terminatePostgresQueries": {
            "connection": PG, "minDuration": "1s", "applicationName": VICTIM_APP, "grace": "1s"}},
        "postgresStatement": {"postgresStatement": {
            "connection": PG, "sql": "UPDATE dry_run_t SET v = v + 1 WHERE id = %s", "params": ["1"], "maxRows": 1}},
        "postgresStatement(pg_terminate_backend)": {"postgresStatement": {
            "connection": PG, "sql": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            "params": [VICTIM_APP], "maxRows": 5}},
        "postgresStatement(nextval, advisory lock)": {"postgresStatement": {
            "connection": PG, "sql": "SELECT nextval('dry_run_seq'), pg_advisory_lock(4711)", "maxRows": 1}},
        "killSlowMongoOps": {"killSlowMongoOps": {
            "connection": {"uriSecretRef": {"name": "mongo", "key": "uri"}, "timeout": "3s"}, "minSecsRunning": 30}},
        "resetCircuitBreaker": {"resetCircuitBreaker": {
            "statusUrl": f"{gw}/status/breakers", "breaker": "payments",
            "upstreamHealth": {"url": f"{pay}/health", "consecutive": 2, "interval": "20ms", "timeout": "2s"},
            "reset": {"url": f"{gw}/admin/breakers/payments/force", "method": "POST",
                      "bearerTokenSecretRef": {"name": "gw", "key": "token"},
                      "body": json.dumps({"state": "HALF_OPEN"}), "expectStatus": [200]}}},
        "httpRequest": {"httpRequest": {"url": f"{rec}/api/cron/reconcile", "method": "POST",
                                        "bearerTokenSecretRef": {"name": "cron", "key": "token"}}},
        "notify": {"notify": {"message": "dry run", "webhook": {"url": f"{sink}/hook",
                                                                "bearerTokenSecretRef": {"name": "sink", "key": "token"}},
                              "sink": {"format": "generic", "url": f"{sink}/generic"}}},
        "purgeIdempotencyKeys(http)": {"purgeIdempotencyKeys": {
            "backend": "http", "http": {"baseUrl": gw, "tokenSecretRef": {"name": "gw", "key": "token"}, "timeout": "5s"},
            "grace": "1s", "maxKeys": 50}},
        "purgeIdempotencyKeys(redis)": {"purgeIdempotencyKeys": {
            "backend": "redis", "redis": {"connection": REDIS, "pattern": "idem:*"}, "grace": "1s", "maxKeys": 50}},
        "deleteRedisKeys": {"deleteRedisKeys": {"connection": REDIS, "pattern": "lock:purchase:*"}},
    }


# --- the witnesses -------------------------------------------------------------------------------


async def _pg(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="dry-run-witness") as c:
        cur = await c.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def _stats(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/admin/stats") as r:
        return (await r.json())["received"]


async def witness(e: Env) -> dict[str, Any]:
    """Every server's own record of changes, in one comparable dict."""
    # The operator's backends report their statistics when they exit: wait until they have.
    await wait_async(lambda: _pg(e.pg.dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                 [OPERATOR_APP_NAME]), lambda rows: rows[0][0] == 0, "operator backends gone")
    r = aioredis.from_url(e.redis.url)
    try:
        info = await r.info("persistence")
        redis_state = {"dirty": info["rdb_changes_since_last_save"], "dbsize": await r.dbsize(),
                       "unlink+del": sum(v["calls"] for k, v in (await r.info("commandstats")).items()
                                         if k in ("cmdstat_unlink", "cmdstat_del", "cmdstat_hdel"))}
    finally:
        await r.aclose()
    apps = client.AppsV1Api(e.api)
    core = client.CoreV1Api(e.api)
    dep = apps.read_namespaced_deployment("web", e.ns)
    pods = core.list_namespaced_pod(e.ns, label_selector="app=web").items
    return {
        "redis": redis_state,
        "postgres": {
            "tuples": await _pg(e.pg.dsn, "SELECT tup_inserted, tup_updated, tup_deleted, sessions_killed "
                                          "FROM pg_stat_database WHERE datname = current_database()"),
            "victims": await _pg(e.pg.dsn, "SELECT pid, backend_start::text FROM pg_stat_activity "
                                           "WHERE application_name = %s ORDER BY pid", [VICTIM_APP]),
            "rows": await _pg(e.pg.dsn, "SELECT id, v FROM dry_run_t ORDER BY id"),
            "sequence": await _pg(e.pg.dsn, "SELECT last_value, is_called FROM dry_run_seq"),
            "advisory": await _pg(e.pg.dsn, "SELECT objid FROM pg_locks WHERE locktype = 'advisory'"),
        },
        "mongo": {"killed": list(e.mongo.killed), "ops": sorted(d["opid"] for d in e.mongo.ops())},
        "http": {name: await _stats(e.urls[name]) for name in ("gateway", "payments", "reconcile")} | {"sink": list(e.sink_hits)},
        "kube": {
            "generation": dep.metadata.generation, "spec": client.ApiClient().sanitize_for_serialization(dep.spec),
            "managers": sorted({m.manager for m in dep.metadata.managed_fields or []}),
            "pods": sorted((p.metadata.name, json.dumps(client.ApiClient().sanitize_for_serialization(p.spec.containers)),
                            tuple(sorted({m.manager for m in p.metadata.managed_fields or []}))) for p in pods),
        },
    }


async def wait_async(fetch: Callable[[], Any], pred: Callable[[Any], bool], what: str, timeout: float = 20) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await fetch()
        if pred(value):
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}: {value!r}")
        await asyncio.sleep(0.1)


# --- the world -----------------------------------------------------------------------------------


async def _sink(hits: list[str]) -> web.AppRunner:
    async def hook(request: web.Request) -> web.Response:
        hits.append(f"{request.method} {request.path}")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(control_plane: Any, kube_admin: client.ApiClient, postgres_server: PostgresServer,
              redis_server: RedisServer) -> AsyncIterator[Env]:
    ns = "dry-run"
    core, apps = client.CoreV1Api(kube_admin), client.AppsV1Api(kube_admin)
    core.create_namespace({"metadata": {"name": ns}})
    hits: list[str] = []
    runners = [await start_demo_service("payments"), await start_demo_service("reconcile", token=CRON), await _sink(hits)]
    pay = f"http://127.0.0.1:{runner_port(runners[0])}"
    runners.append(await start_demo_service("gateway", upstreams={"payments": pay}, redis_url=redis_server.url))
    urls = {"payments": pay, "reconcile": f"http://127.0.0.1:{runner_port(runners[1])}",
            "sink": f"http://127.0.0.1:{runner_port(runners[2])}", "gateway": f"http://127.0.0.1:{runner_port(runners[3])}"}
    mongo = MongoWireServer()
    with mongo.running():
        e = Env(ns, KubeClient(kube_admin), kube_admin, postgres_server, redis_server, mongo, urls, hits)
        await _seed(e, core, apps)
        try:
            yield e
        finally:
            for v in e.victims:
                await v.close()
            for runner in runners:
                await runner.cleanup()
            core.delete_namespace(ns)


async def _seed(e: Env, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    """Something for every action to act on."""
    # Deployments: two revisions (rollback), OOMKilled pods (memory), 2 replicas (scale, restart).
    make_deployment(e.api, e.ns, "web", replicas=2, memory="128Mi", image="example/app:1")
    wait_for(lambda: mark_pods_running(core, e.ns, "app=web") and len(mark_pods_running(core, e.ns, "app=web")) == 2,
             what="web pods running")
    apps.patch_namespaced_deployment("web", e.ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:2"}]}}}})
    wait_for(lambda: {rs.metadata.annotations.get("deployment.kubernetes.io/revision")
                      for rs in apps.list_namespaced_replica_set(e.ns).items} >= {"1", "2"}, what="two revisions")

    def settled() -> bool:
        dep = apps.read_namespaced_deployment("web", e.ns)
        pods = mark_pods_running(core, e.ns, "app=web")
        return dep.status.observed_generation == dep.metadata.generation and dep.status.updated_replicas == 2 \
            and len(pods) == 2 and (dep.status.ready_replicas or 0) == 2
    wait_for(settled, timeout=60, what="web rolled out")
    for pod in core.list_namespaced_pod(e.ns, label_selector="app=web").items:
        if pod.metadata.deletion_timestamp is None:
            mark_oomkilled(core, e.ns, pod.metadata.name)
    # PostgreSQL: a table, a sequence, and two sessions running long queries.
    await _pg(e.pg.dsn, "DROP TABLE IF EXISTS dry_run_t; DROP SEQUENCE IF EXISTS dry_run_seq")
    await _pg(e.pg.dsn, "CREATE TABLE dry_run_t (id int PRIMARY KEY, v int); INSERT INTO dry_run_t VALUES (1, 0), (2, 0)")
    await _pg(e.pg.dsn, "CREATE SEQUENCE dry_run_seq")
    for _ in range(2):
        conn = await psycopg.AsyncConnection.connect(e.pg.dsn, autocommit=True, application_name=VICTIM_APP)
        e.victims.append(conn)
        asyncio.get_running_loop().create_task(conn.execute("SELECT pg_sleep(600)"))
    await wait_async(lambda: _pg(e.pg.dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                           "AND state = 'active' AND now() - query_start > interval '1.2 s'", [VICTIM_APP]),
                     lambda rows: rows[0][0] == 2, "victims running for over a second")
    # Mongo: two slow operations.
    e.mongo.add_op(secs_running=120)
    e.mongo.add_op(secs_running=90, op="update", ns="inventory.stock")
    # Redis: locks, and idempotency records the gateway keeps there; gateway breaker OPEN.
    r = aioredis.from_url(e.redis.url)
    try:
        await r.mset({f"lock:purchase:{i}": "1" for i in range(5)})
    finally:
        await r.aclose()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"}) as s:
        async with s.post(f"{e.urls['gateway']}/admin/idempotency/_inject", json={"count": 3, "stale": True}) as resp:
            assert resp.status == 201, await resp.text()
        async with s.post(f"{e.urls['gateway']}/admin/breakers/payments/trip") as resp:
            assert resp.status == 200


# --- the test ------------------------------------------------------------------------------------


def engine_for(e: Env, store: FakeStore, recorder: FakeRecorder) -> Engine:
    def context(obj: dict[str, Any]) -> Any:
        meta = obj["metadata"]
        return make_ctx(e.secrets, namespace=e.ns, name=meta["name"], uid=meta["uid"], kube=e.kube)

    return Engine(store=store, recorder=recorder, registry=REGISTRY, context_factory=context)


def remediation(name: str, action: dict[str, Any], how: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"reason": "issue 21 dry run", "action": copy.deepcopy(action),
                            "approval": {"required": True, "approvedBy": "alice"}}
    annotations: dict[str, str] = {}
    if how == "dryRun":
        spec["dryRun"] = True
    else:
        apply_mode(spec, annotations, "shadow", None)  # exactly what a shadow policy does to its child
        assert spec["dryRun"] is True
    spec["approval"]["approvedSpecDigest"] = spec_digest(spec)  # an approval names the spec it approved
    return {"metadata": {"name": name, "namespace": "dry-run", "annotations": annotations}, "spec": spec}


@pytest.mark.asyncio(loop_scope="module")
async def test_every_action_has_a_case() -> None:
    urls = dict.fromkeys(("gateway", "payments", "reconcile", "sink"), "http://x")
    blank = Env("x", None, None, None, None, None, urls, [])  # type: ignore[arg-type]
    members = {k for action in cases(blank).values() for k in action}
    assert members == set(REGISTRY)


@pytest.mark.parametrize("how", ["dryRun", "shadow"])
async def test_plans_change_nothing(env: Env, how: str) -> None:
    store, recorder = FakeStore(), FakeRecorder()
    engine = engine_for(env, store, recorder)
    before = await witness(env)
    assert len(before["postgres"]["victims"]) == 2 and before["mongo"]["ops"] and before["redis"]["dbsize"] >= 8
    outcomes: dict[str, dict[str, Any]] = {}
    for i, (case, action) in enumerate(cases(env).items()):
        name = f"{how.lower()}-{i}"
        store.add(REMEDIATIONS, remediation(name, action, how))
        phase = await engine.reconcile(env.ns, name)
        st = store.obj(REMEDIATIONS, name, env.ns)["status"]
        completed = next(c for c in st["conditions"] if c["type"] == "Completed")
        assert (phase, completed["reason"]) == ("Succeeded", "DryRun"), f"{case}: {st.get('message')}"
        assert st["plan"], case
        after = await witness(env)
        outcomes[case] = {"outcome": f"{phase}/{completed['reason']}", "countersUnchanged": after == before,
                          "plan": str(st["plan"].get("change") or "")[:90]}
        assert after == before, f"{case} ({how}) changed something"
    assert len(outcomes) == len(cases(env))
    record(f"dry-run-{how.lower()}", {
        "how": "spec.dryRun: true" if how == "dryRun" else "child of a mode: shadow policy (autonomy.apply_mode)",
        "cases": outcomes, "witnesses": sorted(f"{server}.{key}" for server, keys in before.items() for key in keys),
        "victimSessionsAlive": len(before["postgres"]["victims"]), "actionsCovered": len({k for a in cases(env).values() for k in a}),
    })


async def test_the_witness_sees_a_real_run(env: Env) -> None:
    """Positive control: without dryRun the same witness changes (it can fail)."""
    store, recorder = FakeStore(), FakeRecorder()
    engine = engine_for(env, store, recorder)
    before = await witness(env)
    for i, key in enumerate(["postgresStatement(pg_terminate_backend)", "deleteRedisKeys", "killSlowMongoOps",
                             "httpRequest", "scaleWorkload"]):
        body = remediation(f"real-{i}", cases(env)[key], "dryRun")
        body["spec"].pop("dryRun")
        body["spec"]["approval"]["approvedSpecDigest"] = spec_digest(body["spec"])  # approves this spec
        store.add(REMEDIATIONS, body)
        assert await engine.reconcile(env.ns, f"real-{i}") == "Succeeded", store.obj(REMEDIATIONS, f"real-{i}", env.ns)["status"]
    after = await witness(env)
    assert after["postgres"]["victims"] == [] and before["postgres"]["victims"]
    assert after["redis"]["dirty"] > before["redis"]["dirty"] and after["redis"]["dbsize"] < before["redis"]["dbsize"]
    assert len(after["mongo"]["killed"]) > len(before["mongo"]["killed"])
    assert after["http"]["reconcile"] != before["http"]["reconcile"]
    assert after["kube"]["generation"] > before["kube"]["generation"] and "remedy" in after["kube"]["managers"]
