"""One executor at a time, by token and not by clock (issue 21).

Why this exists: an executor frozen past the heartbeat window (SIGSTOP, a long GC pause, a
frozen node) used to wake up and keep writing after another replica took its attempt over: it
wrote ``phase: Pending`` over a Succeeded Remediation. Two rules close that:

- **An epoch, compared and swapped.** The intent write (resourceVersion-locked) records
  ``status.executor`` and ``status.epoch`` (one more than before); a takeover bumps the epoch
  the same way. From then on every status write of that attempt is a compare-and-swap: it is
  sent with the resourceVersion of a copy whose ``epoch`` and ``executor`` are still this
  executor's, so the API server rejects it (409) if anyone wrote since; after a 409 the object
  is read again and the check repeated. An executor that finds another epoch raises
  ``FencedOutError`` and stops without writing. Before each mutating step (executing the
  recorded plan) the engine confirms its epoch the same way; the write to the target itself
  carries the action's precondition (JSON-patch ``test`` ops, pid+backend_start, opid,
  Idempotency-Key), which also stops a write that was already past the confirmation when the
  executor froze.
- **Staleness by the observer's own clock.** Whether another executor's heartbeat is stale is
  judged from when *this* process first saw that heartbeat value (``Liveness``, monotonic), never
  by comparing the heartbeat's timestamp with this host's wall clock: clocks of two hosts
  differ, and a paused process's timestamps say nothing about now. The shard Leases
  (runtime/shards.py) are judged the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..base.errors import RemedyError, RetryableError

log = logging.getLogger("remedy.engine.fencing")
CAS_ROUNDS = 10  # 409s in a row are other writers (a heartbeat of ours, kopf); give up after this many


class FencedOutError(RemedyError):
    """This executor's epoch is no longer the Remediation's: another executor owns the attempt.
    Nothing may be written; the run stops."""

    reason = "FencedOut"


class Store(Protocol):
    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]: ...


def owner(obj: dict[str, Any]) -> tuple[Any, Any]:
    st = obj.get("status") or {}
    return st.get("executor"), st.get("epoch")


async def fenced_patch(store: Store, plural: str, obj: dict[str, Any], changes: dict[str, Any],
                       executor: str, epoch: int) -> dict[str, Any]:
    """Patch status only while (executor, epoch) still own the object: compare-and-swap on
    resourceVersion, starting from ``obj`` (the freshest copy the caller holds)."""
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    current: dict[str, Any] | None = obj
    for _ in range(CAS_ROUNDS):
        if current is None:
            raise FencedOutError(f"{ns}/{name} is gone; executor {executor} epoch {epoch} stops")
        if owner(current) != (executor, epoch):
            holder, held = owner(current)
            raise FencedOutError(f"attempt {(current.get('status') or {}).get('attemptId')} of {ns}/{name} now belongs "
                                 f"to executor {holder} epoch {held}; this executor ({executor}) holds stale epoch "
                                 f"{epoch} and stops without writing")
        try:
            return await store.patch_status(plural, ns, name, changes, current["metadata"]["resourceVersion"])
        except RetryableError as exc:
            if exc.reason != "Conflict":
                raise
        current = await store.get_object(plural, ns, name)
    raise RetryableError(f"{ns}/{name}: {CAS_ROUNDS} conflicting writes in a row while confirming epoch {epoch}",
                         delay=1.0, reason="Conflict")


@dataclass
class Liveness:
    """Seconds since this process first saw each attempt's current heartbeat value.

    The token is (executor, epoch, heartbeatAt) as written by the executor; its content is never
    compared with a clock, only whether it changed. A process that has just started has seen
    nothing yet, so it waits a full window before taking anything over (the safe side).
    """

    clock: Callable[[], float] = time.monotonic
    max_entries: int = 100_000
    _seen: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = field(default_factory=dict)

    def silent_for(self, key: tuple[str, str], status: dict[str, Any]) -> float:
        token = (status.get("executor"), status.get("epoch"), status.get("heartbeatAt"))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or seen[0] != token:
            if len(self._seen) >= self.max_entries:
                self._seen.pop(next(iter(self._seen)))  # oldest first sight goes first
            self._seen[key] = (token, now)
            return 0.0
        return now - seen[1]

    def check_silent(self, key: tuple[str, str], status: dict[str, Any], me: str, stale_after: float) -> None:
        """Raise InProgressElsewhere unless another executor's heartbeat stayed unchanged for
        ``stale_after`` seconds by this process's clock (its own or no executor: nothing to wait for)."""
        if status.get("executor") in (None, me):
            return
        silent = self.silent_for(key, status)
        if silent < stale_after:
            raise RetryableError(
                f"attempt {status.get('attemptId')} is in progress on {status.get('executor')} "
                f"(its heartbeat last changed {silent:.1f}s ago by this operator's clock)",
                delay=stale_after - silent + 0.5, reason="InProgressElsewhere",
            )

    def forget(self, key: tuple[str, str]) -> None:
        self._seen.pop(key, None)
