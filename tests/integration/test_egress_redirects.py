"""Issue 20, egress: a redirect never carries a request past the allowlist.

Two real HTTP servers on two loopback addresses: ``allowed`` on 127.0.0.1 (the allowlist is
``127.0.0.1/32``) answers every path with a 302 to ``outside`` on 127.0.0.2, which only counts
what reaches it. The counter at ``outside`` is the witness (the operator does not control it).
Each action runs through the real engine (``Engine`` with an in-memory store, the production
``Guard`` and egress session factory), so the assertion is on the Remediation as a person
would read it: Failed, with a condition naming the redirect, and zero requests at ``outside``.

The control test follows the same redirect with a plain aiohttp session and sees the counter
move: the witness can fail.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from remedy.actions.base import ActionContext
from remedy.actions.registry import REGISTRY
from remedy.base.constants import REMEDIATIONS
from remedy.clients.connectors import Connectors
from remedy.clients.egress import EgressPolicy, session_factory
from remedy.lifecycle.authz import Guard
from remedy.lifecycle.machine import Lifecycle
from tests.fixtures.actions import make_ctx
from tests.fixtures.fakes import FakeRecorder, FakeStore
from tests.fixtures.helpers import results_dir, serve_http

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "egress-redirect-token-9d1c"
POLICY = EgressPolicy.from_text("127.0.0.1/32")


@dataclass
class Server:
    """A loopback HTTP server and every request it saw: (method, path, Authorization)."""

    base: str = ""
    hits: list[tuple[str, str, str | None]] = field(default_factory=list)

    def counting(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.hits.append((request.method, request.path, request.headers.get("Authorization")))
            return await handler(request)
        return counted


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    allowed, outside = Server(), Server()

    async def outside_ok(request: web.Request) -> web.Response:
        # Whatever reached us would succeed: a breaker document that reads OPEN, a 200 health.
        return web.json_response({"payments": {"state": "OPEN"}, "records": []})

    async def redirect_all(request: web.Request) -> web.Response:
        if request.path == "/status-ok":
            return web.json_response({"payments": {"state": "OPEN"}})
        raise web.HTTPFound(f"{outside.base}{request.path_qs}")

    async with serve_http(outside.counting(outside_ok), "127.0.0.2") as outside.base, \
            serve_http(allowed.counting(redirect_all), "127.0.0.1") as allowed.base:
        yield allowed, outside


def _engine(store: FakeStore, recorder: FakeRecorder) -> Lifecycle:
    connectors = Connectors(http=session_factory(POLICY))

    def context(obj: dict[str, Any]) -> ActionContext:
        meta = obj["metadata"]
        return make_ctx({("tok", "token"): TOKEN}, namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                        connectors=connectors)

    return Lifecycle(store=store, recorder=recorder, registry=REGISTRY, context_factory=context,
                  guard=Guard(reviewer=None, egress=POLICY), heartbeat_interval=60.0)


async def _run(action: dict[str, Any]) -> dict[str, Any]:
    store, recorder = FakeStore(), FakeRecorder()
    name = f"r-{uuid.uuid4().hex[:6]}"
    store.add(REMEDIATIONS, {"metadata": {"name": name}, "spec": {"action": action}})
    await _engine(store, recorder).reconcile("ns", name)
    return dict(store.obj(REMEDIATIONS, name).get("status") or {})


def _completed(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Completed")


def _breaker(status_url: str, health_url: str, reset_url: str) -> dict[str, Any]:
    return {"resetCircuitBreaker": {
        "statusUrl": status_url, "breaker": "payments",
        "upstreamHealth": {"url": health_url, "consecutive": 1, "interval": "0s"},
        "reset": {"url": reset_url, "method": "POST", "bearerTokenSecretRef": {"name": "tok", "key": "token"}},
    }}


@pytest.mark.parametrize("case", ["statusUrl", "healthUrl", "httpRequest", "idempotencyAdminApi", "notifySink"])
async def test_a_redirect_from_an_allowed_host_never_reaches_the_second_host(
        servers: tuple[Server, Server], case: str) -> None:
    allowed, outside = servers
    a = allowed.base
    action = {
        "statusUrl": _breaker(f"{a}/status", f"{a}/health", f"{a}/reset"),
        "healthUrl": _breaker(f"{a}/status-ok", f"{a}/health", f"{a}/reset"),
        "httpRequest": {"httpRequest": {"url": f"{a}/hook", "method": "POST",
                                        "bearerTokenSecretRef": {"name": "tok", "key": "token"}}},
        "idempotencyAdminApi": {"purgeIdempotencyKeys": {
            "backend": "http", "http": {"baseUrl": a, "tokenSecretRef": {"name": "tok", "key": "token"}}}},
        "notifySink": {"notify": {"message": "m", "sink": {"format": "generic", "url": f"{a}/sink"}}},
    }[case]
    status = await _run(action)
    done = _completed(status)
    assert status["phase"] == "Failed", status
    assert done["reason"] == "RedirectRefused", done
    assert "redirect" in done["message"], done
    if case != "notifySink":  # a sink URL may come from a Secret: its Location is not repeated
        assert outside.base in done["message"], done
    assert TOKEN not in str(status)
    assert allowed.hits, "the allowed host was asked"
    assert outside.hits == [], f"the redirect reached {outside.base}: {outside.hits}"
    _record(case, status, allowed, outside)


async def test_an_ip_literal_outside_the_allowlist_is_refused_before_sending(servers: tuple[Server, Server]) -> None:
    _, outside = servers
    status = await _run({"httpRequest": {"url": f"{outside.base}/hook", "method": "POST"}})
    assert status["phase"] == "Failed"
    assert _completed(status)["reason"] == "DestinationNotAllowed"
    assert outside.hits == []


async def test_control_a_plain_client_following_the_redirect_does_reach_the_second_host(
        servers: tuple[Server, Server]) -> None:
    """Without remedy's egress session the witness moves: the counter can fail the test above."""
    allowed, outside = servers
    async with aiohttp.ClientSession() as session, session.get(f"{allowed.base}/status") as resp:
        assert resp.status == 200
    assert len(outside.hits) == 1


_RESULTS: dict[str, Any] = {}


def _record(case: str, status: dict[str, Any], allowed: Server, outside: Server) -> None:
    import json

    _RESULTS[case] = {"phase": status["phase"], "reason": _completed(status)["reason"],
                      "allowedHostRequests": len(allowed.hits), "outsideHostRequests": len(outside.hits)}
    (results_dir() / "egress_redirects.json").write_text(json.dumps(
        {"allowlist": "127.0.0.1/32", "outsideHost": "127.0.0.2", "cases": _RESULTS}, indent=2, sort_keys=True) + "\n")
