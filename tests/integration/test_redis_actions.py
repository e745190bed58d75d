"""deleteRedisKeys against a real redis-server (tests.fixtures.services).

Why real Redis: the action's safety rests on SCAN/UNLINK semantics, pipelining and auth errors
that a fake would only imitate; the 20,000-key test also proves memory stays bounded.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from remedy.actions.redis_keys import DELETE_REDIS_KEYS, check_pattern, literal_prefix
from remedy.base.errors import ForbiddenError, InvalidSpecError, OverCapError, RetryableError, SecretRefError
from remedy_devenv.services import RedisServer, free_port
from remedy_devenv.testkit import wait_for
from tests.fixtures.actions import DictSecretsContext, make_ctx, run_action

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="session")]

VALUE = "value-that-must-never-reach-evidence"


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def ns() -> str:
    """A per-test key namespace on the shared server."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def ctx(redis_server: RedisServer) -> DictSecretsContext:
    return make_ctx({("redis", "url"): redis_server.url})


def params(pattern: str, **kw: Any) -> dict[str, Any]:
    return {"connection": {"urlSecretRef": {"name": "redis", "key": "url"}}, "pattern": pattern, **kw}


def fill(r: redis.Redis, names: list[str]) -> None:
    pipe = r.pipeline(transaction=False)
    for i, name in enumerate(names):
        pipe.set(name, VALUE)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    settled(r)


def settled(r: redis.Redis) -> None:
    """Wait until the keyspace is not being rehashed. Adding keys grows Redis's hash table
    incrementally, and SCAN may return a key twice while that runs (documented, and counted as
    drift by the actions): a test asserting an exact match count waits for the server to say
    the rehash is over (DEBUG HTSTATS names a "rehashing target" until then)."""
    wait_for(lambda: "rehashing" not in str(r.execute_command("DEBUG", "HTSTATS", 0)), 10, "Redis rehash to finish")


def count(r: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in r.scan_iter(match=pattern, count=1000))


async def test_dry_run_reports_count_and_sample_and_deletes_nothing(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    fill(r, [f"lock:{ns}:purchase:{i}" for i in range(25)] + [f"lock:{ns}x:other"])
    plan, result = await run_action(DELETE_REDIS_KEYS, ctx, params(f"lock:{ns}:*", sampleSize=5), dry_run=True)
    assert result is None
    assert plan["matched"] == 25
    assert len(plan["sample"]) == 5
    assert all(s.startswith(f"lock:{ns}:purchase:") for s in plan["sample"])
    assert plan["literalPrefix"] == f"lock:{ns}:"
    assert "25" in plan["change"]
    assert VALUE not in json.dumps(plan)
    assert count(r, f"lock:{ns}:*") == 25


async def test_delete_within_cap_leaves_other_keys(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    fill(r, [f"chaos:{ns}:payments:{f}" for f in range(25)])
    fill(r, [f"chaos:{ns}x:payments:0", f"chaos:{ns}", f"lock:{ns}:payments:0"])
    plan, result = await run_action(DELETE_REDIS_KEYS, ctx, params(f"chaos:{ns}:payments:*", maxKeys=100, batchSize=10))
    assert result is not None
    assert plan["matched"] == 25
    assert result["deleted"] == 25
    assert result["batches"] >= 1
    assert len(result["sample"]) == 20  # default sampleSize; the other 5 are counted and digested
    assert result["drift"] == {"sameSet": True, "planned": 25, "acted": 25, "difference": 0}
    assert VALUE not in json.dumps(result)
    assert "deleted 25" in result["summary"]
    assert count(r, f"chaos:{ns}:payments:*") == 0
    assert r.exists(f"chaos:{ns}x:payments:0", f"chaos:{ns}", f"lock:{ns}:payments:0") == 3
    # idempotent: the same plan again deletes nothing more and does not fail
    again = await DELETE_REDIS_KEYS.execute(ctx, DELETE_REDIS_KEYS.params.model_validate(params(f"chaos:{ns}:payments:*")), plan)
    assert again["deleted"] == 0


async def test_over_cap_is_refused_with_nothing_deleted(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    fill(r, [f"lock:{ns}:purchase:{i}" for i in range(30)])
    with pytest.raises(OverCapError, match="maxKeys=10"):
        await run_action(DELETE_REDIS_KEYS, ctx, params(f"lock:{ns}:*", maxKeys=10, batchSize=5))
    assert count(r, f"lock:{ns}:*") == 30


async def test_growth_past_cap_between_plan_and_execute_stops_at_the_cap(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    fill(r, [f"lock:{ns}:purchase:{i}" for i in range(5)])
    p = DELETE_REDIS_KEYS.params.model_validate(params(f"lock:{ns}:*", maxKeys=10, batchSize=3))
    plan = await DELETE_REDIS_KEYS.plan(ctx, p)
    assert plan["matched"] == 5
    fill(r, [f"lock:{ns}:purchase:{i}" for i in range(5, 40)])
    with pytest.raises(OverCapError, match="grew past maxKeys=10"):
        await DELETE_REDIS_KEYS.execute(ctx, p, plan)
    assert count(r, f"lock:{ns}:*") == 30  # exactly the cap deleted, never more


async def test_drift_is_reported_by_count_and_digest(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    fill(r, [f"lock:{ns}:purchase:{i}" for i in range(30)])
    p = DELETE_REDIS_KEYS.params.model_validate(params(f"lock:{ns}:*", maxKeys=100, sampleSize=3))
    plan = await DELETE_REDIS_KEYS.plan(ctx, p)
    r.delete(f"lock:{ns}:purchase:0", f"lock:{ns}:purchase:1")
    fill(r, [f"lock:{ns}:purchase:new{i}" for i in range(2)])
    result = await DELETE_REDIS_KEYS.execute(ctx, p, plan)
    # same count, different keys: only the digest can tell
    assert result["deleted"] == 30
    assert result["drift"]["sameSet"] is False and result["drift"]["difference"] == 0
    assert result["keySetDigest"] != plan["keySetDigest"]
    assert count(r, f"lock:{ns}:*") == 0


def fill_aged(url: str, names: list[str], idle_seconds: int) -> None:
    """Keys last written ``idle_seconds`` ago as far as Redis knows (RESTORE ... IDLETIME sets the
    LRU clock of a key), so time between a plan and its resume needs no sleeping."""
    raw = redis.Redis.from_url(url)
    try:
        raw.set("__template__", VALUE)
        dump = raw.execute_command("DUMP", "__template__")
        raw.delete("__template__")
        for name in names:
            raw.execute_command("RESTORE", name, 0, dump, "IDLETIME", idle_seconds)
    finally:
        raw.close()


async def test_resumed_run_deletes_only_keys_written_before_its_plan(r: redis.Redis, ns: str, ctx: DictSecretsContext,
                                                                     redis_server: RedisServer) -> None:
    """Issue 21: an interrupted run resumed later re-derives the pattern, but keys created after
    its plan are not the plan's: they are left alone (counted as sparedNewer), and observe calls
    the plan applied once only those remain."""
    old = [f"lock:{ns}:purchase:{i}" for i in range(6)]
    fill_aged(redis_server.url, old, idle_seconds=600)  # written ten minutes ago
    p = DELETE_REDIS_KEYS.params.model_validate(params(f"lock:{ns}:*", maxKeys=100, batchSize=4))
    plan = await DELETE_REDIS_KEYS.plan(ctx, p)
    assert plan["matched"] == 6 and isinstance(plan["plannedAtServerTime"], int)
    # The operator was interrupted; it resumes five minutes after the plan (by Redis's clock).
    # Meanwhile a checkout took a new lock (written now, i.e. after the plan).
    plan = {**plan, "plannedAtServerTime": plan["plannedAtServerTime"] - 300}
    fill(r, [f"lock:{ns}:purchase:new"])
    observed = await DELETE_REDIS_KEYS.observe(ctx, p, plan)  # type: ignore[misc]
    assert type(observed).__name__ == "NotApplied"
    result = await DELETE_REDIS_KEYS.execute(ctx, p, plan)
    assert result["deleted"] == 6 and result["sparedNewer"] == 1
    assert r.exists(f"lock:{ns}:purchase:new") == 1 and all(r.exists(k) == 0 for k in old)
    assert result["drift"]["sameSet"] is True  # exactly the planned set was deleted
    observed = await DELETE_REDIS_KEYS.observe(ctx, p, plan)  # type: ignore[misc]
    assert type(observed).__name__ == "Applied" and "1 written after the plan" in observed.detail
    # A key untouched since the plan (written 600 s ago, 300 s before the plan) is the plan's.
    fill_aged(redis_server.url, [f"lock:{ns}:purchase:late-old"], idle_seconds=400)
    again = await DELETE_REDIS_KEYS.execute(ctx, p, plan)
    assert again["deleted"] == 1 and again["sparedNewer"] == 1


@pytest.mark.parametrize("pattern", ["*", "lock:*", "lock:p*", "a:b:*", "*:purchase:*", "[l]ock:purchase:*", "lock\\:*"])
async def test_wide_patterns_are_refused(pattern: str, ctx: DictSecretsContext) -> None:
    with pytest.raises(InvalidSpecError, match="too wide"):
        await run_action(DELETE_REDIS_KEYS, ctx, params(pattern), dry_run=True)


async def test_allow_wide_match_overrides(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    fill(r, [f"w{ns}{i}" for i in range(3)])
    plan, _ = await run_action(DELETE_REDIS_KEYS, ctx, params(f"w{ns}*", allowWideMatch=True), dry_run=True)
    assert plan["matched"] == 3 and plan["wideMatchAllowed"] is True


async def test_literal_prefix_rules() -> None:
    assert literal_prefix("lock:purchase:*") == ("lock:purchase:", True)
    assert literal_prefix("lock:pur\\*chase:*") == ("lock:pur*chase:", True)
    assert literal_prefix("chaos:payments:error_rate") == ("chaos:payments:error_rate", False)
    assert check_pattern("lock:purchase:*", False) == "lock:purchase:"
    assert check_pattern("chaos:payments:*", False) == "chaos:payments:"
    assert check_pattern("mylock", False) == "mylock"  # an exact key name is never wide


async def test_20000_keys_in_batches_with_constant_memory(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    # long names make "held every name" clearly visible against the allocation bound below
    names = [f"lock:{ns}:purchase:{i:08d}-{'x' * 40}" for i in range(20_000)]
    fill(r, names)
    del names
    p = DELETE_REDIS_KEYS.params.model_validate(params(f"lock:{ns}:*", maxKeys=20_000, batchSize=500, sampleSize=10))
    tracemalloc.start()
    try:
        plan = await DELETE_REDIS_KEYS.plan(ctx, p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan["matched"] == 20_000
    assert len(plan["sample"]) == 10
    assert len(json.dumps(plan)) < 4096
    # 20,000 names of ~70 chars held at once would be > 2 MB; one SCAN batch is ~50 KB
    assert peak < 1_000_000, f"plan peaked at {peak} bytes: it must not hold every key name"
    result = await DELETE_REDIS_KEYS.execute(ctx, p, plan)
    assert result["deleted"] == 20_000
    assert result["batches"] >= 20_000 // 1000  # SCAN COUNT is a hint; many batches, not one
    assert len(result["sample"]) == 10
    assert len(json.dumps(result)) < 4096
    assert count(r, f"lock:{ns}:*") == 0


async def test_bad_password_is_forbidden_and_names_the_secret(redis_server: RedisServer) -> None:
    ctx = make_ctx({("redis", "url"): f"redis://{redis_server.host}:{redis_server.port}/0",
                    ("redis-auth", "password"): "wrong-password-123"})
    spec = params("lock:purchase:*", connection={"urlSecretRef": {"name": "redis", "key": "url"},
                                                 "passwordSecretRef": {"name": "redis-auth", "key": "password"}})
    with pytest.raises(ForbiddenError) as info:
        await run_action(DELETE_REDIS_KEYS, ctx, spec, dry_run=True)
    assert "bad credentials for redis" in info.value.message
    assert "redis-auth" in info.value.message and "password" in info.value.message
    assert "wrong-password-123" not in info.value.message


async def test_no_password_is_forbidden(redis_server: RedisServer) -> None:
    ctx = make_ctx({("redis", "url"): f"redis://{redis_server.host}:{redis_server.port}/0"})
    with pytest.raises(ForbiddenError, match="Secret default/redis key url"):
        await run_action(DELETE_REDIS_KEYS, ctx, params("lock:purchase:*"), dry_run=True)


async def test_unreachable_is_retryable() -> None:
    ctx = make_ctx({("redis", "url"): f"redis://:pw-xyz@127.0.0.1:{free_port()}/0"})
    with pytest.raises(RetryableError) as info:
        await run_action(DELETE_REDIS_KEYS, ctx, params("lock:purchase:*", connection={
            "urlSecretRef": {"name": "redis", "key": "url"}, "timeout": "1s"}))
    assert "pw-xyz" not in info.value.message


async def test_missing_secret_and_bad_url() -> None:
    with pytest.raises(SecretRefError):
        await run_action(DELETE_REDIS_KEYS, make_ctx({}), params("lock:purchase:*"), dry_run=True)
    ctx = make_ctx({("redis", "url"): "http://user:sekrit@host"})
    with pytest.raises(InvalidSpecError) as info:
        await run_action(DELETE_REDIS_KEYS, ctx, params("lock:purchase:*"), dry_run=True)
    assert "sekrit" not in info.value.message


async def test_registered() -> None:
    from remedy.actions import registry

    assert registry.get("deleteRedisKeys") is DELETE_REDIS_KEYS
    assert DELETE_REDIS_KEYS.idempotent and DELETE_REDIS_KEYS.destructive


async def test_server_digest_equals_the_python_digest_of_the_same_names(r: redis.Redis, ns: str, ctx: DictSecretsContext) -> None:
    """The Lua tally and keyset.KeySetTally must agree, or drift could not be compared across backends."""
    from remedy.actions.keyset import KeySetTally

    names = [f"lock:{ns}:purchase:{i}-é" for i in range(2500)]
    fill(r, names)
    plan, _ = await run_action(DELETE_REDIS_KEYS, ctx, params(f"lock:{ns}:*", maxKeys=5000, batchSize=300), dry_run=True)
    local = KeySetTally()
    local.add_many(reversed(names))  # order must not matter
    assert plan["matched"] == 2500 and plan["keySetDigest"] == local.digest
    local.add_many([f"lock:{ns}:extra"])
    assert plan["keySetDigest"] != local.digest
