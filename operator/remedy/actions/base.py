"""The action contract and the context an action runs in.

An action is a params model (its CRD schema, in remedy.api) plus async functions:

- ``target(params)``: a short human string for printer columns ("Deployment/orders").
- ``plan(ctx, params)``: read the world and say exactly what would change (JSON-able dict).
  Dry run stops here. Raise OverCapError to refuse a plan over its blast-radius cap,
  SkipError when there is nothing safe to do.
- ``execute(ctx, params, plan)``: do exactly the plan, return evidence (JSON-able dict).
  Contract on failure, by error type:
    * RetryableError: *nothing was changed* (connect refused, 429, a precondition conflict);
      the lifecycle may plan again.
    * AmbiguousOutcomeError: a mutating request was sent and its outcome is unknown (timeout,
      connection reset, 5xx/504 after sending). The lifecycle never plans again after this; it
      calls ``observe``.
    * PermanentError: the Remediation ends Failed.
  Every write carries a precondition on what the plan read (resourceVersion, JSON-patch
  ``test`` ops, pid+backend_start, opid...), so re-applying a recorded plan cannot overwrite
  a change someone made since. The lifecycle confirms before execute that this executor still
  owns the attempt (its epoch, lifecycle/fencing.py); an action with several mutating steps
  calls ``await ctx.still_mine()`` before each later one (FencedOutError stops it).
- ``observe(ctx, params, plan)`` (optional): the probe for ambiguous outcomes. Called after an
  AmbiguousOutcomeError, after ``spec.timeout`` cancelled execute, and when the lifecycle finds an
  attempt ``Running`` that no live executor owns (operator death). It re-reads the target and
  compares it with the *recorded* plan; it must not change anything. It returns one of:
    * ``Applied(detail)``: the plan's effect is visible (restart: the stamp is on the
      template; scale: replicas equal the planned count; rollback: the template equals the
      planned one; memory: limits equal the planned ones; postgres, mongo: no backend or
      operation matching the plan's filters and plan-time bound is still there (planned_set.py);
      redis: the planned keys are gone). The lifecycle continues to verification; execute is not run again.
    * ``NotApplied(detail)``: re-applying the recorded plan (never a new plan) is safe and
      needed: the target shows the effect absent, or the receiver deduplicates by an
      Idempotency-Key derived from the Remediation uid, so a repeat cannot act twice. The
      lifecycle runs ``execute(ctx, params, plan)`` again with the same plan.
    * ``CannotTell(detail)``: the target cannot say (e.g. an HTTP endpoint declared without
      idempotency support). The Remediation ends Failed with reason OutcomeUnknown and an
      escalation (Warning Event ``OutcomeUnknown`` plus the notify hook).
  ``observe`` may raise RetryableError (could not read the target now; the lifecycle asks
  again later, still without planning again). Without ``observe``, the lifecycle treats an
  ``idempotent`` action as NotApplied (re-run the recorded plan) and any other as CannotTell.
- ``verify(ctx, params, plan, result)`` (optional): confirm the effect; raise to fail.
- ``idempotent``: re-running execute with the same recorded plan is harmless.
- ``snapshot(ctx, params)`` (optional): evidence taken before a destructive action; the lifecycle
  calls it only when ``destructive`` is set, and records it in ``status.evidence``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..api.common import ApiModel, SecretKeyRef
from ..base import redaction
from ..base.errors import RetryableError, SecretRefError
from ..clients.connectors import Connectors
from ..clients.kube import KubeClient

P = TypeVar("P", bound=ApiModel)
Evidence = dict[str, Any]


@dataclass(frozen=True)
class Applied:
    """observe: the recorded plan's effect is visible on the target."""

    detail: str


@dataclass(frozen=True)
class NotApplied:
    """observe: the effect is absent (or a repeat is deduplicated by the receiver): re-apply the recorded plan."""

    detail: str


@dataclass(frozen=True)
class CannotTell:
    """observe: the target cannot say whether the plan was applied."""

    detail: str


Observation = Applied | NotApplied | CannotTell


@dataclass
class ActionContext:
    """What an action may touch: its own namespace, Secrets there, and the connectors."""

    namespace: str
    name: str
    uid: str
    kube: KubeClient
    connectors: Connectors = field(default_factory=Connectors)
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("remedy.actions")
    )
    prometheus_url: str | None = None
    # The plan of an earlier attempt whose precondition failed (TargetChanged), if any: a new
    # plan compares against it so it never undoes a change a person made in between.
    previous_plan: Evidence | None = None
    # Set by the lifecycle while an attempt executes: confirms (compare-and-swap on the
    # Remediation) that this executor still owns the attempt; raises FencedOutError if not.
    # Actions with several mutating steps call ``still_mine()`` before each later step.
    confirm: Callable[[], Awaitable[None]] | None = None

    async def still_mine(self) -> None:
        if self.confirm is not None:
            await self.confirm()

    async def secret(self, ref: SecretKeyRef) -> str:
        value = await self.kube.read_secret_key(self.namespace, ref)
        # Every encoding of it is masked from now on in status, Events and logs (remedy.redaction);
        # a large value is indexed in a worker thread so the event loop keeps serving meanwhile.
        try:
            if len(value) > redaction.INLINE_BYTES:
                await asyncio.to_thread(redaction.register, value)
            else:
                redaction.register(value)
        except redaction.SecretTooLargeError as exc:
            raise SecretRefError(f"Secret {self.namespace}/{ref.name} key {ref.key!r}: {exc}; nothing was run",
                                 reason="SecretTooLarge") from None
        except redaction.IndexFullError as exc:
            # Fail closed: a value that cannot be redacted is not used.
            raise RetryableError(f"Secret {self.namespace}/{ref.name} not used: {exc}", delay=60.0,
                                 reason="RedactionIndexFull") from None
        return value

    async def optional_secret(self, ref: SecretKeyRef | None) -> str | None:
        return None if ref is None else await self.secret(ref)


@dataclass(frozen=True)
class ActionDef(Generic[P]):
    name: str
    params: type[P]
    target: Callable[[P], str]
    plan: Callable[[ActionContext, P], Awaitable[Evidence]]
    execute: Callable[[ActionContext, P, Evidence], Awaitable[Evidence]]
    verify: Callable[[ActionContext, P, Evidence, Evidence], Awaitable[Evidence]] | None = None
    snapshot: Callable[[ActionContext, P], Awaitable[Evidence]] | None = None
    observe: Callable[[ActionContext, P, Evidence], Awaitable[Observation]] | None = None
    idempotent: bool = False
    destructive: bool = True  # changes or removes state: snapshot() evidence is taken before acting
    requires_approval: bool = False  # approval enforced even when spec.approval.required is false
