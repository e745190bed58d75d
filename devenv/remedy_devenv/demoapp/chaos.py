"""The payments and inventory roles: a /health that fails while chaos says so, and the chaos
configuration in Redis (``chaos:<role>:*``) that runbook 001 says is sometimes left enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from .common import (
    CHAOS_FIELDS,
    Options,
    json_error,
    read_json,
)

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
        for name, value in zip(CHAOS_FIELDS, values, strict=True):  # MGET answers one value per key
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
