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

Layout: ``common`` (options, helpers, the Role protocol), one module per role family
(``gateway``, ``chaos`` for payments and inventory, ``orders``, ``reconcile``), ``app`` (the
aiohttp app around a role, /admin/stats, Idempotency-Key replays), ``process`` (a role as its
own process, and its command line).
"""

from __future__ import annotations

from ..testkit import free_port
from .app import REGISTRY_KEY, ROLE_KEY, build_app, runner_port, start_demo_service
from .chaos import ChaosService
from .common import (
    BREAKER_GAUGE,
    BREAKER_STATES,
    CHAOS_FIELDS,
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_CRON_SECRET,
    DEFAULT_PORTS,
    ROLES,
    Options,
    Role,
    iso,
    json_error,
    parse_iso,
    read_json,
    require_bearer,
    utcnow,
)
from .gateway import Breaker, Gateway, IdemStore, MemoryIdemStore, RedisIdemStore, is_stale
from .orders import Orders
from .process import DemoProcess, main, parse_args
from .reconcile import Reconcile

__all__ = [
    "BREAKER_GAUGE", "BREAKER_STATES", "CHAOS_FIELDS", "DEFAULT_ADMIN_TOKEN", "DEFAULT_CRON_SECRET", "DEFAULT_PORTS",
    "REGISTRY_KEY", "ROLES", "ROLE_KEY", "Breaker", "ChaosService", "DemoProcess", "Gateway", "IdemStore",
    "MemoryIdemStore", "Options", "Orders", "Reconcile", "RedisIdemStore", "Role", "build_app", "free_port", "is_stale",
    "iso", "json_error", "main", "parse_args", "parse_iso", "read_json", "require_bearer", "runner_port",
    "start_demo_service", "utcnow",
]
