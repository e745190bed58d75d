"""The gateway role: runbook 001's circuit breakers (probing their upstream's /health) and
runbook 000's idempotency records (in memory or in Redis) behind an admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import uuid4

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from .common import (
    BREAKER_GAUGE,
    BREAKER_STATES,
    Options,
    iso,
    json_error,
    parse_iso,
    read_json,
    require_bearer,
    utcnow,
)

# ---- idempotency store (runbook 000)


class IdemStore(Protocol):
    async def put(self, item: dict[str, Any]) -> None: ...
    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def delete(self, key: str) -> bool: ...
    async def items(self) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


class MemoryIdemStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}

    async def put(self, item: dict[str, Any]) -> None:
        self._items[item["key"]] = dict(item)

    async def get(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        return dict(item) if item else None

    async def delete(self, key: str) -> bool:
        return self._items.pop(key, None) is not None

    async def items(self) -> list[dict[str, Any]]:
        return [dict(i) for i in self._items.values()]

    async def close(self) -> None:
        return None


class RedisIdemStore:
    """Hash ``idem:{key}`` holding the API's fields, so remedy's redis backend sees the same data."""

    INT_FIELDS = ("replay_count", "ttl_s")

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.Redis.from_url(url, decode_responses=True)

    @classmethod
    def decode(cls, raw: dict[Any, Any]) -> dict[str, Any]:
        # decode_responses=True: keys and values are already str
        item: dict[str, Any] = {str(k): str(v) for k, v in raw.items()}
        for name in cls.INT_FIELDS:
            if name in item:
                item[name] = int(item[name])
        return item

    async def put(self, item: dict[str, Any]) -> None:
        name = f"idem:{item['key']}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.hset(name, mapping={k: str(v) for k, v in item.items()})
            pipe.expire(name, int(item["ttl_s"]))
            await pipe.execute()

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self._r.hgetall(f"idem:{key}")
        return self.decode(raw) if raw else None

    async def delete(self, key: str) -> bool:
        return bool(await self._r.delete(f"idem:{key}"))

    async def items(self) -> list[dict[str, Any]]:
        out = []
        async for name in self._r.scan_iter(match="idem:*", count=500):
            raw = await self._r.hgetall(name)
            # the key may vanish between SCAN and HGETALL, or be some other type's idem: key
            if raw and "key" in raw:
                out.append(self.decode(raw))
        return out

    async def close(self) -> None:
        await self._r.aclose()


def is_stale(item: dict[str, Any], now: datetime) -> bool:
    return bool(item.get("state") == "in_progress"
                and parse_iso(str(item["lock_expires_at"])) < now)


@dataclass
class Breaker:
    name: str
    upstream: str
    state: str = "CLOSED"
    failures: int = 0
    since: datetime = field(default_factory=utcnow)
    opened_at: datetime | None = None
    last_probe_at: datetime | None = None
    last_probe_ok: bool | None = None

    def move(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, utcnow()
        if state == "OPEN":
            self.opened_at = self.since

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state, "upstream": self.upstream, "failures": self.failures,
            "since": iso(self.since), "opened_at": iso(self.opened_at) if self.opened_at else None,
            "last_probe_at": iso(self.last_probe_at) if self.last_probe_at else None,
            "last_probe_ok": self.last_probe_ok,
        }


class Gateway:
    """Breakers with a probing HALF_OPEN state, and the idempotency admin API."""

    def __init__(self, opts: Options, registry: CollectorRegistry) -> None:
        self.opts = opts
        self.token = opts.resolved_token()
        self.breakers = {n: Breaker(n, u.rstrip("/")) for n, u in opts.upstreams.items()}
        self.store: IdemStore = (RedisIdemStore(opts.redis_url) if opts.redis_url
                                 else MemoryIdemStore())
        self.deleted_keys: list[str] = []
        self.forced: list[dict[str, str]] = []
        self.g_breaker = Gauge("breaker_state", "0 closed, 0.5 half-open, 1 open",
                               ["downstream"], registry=registry)
        self.g_p95 = Gauge("idemp_lock_wait_p95_seconds",
                           "p95 wait for an idempotency lock (derived from stale locks)",
                           registry=registry)
        self.g_stale = Gauge("idemp_stale_locks", "in_progress keys whose lock has expired",
                             registry=registry)
        self.g_keys = Gauge("idemp_keys", "idempotency keys stored", registry=registry)
        self._http: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/status/breakers", self.get_breakers)
        app.router.add_post("/admin/breakers/{name}/force", self.force_breaker)
        app.router.add_post("/admin/breakers/{name}/trip", self.trip_breaker)
        app.router.add_get("/admin/idempotency/recent", self.idem_recent)
        app.router.add_post("/admin/idempotency/_inject", self.idem_inject)
        app.router.add_get("/admin/idempotency/{key}", self.idem_get)
        app.router.add_delete("/admin/idempotency/{key}", self.idem_delete)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        task = asyncio.create_task(self._probe_loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._http.close()
        await self.store.close()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.probe_interval_s)
            for b in list(self.breakers.values()):
                if (b.state == "OPEN" and self.opts.breaker_open_s > 0 and b.opened_at
                        and (utcnow() - b.opened_at).total_seconds() >= self.opts.breaker_open_s):
                    b.move("HALF_OPEN")
                if b.state == "HALF_OPEN":
                    await self._probe(b)

    async def _probe(self, b: Breaker) -> None:
        assert self._http is not None
        try:
            async with self._http.get(f"{b.upstream}/health") as resp:
                ok = resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        b.last_probe_at, b.last_probe_ok = utcnow(), ok
        # a breaker forced OPEN/CLOSED while the probe was in flight keeps the operator's state
        if b.state != "HALF_OPEN":
            return
        if ok:
            b.failures = 0
            b.move("CLOSED")
        else:
            b.failures += 1
            b.move("OPEN")

    def _breaker(self, request: web.Request) -> Breaker:
        name = request.match_info["name"]
        if name not in self.breakers:
            raise json_error(web.HTTPNotFound, f"no breaker named {name!r}")
        return self.breakers[name]

    async def get_breakers(self, request: web.Request) -> web.Response:
        return web.json_response({n: b.view() for n, b in self.breakers.items()})

    async def force_breaker(self, request: web.Request) -> web.Response:
        require_bearer(request, self.token)
        b = self._breaker(request)
        state = str((await read_json(request)).get("state", "")).upper()
        if state not in BREAKER_STATES:
            raise json_error(web.HTTPBadRequest, f"state must be one of {BREAKER_STATES}")
        previous = b.state
        b.move(state)
        self.forced.append({"name": b.name, "from": previous, "to": state})
        return web.json_response({"name": b.name, "previous": previous, "state": b.state})

    async def trip_breaker(self, request: web.Request) -> web.Response:
        require_bearer(request, self.token)
        b = self._breaker(request)
        previous = b.state
        b.failures += 5
        b.move("OPEN")
        return web.json_response({"name": b.name, "previous": previous, "state": b.state})

    def _tenant_ok(self, request: web.Request, item: dict[str, Any]) -> bool:
        tenant = request.headers.get("X-Tenant")
        return not tenant or item.get("tenant") == tenant

    async def idem_recent(self, request: web.Request) -> web.Response:
        require_bearer(request, self.token)
        items = [i for i in await self.store.items() if self._tenant_ok(request, i)]
        limit = int(request.query.get("limit", "1000"))
        cursor = request.query.get("cursor")
        if cursor is None and len(items) <= limit:
            items.sort(key=lambda i: str(i.get("updated_at") or i.get("stored_at") or ""),
                       reverse=True)
            return web.json_response({"items": items})
        # Paged: key order and a key cursor, so records deleted between pages (a purge walking
        # the listing) never shift a later page the way an offset would.
        page = sorted((i for i in items if cursor is None or str(i["key"]) > cursor), key=lambda i: str(i["key"]))
        body: dict[str, Any] = {"items": page[:limit]}
        if len(page) > limit:
            body["nextCursor"] = str(page[limit - 1]["key"])
        return web.json_response(body)

    async def _owned(self, request: web.Request) -> dict[str, Any]:
        require_bearer(request, self.token)
        item = await self.store.get(request.match_info["key"])
        # another tenant's key answers 404, not 403, so keys do not leak across tenants
        if item is None or not self._tenant_ok(request, item):
            raise json_error(web.HTTPNotFound, "no such idempotency key")
        return item

    async def idem_get(self, request: web.Request) -> web.Response:
        item = await self._owned(request)
        item["headers"] = {"Idempotency-Key": item["key"], "X-Tenant": item["tenant"]}
        return web.json_response(item)

    async def idem_delete(self, request: web.Request) -> web.Response:
        item = await self._owned(request)
        if not await self.store.delete(item["key"]):
            raise json_error(web.HTTPNotFound, "no such idempotency key")
        self.deleted_keys.append(item["key"])
        return web.Response(status=204)

    async def idem_inject(self, request: web.Request) -> web.Response:
        """Chaos: create keys; ``stale`` ones are in_progress with a lock that expired."""
        require_bearer(request, self.token)
        body = await read_json(request)
        count = int(body.get("count", 1))
        if not 0 < count <= 10000:
            raise json_error(web.HTTPBadRequest, "count must be 1..10000")
        stale = bool(body.get("stale", True))
        tenant = str(body.get("tenant", "t1"))
        prefix = str(body.get("prefix", "order-"))
        state = str(body.get("state", "in_progress" if stale else "completed"))
        now = utcnow()
        created = []
        for i in range(count):
            key = f"{prefix}{uuid4().hex[:12]}"
            lock = now - timedelta(seconds=60 + i) if stale else now + timedelta(seconds=30)
            await self.store.put({
                "key": key, "tenant": tenant, "state": state, "owner": f"orders-{i % 3}",
                "replay_count": 5 + i % 20, "lock_expires_at": iso(lock),
                "payload_fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16],
                "stored_at": iso(now - timedelta(seconds=300)),
                "updated_at": iso(now - timedelta(seconds=240 - i % 60)),
                "ttl_s": int(body.get("ttl_s", 86400)),
            })
            created.append(key)
        return web.json_response({"created": created}, status=201)

    async def refresh_metrics(self) -> None:
        for b in self.breakers.values():
            self.g_breaker.labels(downstream=b.name).set(BREAKER_GAUGE[b.state])
        items = await self.store.items()
        now = utcnow()
        stale = sum(1 for i in items if is_stale(i, now))
        self.g_stale.set(stale)
        self.g_keys.set(len(items))
        # followers wait out the whole expired lock before retrying: that is the p95 symptom
        self.g_p95.set(2.5 if stale else 0.05)

    def stats(self) -> dict[str, Any]:
        return {"deleted_keys": list(self.deleted_keys), "forced": list(self.forced),
                "breakers": {n: b.state for n, b in self.breakers.items()}}
