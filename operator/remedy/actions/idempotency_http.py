"""purgeIdempotencyKeys through the runbook 000 admin HTTP API: paged listing, then a bounded
number of concurrent re-checks and DELETEs (idempotency.py says why the action exists)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..api.common import parse_duration
from ..api.idempotency import IdempotencyHttpBackend, PurgeIdempotencyKeys
from ..base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    PermanentError,
    RemedyError,
    RetryableError,
)
from .base import ActionContext, Evidence
from .idempotency_rules import (
    NOT_A_RECORD,
    Ages,
    Outcome,
    explain_planned,
    grew_past_cap,
    judge,
    over_cap,
    plan_evidence,
    planned_keys,
    record_entry,
    result_evidence,
)
from .keyset import KeySetTally

# --- http backend ------------------------------------------------------------------------


class AdminApi:
    """The runbook 000 admin API: Bearer token, optional X-Tenant, errors mapped without the token."""

    def __init__(self, ctx: ActionContext, cfg: IdempotencyHttpBackend, token: str) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.base = cfg.base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if cfg.tenant:
            self.headers["X-Tenant"] = cfg.tenant
        self.session: Any = None

    async def __aenter__(self) -> AdminApi:
        self.session = self.ctx.connectors.http(parse_duration(self.cfg.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    def url(self, key: str | None = None, query: Mapping[str, str] | None = None) -> URL:
        path = "recent" if key is None else quote(key, safe="")
        # encoded=True: keep %2F in a key as is instead of letting yarl turn it back into '/'
        url = URL(f"{self.base}/admin/idempotency/{path}", encoded=True)
        return url.update_query(dict(query)) if query else url

    async def call(self, method: str, key: str | None, *, changed: bool,
                   query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON body or None). 404 is returned to the caller; other failures raise."""
        what = f"{method} {self.base}/admin/idempotency/{'recent' if key is None else '<key>'}"
        try:
            async with self.session.request(method, self.url(key, query), headers=self.headers) as resp:
                status = int(resp.status)
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._transient(f"{what} failed: {type(exc).__name__}", changed) from None
        if status in (401, 403):
            ref = self.cfg.token_secret_ref
            raise ForbiddenError(
                f"{what} answered {status}: token in Secret {self.ctx.namespace}/{ref.name} key {ref.key} "
                "was refused (needs admin scope" + (f" for tenant {self.cfg.tenant}" if self.cfg.tenant else "") + ")"
            )
        if status == 404 or status == 204:
            return status, None
        if status >= 500 or status in (408, 429):
            raise self._transient(f"{what} answered {status}", changed)
        if status >= 400:
            raise PermanentError(f"{what} answered {status}", reason="AdminApiError")
        if not text.strip():
            return status, None
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            raise PermanentError(f"{what} answered {status} with a body that is not JSON", reason="UnexpectedResponse") from None

    @staticmethod
    def _transient(message: str, changed: bool) -> RemedyError:
        if changed:
            # a DELETE may have landed: observe (a fresh listing) tells what is left to do
            return AmbiguousOutcomeError(f"{message} after purging had started", reason="Interrupted")
        return RetryableError(message)

    async def pages(self, *, changed: Callable[[], bool]) -> AsyncIterator[list[Any]]:
        """The listing, one page at a time: ``?limit=pageSize``, following ``nextCursor`` when given.

        A server that ignores paging answers everything in one page, which ends the walk.
        """
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            query = {"limit": str(self.cfg.page_size)} | ({"cursor": cursor} if cursor else {})
            status, body = await self.call("GET", None, changed=changed(), query=query)
            if status == 404:
                raise PermanentError(f"no idempotency admin API at {self.base}/admin/idempotency/recent (404)",
                                     reason="AdminApiNotFound")
            yield _items(body, self.base)
            cursor = _next_cursor(body)
            if cursor is None or cursor in seen:  # a server repeating a cursor would loop forever
                return
            seen.add(cursor)


def _items(body: Any, base: str) -> list[Any]:
    """The runbook: ``.items``, or, when it is absent, the body itself if that is the list."""
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return list(body["items"])
    if isinstance(body, list):
        return body
    shape = f"an object with fields {sorted(body)[:10]}" if isinstance(body, dict) else type(body).__name__
    raise PermanentError(
        f"GET {base}/admin/idempotency/recent returned {shape}; expected {{\"items\": [...]}} or a JSON list",
        reason="UnexpectedResponse",
    )


def _next_cursor(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for name in ("nextCursor", "next_cursor", "cursor"):
        value = body.get(name)
        if isinstance(value, str) and value:
            return value
    return None



async def http_plan(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyHttpBackend) -> Evidence:
    token = await ctx.secret(cfg.token_secret_ref)
    reasons: Counter[str] = Counter()
    stale, ages, scanned = KeySetTally(), Ages(), 0
    async with AdminApi(ctx, cfg, token) as api:
        async for items in api.pages(changed=lambda: False):
            now = datetime.now(UTC)
            scanned += len(items)
            for item in items:
                key = item.get(p.field_map.key) if isinstance(item, dict) else None
                if not isinstance(key, str) or not key:
                    reasons[NOT_A_RECORD] += 1
                    continue
                verdict = judge(item, key, p, now)
                if not verdict.stale:
                    reasons[verdict.why] += 1
                    continue
                entry = record_entry(item, key, p, now)
                stale.add(key, entry, group=str(entry.get("tenant")))
                ages.add(entry)
                if stale.count > p.max_keys:
                    raise over_cap(p, stale.count)
    return plan_evidence(p, stale, ages, scanned, reasons, f"{api.base} (admin API)")


async def _http_purge_one(api: AdminApi, p: PurgeIdempotencyKeys, key: str, out: Outcome) -> None:
    """Re-read, re-judge, DELETE. The API has no conditional DELETE: a leader reviving between
    this GET and the DELETE is the residual race, milliseconds wide instead of plan-to-execute wide."""
    changed = out.purged.count > 0 or out.gone.count > 0
    status, body = await api.call("GET", key, changed=changed)
    if status == 404:
        out.gone.add(key)
        return
    if not isinstance(body, dict):
        out.skipped.add(key, {"key": key, "why": "re-read did not return a JSON object"})
        return
    now = datetime.now(UTC)
    verdict = judge(body, key, p, now)
    if not verdict.stale:
        out.skipped.add(key, {"key": key, "why": f"no longer stale: {verdict.detail}"})
        return
    status, _ = await api.call("DELETE", key, changed=True)
    if status == 404:
        out.gone.add(key)
        return
    entry = record_entry(body, key, p, now)
    out.purged.add(key, entry, group=str(entry.get("tenant")))
    out.ages.add(entry)


async def http_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyHttpBackend, plan: Evidence) -> Evidence:
    """Re-derive the stale set page by page; re-check and DELETE up to ``concurrency`` keys at once."""
    token = await ctx.secret(cfg.token_secret_ref)
    out = Outcome()
    planned = planned_keys(plan)
    seen_fresh: dict[str, str] = {}  # planned keys (complete small plans only) the listing shows as not stale
    limit = asyncio.Semaphore(cfg.concurrency)

    async def bounded(key: str) -> None:
        async with limit:
            await _http_purge_one(api, p, key, out)

    async with AdminApi(ctx, cfg, token) as api:
        async for items in api.pages(changed=lambda: out.purged.count > 0):
            now = datetime.now(UTC)
            out.scanned += len(items)
            todo: list[str] = []
            for item in items:
                key = item.get(p.field_map.key) if isinstance(item, dict) else None
                if not isinstance(key, str) or not key:
                    out.not_selected[NOT_A_RECORD] += 1
                    continue
                verdict = judge(item, key, p, now)
                if verdict.stale:
                    todo.append(key)
                else:
                    out.not_selected[verdict.why] += 1
                    if key in planned:
                        seen_fresh[key] = f"no longer stale: {verdict.detail}"
            room = p.max_keys - out.purged.count - out.gone.count - out.skipped.count
            if len(todo) > room:
                out.capped += len(todo) - room
                todo = todo[:room]
            results = await asyncio.gather(*(bounded(k) for k in todo), return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
            if out.capped:
                raise grew_past_cap(p, out.purged.count, out.capped)
    explain_planned(planned, out, seen_fresh)
    return result_evidence(plan, out)


