"""The reconcile role: runbook 002's POST /api/cron/reconcile behind a CRON_SECRET bearer
token, and the stuck reservations it clears.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from .common import (
    Options,
    read_json,
    require_bearer,
)

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
