"""The Alertmanager webhook receiver (payload version 4), served by aiohttp inside the operator.

Bad input never reaches the policies, and no body gets a 5xx: missing/wrong bearer token -> 401
(compared in constant time), body over the limit -> 413, body not complete within the read
deadline -> 408, not JSON (including nesting too deep for the parser) -> 400, wrong version or
shape -> 422. A firing alert creates at most one Remediation per policy (dedup by
deterministic name); a resolved alert cancels children that have not started.

Sizing (issue 13): Alertmanager never retries a 4xx, so a 413 loses the whole group. The
default limit (REMEDY_WEBHOOK_MAX_BODY, 16 MiB) is twice a realistic 10,000-alert group
(7.8 MB, tests/security/alert_groups.py; the payload model caps a group at 10,000 alerts, so
set ``max_alerts`` in Alertmanager's webhook_config for larger groups). A 413 is counted in
``remedy_webhook_rejected_total{code="413"}`` and logged with the group key, read from the
first bytes of the body (Alertmanager writes groupKey before the alerts).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..base.constants import HEADER_FORWARDED_FOR
from ..base.observability import ALERTS, WEBHOOK_LATENCY, WEBHOOK_REJECTED
from ..policies.firing import Firing
from ..policies.machinery import Policies
from .index import PolicyIndex

log = logging.getLogger("remedy.webhook")


class ShardRouter(Protocol):
    """Which replica holds a namespace (runtime/shards.py ShardKeeper): the receiver forwards
    alerts of namespaces it does not own instead of importing the runtime above it."""

    def owns(self, namespace: str | None) -> bool: ...

    def owner_webhook(self, namespace: str) -> str | None: ...


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
    # Typed as Alertmanager sends them, so a malformed group (e.g. nested labels) is a 422.
    groupKey: str = Field(default="", max_length=8192)
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)


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


class BodyTooLargeError(Exception):
    def __init__(self, head: bytes) -> None:
        super().__init__("body too large")
        self.head = head


HEAD_BYTES = 4096
_GROUP_KEY = re.compile(rb'"groupKey"\s*:\s*"((?:[^"\\]|\\.){0,1024})"')


def group_key(head: bytes) -> str:
    """The groupKey from the first bytes of a body, for logging a body that is not parsed."""
    m = _GROUP_KEY.search(head)
    if not m:
        return "(not in the first bytes)"
    try:
        return str(json.loads(b'"' + m.group(1) + b'"'))[:300]
    except ValueError:
        return m.group(1).decode("utf-8", "replace")[:300]


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, or BodyTooLargeError (with its first bytes) as soon as it passes ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(await request.content.read(HEAD_BYTES))
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(b"".join(chunks)[:HEAD_BYTES])


# Alert handling in progress, by (policy uid, status, fingerprint, startsAt): kept referenced
# until done (it may outlive its request), and joined by repeats from concurrent requests.
_in_flight: dict[tuple[str, str, str, str], asyncio.Task[str]] = {}


def _finished(key: tuple[str, str, str, str], task: asyncio.Task[str]) -> None:
    if _in_flight.get(key) is task:
        del _in_flight[key]
    if not task.cancelled() and task.exception() is not None:
        log.warning("webhook: alert handling failed: %r", task.exception(), exc_info=task.exception())


FORWARD_TIMEOUT = 5.0


Work = Callable[[], Awaitable[str]]


async def _forward(url: str, token: bytes | None, data: dict[str, Any], namespaces: set[str],
                   fallback: list[Work]) -> str:
    """POST the alerts of other shards' namespaces to the replica holding them; on any failure
    handle them here instead (deterministic child names keep that dedup-safe)."""
    import aiohttp

    headers = {HEADER_FORWARDED_FOR: ",".join(sorted(namespaces))}
    if token is not None:
        headers["Authorization"] = "Bearer " + token.decode()
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)) as session,
                    session.post(url, json=data, headers=headers) as resp):
            if resp.status == 200:
                return "forwarded"
            log.warning("webhook: forwarding %d alert(s) to %s answered %s; handling them here",
                        len(fallback), url, resp.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("webhook: forwarding %d alert(s) to %s failed (%s); handling them here",
                    len(fallback), url, type(exc).__name__)
    for work in fallback:
        await work()
    return "forwarded-fallback"


def make_app(policies: Policies, index: PolicyIndex, token: TokenSource, max_body: int, require_token: bool = True,
             read_timeout: float = 10.0, answer_within: float = 0.8, shards: ShardRouter | None = None) -> web.Application:
    """``shards``: alerts for namespaces another replica holds are forwarded to it (a forwarded
    request names the namespaces it is for in HEADER_FORWARDED_FOR and is never forwarded again)."""
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
        try:
            raw = await asyncio.wait_for(read_limited(request, max_body), timeout=read_timeout)
        except BodyTooLargeError as exc:
            key = group_key(exc.head)
            WEBHOOK_REJECTED.labels(code="413").inc()
            log.warning("webhook: 413 body over %s bytes (Content-Length %s), group key %s: the group is lost "
                        "(Alertmanager does not retry 4xx); raise REMEDY_WEBHOOK_MAX_BODY or set max_alerts",
                        max_body, request.content_length, key)
            return _error(413, f"body over {max_body} bytes")
        except TimeoutError:
            WEBHOOK_REJECTED.labels(code="408").inc()
            log.warning("webhook: 408 body not received within %ss", read_timeout)
            return _error(408, f"body not received within {read_timeout}s")
        except (ConnectionError, web.HTTPException, asyncio.IncompleteReadError) as exc:
            WEBHOOK_REJECTED.labels(code="400").inc()
            return _error(400, f"body could not be read: {type(exc).__name__}")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            WEBHOOK_REJECTED.labels(code="400").inc()
            return _error(400, "body is not JSON (or nested too deeply)")
        try:
            payload = Payload.model_validate(data)
        except ValidationError as exc:
            WEBHOOK_REJECTED.labels(code="422").inc()
            first = exc.errors()[0]
            return _error(422, f"not an Alertmanager v4 payload: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"[:500])
        except (RecursionError, ValueError, TypeError):
            WEBHOOK_REJECTED.labels(code="400").inc()
            return _error(400, "body is not an Alertmanager v4 payload")
        outcomes: dict[str, int] = {}
        # One task per distinct (policy, status, fingerprint, startsAt) in the group; a repeat in
        # the same group waits for it. Firings whose episode already has a child are counted as
        # duplicates in memory, without a task or an API call.
        jobs: dict[tuple[str, str, str, str], tuple[asyncio.Task[str], list[int]]] = {}
        joined = [0]
        asked = request.headers.get(HEADER_FORWARDED_FOR)
        forwarded_for = set(asked.split(",")) if asked is not None else None
        # url -> (indices of the alerts to send, namespaces asked for, work to do here if it fails)
        forwards: dict[str, tuple[list[int], set[str], list[Work]]] = {}
        for i, alert in enumerate(payload.alerts):
            ALERTS.labels(status=alert.status).inc()
            firing = Firing(alert.fingerprint, alert.startsAt, alert.labels, alert.annotations, "alertmanager")
            for entry in index.matching(alert.labels):
                policy = {"metadata": entry["metadata"], "spec": entry["spec"]}
                ns = str(entry["metadata"].get("namespace"))
                if forwarded_for is not None and ns not in forwarded_for:
                    continue  # the replica that forwarded this group handles that policy itself
                holder = None
                if shards is not None and forwarded_for is None and not shards.owns(ns):
                    holder = shards.owner_webhook(ns)
                if holder is not None:
                    idx, nss, fallback = forwards.setdefault(holder, ([], set(), []))
                    if not idx or idx[-1] != i:
                        idx.append(i)
                    nss.add(ns)
                    fallback.append(functools.partial(policies.fire if alert.status == "firing" else policies.resolve,
                                                      policy, firing))
                    continue
                job_key = (str(entry["metadata"].get("uid")), alert.status, alert.fingerprint, alert.startsAt)
                if job_key in jobs:
                    jobs[job_key][1][0] += 1
                    if alert.status == "firing":
                        policies.count_repeats(policy)
                elif alert.status == "firing" and policies.fire_known_duplicate(policy, firing):
                    outcomes["deduplicated"] = outcomes.get("deduplicated", 0) + 1
                elif job_key in _in_flight:
                    # Another request's task is deciding this very firing: no new task, and this
                    # request does not wait for it (reported as queued).
                    joined[0] += 1
                    if alert.status == "firing":
                        policies.count_repeats(policy)
                else:
                    work = policies.fire(policy, firing) if alert.status == "firing" else policies.resolve(policy, firing)
                    task = asyncio.get_running_loop().create_task(work)
                    _in_flight[job_key] = task
                    task.add_done_callback(functools.partial(_finished, job_key))
                    jobs[job_key] = (task, [0])
        if joined[0]:
            outcomes["queued"] = joined[0]
        for url, (idx, nss, fallback) in forwards.items():
            sub = {**data, "alerts": [data["alerts"][i] for i in idx]}
            task = asyncio.get_running_loop().create_task(_forward(url, expected, sub, nss, fallback))
            jobs[("forward", url, "", "")] = (task, [0])
        # Answer within ``answer_within`` whatever the group size (Alertmanager's webhook
        # timeout must not hit): what is not decided by then keeps running in this process and
        # is reported as queued (docs/policies.md: what an operator death after the answer means).
        if jobs:
            await asyncio.wait([t for t, _ in jobs.values()], timeout=answer_within)
        for task, repeats in jobs.values():
            if not task.done():
                outcomes["queued"] = outcomes.get("queued", 0) + 1 + repeats[0]
                continue
            failure = task.exception() if not task.cancelled() else asyncio.CancelledError()
            key = task.result() if failure is None else f"error:{type(failure).__name__}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if repeats[0]:
                again = "deduplicated" if key == "created" else key
                outcomes[again] = outcomes.get(again, 0) + repeats[0]
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
