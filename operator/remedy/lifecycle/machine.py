"""The Remediation lifecycle: level-based, exactly once, visible.

    (new) -> Pending -> [AwaitingApproval] -> Running -> [Verifying] -> Succeeded
                                                 \\-> Failed | Skipped (from any step)

Each call of ``reconcile`` reads the object fresh and advances it from what status says,
never from a diff. Before acting it records intent (attemptId, plan, phase Running) with an
optimistic lock on resourceVersion, so only one writer can claim an attempt; after acting it
records the outcome.

Ambiguous outcomes are observed, never re-planned. When a send's outcome is unknown (the
action raised AmbiguousOutcomeError: timeout, reset or 5xx after sending; ``spec.timeout``
cancelled it; or the lifecycle finds ``Running`` that no live executor owns because the operator
died), the lifecycle calls the action's ``observe`` probe against the *recorded* plan:
Applied -> verification; NotApplied -> execute the recorded plan again (with its
precondition; bounded by max attempts); CannotTell -> Failed/OutcomeUnknown plus an
escalation (Warning Event and the lifecycle's ``escalate`` hook). Only a RetryableError, whose
contract is "nothing changed", sends the Remediation back to Pending to plan again; a
TargetChanged conflict also posts a ``TargetChanged`` Event saying what changed.

A final Remediation is never run again; a spec edit only moves ``observedGeneration``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..actions.base import ActionDef
from ..api.objects import view
from ..base.errors import RetryableError
from .authz import Guard
from .fencing import Liveness
from .ports import ContextFactory, Observer, Recorder, Store
from .run import PLURAL, Run


@dataclass
class Lifecycle:
    """The lifecycle of this process: its ports and limits, and one pass (run.py) at a time per object."""

    store: Store
    recorder: Recorder
    registry: dict[str, ActionDef[Any]]
    context_factory: ContextFactory
    observer: Observer | None = None
    max_attempts: int = 5
    # Executor deaths (SIGKILL, node loss, eviction) are not failures of the action, so they do
    # not use up max_attempts; this separate, larger budget stops a poison pill (an action that
    # kills the operator every time) from crash-looping forever.
    max_interruptions: int = 25
    prometheus_url: str | None = None
    hooks: dict[str, Any] = field(default_factory=dict)  # test seam: called at named points
    executor_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}")
    heartbeat_interval: float = 5.0
    guard: Guard | None = None  # requester RBAC + egress allowlist (lifecycle/authz.py); None: unchecked
    observe_timeout: float = 30.0
    # Called when an outcome stays unknown (CannotTell): a human must look. Default: Event + log.
    escalate: Any = None  # async (obj, message) -> None
    # When another executor's heartbeat went silent, by this process's monotonic clock (fencing.py).
    liveness: Liveness = field(default_factory=Liveness)

    # One pass at a time per object in this process: kopf serialises its own handler calls, but
    # a shard takeover sweep (runtime/shards.py) may drive the same object meanwhile.
    _passes: dict[tuple[str, str], tuple[asyncio.Lock, int]] = field(default_factory=dict)

    async def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> str | None:
        """Advance one Remediation as far as possible; returns its phase afterwards.

        ``body``: the object as the watch event delivered it. A first pass (no phase in status
        yet) starts from it instead of a GET: its first status write is locked on that body's
        resourceVersion, so a stale body costs one 409, after which the pass starts over from a
        fresh read. Any other pass reads the object fresh.

        Raises RetryableError (mapped to kopf.TemporaryError by the handlers) to be called again.
        """
        key = (namespace, name)
        lock, users = self._passes.get(key) or (asyncio.Lock(), 0)
        self._passes[key] = (lock, users + 1)
        try:
            async with lock:
                if body is not None and not view(body).status.get("phase"):
                    try:
                        return await Run(self, body).advance()
                    except RetryableError as exc:
                        if exc.reason != "Conflict":
                            raise
                obj = await self.store.get_object(PLURAL, namespace, name)
                if obj is None:
                    return None
                return await Run(self, obj).advance()
        finally:
            lock, users = self._passes[key]
            if users <= 1:
                del self._passes[key]
            else:
                self._passes[key] = (lock, users - 1)


