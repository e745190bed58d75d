"""The Alertmanager webhook receiver (payload version 4), served by aiohttp inside the operator.

Bad input never reaches the engine: missing/wrong bearer token -> 401 (compared in constant
time), body over the limit -> 413, not JSON -> 400, wrong version or shape -> 422. A firing
alert creates at most one Remediation per policy (dedup by deterministic name); a resolved
alert cancels children that have not started.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine.policy import Firing, PolicyEngine
from ..observability import ALERTS, WEBHOOK_LATENCY
from .index import PolicyIndex

log = logging.getLogger("remedy.webhook")


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str | None = None
    fingerprint: str = Field(min_length=1, max_length=128)


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[Alert] = Field(max_length=10_000)


class TokenSource:
    """Reads the bearer token from a file (a mounted Secret), re-reading when it changes."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._mtime = -1.0
        self._token = b""

    def get(self) -> bytes | None:
        if self.path is None:
            return None
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._token = self.path.read_bytes().strip()
            self._mtime = mtime
        return self._token


def make_app(engine: PolicyEngine, index: PolicyIndex, token: TokenSource, max_body: int, require_token: bool = True) -> web.Application:
    app = web.Application(client_max_size=max_body)

    async def receive(request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await _receive(request)
        WEBHOOK_LATENCY.labels(code=str(response.status)).observe(time.perf_counter() - started)
        return response

    async def _receive(request: web.Request) -> web.Response:
        expected = token.get()
        if expected is None and require_token:
            return _error(503, "webhook token not configured")
        if expected is not None:
            header = request.headers.get("Authorization", "")
            given = header[7:].strip().encode() if header.startswith("Bearer ") else b""
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong bearer token")
        if request.content_length is not None and request.content_length > max_body:
            return _error(413, f"body over {max_body} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {max_body} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body is not JSON")
        try:
            payload = Payload.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            return _error(422, f"not an Alertmanager v4 payload: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}")
        outcomes: dict[str, int] = {}
        jobs = []
        for alert in payload.alerts:
            ALERTS.labels(status=alert.status).inc()
            firing = Firing(alert.fingerprint, alert.startsAt, alert.labels, alert.annotations, "alertmanager")
            for entry in index.matching(alert.labels):
                policy = {"metadata": entry["metadata"], "spec": entry["spec"]}
                jobs.append(engine.fire(policy, firing) if alert.status == "firing" else engine.resolve(policy, firing))
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            key = result if isinstance(result, str) else f"error:{type(result).__name__}"
            if not isinstance(result, str):
                log.warning("webhook: alert handling failed: %r", result, exc_info=result)
            outcomes[key] = outcomes.get(key, 0) + 1
        return web.json_response({"alerts": len(payload.alerts), "outcomes": outcomes})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "policies": len(index)})

    app.router.add_post("/alertmanager", receive)
    app.router.add_get("/healthz", healthz)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
