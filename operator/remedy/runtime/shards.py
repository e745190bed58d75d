"""Shards: N operator replicas split the work by namespace, one coordination.k8s.io Lease per shard.

Why: kopf peering is active/passive, so one process holds every object. With ``REMEDY_SHARDS=N``
each namespace belongs to shard ``shard_of(namespace, N)`` (a stable hash, the same in every
process and Python version), and a replica acts only on namespaces of the shards whose Lease
(``remedy-shard-<i>`` in the operator's namespace) it holds:

* A replica prefers one shard (``REMEDY_SHARD_INDEX``, or the StatefulSet ordinal at the end of
  its pod name) and takes it at once when free. It takes another shard only when that Lease has
  not been renewed for ``leaseDurationSeconds`` as seen by *its own clock* (the holder died), or
  was never created after a grace of one lease duration (its preferred replica never came).
* A replica that holds a shard it does not prefer gives it back when the preferred replica asks
  (the ``ANN_SHARD_WANTED_BY`` annotation on the Lease): it stops acting on it first, then clears the
  holder, so a restarted replica gets its share back without waiting for anyone to die.
* A holder keeps acting on a shard until it sees another holder on the Lease, even when its
  renewals are late. No "renew deadline": kopf's handler filters consult ``owns``, and an
  event filtered out is gone (kopf does not replay it), so a shard that nobody owns for a few
  seconds under load would silently drop the objects created meanwhile (seen in bench/shards.py
  with 2,000 Remediations before this rule). Two replicas acting at once is safe (below); a
  shard nobody acts on is not.

Leases decide who *starts* work; they are not what makes it exactly-once. Two replicas may both
believe they own a shard for a moment around a handoff; the lifecycle's optimistic lock on the
intent write and its executor heartbeat (lifecycle/machine.py) still let only one run an attempt,
and deterministic child names make the API server the arbiter of alert dedup.

A newly acquired shard is swept: ``on_acquired`` gets the shard number and the handlers reconcile
every unfinished Remediation and refresh every policy of its namespaces (kopf does not replay
objects whose handlers another replica already ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..api.objects import view
from ..base.constants import ANN_SHARD_WANTED_BY, ANN_SHARD_WEBHOOK, SHARD_LEASE_PREFIX
from ..base.errors import RemedyError

log = logging.getLogger("remedy.shards")


def shard_of(namespace: str, shards: int) -> int:
    """The shard owning ``namespace``: its SHA-256 as a number in [0, 1) times ``shards``, so
    shard i owns the hash range [i/N, (i+1)/N)."""
    if shards <= 1:
        return 0
    h = int.from_bytes(hashlib.sha256(namespace.encode()).digest()[:8], "big")
    return (h * shards) >> 64


def preferred_from_pod_name(name: str, shards: int) -> int | None:
    """A StatefulSet pod ``remedy-2`` prefers shard 2 (mod N); other names prefer none."""
    m = re.search(r"-(\d+)$", name)
    return int(m.group(1)) % shards if m else None


class LeaseStore(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def write_lease(self, namespace: str, body: dict[str, Any], *, create: bool) -> dict[str, Any] | None: ...


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Seen:
    """What this replica last saw of a Lease, and when by its own monotonic clock."""

    holder: str | None
    renew: str | None
    since: float


@dataclass
class ShardKeeper:
    store: LeaseStore
    shards: int
    identity: str
    namespace: str
    preferred: int | None = None
    lease_seconds: float = 15.0
    webhook_url: str | None = None
    on_acquired: Callable[[int], Awaitable[None]] | None = None
    clock: Callable[[], float] = time.monotonic
    owned: set[int] = field(default_factory=set)
    owners: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)  # shard -> (holder, webhook)
    _seen: dict[int, _Seen] = field(default_factory=dict)
    _started: float | None = None
    _sweeps: set[asyncio.Task[None]] = field(default_factory=set)
    _sweep_now: bool = True

    # --- what the handlers and the webhook ask ------------------------------------------
    def owns(self, namespace: str | None) -> bool:
        return namespace is None or shard_of(namespace, self.shards) in self.owned

    def owner_webhook(self, namespace: str) -> str | None:
        """The webhook address of the replica holding ``namespace``'s shard (None: unknown or us)."""
        holder, url = self.owners.get(shard_of(namespace, self.shards), (None, None))
        return url if holder and holder != self.identity else None

    # --- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - keep trying; another holder shows on the Lease
                log.warning("shard lease round failed: %s", exc)
            # Ten rounds per lease: a dead holder is seen expired at most a tenth of a lease late.
            await asyncio.sleep(self.lease_seconds / 10)

    async def release_all(self) -> None:
        """On shutdown: hand every held shard back at once instead of making others wait for expiry."""
        for shard in sorted(self.owned):
            with contextlib.suppress(Exception):
                await self._release(shard, await self.store.read_lease(self.namespace, self._name(shard)))

    async def tick(self, *, sweep: bool = True) -> None:
        """One lease round. ``sweep=False`` for the round before kopf starts watching: kopf's
        own resume handlers then see every object of the shards taken in it."""
        if self._started is None:
            self._started = self.clock()
        self._sweep_now = sweep
        order = sorted(range(self.shards), key=lambda i: (i != self.preferred, i))
        for shard in order:
            try:
                await self._tick_shard(shard)
            except RemedyError as exc:
                log.warning("shard %s: %s", shard, exc.message)

    def _name(self, shard: int) -> str:
        return f"{SHARD_LEASE_PREFIX}{shard}"

    async def _tick_shard(self, shard: int) -> None:
        now = self.clock()
        lease = await self.store.read_lease(self.namespace, self._name(shard))
        if lease is None:
            self.owners.pop(shard, None)
            self._lose(shard, "its Lease is gone")
            grace_over = self._started is not None and now - self._started >= self.lease_seconds
            if shard == self.preferred or grace_over:
                await self._acquire(shard, None)
            return
        spec = lease.get("spec") or {}
        ann = view(lease).annotations
        holder, renew = spec.get("holderIdentity"), spec.get("renewTime")
        self.owners[shard] = (holder, ann.get(ANN_SHARD_WEBHOOK))
        seen = self._seen.get(shard)
        if seen is None or (seen.holder, seen.renew) != (holder, renew):
            seen = self._seen[shard] = _Seen(holder, renew, now)
        wanted = ann.get(ANN_SHARD_WANTED_BY)
        if holder == self.identity:
            if shard != self.preferred and wanted and wanted != self.identity:
                await self._release(shard, lease)
                return
            await self._renew(shard, lease)
            return
        self._lose(shard, f"held by {holder}")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        # A shard handed back keeps its wanted-by: the replica that asked gets it first.
        expired = now - seen.since >= duration or (not holder and wanted in (None, self.identity))
        if expired:
            await self._acquire(shard, lease)
        elif shard == self.preferred and holder and wanted != self.identity:
            body = _body(lease)
            body["metadata"].setdefault("annotations", {})[ANN_SHARD_WANTED_BY] = self.identity
            if await self.store.write_lease(self.namespace, body, create=False) is not None:
                log.info("shard %s: asked %s to hand it back", shard, holder)

    async def _acquire(self, shard: int, lease: dict[str, Any] | None) -> None:
        now = _now_micro()
        if lease is None:
            body: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                    "metadata": {"name": self._name(shard), "namespace": self.namespace}, "spec": {}}
            transitions = 0
        else:
            body = _body(lease)
            transitions = int(body["spec"].get("leaseTransitions") or 0) + 1
        annotations = body["metadata"].setdefault("annotations", {})
        annotations.pop(ANN_SHARD_WANTED_BY, None)
        if self.webhook_url:
            annotations[ANN_SHARD_WEBHOOK] = self.webhook_url
        else:
            annotations.pop(ANN_SHARD_WEBHOOK, None)
        body["spec"].update({"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_seconds),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": transitions})
        written = await self.store.write_lease(self.namespace, body, create=lease is None)
        if written is None:
            return  # another replica won the race
        previous = ((lease or {}).get("spec") or {}).get("holderIdentity")
        self.owners[shard] = (self.identity, self.webhook_url)
        log.info("shard %s/%s acquired%s", shard, self.shards, f" from {previous}" if previous else "")
        self._own(shard)

    def _own(self, shard: int) -> None:
        """Act on the shard from now on; sweep it unless kopf's resume handlers will."""
        self.owned.add(shard)
        if self.on_acquired is not None and self._sweep_now:
            task = asyncio.get_running_loop().create_task(self._sweep(shard))
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)

    async def _sweep(self, shard: int) -> None:
        """Retried until it succeeds or the shard is lost: an object left unswept would wait for
        its next watch event, which may never come."""
        assert self.on_acquired is not None
        delay = 1.0
        while shard in self.owned:
            try:
                await self.on_acquired(shard)
                return
            except Exception as exc:  # noqa: BLE001 - e.g. the API server busy: try again
                log.warning("sweep of shard %s failed, again in %.0fs: %s", shard, delay, exc)
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    async def _renew(self, shard: int, lease: dict[str, Any]) -> None:
        body = _body(lease)
        body["spec"]["renewTime"] = _now_micro()
        if self.webhook_url:
            body["metadata"].setdefault("annotations", {})[ANN_SHARD_WEBHOOK] = self.webhook_url
        written = await self.store.write_lease(self.namespace, body, create=False)
        if written is not None and shard not in self.owned:  # held by this identity but not known to us
            self._own(shard)

    async def _release(self, shard: int, lease: dict[str, Any] | None) -> None:
        self._lose(shard, "handed back")
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        body = _body(lease)
        body["spec"]["holderIdentity"] = None
        body["spec"]["renewTime"] = None
        body["spec"]["acquireTime"] = None
        await self.store.write_lease(self.namespace, body, create=False)

    def _lose(self, shard: int, why: str) -> None:
        if shard in self.owned:
            self.owned.discard(shard)
            log.info("shard %s/%s no longer owned: %s", shard, self.shards, why)


def _body(lease: dict[str, Any]) -> dict[str, Any]:
    """A writable copy: metadata reduced to what a replace needs (resourceVersion is the lock)."""
    meta = lease.get("metadata") or {}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                         "resourceVersion": meta.get("resourceVersion"),
                         "annotations": dict(meta.get("annotations") or {})},
            "spec": dict(lease.get("spec") or {})}


def from_environment(store: LeaseStore, identity: str, webhook_url: str | None,
                     on_acquired: Callable[[int], Awaitable[None]] | None) -> ShardKeeper | None:
    """REMEDY_SHARDS > 1 turns sharding on (the chart's ``shards``); None otherwise."""
    shards = int(os.environ.get("REMEDY_SHARDS", "1"))
    if shards <= 1:
        return None
    index = os.environ.get("REMEDY_SHARD_INDEX")
    pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or ""
    preferred = int(index) % shards if index else preferred_from_pod_name(pod, shards)
    return ShardKeeper(store=store, shards=shards, identity=identity,
                       namespace=os.environ.get("REMEDY_NAMESPACE") or "default", preferred=preferred,
                       lease_seconds=float(os.environ.get("REMEDY_SHARD_LEASE_SECONDS", "15")),
                       webhook_url=webhook_url, on_acquired=on_acquired)
