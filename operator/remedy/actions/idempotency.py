"""purgeIdempotencyKeys (runbook 000, option B): break stale idempotency locks.

Why: a leader that died mid-request leaves its key ``in_progress`` until the TTL, and every
follower waits out the lock (the ``IdempotencyHighLockWait*`` alerts). The runbook's manual fix
is: list recent keys, pick those in progress whose lock expired, DELETE each. This action does
exactly that, with the safety the manual version lacks: a grace period past the lock expiry, a
cap on how many keys one run may purge (refused at plan time, never exceeded), and a re-check of
each key immediately before deleting it, so a key whose leader recovered after planning is left
alone.

Two backends reach the same records: the admin HTTP API of runbook 000 (paged listing, bounded
concurrent re-check + DELETE), or the Redis keys the service stores them in (a hash or a JSON
string per key; see ``idempotency_redis``: one pipelined SCAN pass, judged and purged atomically
on the server). Either may hold a million stale locks, so evidence is bounded (``keyset``):
counts, the first 20 keys, a digest of the whole set, tenants and lock ages; never payloads,
fingerprints, headers or tokens.

Drift between plan and execute: execute re-derives the set from the rule, it does not replay a
list. It purges only keys that are stale *when deleted* (keys that recovered are kept, keys that
went stale since planning are included), never more than ``maxKeys`` (a set that grew past the
cap stops the run with OverCap after purging up to it). The result's ``drift`` compares count
and digest with the plan; for a small plan (every key in the sample) it also names each planned
key that was not purged and why (already gone, or no longer stale).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from redis import exceptions as rexc
from yarl import URL

from .. import redaction, rfc3339
from ..api.common import parse_duration
from ..api.idempotency import IdempotencyHttpBackend, IdempotencyRedisBackend, PurgeIdempotencyKeys
from ..clients.egress import redirect_location
from ..errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RemedyError,
    RetryableError,
    SkipError,
)
from .base import ActionContext, ActionDef, Applied, Evidence, NotApplied, Observation
from .idempotency_redis import StaleScan, iter_stale, stale_pass
from .keyset import KeySetTally, drift
from .redis_keys import key_name, open_redis

# Why a stale-looking record was not selected; counted in plan evidence so an empty plan explains itself.
NOT_IN_PROGRESS, LOCK_NOT_EXPIRED, NO_LOCK_TIME, FILTERED, NOT_A_RECORD = (
    "notInProgress", "lockNotExpired", "unparseableLockTime", "filteredOut", "notARecord",
)


# --- staleness (shared by both backends) -------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (``Z`` or offset; naive means UTC) or epoch seconds/milliseconds; None if neither."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if seconds > 1e11:  # no lock expires in the year 5138: this is milliseconds
            seconds /= 1000.0
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        return None
    return rfc3339.parse(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class Verdict:
    stale: bool
    why: str  # one of the reason codes above when not stale
    detail: str  # a human sentence for skipped keys; names only field values that are not secret


def judge(record: Mapping[str, Any], key: str, p: PurgeIdempotencyKeys, now: datetime) -> Verdict:
    """Is this record a stale lock the filters select? Evaluated at plan time and again right before DELETE."""
    fm = p.field_map
    state = record.get(fm.state)
    if state != fm.in_progress_value:
        return Verdict(False, NOT_IN_PROGRESS, f"{fm.state} is {str(state)[:40]!r}, not {fm.in_progress_value!r}")
    expires = parse_time(record.get(fm.lock_expires_at))
    if expires is None:
        return Verdict(False, NO_LOCK_TIME, f"{fm.lock_expires_at} missing or unparseable")
    grace = parse_duration(p.grace)
    age = (now - expires).total_seconds()
    if age <= grace:
        return Verdict(False, LOCK_NOT_EXPIRED, f"lock expires {expires.isoformat()} (not past grace {p.grace})")
    if p.tenant is not None and record.get(fm.tenant) != p.tenant:
        return Verdict(False, FILTERED, f"{fm.tenant} is not {p.tenant!r}")
    if p.key_prefix is not None and not key.startswith(p.key_prefix):
        return Verdict(False, FILTERED, f"key does not start with {p.key_prefix!r}")
    if p.min_replay_count is not None:
        replays = _as_int(record.get(fm.replay_count))
        if replays is None or replays < p.min_replay_count:
            return Verdict(False, FILTERED, f"{fm.replay_count} {replays} < {p.min_replay_count}")
    return Verdict(True, "stale", "")


def _entry(record: Mapping[str, Any], key: str, p: PurgeIdempotencyKeys, now: datetime) -> dict[str, Any]:
    """The evidence for one stale key: identity, tenant, lock age. Nothing from the payload."""
    fm = p.field_map
    expires = parse_time(record.get(fm.lock_expires_at))
    entry: dict[str, Any] = {"key": key, "tenant": record.get(fm.tenant)}
    if expires is not None:
        entry["lockAgeSeconds"] = round((now - expires).total_seconds(), 1)
    replays = _as_int(record.get(fm.replay_count))
    if replays is not None:
        entry["replayCount"] = replays
    return entry


@dataclass
class Ages:
    """Oldest and newest lock expiry seen, in constant memory."""

    oldest: float | None = None
    newest: float | None = None

    def add(self, entry: Mapping[str, Any]) -> None:
        age = entry.get("lockAgeSeconds")
        if isinstance(age, (int, float)):
            self.oldest = age if self.oldest is None else max(self.oldest, age)
            self.newest = age if self.newest is None else min(self.newest, age)

    def evidence(self) -> dict[str, Any]:
        return {"maxLockAgeSeconds": self.oldest, "minLockAgeSeconds": self.newest}


def _check_backend(p: PurgeIdempotencyKeys) -> None:
    if p.backend == "http" and p.http is None:
        raise InvalidSpecError("backend: http needs the http section (baseUrl, tokenSecretRef)")
    if p.backend == "redis" and p.redis is None:
        raise InvalidSpecError("backend: redis needs the redis section (connection, pattern)")


def _over_cap(p: PurgeIdempotencyKeys, count: int) -> OverCapError:
    return OverCapError(
        f"{count}{'+' if count > p.max_keys else ''} stale idempotency keys exceed maxKeys={p.max_keys}; "
        "refused, nothing purged: narrow with tenant/keyPrefix/minReplayCount or raise maxKeys"
    )


def _grew_past_cap(p: PurgeIdempotencyKeys, purged: int, left: int) -> OverCapError:
    return OverCapError(
        f"stale idempotency keys grew past maxKeys={p.max_keys} after planning: stopped after purging {purged} "
        f"(each still stale when deleted); at least {left} more left. Raise maxKeys or narrow the filters and retry"
    )


def _target(p: PurgeIdempotencyKeys) -> str:
    if p.backend == "http" and p.http is not None:
        return f"idempotency {urlsplit(p.http.base_url).netloc}"
    if p.redis is not None:
        return f"idempotency redis {p.redis.pattern}"
    return "idempotency"


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
            async with self.session.request(method, self.url(key, query), headers=self.headers,
                                            allow_redirects=False) as resp:
                status = int(resp.status)
                location = redirect_location(status, resp.headers)
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
        if location is not None:
            # Never followed (clients/egress.py): the next hop would get the admin token unchecked.
            raise PermanentError(f"{what} answered {status} redirecting to {redaction.redact(location)!r}; redirects are not "
                                 "followed: set baseUrl to the final address", reason="RedirectRefused")
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


@dataclass
class Outcome:
    """What execute did, bounded: tallies of purged keys, samples of those gone or skipped."""

    purged: KeySetTally = field(default_factory=KeySetTally)
    gone: KeySetTally = field(default_factory=KeySetTally)
    skipped: KeySetTally = field(default_factory=KeySetTally)
    not_selected: Counter[str] = field(default_factory=Counter)
    ages: Ages = field(default_factory=Ages)
    scanned: int = 0
    capped: int = 0


async def _http_plan(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyHttpBackend) -> Evidence:
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
                entry = _entry(item, key, p, now)
                stale.add(key, entry, group=str(entry.get("tenant")))
                ages.add(entry)
                if stale.count > p.max_keys:
                    raise _over_cap(p, stale.count)
    return _plan_evidence(p, stale, ages, scanned, reasons, f"{api.base} (admin API)")


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
    entry = _entry(body, key, p, now)
    out.purged.add(key, entry, group=str(entry.get("tenant")))
    out.ages.add(entry)


async def _http_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyHttpBackend, plan: Evidence) -> Evidence:
    """Re-derive the stale set page by page; re-check and DELETE up to ``concurrency`` keys at once."""
    token = await ctx.secret(cfg.token_secret_ref)
    out = Outcome()
    planned = _planned_keys(plan)
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
                raise _grew_past_cap(p, out.purged.count, out.capped)
    _explain_planned(planned, out, seen_fresh)
    return _result_evidence(plan, out)


# --- redis backend -----------------------------------------------------------------------


def _fields(p: PurgeIdempotencyKeys) -> list[str]:
    fm = p.field_map
    return [fm.key, fm.tenant, fm.state, fm.lock_expires_at, fm.replay_count]


def _decode_record(kind: Any, raw: Any, fields: list[str]) -> dict[str, Any] | None:
    """Only the mapped fields of a hash or JSON-string record; the rest (payloads) is dropped here."""
    kind = key_name(kind)
    if kind == "hash":
        values = [None if v is None else key_name(v) for v in raw]
        record = {f: v for f, v in zip(fields, values, strict=False) if v is not None}
        return record or None
    if kind == "string" and raw is not None:
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return {f: doc[f] for f in fields if f in doc} if isinstance(doc, dict) else None
    return None


async def _read_records(client: Any, names: list[Any], fields: list[str]) -> list[dict[str, Any] | None]:
    """Two pipelined round trips: TYPE of each key, then HMGET (hash) or GET (string).

    Used only to explain, by name, what became of the keys of a small plan (at most 20)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    kinds = [key_name(k) for k in await pipe.execute()]
    pipe = client.pipeline(transaction=False)
    for name, kind in zip(names, kinds, strict=True):
        if kind == "hash":
            pipe.hmget(name, fields)
        elif kind == "string":
            pipe.get(name)
    raws = iter(await pipe.execute() if any(k in ("hash", "string") for k in kinds) else [])
    return [_decode_record(k, next(raws), fields) if k in ("hash", "string") else None for k in kinds]


def _record_key(record: Mapping[str, Any], redis_key: str, p: PurgeIdempotencyKeys) -> str:
    key = record.get(p.field_map.key)
    return key if isinstance(key, str) and key else redis_key


def _scan_ages(scan: StaleScan) -> Ages:
    now = time.time()
    return Ages(oldest=None if scan.oldest_expiry is None else round(now - scan.oldest_expiry, 1),
                newest=None if scan.newest_expiry is None else round(now - scan.newest_expiry, 1))


async def _redis_plan(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend) -> Evidence:
    scan = StaleScan()
    async with open_redis(ctx, cfg.connection) as session:
        try:
            await stale_pass(session, p, cfg, scan, purge=False, budget=p.max_keys)
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"scanning {cfg.pattern}", changed=False) from None
    if scan.capped:
        raise _over_cap(p, scan.tally.count + scan.capped)
    return _plan_evidence(p, scan.tally, _scan_ages(scan), scan.scanned, scan.reasons, f"redis {cfg.pattern}")


async def _redis_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend, plan: Evidence) -> Evidence:
    """Re-derive and purge in one pass (server-side atomic re-check per key), then explain a small plan."""
    scan = StaleScan()
    planned = _planned_keys(plan, field="redisKey")
    async with open_redis(ctx, cfg.connection) as session:
        try:
            await stale_pass(session, p, cfg, scan, purge=True, budget=p.max_keys)
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"purging {cfg.pattern} ({scan.tally.count} purged so far)",
                                changed=scan.writes_sent) from None
        if scan.capped:
            raise _grew_past_cap(p, scan.tally.count, scan.capped)
        out = Outcome(purged=scan.tally, not_selected=scan.reasons, ages=_scan_ages(scan),
                      scanned=scan.scanned)
        left = [name for name in planned if name not in {e["redisKey"] for e in scan.tally.sample}]
        if left:
            try:
                records = await _read_records(session.client, left, _fields(p))
            except rexc.RedisError:
                records = [None] * len(left)  # only the explanation is lost; the purge is done
            now = datetime.now(UTC)
            for name, record in zip(left, records, strict=True):
                key = planned[name]
                if record is None:
                    out.gone.add(key)
                else:
                    out.skipped.add(key, {"key": key, "why": f"no longer stale: {judge(record, _record_key(record, name, p), p, now).detail}"})
    return _result_evidence(plan, out)


# --- evidence shared by both backends -----------------------------------------------------


def _planned_keys(plan: Evidence, field: str = "key") -> dict[str, str]:
    """{name: record key} of the plan, but only when its sample lists every planned key.

    Small plans (up to 20 keys) are explained key by key in the result; bigger ones by count
    and digest only."""
    if not plan.get("keysComplete"):
        return {}
    return {str(e.get(field) or e.get("key")): str(e.get("key")) for e in plan.get("keys", []) if isinstance(e, dict)}


def _explain_planned(planned: dict[str, str], out: Outcome, seen_fresh: dict[str, str]) -> None:
    """Name what became of each planned key execute did not purge (small plans only)."""
    acted = {e["key"] for e in out.purged.sample} | set(out.gone.sample) | {e["key"] for e in out.skipped.sample}
    for key in planned.values():
        if key in acted:
            continue
        if key in seen_fresh:
            out.skipped.add(key, {"key": key, "why": seen_fresh[key]})
        else:
            out.gone.add(key)


def _plan_evidence(p: PurgeIdempotencyKeys, stale: KeySetTally, ages: Ages, scanned: int,
                   reasons: Counter[str], source: str) -> Evidence:
    if stale.count > p.max_keys:
        raise _over_cap(p, stale.count)
    if not stale.count:
        raise SkipError(
            f"no stale idempotency locks among {scanned} record(s) at {source}",
            reason="NothingToDo", evidence={"scanned": scanned, "notSelected": dict(reasons)},
        )
    return {
        "source": source, "scanned": scanned, "stale": stale.count, "maxKeys": p.max_keys,
        "grace": p.grace, "notSelected": dict(reasons),
        "keys": stale.sample, "keysComplete": stale.complete, "keySetDigest": stale.digest,
        "tenants": stale.groups(), **ages.evidence(),
        "change": f"purge {stale.count} stale idempotency lock(s) at {source}"
        + ("" if stale.complete else f" (first {len(stale.sample)} listed; the rest counted and digested)"),
    }


def _result_evidence(plan: Evidence, out: Outcome) -> Evidence:
    return {
        "purgedCount": out.purged.count, "purged": out.purged.sample, "purgedDigest": out.purged.digest,
        "alreadyGoneCount": out.gone.count, "alreadyGone": out.gone.sample,
        "skippedCount": out.skipped.count, "skipped": out.skipped.sample,
        "scanned": out.scanned, "notSelected": dict(out.not_selected),
        "tenants": out.purged.groups(), **out.ages.evidence(),
        "drift": drift(plan.get("stale"), plan.get("keySetDigest"), out.purged),
        "summary": f"purged {out.purged.count} stale idempotency lock(s); {out.gone.count} already gone; "
        f"{out.skipped.count} skipped (no longer stale)",
    }


async def purge_plan(ctx: ActionContext, p: PurgeIdempotencyKeys) -> Evidence:
    _check_backend(p)
    if p.backend == "http":
        assert p.http is not None
        return await _http_plan(ctx, p, p.http)
    assert p.redis is not None
    return await _redis_plan(ctx, p, p.redis)


async def purge_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, plan: Evidence) -> Evidence:
    _check_backend(p)
    if p.backend == "http":
        assert p.http is not None
        return await _http_execute(ctx, p, p.http, plan)
    assert p.redis is not None
    return await _redis_execute(ctx, p, p.redis, plan)


async def purge_observe(ctx: ActionContext, p: PurgeIdempotencyKeys, plan: Evidence) -> Observation:
    """After an interrupted purge: Applied when no key matches the rule any more, else NotApplied.

    Re-running execute is always safe here: it acts on the rule (each key re-checked atomically
    or re-read right before DELETE), never on a stored list, and never beyond maxKeys."""
    _check_backend(p)
    try:
        if p.backend == "http":
            assert p.http is not None
            plan_now = await _http_plan(ctx, p.model_copy(update={"max_keys": 1}), p.http)
            left = int(plan_now["stale"])
        else:
            assert p.redis is not None
            scan = StaleScan()
            async with open_redis(ctx, p.redis.connection) as session:
                try:
                    await stale_pass(session, p, p.redis, scan, purge=False, budget=0)
                except rexc.RedisError as exc:
                    raise session.error(exc, doing=f"scanning {p.redis.pattern}", changed=False) from None
            left = scan.capped
    except SkipError:
        left = 0
    except OverCapError:
        left = 2
    if left == 0:
        return Applied("no stale idempotency lock matches the rule any more")
    return NotApplied(f"{left}{'+' if left > 1 else ''} stale lock(s) still match; execute re-derives and re-checks each key")


async def iter_stale_keys(ctx: ActionContext, p: PurgeIdempotencyKeys) -> AsyncIterator[str]:
    """Every key the rule selects now (re-derived, never stored): ``kubectl remedy describe --keys``."""
    _check_backend(p)
    if p.backend == "redis":
        assert p.redis is not None
        async with open_redis(ctx, p.redis.connection) as session:
            try:
                async for redis_key, record_key in iter_stale(session, p, p.redis):
                    yield redis_key if redis_key == record_key else f"{redis_key}\t{record_key}"
            except rexc.RedisError as exc:
                raise session.error(exc, doing=f"scanning {p.redis.pattern}", changed=False) from None
        return
    assert p.http is not None
    token = await ctx.secret(p.http.token_secret_ref)
    async with AdminApi(ctx, p.http, token) as api:
        async for items in api.pages(changed=lambda: False):
            now = datetime.now(UTC)
            for item in items:
                key = item.get(p.field_map.key) if isinstance(item, dict) else None
                if isinstance(key, str) and key and judge(item, key, p, now).stale:
                    yield key


PURGE_IDEMPOTENCY_KEYS = ActionDef(
    name="purgeIdempotencyKeys", params=PurgeIdempotencyKeys, target=_target,
    plan=purge_plan, execute=purge_execute, observe=purge_observe, idempotent=True, destructive=True,
)
