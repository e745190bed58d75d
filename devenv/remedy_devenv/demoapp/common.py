"""What every demo role shares: defaults, the options a role is tuned with, time and JSON
helpers, bearer-token checks, and the Role protocol.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

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
    # Resident memory held from start (touched, so charged to the memory cgroup): a release
    # that needs more memory than its pod's limit, for the OOM scenario on the real node.
    hold_mib: int = 0

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
