"""Thin kopf handlers: translate Kubernetes events into calls, nothing else.

What the calls reach is built once by runtime/process.py. This is the one place where remedy's
error tree meets kopf's: RetryableError becomes kopf.TemporaryError (with its delay);
everything else was already turned into a Failed or Skipped phase by the lifecycle, so a
handler never crashes on bad input.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .base.constants import FINAL_PHASES, GROUP, LABEL_POLICY, VERSION
from .base.errors import RetryableError
from .runtime import loops, process


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    process.configure_kopf(settings)
    await process.start(memo, logger)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await process.stop(memo)


def _owned(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """kopf filter: this replica acts on the object (always, unless sharded: runtime/shards.py)."""
    return loops.owned(namespace, memo)


# --- Remediation ----------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "remediations", when=_owned)
@kopf.on.create(GROUP, VERSION, "remediations", when=_owned)
@kopf.on.update(GROUP, VERSION, "remediations", when=_owned)
async def reconcile_remediation(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        await memo.lifecycle.reconcile(namespace, name, dict(body))
    except RetryableError as exc:
        raise kopf.TemporaryError(exc.message, delay=exc.delay) from None


# An event handler, not a kopf timer: any timer or daemon on "remediations" makes kopf keep each
# object's full body for as long as it exists (runtime/history.py ExpiryTimers says why).
@kopf.on.event(GROUP, VERSION, "remediations", labels={LABEL_POLICY: kopf.ABSENT})
async def schedule_expiry(body: kopf.Body, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    """ttlSecondsAfterFinished of a Remediation without a policy (a policy's children go with their policy)."""
    if _owned(body.get("metadata", {}).get("namespace"), memo):
        memo.expiry.observe(dict(body), type)


@kopf.on.event(GROUP, VERSION, "remediations", labels={LABEL_POLICY: kopf.PRESENT})
async def child_changed(body: kopf.Body, namespace: str, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    memo.policies.observe_child(dict(body), type)  # every replica's guard cache sees every child
    if not _owned(namespace, memo):
        return
    if memo.silences is not None:
        await memo.silences.on_child(dict(body), type)
    phase = (body.get("status") or {}).get("phase")
    if phase in FINAL_PHASES:
        await memo.policies.refresh_requested.put((namespace, body["metadata"]["labels"][LABEL_POLICY]))


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


@kopf.on.event(GROUP, VERSION, "remediationpolicies")
async def policy_changed(body: kopf.Body, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    memo.policies.observe_policy(dict(body), type)
