"""The aiohttp application around a role: /health, /metrics, /admin/stats (received and
succeeded per route: the witness of side effects), the Idempotency-Key replay layer, and
in-process start for tests.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .chaos import ChaosService
from .common import (
    ROLES,
    Handler,
    Options,
    Role,
    json_error,
)
from .gateway import Gateway
from .orders import Orders
from .reconcile import Reconcile

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
