"""Shard ownership by Lease (runtime/shards.py) against an in-memory Lease store with the API
server's optimistic lock (resourceVersion, 409 on a stale write) and a clock the test moves.
The real control plane run is tests/e2e/test_shards.py."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from typing import Any

from remedy.base.constants import ANN_SHARD_WANTED_BY
from remedy.runtime.shards import ShardKeeper, preferred_from_pod_name, shard_of


class Leases:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.fail_writes_from: set[str] = set()

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.items.get(name))

    async def write_lease(self, namespace: str, body: dict[str, Any], *, create: bool) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        if (body["spec"].get("holderIdentity") or "") in self.fail_writes_from:  # the writer's own calls fail
            from remedy.base.errors import RetryableError
            raise RetryableError("API server unreachable")
        current = self.items.get(name)
        if create and current is not None:
            return None
        if not create and (current is None or current["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion")):
            return None
        self.rv += 1
        doc = copy.deepcopy(body)
        doc["metadata"]["resourceVersion"] = str(self.rv)
        self.items[name] = doc
        return copy.deepcopy(doc)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def keeper(store: Leases, clock: Clock, identity: str, preferred: int | None, shards: int = 2) -> ShardKeeper:
    return ShardKeeper(store=store, shards=shards, identity=identity, namespace="remedy-system",
                       preferred=preferred, lease_seconds=15, webhook_url=f"http://{identity}/alertmanager", clock=clock)


def namespace_in(shard: int, shards: int = 2) -> str:
    return next(f"ns-{i}" for i in range(1000) if shard_of(f"ns-{i}", shards) == shard)


def test_shard_of_spreads_namespaces_and_does_not_depend_on_the_process() -> None:
    names = [f"team-{i}" for i in range(2000)]
    for shards in (2, 3, 5):
        counts = [0] * shards
        for n in names:
            counts[shard_of(n, shards)] += 1
        assert min(counts) > 0.8 * len(names) / shards, counts
    code = "from remedy.runtime.shards import shard_of; print([shard_of(f'team-{i}', 3) for i in range(50)])"
    outs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert outs == {str([shard_of(f"team-{i}", 3) for i in range(50)]) + "\n"}
    assert shard_of("anything", 1) == 0
    assert preferred_from_pod_name("remedy-3", 2) == 1 and preferred_from_pod_name("remedy-abc", 2) is None


def test_each_replica_takes_its_preferred_shard_and_waits_before_taking_another() -> None:
    async def run() -> None:
        store, clock = Leases(), Clock()
        a = keeper(store, clock, "a", 0)
        await a.tick()
        assert a.owned == {0}  # shard 1's Lease does not exist yet: grace for its replica
        b = keeper(store, clock, "b", 1)
        await b.tick()
        assert b.owned == {1}
        clock.t += 20
        await a.tick()
        await b.tick()
        assert a.owned == {0} and b.owned == {1}  # both renew: nobody takes the other's
        assert a.owns(namespace_in(0)) and not a.owns(namespace_in(1))
        assert a.owner_webhook(namespace_in(1)) == "http://b/alertmanager"
        assert a.owner_webhook(namespace_in(0)) is None  # ours

    asyncio.run(run())


def test_a_dead_replicas_shard_is_taken_after_the_lease_and_handed_back_when_it_returns() -> None:
    async def run() -> None:
        store, clock = Leases(), Clock()
        swept: list[tuple[str, int]] = []

        async def sweep_a(shard: int) -> None:
            swept.append(("a", shard))

        a, b = keeper(store, clock, "a", 0), keeper(store, clock, "b", 1)
        a.on_acquired = sweep_a
        await a.tick()
        await b.tick()
        # b dies (stops renewing). a must see the same renewTime for a full lease, by its own
        # clock from when it first saw it, before taking the shard.
        clock.t += 10
        await a.tick()  # first sight of b's Lease
        clock.t += 14
        await a.tick()
        assert 1 not in a.owned
        clock.t += 2
        await a.tick()
        assert a.owned == {0, 1}
        await asyncio.sleep(0)
        assert ("a", 1) in swept  # the takeover sweep ran for the new shard
        assert store.items["remedy-shard-1"]["spec"]["leaseTransitions"] == 1
        # b comes back under a new identity: asks for shard 1, a hands it back, b takes it.
        b2 = keeper(store, clock, "b2", 1)
        await b2.tick()
        assert store.items["remedy-shard-1"]["metadata"]["annotations"][ANN_SHARD_WANTED_BY] == "b2"
        assert b2.owned == set()
        await a.tick()
        assert a.owned == {0}
        await b2.tick()
        assert b2.owned == {1}
        assert not a.owns(namespace_in(1)) and b2.owns(namespace_in(1))

    asyncio.run(run())


def test_a_holder_that_cannot_renew_acts_until_it_sees_the_new_holder() -> None:
    """No silent gap: kopf drops events its filters refuse, so a late holder keeps the shard
    until the Lease names someone else (the engine keeps a double-acting moment safe)."""
    async def run() -> None:
        store, clock = Leases(), Clock()
        a, b = keeper(store, clock, "a", 0), keeper(store, clock, "b", 1)
        await a.tick()
        await b.tick()
        ns = namespace_in(0)
        store.fail_writes_from.add("a")
        clock.t += 9
        await a.tick()  # renew fails
        await b.tick()  # b's first sight of a's last renewal
        assert a.owns(ns)  # late, but nobody else holds it: keep acting
        clock.t += 16
        await b.tick()  # a's Lease unchanged for a whole lease by b's clock: b takes shard 0
        assert b.owns(ns)
        store.fail_writes_from.discard("a")
        await a.tick()
        assert not a.owns(ns) and a.owned == set()

    asyncio.run(run())


def test_two_replicas_racing_for_a_free_shard_get_one_owner() -> None:
    async def run() -> None:
        store, clock = Leases(), Clock()
        a, b = keeper(store, clock, "a", 0), keeper(store, clock, "b", 0)
        await asyncio.gather(a.tick(), b.tick())
        assert (0 in a.owned) != (0 in b.owned)

    asyncio.run(run())
