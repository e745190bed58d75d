"""Demo stand-ins for the runbooks' services (gateway, orders, payments, inventory, reconcile).

Why this exists: remedy's actions (resetCircuitBreaker, purgeIdempotencyKeys, httpRequest,
deleteRedisKeys, restartWorkload) must be proven against processes that behave like the
services in /work/shared/runbooks, with real HTTP status codes, real Redis keys and real
Prometheus metrics, and the demo needs something whose state visibly changes when remedy
acts. Each role is a small aiohttp app; ``python -m remedy_devenv.demoapp --role ROLE --port P``.

Every role serves GET /health, GET /metrics (own CollectorRegistry) and GET /admin/stats, which
counts every mutating request received and succeeded per route so tests can prove a side
effect happened exactly once.

Every role honours an ``Idempotency-Key`` header on mutating requests (as runbook 000's gateway
does for its clients): the first request with a key runs and its response is kept; a repeat
with the same key (method and route) gets that response again with ``Idempotent-Replayed:
true`` and runs nothing, counted under ``replayed`` in /admin/stats (``succeeded`` counts runs
only). A repeat that arrives while the first is still running gets 409.

Roles (default ports in docs/ports.md):

* gateway   runbook 001 breakers + runbook 000 idempotency admin API (Bearer token).
* payments  /health that fails while chaos says so; /chaos/config GET/PUT/DELETE; Redis
            ``chaos:payments:*`` keys are the config when --redis-url is given.
* inventory same chaos pattern with ``chaos:inventory:*``.
* orders    an outbox whose publisher can be made stuck; only a new process drains it.
* reconcile runbook 002's POST /api/cron/reconcile behind a CRON_SECRET bearer token.

This is test and demo code: tokens have well-known defaults and nothing is hardened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from uuid import uuid4

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

ROLES = ("gateway", "orders", "payments", "inventory", "reconcile")
DEFAULT_PORTS = {"gateway": 18000, "orders": 18001, "payments": 18002, "inventory": 18003,
                 "reconcile": 18005}
DEFAULT_ADMIN_TOKEN = "demo-admin-token"
DEFAULT_CRON_SECRET = "demo-cron-secret"
BREAKER_STATES = ("CLOSED", "OPEN", "HALF_OPEN")
BREAKER_GAUGE = {"CLOSED": 0.0, "OPEN": 1.0, "HALF_OPEN": 0.5}
CHAOS_FIELDS = ("error_rate", "latency_ms", "lock_contention_ms")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Options:
    """Everything a role can be tuned with; CLI flags map 1:1 onto these fields."""

    role: str
    redis_url: str | None = None
    state_file: str | None = None
    token: str | None = None
    # breaker name -> upstream base URL whose /health decides HALF_OPEN -> CLOSED|OPEN
    upstreams: dict[str, str] = field(default_factory=lambda: {
        "payments": "http://127.0.0.1:18002", "inventory": "http://127.0.0.1:18003"})
    probe_interval_s: float = 0.5
    # 0 keeps an OPEN breaker open until someone forces it: runbook 003's "stuck" breaker,
    # the situation remedy exists for. >0 behaves like runbook 001's open_duration.
    breaker_open_s: float = 0.0
    outbox_rate: float = 20.0
    outbox_max: float = 5000.0
    outbox_drain_rate: float = 250.0
    tick_s: float = 0.1

    def resolved_token(self) -> str:
        if self.token:
            return self.token
        if self.role == "reconcile":
            return os.environ.get("CRON_SECRET", DEFAULT_CRON_SECRET)
        return os.environ.get("DEMO_ADMIN_TOKEN", DEFAULT_ADMIN_TOKEN)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def json_error(exc: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return exc(text=json.dumps({"error": message}), content_type="application/json",
               headers=headers or None)


def require_bearer(request: web.Request, token: str) -> None:
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    # constant-time compare: this is the pattern remedy's users copy, so keep it right
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
        raise json_error(web.HTTPUnauthorized, "missing or invalid bearer token",
                         **{"WWW-Authenticate": 'Bearer realm="demo"'})


async def read_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise json_error(web.HTTPBadRequest, "body is not JSON") from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "body must be a JSON object")
    return body


# --------------------------------------------------------------------------- roles


class Role(Protocol):
    """What each service contributes to the shared app skeleton."""

    def add_routes(self, app: web.Application) -> None: ...
    async def refresh_metrics(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def lifecycle(self, app: web.Application) -> AsyncIterator[None]: ...


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
        except (aiohttp.ClientError, asyncio.TimeoutError):
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


# ---- payments / inventory chaos (runbook 001)


class ChaosService:
    """Chaos config in Redis ``chaos:{role}:*`` (as the runbook's redis-cli checks) or in memory."""

    def __init__(self, opts: Options, registry: CollectorRegistry) -> None:
        self.role = opts.role
        self.down = False
        self.memory: dict[str, float] = {}
        self._redis: Any = None
        if opts.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(opts.redis_url, decode_responses=True)
        self.g_up = Gauge("service_up", "1 while /health answers 200", registry=registry)
        self.g_chaos = Gauge("chaos_setting", "active chaos settings", ["setting"],
                             registry=registry)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/chaos/config", self.get_config)
        app.router.add_put("/chaos/config", self.put_config)
        app.router.add_delete("/chaos/config", self.delete_config)
        app.router.add_post("/admin/down", self.set_down)
        app.router.add_post("/admin/up", self.set_up)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        yield
        if self._redis is not None:
            await self._redis.aclose()

    async def config(self) -> dict[str, float]:
        if self._redis is None:
            return dict(self.memory)
        names = [f"chaos:{self.role}:{f}" for f in CHAOS_FIELDS]
        values = await self._redis.mget(names)
        out = {}
        for name, value in zip(CHAOS_FIELDS, values):
            if value is not None:
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    async def view(self) -> dict[str, Any]:
        cfg = await self.config()
        return {"service": self.role, "source": "redis" if self._redis else "memory",
                "enabled": bool(cfg), "config": cfg, "down": self.down}

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(await self.view())

    async def put_config(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        unknown = set(body) - set(CHAOS_FIELDS)
        if unknown:
            raise json_error(web.HTTPBadRequest, f"unknown chaos settings {sorted(unknown)}")
        try:
            values = {k: float(v) for k, v in body.items()}
        except (TypeError, ValueError):
            raise json_error(web.HTTPBadRequest, "chaos settings must be numbers") from None
        if self._redis is None:
            self.memory.update(values)
        elif values:
            await self._redis.mset({f"chaos:{self.role}:{k}": str(v) for k, v in values.items()})
        return web.json_response(await self.view())

    async def delete_config(self, request: web.Request) -> web.Response:
        cleared = sorted(await self.config())
        self.memory.clear()
        if self._redis is not None:
            await self._redis.delete(*[f"chaos:{self.role}:{f}" for f in CHAOS_FIELDS])
        return web.json_response({**await self.view(), "cleared": cleared})

    async def set_down(self, request: web.Request) -> web.Response:
        self.down = True
        return web.json_response({"down": True})

    async def set_up(self, request: web.Request) -> web.Response:
        self.down = False
        return web.json_response({"down": False})

    async def health(self) -> tuple[int, dict[str, Any]]:
        cfg = await self.config()
        latency = min(cfg.get("latency_ms", 0.0), 5000.0)
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        if self.down:
            return 503, {"status": "down", "reason": "forced down (/admin/down)"}
        if cfg.get("error_rate", 0.0) >= 1:
            return 503, {"status": "down", "reason": f"chaos error_rate={cfg['error_rate']}"}
        return 200, {"status": "ok"}

    async def refresh_metrics(self) -> None:
        status, _ = await self.health()
        self.g_up.set(1 if status == 200 else 0)
        cfg = await self.config()
        for name in CHAOS_FIELDS:
            self.g_chaos.labels(setting=name).set(cfg.get(name, 0.0))

    def stats(self) -> dict[str, Any]:
        return {"down": self.down}


# ---- orders outbox (runbooks 001 and 004)


class Orders:
    """An outbox whose stuck publisher only a new process (a rollout restart) fixes.

    The backlog is persisted in --state-file so the replacement process sees it and drains it,
    which is what the demo shows after remedy's restartWorkload.
    """

    def __init__(self, opts: Options, registry: CollectorRegistry) -> None:
        self.opts = opts
        self.state_file = Path(opts.state_file) if opts.state_file else None
        self.pending = 0.0
        self.stuck = False
        self.rate = opts.outbox_rate
        self.max = opts.outbox_max
        self.published = 0
        self.restored = 0
        if self.state_file and self.state_file.exists():
            with contextlib.suppress(ValueError, OSError):
                self.restored = int(json.loads(self.state_file.read_text())["pending"])
                self.pending = float(self.restored)
        self.g_pending = Gauge("outbox_pending", "outbox events not yet published",
                               registry=registry)
        self.g_stuck = Gauge("outbox_publisher_stuck", "1 while the publisher is wedged",
                             registry=registry)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/admin/outbox/stick", self.stick)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._persist()

    async def _loop(self) -> None:
        last, saved = time.monotonic(), -1
        while True:
            await asyncio.sleep(self.opts.tick_s)
            now = time.monotonic()
            dt, last = now - last, now
            if self.stuck:
                self.pending = min(self.max, self.pending + self.rate * dt)
            else:
                drained = min(self.pending, self.opts.outbox_drain_rate * dt)
                self.pending -= drained
                self.published += int(drained)
            if int(self.pending) != saved:
                saved = int(self.pending)
                self._persist()

    def _persist(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pending": int(self.pending)}))
        tmp.replace(self.state_file)  # atomic: a SIGKILL mid-write must not lose the backlog

    async def stick(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        self.rate = float(body.get("rate", self.rate))
        self.max = float(body.get("max", self.max))
        self.stuck = True
        return web.json_response({"stuck": True, "rate": self.rate, "max": self.max})

    async def refresh_metrics(self) -> None:
        self.g_pending.set(int(self.pending))
        self.g_stuck.set(1 if self.stuck else 0)

    def stats(self) -> dict[str, Any]:
        return {"outbox": {"pending": int(self.pending), "stuck": self.stuck,
                           "published": self.published, "restored_from_state": self.restored}}


# ---- reconcile cron (runbook 002)


class Reconcile:
    def __init__(self, opts: Options, registry: CollectorRegistry) -> None:
        self.token = opts.resolved_token()
        self.stuck = 0
        self.runs = 0
        # Runs per caller (X-Remediation header): the service's own duplicate witness for the
        # crash test; counts runs that actually happened, not requests that arrived.
        self.runs_by_caller: Counter[str] = Counter()
        self.g_stuck = Gauge("stuck_reservations", "reservations pending past their deadline",
                             registry=registry)
        self.g_runs = Gauge("reconcile_runs", "reconcile runs since start", registry=registry)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/cron/reconcile", self.reconcile)
        app.router.add_post("/admin/reservations/stick", self.stick)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        yield

    async def reconcile(self, request: web.Request) -> web.Response:
        require_bearer(request, self.token)
        reconciled, self.stuck = self.stuck, 0
        self.runs += 1
        self.runs_by_caller[request.headers.get("X-Remediation", "")] += 1
        return web.json_response({"reconciled": reconciled})

    async def stick(self, request: web.Request) -> web.Response:
        self.stuck += int((await read_json(request)).get("count", 60))
        return web.json_response({"stuck_reservations": self.stuck})

    async def refresh_metrics(self) -> None:
        self.g_stuck.set(self.stuck)
        self.g_runs.set(self.runs)

    def stats(self) -> dict[str, Any]:
        return {"reconcile_runs": self.runs, "stuck_reservations": self.stuck,
                "runs_by_caller": dict(self.runs_by_caller)}


# --------------------------------------------------------------------------- app skeleton

ROLE_KEY = web.AppKey("role", object)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)


def build_app(opts: Options) -> web.Application:
    if opts.role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {opts.role!r}")
    registry = CollectorRegistry()
    role: Role
    if opts.role == "gateway":
        role = Gateway(opts, registry)
    elif opts.role in ("payments", "inventory"):
        role = ChaosService(opts, registry)
    elif opts.role == "orders":
        role = Orders(opts, registry)
    else:
        role = Reconcile(opts, registry)
    received: Counter[str] = Counter()
    succeeded: Counter[str] = Counter()
    replayed: Counter[str] = Counter()
    # (route name, key) -> kept response (status, body, content type); None while running.
    kept: OrderedDict[tuple[str, str], tuple[int, bytes, str] | None] = OrderedDict()

    @web.middleware
    async def count_mutations(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return await handler(request)
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route else request.path}"
        received[name] += 1
        key = request.headers.get("Idempotency-Key")
        if key:
            if (name, key) in kept:
                done = kept[(name, key)]
                replayed[name] += 1
                if done is None:
                    raise json_error(web.HTTPConflict, "a request with this Idempotency-Key is still in progress")
                status, body, ctype = done
                return web.Response(status=status, body=body, content_type=ctype.split(";")[0],
                                    headers={"Idempotent-Replayed": "true"})
            kept[(name, key)] = None
            while len(kept) > 10_000:
                kept.popitem(last=False)
        try:
            resp = await handler(request)  # HTTPException propagates: it is not a success
        except BaseException:
            if key:
                kept.pop((name, key), None)  # failed: nothing kept, a repeat runs again
            raise
        if resp.status < 400:
            succeeded[name] += 1
        if key:
            if isinstance(resp, web.Response) and resp.status < 500:
                body = bytes(resp.body) if isinstance(resp.body, (bytes, bytearray)) else b""
                kept[(name, key)] = (resp.status, body, resp.content_type or "application/json")
            else:
                kept.pop((name, key), None)
        return resp

    async def health(request: web.Request) -> web.Response:
        if isinstance(role, ChaosService):
            status, body = await role.health()
            return web.json_response(body, status=status)
        return web.json_response({"status": "ok", "service": opts.role})

    async def metrics(request: web.Request) -> web.Response:
        await role.refresh_metrics()
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"role": opts.role, "received": dict(received),
                                  "succeeded": dict(succeeded), "replayed": dict(replayed), **role.stats()})

    app = web.Application(middlewares=[count_mutations])
    app[ROLE_KEY] = role
    app[REGISTRY_KEY] = registry
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/stats", stats)
    role.add_routes(app)
    app.cleanup_ctx.append(role.lifecycle)
    return app


async def start_demo_service(role: str, port: int = 0, host: str = "127.0.0.1",
                             **opts: Any) -> web.AppRunner:
    """Run a role inside the current event loop (tests); port 0 picks a free port.

    The bound port is ``runner_port(runner)``; stop with ``await runner.cleanup()``.
    """
    runner = web.AppRunner(build_app(Options(role=role, **opts)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def runner_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class DemoProcess:
    """A role in its own OS process, so the demo can "roll" it the way a Deployment would."""

    def __init__(self, role: str, port: int = 0, *, host: str = "127.0.0.1",
                 args: Sequence[str] = (), env: dict[str, str] | None = None,
                 log_path: str | None = None) -> None:
        self.role, self.host = role, host
        self.port = port or free_port(host)
        self.args = list(args)
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ if self.env is None else self.env)
        # works before `pip install -e`: the harness root is devenv/, the operator's operator/
        here = Path(__file__).resolve().parents[1]
        pkg_root = os.pathsep.join((str(here), str(here.parent / "operator")))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        cmd = [sys.executable, "-m", "remedy_devenv.demoapp", "--role", self.role,
               "--host", self.host, "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        if self.log_path:
            out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demoapp {self.role} exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/admin/stats", timeout=1).close()
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop(kill=True)
        raise TimeoutError(f"demoapp {self.role} not ready on {self.url} in {timeout}s")

    def stop(self, timeout: float = 10.0, kill: bool = False) -> int | None:
        """SIGTERM (graceful: orders persists its backlog) or SIGKILL (a crash)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> DemoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_args(argv: Sequence[str] | None) -> tuple[Options, str, int]:
    p = argparse.ArgumentParser(prog="python -m remedy_devenv.demoapp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: the role's port in docs/ports.md")
    p.add_argument("--redis-url")
    p.add_argument("--state-file")
    p.add_argument("--token", help="gateway: DEMO_ADMIN_TOKEN; reconcile: CRON_SECRET")
    p.add_argument("--upstream", action="append", default=[], metavar="NAME=URL",
                   help="gateway breaker and the upstream its HALF_OPEN probe checks")
    p.add_argument("--probe-interval", type=float, default=0.5)
    p.add_argument("--breaker-open-s", type=float, default=0.0,
                   help="auto HALF_OPEN after this long; 0 = stays OPEN (stuck)")
    p.add_argument("--outbox-rate", type=float, default=20.0)
    p.add_argument("--outbox-max", type=float, default=5000.0)
    p.add_argument("--outbox-drain-rate", type=float, default=250.0)
    a = p.parse_args(argv)
    opts = Options(role=a.role, redis_url=a.redis_url, state_file=a.state_file, token=a.token,
                   probe_interval_s=a.probe_interval, breaker_open_s=a.breaker_open_s,
                   outbox_rate=a.outbox_rate, outbox_max=a.outbox_max,
                   outbox_drain_rate=a.outbox_drain_rate)
    if a.upstream:
        opts.upstreams = dict(u.split("=", 1) for u in a.upstream)
    return opts, a.host, a.port or DEFAULT_PORTS[a.role]


def main(argv: Sequence[str] | None = None) -> None:
    opts, host, port = parse_args(argv)
    print(f"demoapp role={opts.role} listening on http://{host}:{port}", flush=True)
    web.run_app(build_app(opts), host=host, port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
