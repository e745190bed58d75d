"""Thin kopf handlers: translate Kubernetes events into engine calls, nothing else.

This is the one place where remedy's error tree meets kopf's: RetryableError becomes
kopf.TemporaryError (with its delay); everything else was already turned into a Failed or
Skipped phase by the engine, so a handler never crashes on bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import kopf
from kubernetes import config as kube_config

from . import malloc
from .actions.base import ActionContext
from .actions.registry import REGISTRY
from .api.remediation import FINAL_PHASES
from .clients.access_review import AccessReviewer
from .clients.alertmanager import Alertmanager as AlertmanagerClient
from .clients.connectors import Connectors
from .clients.egress import EgressPolicy
from .clients.egress import session_factory as egress_session_factory
from .clients.kube import KubeClient
from .config import Settings, load
from .constants import ANN_FAULT_INJECT, GROUP, KOPF_ANNOTATION_PREFIX, LABEL_POLICY, POLICIES, REMEDIATIONS, VERSION
from .engine import escalation, history, shards
from .engine.authz import Guard
from .engine.gitops_identity import GitOpsConfig, ObjectApi
from .engine.holds import Holds
from .engine.lifecycle import Engine
from .engine.policy import PolicyEngine
from .engine.silences import SilenceKeeper
from .errors import RetryableError
from .observability import MetricsObserver, serve_metrics
from .redaction import RedactingRecorder, RedactingStore, install_log_filter
from .triggers import alertmanager, prometheus
from .triggers.index import PolicyIndex

log = logging.getLogger("remedy")
# The namespaces given with `remedy run -n` (None: cluster-wide); set by the CLI before kopf starts.
WATCHED_NAMESPACES: list[str] | None = None


class ApiRecorder:
    """Kubernetes Events posted through our own client, from any task (the webhook's too),
    without blocking the caller; a failed post is logged, never raised."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self._tasks: set[asyncio.Task[None]] = set()

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(self._post(obj, type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(obj, type_, reason, message)
        except Exception as exc:  # noqa: BLE001 - an event is best effort
            log.debug("event %s on %s not posted: %s", reason, obj.get("metadata", {}).get("name"), exc)


def kube_client(settings: Settings | None = None) -> KubeClient:
    from kubernetes import client

    cfg = settings or load()

    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        api = client.ApiClient()
    except kube_config.ConfigException:
        api = kube_config.new_client_from_config()  # type: ignore[no-untyped-call]
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
    return KubeClient(api, request_timeout=cfg.kube_request_timeout, connect_timeout=cfg.kube_connect_timeout)


def build_engine(settings: Settings, kube: KubeClient) -> Engine:
    def context_factory(obj: dict[str, Any]) -> ActionContext:
        meta = obj["metadata"]
        logger = logging.LoggerAdapter(log, {"remediation": f"{meta['namespace']}/{meta['name']}", "uid": meta["uid"]})
        return ActionContext(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], kube=kube,
                             logger=logger, prometheus_url=settings.prometheus_url, connectors=connectors)

    # Security (issue 13): HTTP only to allowlisted destinations (checked again at connect time),
    # actions only with the requester's RBAC, and secret values redacted from status and Events.
    egress = EgressPolicy.from_text(settings.egress_allow)
    connectors = Connectors(http=egress_session_factory(egress))
    guard = Guard(reviewer=AccessReviewer(kube.api_client) if settings.requester_checks else None,
                  egress=egress, objects=kube, gitops=GitOpsConfig(), apps=ObjectApi(kube))
    return Engine(store=RedactingStore(kube), recorder=RedactingRecorder(ApiRecorder(kube)), registry=REGISTRY,
                  context_factory=context_factory, guard=guard,
                  observer=MetricsObserver(), max_attempts=settings.max_attempts, prometheus_url=settings.prometheus_url,
                  hooks=fault_injection_hooks(os.environ.get("REMEDY_FAULT_INJECT", "")),
                  heartbeat_interval=settings.heartbeat_seconds, observe_timeout=settings.observe_timeout,
                  escalate=escalation.webhook(settings.escalation_webhook) if settings.escalation_webhook else None)


def fault_injection_hooks(spec: str) -> dict[str, Any]:
    """Test-only: ``after_intent:30,after_action:30`` sleeps at those points so a test can
    SIGKILL the operator there. Empty in production (the chart never sets it)."""
    hooks: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        point, _, seconds = item.partition(":")

        async def sleep(obj: dict[str, Any], _s: float = float(seconds or 30)) -> None:
            if (obj.get("metadata", {}).get("annotations") or {}).get(ANN_FAULT_INJECT) == "true":
                log.warning("fault injection: sleeping %ss", _s)
                await asyncio.sleep(_s)

        hooks[point] = sleep
    return hooks


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    # remedy owns .status entirely; kopf keeps its bookkeeping in annotations under its own
    # prefix: kopf ignores every annotation under its storage prefix, and the approved-by annotation
    # must stay visible to update handlers.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    install_log_filter()  # secret values never reach a log line or a kopf-posted Event
    # Peering (HA): a standby takes over once the active replica's lease expires; kopf's
    # default of 60 s is long for remediation, so it is configurable and shorter by default.
    settings.peering.lifetime = int(os.environ.get("REMEDY_PEERING_LIFETIME", "15"))
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    # kopf runs one worker per object with pending events, unbounded by default: a burst of new
    # Remediations is processed all at once, and the allocator keeps that peak (bench/memory.py).
    if os.environ.get("REMEDY_WORKER_LIMIT"):
        settings.queueing.worker_limit = int(os.environ["REMEDY_WORKER_LIMIT"])
    cfg = load()
    memo.settings = cfg
    # Every API call runs in a worker thread; the default pool (cores + 4) queues under alert
    # storms, and the client's connection pool must be at least as large.
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="remedy-api"))
    memo.kube = kube_client(cfg)
    memo.engine = build_engine(cfg, memo.kube)
    memo.policies = PolicyEngine(memo.kube, ApiRecorder(memo.kube), REGISTRY)
    memo.policies.refresh_requested = asyncio.Queue()
    memo.index = PolicyIndex()
    memo.expiry = history.ExpiryTimers(memo.kube, float(os.environ.get("REMEDY_TTL_SECONDS", "10")))
    memo.background = [asyncio.create_task(_refresh_loop(memo, logger))]
    trim_every = float(os.environ.get("REMEDY_MALLOC_TRIM_SECONDS", "30"))
    if trim_every > 0:
        memo.background.append(asyncio.create_task(_trim_loop(trim_every)))
    memo.silences = None
    if cfg.alertmanager_url:  # spec.silence and spec.holdWhile talk to Alertmanager's API v2
        am = AlertmanagerClient(cfg.alertmanager_url)
        memo.policies.holds = Holds(am)
        memo.silences = SilenceKeeper(memo.kube, am, ApiRecorder(memo.kube))
        memo.background.append(asyncio.create_task(_silence_sweeper(memo.silences, logger)))
    # Shards (engine/shards.py): with REMEDY_SHARDS > 1 this replica acts only on the namespaces
    # of the shards whose Lease it holds; the preferred one is taken before kopf starts watching.
    memo.shards = shards.from_environment(memo.kube, memo.engine.executor_id, cfg.webhook_advertise_url,
                                          lambda shard: _take_over(memo, shard, logger))
    if memo.shards is not None:
        try:
            await memo.shards.tick(sweep=False)  # kopf's resume handlers cover what this round takes
        except Exception as exc:  # noqa: BLE001 - the loop keeps trying
            logger.warning("first shard lease round failed: %s", exc)
        memo.background.append(asyncio.create_task(memo.shards.run()))
    # Policy housekeeping as process-wide loops, not kopf timers or daemons per policy: kopf keeps
    # every object's full body once a resource has any timer or daemon (the reason Remediations
    # have none either; tests/unit/test_kopf_per_object_memory.py).
    memo.background.append(asyncio.create_task(_history_loop(
        memo, logger, float(os.environ.get("REMEDY_HISTORY_SECONDS", "60")))))
    memo.background.append(asyncio.create_task(_prometheus_loop(memo, logger)))
    if cfg.webhook_port:
        app = alertmanager.make_app(memo.policies, memo.index, alertmanager.TokenSource(cfg.webhook_token_file),
                                    cfg.webhook_max_body, require_token=cfg.webhook_token_file is not None,
                                    read_timeout=cfg.webhook_read_timeout, shards=memo.shards)
        try:
            memo.webhook = await alertmanager.serve(app, cfg.webhook_host, cfg.webhook_port)
            logger.info("alert webhook listening on %s:%s", cfg.webhook_host, cfg.webhook_port)
        except OSError as exc:
            logger.error("webhook port %s unavailable: %s", cfg.webhook_port, exc)
    if cfg.metrics_port:
        try:
            serve_metrics(cfg.metrics_port, host="0.0.0.0" if cfg.webhook_host == "0.0.0.0" else "127.0.0.1")
        except OSError as exc:
            logger.warning("metrics port %s unavailable: %s", cfg.metrics_port, exc)


def _owned(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """kopf filter: this replica acts on the object (always, unless sharded: engine/shards.py)."""
    keeper = getattr(memo, "shards", None)
    return keeper is None or keeper.owns(namespace)


async def _take_over(memo: kopf.Memo, shard: int, logger: logging.Logger) -> None:
    """A shard just acquired: its policies are refreshed and its unfinished Remediations driven,
    since kopf does not replay objects whose handlers another replica already ran."""
    count = memo.shards.shards

    async def listed(plural: str) -> list[dict[str, Any]]:
        patterns = WATCHED_NAMESPACES
        if patterns is None or any(ch in pat for pat in patterns for ch in "*?!,"):
            # `-n 'team-*'` globs: list cluster-wide and keep what kopf itself would watch
            # (kopf's own matcher, so both agree on exclusions like 'team-*,!team-x').
            from kopf._cogs.structs.references import match_namespace

            items = await memo.kube.list_all_objects(plural, None)
            return [o for o in items if patterns is None
                    or any(match_namespace(o["metadata"]["namespace"], pat) for pat in patterns)]
        found: list[dict[str, Any]] = await memo.kube.list_all_objects(plural, patterns)
        return found

    policies = [p for p in await listed(POLICIES) if shards.shard_of(p["metadata"]["namespace"], count) == shard]
    for p in policies:
        memo.index.upsert(p)
        with contextlib.suppress(Exception):
            await memo.policies.refresh(p["metadata"]["namespace"], p["metadata"]["name"])
    unfinished = [r for r in await listed(REMEDIATIONS)
                  if shards.shard_of(r["metadata"]["namespace"], count) == shard
                  and (r.get("status") or {}).get("phase") not in FINAL_PHASES]
    logger.info("shard %s taken over: %d policies refreshed, %d unfinished Remediations to drive",
                shard, len(policies), len(unfinished))
    limit = asyncio.Semaphore(16)

    async def drive(ns: str, name: str) -> None:
        async with limit:
            for _ in range(50):  # bounded: a Remediation still not final is left to its own events
                if not memo.shards.owns(ns):
                    return
                try:
                    phase = await memo.engine.reconcile(ns, name)
                except RetryableError as exc:
                    await asyncio.sleep(max(0.5, exc.delay))
                    continue
                except Exception as exc:  # noqa: BLE001 - one object's failure must not stop the sweep
                    logger.warning("takeover of %s/%s failed: %s", ns, name, exc)
                    return
                if phase is None or phase in FINAL_PHASES or phase == "AwaitingApproval":
                    return
                await asyncio.sleep(1.0)

    await asyncio.gather(*(drive(r["metadata"]["namespace"], r["metadata"]["name"]) for r in unfinished))


@kopf.on.resume(GROUP, VERSION, "remediations", when=_owned)
@kopf.on.create(GROUP, VERSION, "remediations", when=_owned)
@kopf.on.update(GROUP, VERSION, "remediations", when=_owned)
async def reconcile_remediation(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        await memo.engine.reconcile(namespace, name)
    except RetryableError as exc:
        raise kopf.TemporaryError(exc.message, delay=exc.delay) from None


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "background", []):
        task.cancel()
    runner = getattr(memo, "webhook", None)
    if runner is not None:
        await runner.cleanup()
    keeper = getattr(memo, "shards", None)
    if keeper is not None:  # hand the shards over now rather than after the lease expires
        await keeper.release_all()


async def _silence_sweeper(keeper: SilenceKeeper, logger: logging.Logger) -> None:
    """Expire remedy's silences whose child is final or gone: at startup (after a crash) and
    every REMEDY_SILENCE_SWEEP_SECONDS."""
    interval = float(os.environ.get("REMEDY_SILENCE_SWEEP_SECONDS", "30"))
    while True:
        try:
            await keeper.sweep()
        except Exception as exc:  # noqa: BLE001 - Alertmanager down: try again next round
            logger.warning("silence sweep failed: %s", exc)
        await asyncio.sleep(interval)


async def _trim_loop(interval: float) -> None:
    """Hand memory freed after a burst back to the kernel (remedy/malloc.py)."""
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(malloc.trim)


async def _refresh_loop(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Serialises policy refreshes requested by child outcomes, escalation timers and counters,
    and refreshes every policy every REMEDY_POLICY_REFRESH_SECONDS (status from children, due
    escalations), one at a time instead of a kopf timer per policy."""
    policies: PolicyEngine = memo.policies
    queue = policies.refresh_requested
    assert queue is not None
    every = float(os.environ.get("REMEDY_POLICY_REFRESH_SECONDS", "30"))
    next_all = time.monotonic() + min(5.0, every)
    while True:
        await asyncio.sleep(1.0)
        keys = set(policies.has_pending())
        if time.monotonic() >= next_all:
            next_all = time.monotonic() + every
            keys |= {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies.known_policies()}
        while not queue.empty():
            keys.add(queue.get_nowait())
        for ns, name in keys:
            if not _owned(ns, memo):
                continue
            try:
                await policies.refresh(ns, name)
            except Exception as exc:  # noqa: BLE001 - one policy's failure must not stop the loop
                logger.warning("refresh of policy %s/%s failed: %s", ns, name, exc)


# --- RemediationPolicy ----------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "remediationpolicies")
@kopf.on.create(GROUP, VERSION, "remediationpolicies")
@kopf.on.update(GROUP, VERSION, "remediationpolicies")
async def reconcile_policy(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.index.upsert(dict(body))  # every replica routes alerts for every policy (forwarding)
    if not _owned(namespace, memo):
        return
    try:
        await memo.policies.refresh(namespace, name)
    except RetryableError as exc:
        raise kopf.TemporaryError(exc.message, delay=exc.delay) from None


@kopf.on.delete(GROUP, VERSION, "remediationpolicies", optional=True)
async def forget_policy(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.index.remove(namespace, name)


def _keeps_history(spec: dict[str, Any], **_: Any) -> bool:
    return spec.get("successfulHistoryLimit") is not None or spec.get("failedHistoryLimit") is not None


async def _history_loop(memo: kopf.Memo, logger: logging.Logger, interval: float) -> None:
    """History limits (engine.history): delete finished children beyond them that no guard
    needs, for every owned policy that sets a limit, every REMEDY_HISTORY_SECONDS."""
    await asyncio.sleep(min(10.0, interval))
    while True:
        for policy in memo.policies.known_policies():
            meta, spec = policy["metadata"], policy.get("spec") or {}
            if not _keeps_history(spec) or not _owned(meta["namespace"], memo):
                continue
            try:
                for d in await history.collect_policy(memo.kube, meta["namespace"], meta["name"], dict(spec), time.time()):
                    logger.info("deleted Remediation %s/%s: %s", d.namespace, d.name, d.why)
            except Exception as exc:  # noqa: BLE001 - one policy's failure must not stop the others
                logger.warning("history of policy %s/%s failed: %s", meta["namespace"], meta["name"], exc)
        await asyncio.sleep(interval)


# An event handler, not a kopf timer: any timer or daemon on "remediations" makes kopf keep each
# object's full body for as long as it exists (engine/history.py ExpiryTimers says why).
@kopf.on.event(GROUP, VERSION, "remediations", labels={LABEL_POLICY: kopf.ABSENT})
async def schedule_expiry(body: kopf.Body, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    """ttlSecondsAfterFinished of a Remediation without a policy (a policy's children go with their policy)."""
    if _owned(body.get("metadata", {}).get("namespace"), memo):
        memo.expiry.observe(dict(body), type)


async def _prometheus_loop(memo: kopf.Memo, logger: logging.Logger) -> None:
    """The Prometheus trigger of every owned policy that has one, each at its own interval, at
    most 8 queries at a time; a slow query delays only its own policy."""
    from .api.common import parse_duration

    due: dict[tuple[str, str], float] = {}
    running: dict[tuple[str, str], asyncio.Task[None]] = {}
    slots = asyncio.Semaphore(8)

    async def poll(key: tuple[str, str]) -> None:
        async with slots:
            try:
                policy = await memo.kube.get_object("remediationpolicies", *key)
                if policy is None or not ((policy.get("spec") or {}).get("trigger") or {}).get("prometheus"):
                    return
                await prometheus.poll_once(memo.policies, policy, memo.settings.prometheus_url)
            except Exception as exc:  # noqa: BLE001 - keep polling; the condition says what failed
                logger.warning("prometheus poll of %s/%s failed: %s", *key, exc)

    while True:
        now = time.monotonic()
        live = set()
        for policy in memo.policies.known_policies():
            meta = policy["metadata"]
            trig = ((policy.get("spec") or {}).get("trigger") or {}).get("prometheus")
            key = (meta["namespace"], meta["name"])
            if not trig or not _owned(key[0], memo):
                continue
            live.add(key)
            if key in running and not running[key].done():
                continue
            if now >= due.get(key, 0.0):
                due[key] = now + parse_duration(str(trig.get("interval") or "15s"))
                running[key] = asyncio.create_task(poll(key))
        for key in [k for k in due if k not in live]:  # deleted, trigger removed, or shard lost
            due.pop(key, None)
            running.pop(key, None)
        await asyncio.sleep(0.5)


@kopf.on.event(GROUP, VERSION, "remediationpolicies")
async def policy_changed(body: kopf.Body, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    memo.policies.observe_policy(dict(body), type)


@kopf.on.event(GROUP, VERSION, "remediations", labels={LABEL_POLICY: kopf.PRESENT})
async def child_changed(body: kopf.Body, namespace: str, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    memo.policies.observe_child(dict(body), type)  # every replica's guard cache sees every child
    if not _owned(namespace, memo):
        return
    if memo.silences is not None:
        await memo.silences.on_child(dict(body), type)
    phase = (body.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed", "Skipped"):
        await memo.policies.refresh_requested.put((namespace, body["metadata"]["labels"][LABEL_POLICY]))
