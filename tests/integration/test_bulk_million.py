"""Many keys against a real redis-server: the purge completes and the evidence stays small.

Why: the old actions listed every key in status (the schema capped purges at 2,000 for that
reason, and 145-character keys overflowed etcd even then). The claim now is that a Remediation's
status stays under 64 KiB whatever the data size; this test purges 100,000 records (a seeded
half stale) and deletes the rest by prefix, then counts what is left with the server itself
(DBSIZE and a server-side SCAN), a witness the actions do not control. 100,000 is 50x the old
cap and ~500x what a key list could fit in 64 KiB (a million took 90 s of CI for the same
assertions); the 1,000,000-key figures (status bytes, memory, speed) come from
bench/bulk_redis.py (bench/results/bulk-redis.json).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
import redis

from remedy.actions.idempotency import PURGE_IDEMPOTENCY_KEYS
from remedy.actions.redis_keys import DELETE_REDIS_KEYS
from remedy_devenv.services import RedisServer
from tests.fixtures.actions import DictSecretsContext, make_ctx, run_action

pytestmark = [pytest.mark.services, pytest.mark.asyncio(loop_scope="session")]

N = 100_000
STATUS_LIMIT = 64 * 1024
DB = 13  # a database of its own on the shared server, so DBSIZE counts only this test's keys

FILL_LUA = r"""
local start, stop, seed, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stale = 0
for i = start, stop do
  local h = (i * 2654435761 + seed) % 4294967296
  local state, lock = 'completed', now - 60
  if h % 2 == 0 then state, lock = 'in_progress', now - 300 - (h % 3600); stale = stale + 1
  elseif h % 5 == 1 then state, lock = 'in_progress', now + 900 end
  redis.call('HSET', 'idem:million:' .. string.format('%07d', i) .. ':' .. string.rep('k', 140),
             'key', 'order-' .. i, 'tenant', 't' .. (h % 11), 'state', state, 'lock_expires_at', lock,
             'replay_count', h % 30, 'response', 'payload-that-must-never-reach-evidence')
end
return stale
"""

STALE_LEFT_LUA = r"""
local cursor, n = '0', 0
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', 'idem:million:*', 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    local v = redis.call('HMGET', k, 'state', 'lock_expires_at')
    if v[1] == 'in_progress' and tonumber(v[2]) < tonumber(ARGV[1]) then n = n + 1 end
  end
until cursor == '0'
return n
"""


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[tuple[redis.Redis, str]]:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    # The fill scripts below run for seconds on a loaded 2-core machine; the URL's 5 s socket
    # timeout would abandon a script still running and leave Redis BUSY for the teardown.
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=300)
    client.flushdb()
    yield client, url
    client.flushdb()
    client.close()


def status_bytes(plan: dict[str, object], result: dict[str, object] | None) -> int:
    return len(json.dumps({"phase": "Succeeded", "plan": plan, "result": result}))


async def test_million_key_purge_and_prefix_delete_keep_status_small(db: tuple[redis.Redis, str]) -> None:
    r, url = db
    seed = random.randrange(1 << 30)
    now = int(time.time())
    stale = sum(int(r.eval(FILL_LUA, 0, s, min(N, s + 10_000) - 1, seed, now)) for s in range(0, N, 10_000))
    assert r.dbsize() == N and N * 0.45 < stale < N * 0.55, (seed, stale)
    ctx: DictSecretsContext = make_ctx({("redis", "url"): url})
    conn = {"urlSecretRef": {"name": "redis", "key": "url"}, "timeout": "30s"}

    plan, result = await run_action(PURGE_IDEMPOTENCY_KEYS, ctx, {
        "backend": "redis", "redis": {"connection": conn, "pattern": "idem:million:*"}, "maxKeys": N})
    assert result is not None
    size = status_bytes(plan, result)
    assert size < STATUS_LIMIT, f"purge status is {size} bytes (seed {seed})"
    assert plan["stale"] == stale and result["purgedCount"] == stale, seed
    assert len(plan["keys"]) == 20 and not plan["keysComplete"] and len(result["purged"]) == 20
    assert result["drift"]["sameSet"] is True
    assert "payload-that-must-never-reach-evidence" not in json.dumps(plan) + json.dumps(result)
    # the witness: the server's own counts
    assert r.dbsize() == N - stale, seed
    assert int(r.eval(STALE_LEFT_LUA, 0, int(time.time()) - 30)) == 0, seed

    plan, result = await run_action(DELETE_REDIS_KEYS, ctx, {
        "connection": conn, "pattern": "idem:million:*", "maxKeys": N})
    assert result is not None
    size = status_bytes(plan, result)
    assert size < STATUS_LIMIT, f"prefix delete status is {size} bytes"
    assert plan["matched"] == N - stale and result["deleted"] == N - stale
    assert r.dbsize() == 0
