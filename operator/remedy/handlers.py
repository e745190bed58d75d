"""Thin kopf handlers: translate Kubernetes events into engine calls, nothing else.

This is the one place where remedy's error tree meets kopf's: RetryableError becomes
kopf.TemporaryError (with its delay); everything else was already turned into a Failed or
Skipped phase by the engine, so a handler never crashes on bad input.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
from kubernetes import config as kube_config

from . import GROUP, VERSION
from .actions.base import ActionContext
from .actions.registry import REGISTRY
from .clients.kube import KubeClient
from .config import Settings, load
from .engine.lifecycle import Engine
from .errors import RetryableError
from .observability import MetricsObserver, serve_metrics

log = logging.getLogger("remedy")


class KopfRecorder:
    """Kubernetes Events through kopf's poster (batched, non-blocking)."""

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        body = {
            "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": obj.get("kind", "Remediation"),
            "metadata": obj["metadata"],
        }
        (kopf.warn if type_ == "Warning" else kopf.info)(body, reason=reason, message=message)


def kube_client() -> KubeClient:
    from kubernetes import client

    try:
        kube_config.load_incluster_config()
        return KubeClient(client.ApiClient())
    except kube_config.ConfigException:
        return KubeClient(kube_config.new_client_from_config())


def build_engine(settings: Settings, kube: KubeClient) -> Engine:
    def context_factory(obj: dict[str, Any]) -> ActionContext:
        meta = obj["metadata"]
        logger = logging.LoggerAdapter(log, {"remediation": f"{meta['namespace']}/{meta['name']}", "uid": meta["uid"]})
        return ActionContext(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], kube=kube,
                             logger=logger, prometheus_url=settings.prometheus_url)

    return Engine(store=kube, recorder=KopfRecorder(), registry=REGISTRY, context_factory=context_factory,
                  observer=MetricsObserver(), max_attempts=settings.max_attempts, prometheus_url=settings.prometheus_url,
                  hooks=fault_injection_hooks(os.environ.get("REMEDY_FAULT_INJECT", "")))


def fault_injection_hooks(spec: str) -> dict[str, Any]:
    """Test-only: ``after_intent:30,after_action:30`` sleeps at those points so a test can
    SIGKILL the operator there. Empty in production (the chart never sets it)."""
    hooks: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        point, _, seconds = item.partition(":")

        async def sleep(obj: dict[str, Any], _s: float = float(seconds or 30)) -> None:
            if (obj.get("metadata", {}).get("annotations") or {}).get("remedy.dev/fault-inject") == "true":
                log.warning("fault injection: sleeping %ss", _s)
                await asyncio.sleep(_s)

        hooks[point] = sleep
    return hooks


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    # remedy owns .status entirely; kopf keeps its bookkeeping in annotations under its own
    # prefix: kopf ignores every annotation under its storage prefix, and remedy.dev/approved-by
    # must stay visible to update handlers.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"kopf.{GROUP}")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"kopf.{GROUP}", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    cfg = load()
    memo.settings = cfg
    memo.kube = kube_client()
    memo.engine = build_engine(cfg, memo.kube)
    if cfg.metrics_port:
        try:
            serve_metrics(cfg.metrics_port, host="0.0.0.0" if cfg.webhook_host == "0.0.0.0" else "127.0.0.1")
        except OSError as exc:
            logger.warning("metrics port %s unavailable: %s", cfg.metrics_port, exc)


@kopf.on.resume(GROUP, VERSION, "remediations")
@kopf.on.create(GROUP, VERSION, "remediations")
@kopf.on.update(GROUP, VERSION, "remediations")
async def reconcile_remediation(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        await memo.engine.reconcile(namespace, name)
    except RetryableError as exc:
        raise kopf.TemporaryError(exc.message, delay=exc.delay) from None
