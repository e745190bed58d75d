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

import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from redis import exceptions as rexc

from ..api.idempotency import IdempotencyRedisBackend, PurgeIdempotencyKeys
from ..base.errors import (
    OverCapError,
    SkipError,
)
from .base import ActionContext, ActionDef, Applied, Evidence, NotApplied, Observation
from .idempotency_http import AdminApi, http_execute, http_plan
from .idempotency_redis import StaleScan, iter_stale, stale_pass
from .idempotency_rules import (
    Ages,
    Outcome,
    check_backend,
    grew_past_cap,
    judge,
    over_cap,
    plan_evidence,
    planned_keys,
    purge_target,
    result_evidence,
)
from .redis_keys import key_name, open_redis

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
        raise over_cap(p, scan.tally.count + scan.capped)
    return plan_evidence(p, scan.tally, _scan_ages(scan), scan.scanned, scan.reasons, f"redis {cfg.pattern}")


async def _redis_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend, plan: Evidence) -> Evidence:
    """Re-derive and purge in one pass (server-side atomic re-check per key), then explain a small plan."""
    scan = StaleScan()
    planned = planned_keys(plan, field="redisKey")
    async with open_redis(ctx, cfg.connection) as session:
        try:
            await stale_pass(session, p, cfg, scan, purge=True, budget=p.max_keys)
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"purging {cfg.pattern} ({scan.tally.count} purged so far)",
                                changed=scan.writes_sent) from None
        if scan.capped:
            raise grew_past_cap(p, scan.tally.count, scan.capped)
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
    return result_evidence(plan, out)



async def purge_plan(ctx: ActionContext, p: PurgeIdempotencyKeys) -> Evidence:
    check_backend(p)
    if p.backend == "http":
        assert p.http is not None
        return await http_plan(ctx, p, p.http)
    assert p.redis is not None
    return await _redis_plan(ctx, p, p.redis)


async def purge_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, plan: Evidence) -> Evidence:
    check_backend(p)
    if p.backend == "http":
        assert p.http is not None
        return await http_execute(ctx, p, p.http, plan)
    assert p.redis is not None
    return await _redis_execute(ctx, p, p.redis, plan)


async def purge_observe(ctx: ActionContext, p: PurgeIdempotencyKeys, plan: Evidence) -> Observation:
    """After an interrupted purge: Applied when no key matches the rule any more, else NotApplied.

    Re-running execute is always safe here: it acts on the rule (each key re-checked atomically
    or re-read right before DELETE), never on a stored list, and never beyond maxKeys."""
    check_backend(p)
    try:
        if p.backend == "http":
            assert p.http is not None
            plan_now = await http_plan(ctx, p.model_copy(update={"max_keys": 1}), p.http)
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
    check_backend(p)
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
    name="purgeIdempotencyKeys", params=PurgeIdempotencyKeys, target=purge_target,
    plan=purge_plan, execute=purge_execute, observe=purge_observe, idempotent=True, destructive=True,
)
