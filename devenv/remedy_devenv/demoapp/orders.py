"""The orders role: an outbox whose publisher can be wedged; only a new process (a restart
of the Deployment, via the rollout bridge) drains it (runbooks 001 and 004).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from .common import (
    Options,
    read_json,
)

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
