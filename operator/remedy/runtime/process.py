"""The process: one place builds it (settings, clients, the lifecycle, the policy machinery,
shards, loops, the webhook and metrics) and one place stops it.

Why a module: the kopf handlers (handlers.py) only translate events into calls; what those
calls reach is assembled here once, at startup, and kept in kopf's memo.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import config as kube_config

from ..actions.base import ActionContext
from ..actions.registry import REGISTRY
from ..base.config import Settings, load
from ..base.constants import KOPF_ANNOTATION_PREFIX
from ..base.observability import MetricsObserver, serve_metrics
from ..base.redaction import RedactingRecorder, RedactingStore, install_log_filter
from ..clients.access_review import AccessReviewer
from ..clients.admission_probe import AdmissionProbe, probe_namespace
from ..clients.alertmanager import Alertmanager as AlertmanagerClient
from ..clients.connectors import Connectors
from ..clients.egress import EgressPolicy
from ..clients.egress import session_factory as egress_session_factory
from ..clients.kube import KubeClient
from ..lifecycle import escalation
from ..lifecycle.authz import Guard
from ..lifecycle.machine import Lifecycle
from ..policies.holds import Holds
from ..policies.machinery import Policies
from ..policies.silences import SilenceKeeper
from ..triggers import alertmanager
from ..triggers.index import PolicyIndex
from . import history, loops, shards
from .admission_gate import GatedLifecycle, GatedSilences
from .events import ApiRecorder
from .faults import fault_injection_hooks
from .takeover import take_over

log = logging.getLogger("remedy")


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


def build_lifecycle(settings: Settings, kube: KubeClient) -> Lifecycle:
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
                  egress=egress, objects=kube)
    return Lifecycle(store=RedactingStore(kube), recorder=RedactingRecorder(ApiRecorder(kube)), registry=REGISTRY,
                     context_factory=context_factory, guard=guard,
                     observer=MetricsObserver(), max_attempts=settings.max_attempts, prometheus_url=settings.prometheus_url,
                     hooks=fault_injection_hooks(os.environ.get("REMEDY_FAULT_INJECT", "")),
                     heartbeat_interval=settings.heartbeat_seconds, observe_timeout=settings.observe_timeout,
                     escalate=escalation.webhook(settings.escalation_webhook) if settings.escalation_webhook else None)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
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


async def start(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Build the process into ``memo``: clients, the lifecycle, the policy machinery, the alert
    index, shards, the background loops, the webhook and the metrics endpoint."""
    cfg = load()
    memo.settings = cfg
    # Every API call runs in a worker thread; the default pool (cores + 4) queues under alert
    # storms, and the client's connection pool must be at least as large.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="remedy-api"))
    memo.kube = kube_client(cfg)
    # Issue 20: nothing runs while remedy's identity checks are not in force (admission_gate.py).
    memo.admission = AdmissionProbe(memo.kube.api_client, probe_namespace(
        cfg.admission_probe_namespace, cfg.namespace, getattr(memo, "watched_namespaces", None)), cfg.admission_probe,
        cfg.admission_probe_seconds)
    memo.lifecycle = GatedLifecycle(build_lifecycle(cfg, memo.kube), memo.admission, memo.kube, ApiRecorder(memo.kube))
    memo.policies = Policies(memo.kube, ApiRecorder(memo.kube), REGISTRY)
    memo.policies.refresh_requested = asyncio.Queue()
    memo.index = PolicyIndex()
    memo.expiry = history.ExpiryTimers(memo.kube, float(os.environ.get("REMEDY_TTL_SECONDS", "10")))
    memo.background = [asyncio.create_task(loops.refresh_loop(memo, logger)), asyncio.create_task(memo.admission.run())]
    trim_every = float(os.environ.get("REMEDY_MALLOC_TRIM_SECONDS", "30"))
    if trim_every > 0:
        memo.background.append(asyncio.create_task(loops.trim_loop(trim_every)))
    memo.silences = None
    if cfg.alertmanager_url:  # spec.silence and spec.holdWhile talk to Alertmanager's API v2
        am = AlertmanagerClient(cfg.alertmanager_url)
        memo.policies.holds = Holds(am)
        memo.silences = GatedSilences(SilenceKeeper(memo.kube, am, ApiRecorder(memo.kube)), memo.admission)
        memo.background.append(asyncio.create_task(loops.silence_sweeper(memo.silences, logger)))
    # Shards (runtime/shards.py): with REMEDY_SHARDS > 1 this replica acts only on the namespaces
    # of the shards whose Lease it holds; the preferred one is taken before kopf starts watching.
    memo.shards = shards.from_environment(memo.kube, memo.lifecycle.executor_id, cfg.webhook_advertise_url,
                                          lambda shard: take_over(memo, shard, logger))
    if memo.shards is not None:
        try:
            await memo.shards.tick(sweep=False)  # kopf's resume handlers cover what this round takes
        except Exception as exc:  # noqa: BLE001 - the loop keeps trying
            logger.warning("first shard lease round failed: %s", exc)
        memo.background.append(asyncio.create_task(memo.shards.run()))
    # Policy housekeeping as process-wide loops, not kopf timers or daemons per policy (loops.py).
    memo.background.append(asyncio.create_task(loops.history_loop(
        memo, logger, float(os.environ.get("REMEDY_HISTORY_SECONDS", "60")))))
    memo.background.append(asyncio.create_task(loops.prometheus_loop(memo, logger)))
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


async def stop(memo: kopf.Memo) -> None:
    """Cancel the loops, close the webhook, hand the shards over now rather than after the
    lease expires."""
    for task in getattr(memo, "background", []):
        task.cancel()
    runner = getattr(memo, "webhook", None)
    if runner is not None:
        await runner.cleanup()
    keeper = getattr(memo, "shards", None)
    if keeper is not None:
        await keeper.release_all()
