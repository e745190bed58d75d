"""The process-wide background loops: policy refreshes, history limits, the Prometheus
trigger, the silence sweeper and the malloc trim.

Why loops and not kopf timers or daemons per policy: kopf keeps every object's full body once
a resource has any timer or daemon (the reason Remediations have none either;
tests/unit/test_kopf_per_object_memory.py). Each loop acts only on what this replica owns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import kopf

from ..api.common import parse_duration
from ..base import malloc
from ..policies.machinery import Policies
from ..policies.silences import SilenceKeeper
from ..triggers import prometheus
from . import history


def owned(namespace: str | None, memo: kopf.Memo) -> bool:
    """This replica acts on the namespace (always, unless sharded: runtime/shards.py)."""
    keeper = getattr(memo, "shards", None)
    return keeper is None or keeper.owns(namespace)


async def silence_sweeper(keeper: SilenceKeeper, logger: logging.Logger) -> None:
    """Expire remedy's silences whose child is final or gone: at startup (after a crash) and
    every REMEDY_SILENCE_SWEEP_SECONDS."""
    interval = float(os.environ.get("REMEDY_SILENCE_SWEEP_SECONDS", "30"))
    while True:
        try:
            await keeper.sweep()
        except Exception as exc:  # noqa: BLE001 - Alertmanager down: try again next round
            logger.warning("silence sweep failed: %s", exc)
        await asyncio.sleep(interval)


async def trim_loop(interval: float) -> None:
    """Hand memory freed after a burst back to the kernel (remedy/base/malloc.py)."""
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(malloc.trim)


async def refresh_loop(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Serialises policy refreshes requested by child outcomes, escalation timers and counters,
    and refreshes every policy every REMEDY_POLICY_REFRESH_SECONDS (status from children, due
    escalations), one at a time instead of a kopf timer per policy."""
    policies: Policies = memo.policies
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
            if not owned(ns, memo):
                continue
            try:
                await policies.refresh(ns, name)
            except Exception as exc:  # noqa: BLE001 - one policy's failure must not stop the loop
                logger.warning("refresh of policy %s/%s failed: %s", ns, name, exc)


def _keeps_history(spec: dict[str, Any]) -> bool:
    return spec.get("successfulHistoryLimit") is not None or spec.get("failedHistoryLimit") is not None


async def history_loop(memo: kopf.Memo, logger: logging.Logger, interval: float) -> None:
    """History limits (runtime/history.py): delete finished children beyond them that no guard
    needs, for every owned policy that sets a limit, every REMEDY_HISTORY_SECONDS."""
    await asyncio.sleep(min(10.0, interval))
    while True:
        for policy in memo.policies.known_policies():
            meta, spec = policy["metadata"], policy.get("spec") or {}
            if not _keeps_history(spec) or not owned(meta["namespace"], memo):
                continue
            try:
                for d in await history.collect_policy(memo.kube, meta["namespace"], meta["name"], dict(spec), time.time()):
                    logger.info("deleted Remediation %s/%s: %s", d.namespace, d.name, d.why)
            except Exception as exc:  # noqa: BLE001 - one policy's failure must not stop the others
                logger.warning("history of policy %s/%s failed: %s", meta["namespace"], meta["name"], exc)
        await asyncio.sleep(interval)


async def prometheus_loop(memo: kopf.Memo, logger: logging.Logger) -> None:
    """The Prometheus trigger of every owned policy that has one, each at its own interval, at
    most 8 queries at a time; a slow query delays only its own policy."""
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
            if not trig or not owned(key[0], memo):
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
