"""The action contract and the context an action runs in.

An action is a params model (its CRD schema, in remedy.api) plus async functions:

- ``target(params)``: a short human string for printer columns ("Deployment/orders").
- ``plan(ctx, params)``: read the world and say exactly what would change (JSON-able dict).
  Dry run stops here. Raise OverCapError to refuse a plan over its blast-radius cap,
  SkipError when there is nothing safe to do.
- ``execute(ctx, params, plan)``: do exactly the plan, return evidence (JSON-able dict).
  Contract: a RetryableError from execute means *nothing was changed*, so retrying is safe.
- ``verify(ctx, params, plan, result)`` (optional): confirm the effect; raise to fail.
- ``idempotent``: re-running execute with the same recorded plan is harmless. After a crash
  mid-action the engine re-runs idempotent actions and never re-runs the others blindly.
- ``snapshot(ctx, params)`` (optional): evidence taken before a destructive action.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..api.common import ApiModel, SecretKeyRef
from ..clients.connectors import Connectors
from ..clients.kube import KubeClient

P = TypeVar("P", bound=ApiModel)
Evidence = dict[str, Any]


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

    async def secret(self, ref: SecretKeyRef) -> str:
        return await self.kube.read_secret_key(self.namespace, ref)

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
    idempotent: bool = False
    destructive: bool = True
    requires_approval: bool = False  # approval enforced even when spec.approval.required is false
