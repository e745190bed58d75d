"""The demo services behave as the runbooks describe, over real loopback sockets.

remedy's HTTP and Redis actions are tested against these, so their contract is pinned here:
breaker forcing that only sticks when the upstream is healthy, the idempotency admin API's auth,
tenant filtering and 204/404, an outbox only a new process drains, and a reconcile endpoint
whose side effect can be counted.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from remedy_devenv.demoapp import (
    DEFAULT_ADMIN_TOKEN,
    DemoProcess,
    free_port,
    runner_port,
    start_demo_service,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

AUTH = {"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"}
Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """start(role, **opts) -> base URL; everything started is cleaned up after the test."""
    runners = []

    async def _start(role: str, **opts: Any) -> str:
        runner = await start_demo_service(role, 0, **opts)
        runners.append(runner)
        return f"http://127.0.0.1:{runner_port(runner)}"

    yield _start
    for r in reversed(runners):
        await r.cleanup()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not installed: run scripts/install-deps")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with http.get(url, **kw) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json()


async def metric(http: aiohttp.ClientSession, base: str, line_prefix: str) -> float:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in /metrics")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def breaker_state(http: aiohttp.ClientSession, gw: str) -> str:
    return str((await get_json(http, f"{gw}/status/breakers"))["payments"]["state"])


async def test_force_half_open_closes_when_upstream_healthy(
        start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    assert await breaker_state(http, gw) == "CLOSED"
    async with http.post(f"{gw}/admin/breakers/payments/trip", headers=AUTH) as r:
        assert r.status == 200
    assert await breaker_state(http, gw) == "OPEN"
    assert await metric(http, gw, 'breaker_state{downstream="payments"}') == 1.0
    await asyncio.sleep(0.3)
    assert await breaker_state(http, gw) == "OPEN"  # stuck: nobody probes an OPEN breaker

    force = f"{gw}/admin/breakers/payments/force"
    async with http.post(force, json={"state": "HALF_OPEN"}) as r:
        assert r.status == 401
    async with http.post(force, json={"state": "SIDEWAYS"}, headers=AUTH) as r:
        assert r.status == 400
    async with http.post(force, json={"state": "HALF_OPEN"}, headers=AUTH) as r:
        assert r.status == 200
        assert await r.json() == {"name": "payments", "previous": "OPEN", "state": "HALF_OPEN"}

    async def closed() -> bool:
        return await breaker_state(http, gw) == "CLOSED"
    await eventually(closed)
    assert await metric(http, gw, 'breaker_state{downstream="payments"}') == 0.0
    stats = await get_json(http, f"{gw}/admin/stats")
    assert stats["succeeded"]["POST /admin/breakers/{name}/force"] == 1
    assert stats["received"]["POST /admin/breakers/{name}/force"] == 3
    assert stats["forced"] == [{"name": "payments", "from": "OPEN", "to": "HALF_OPEN"}]


async def test_force_half_open_reopens_when_upstream_down(
        start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    gw = await start("gateway", upstreams={"payments": pay}, probe_interval_s=0.05)
    async with http.post(f"{pay}/admin/down") as r:
        assert r.status == 200
    async with http.get(f"{pay}/health") as r:
        assert r.status == 503 and (await r.json())["status"] == "down"
    async with http.post(f"{gw}/admin/breakers/payments/trip", headers=AUTH):
        pass
    async with http.post(f"{gw}/admin/breakers/payments/force", json={"state": "HALF_OPEN"},
                         headers=AUTH) as r:
        assert r.status == 200

    async def probed() -> bool:
        b = (await get_json(http, f"{gw}/status/breakers"))["payments"]
        return b["last_probe_ok"] is False and b["state"] == "OPEN"
    await eventually(probed)


async def test_chaos_config_in_memory(start: Start, http: aiohttp.ClientSession) -> None:
    pay = await start("payments")
    async with http.put(f"{pay}/chaos/config", json={"error_rate": 1, "latency_ms": 10}) as r:
        assert (await r.json())["config"] == {"error_rate": 1.0, "latency_ms": 10.0}
    async with http.get(f"{pay}/health") as r:
        assert r.status == 503
    async with http.delete(f"{pay}/chaos/config") as r:
        body = await r.json()
        assert body["cleared"] == ["error_rate", "latency_ms"] and body["enabled"] is False
    async with http.get(f"{pay}/health") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}


async def test_idempotency_api(start: Start, http: aiohttp.ClientSession) -> None:
    gw = await start("gateway")
    recent = f"{gw}/admin/idempotency/recent"
    async with http.get(recent) as r:
        assert r.status == 401
    async with http.get(recent, headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401

    async def inject(**body: Any) -> list[str]:
        async with http.post(f"{gw}/admin/idempotency/_inject", json=body, headers=AUTH) as r:
            assert r.status == 201
            return list((await r.json())["created"])

    stale = await inject(count=3, stale=True, tenant="t1", prefix="order-")
    fresh = await inject(count=2, stale=False, tenant="t2", prefix="pay-")
    items = (await get_json(http, recent, headers=AUTH))["items"]
    assert {i["key"] for i in items} == set(stale + fresh)
    assert set(items[0]) == {"key", "tenant", "state", "owner", "replay_count", "lock_expires_at",
                             "payload_fingerprint", "stored_at", "updated_at", "ttl_s"}
    t1 = (await get_json(http, recent, headers={**AUTH, "X-Tenant": "t1"}))["items"]
    assert {i["key"] for i in t1} == set(stale)
    assert all(i["state"] == "in_progress" and i["lock_expires_at"].endswith("Z") for i in t1)
    assert await metric(http, gw, "idemp_stale_locks ") == 3
    assert await metric(http, gw, "idemp_lock_wait_p95_seconds ") == 2.5

    key = stale[0]
    one = await get_json(http, f"{gw}/admin/idempotency/{key}", headers=AUTH)
    assert one["key"] == key and one["tenant"] == "t1" and "headers" in one
    async with http.get(f"{gw}/admin/idempotency/{key}", headers={**AUTH, "X-Tenant": "t2"}) as r:
        assert r.status == 404  # other tenants cannot see it
    for k in stale:
        async with http.delete(f"{gw}/admin/idempotency/{k}", headers=AUTH) as r:
            assert r.status == 204
    async with http.delete(f"{gw}/admin/idempotency/{key}", headers=AUTH) as r:
        assert r.status == 404
    assert await metric(http, gw, "idemp_stale_locks ") == 0
    assert await metric(http, gw, "idemp_lock_wait_p95_seconds ") == 0.05
    stats = await get_json(http, f"{gw}/admin/stats")
    assert stats["deleted_keys"] == stale
    assert stats["succeeded"]["DELETE /admin/idempotency/{key}"] == 3


async def test_redis_backed_idempotency_and_chaos(
        start: Start, http: aiohttp.ClientSession, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    gw = await start("gateway", redis_url=redis_url)
    async with http.post(f"{gw}/admin/idempotency/_inject", json={"count": 2}, headers=AUTH) as resp:
        keys = (await resp.json())["created"]
    raw = r.hgetall(f"idem:{keys[0]}")
    assert raw["state"] == "in_progress" and raw["tenant"] == "t1" and raw["key"] == keys[0]
    r.delete(f"idem:{keys[0]}")  # what remedy's redis backend does
    items = (await get_json(http, f"{gw}/admin/idempotency/recent", headers=AUTH))["items"]
    assert [i["key"] for i in items] == [keys[1]] and items[0]["replay_count"] >= 0

    pay = await start("payments", redis_url=redis_url)
    r.set("chaos:payments:error_rate", "1")
    r.set("chaos:payments:latency_ms", "5")
    async with http.get(f"{pay}/health") as resp:
        assert resp.status == 503
    async with http.delete(f"{pay}/chaos/config") as resp:
        assert resp.status == 200
    assert r.exists("chaos:payments:error_rate", "chaos:payments:latency_ms") == 0
    async with http.get(f"{pay}/health") as resp:
        assert resp.status == 200
    r.close()


async def test_outbox_stuck_then_new_process_drains(
        start: Start, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    state = str(tmp_path / "orders.json")
    runner = await start_demo_service("orders", 0, state_file=state, tick_s=0.02)
    base = f"http://127.0.0.1:{runner_port(runner)}"
    async with http.post(f"{base}/admin/outbox/stick", json={"rate": 500}) as r:
        assert r.status == 200

    async def backlog() -> bool:
        return await metric(http, base, "outbox_pending ") >= 100
    await eventually(backlog)
    await runner.cleanup()  # the old pod goes away, its backlog persisted

    base = await start("orders", state_file=state, tick_s=0.02, outbox_drain_rate=1000)
    stats = await get_json(http, f"{base}/admin/stats")
    assert stats["outbox"]["restored_from_state"] >= 100 and stats["outbox"]["stuck"] is False

    async def drained() -> bool:
        return await metric(http, base, "outbox_pending ") == 0
    await eventually(drained)


async def test_outbox_restart_as_a_process(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    proc = DemoProcess("orders", args=["--state-file", str(tmp_path / "o.json"),
                                       "--outbox-drain-rate", "2000"])
    await asyncio.to_thread(proc.start)
    try:
        async with http.post(f"{proc.url}/admin/outbox/stick", json={"rate": 1000}) as r:
            assert r.status == 200

        async def backlog() -> bool:
            return await metric(http, proc.url, "outbox_pending ") >= 200
        await eventually(backlog)
        old = proc.pid
        await asyncio.to_thread(proc.restart)
        assert proc.pid != old
        stats = await get_json(http, f"{proc.url}/admin/stats")
        assert stats["outbox"]["restored_from_state"] >= 200

        async def drained() -> bool:
            return await metric(http, proc.url, "outbox_pending ") == 0
        await eventually(drained)
    finally:
        await asyncio.to_thread(proc.stop)


async def test_reconcile_auth_and_exactly_once(start: Start, http: aiohttp.ClientSession) -> None:
    base = await start("reconcile", token="s3cret")
    async with http.post(f"{base}/admin/reservations/stick", json={"count": 60}) as r:
        assert (await r.json()) == {"stuck_reservations": 60}
    assert await metric(http, base, "stuck_reservations ") == 60
    url = f"{base}/api/cron/reconcile"
    async with http.post(url) as r:
        assert r.status == 401
    async with http.post(url, headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with http.post(url, headers={"Authorization": "Bearer s3cret"}) as r:
        assert r.status == 200 and await r.json() == {"reconciled": 60}
    assert await metric(http, base, "stuck_reservations ") == 0
    stats = await get_json(http, f"{base}/admin/stats")
    assert stats["succeeded"]["POST /api/cron/reconcile"] == 1
    assert stats["received"]["POST /api/cron/reconcile"] == 3
    assert stats["reconcile_runs"] == 1
