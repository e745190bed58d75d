"""purgeIdempotencyKeys (runbook 000, option B): break stale idempotency locks.

Why: a leader that died mid-request leaves its key ``in_progress`` until the TTL, and every
follower waits out the lock (the ``IdempotencyHighLockWait*`` alerts). The runbook's manual fix
is: list recent keys, pick those in progress whose lock expired, DELETE each. This action does
exactly that, with the safety the manual version lacks: a grace period past the lock expiry, a
cap on how many keys one run may purge (refused, never truncated), and a re-check of each key
immediately before deleting it, so a key whose leader recovered after planning is left alone.

Two backends reach the same records: the admin HTTP API of runbook 000, or the Redis keys the
service stores them in (a hash or a JSON string per key). Evidence holds key names, tenants,
lock ages and counts only: never payloads, fingerprints, headers or tokens.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from redis import exceptions as rexc
from yarl import URL

from .. import rfc3339
from ..api.common import parse_duration
from ..api.idempotency import IdempotencyHttpBackend, IdempotencyRedisBackend, PurgeIdempotencyKeys
from ..errors import (
    ForbiddenError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RemedyError,
    RetryableError,
    SkipError,
)
from .base import ActionContext, ActionDef, Evidence
from .redis_keys import RedisSession, key_name, open_redis, scan_batches

SCAN_COUNT = 500
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


def _summarise(entries: list[dict[str, Any]]) -> dict[str, Any]:
    ages = [e["lockAgeSeconds"] for e in entries if "lockAgeSeconds" in e]
    tenants = Counter(str(e.get("tenant")) for e in entries)
    return {"tenants": dict(tenants), "maxLockAgeSeconds": max(ages, default=None),
            "minLockAgeSeconds": min(ages, default=None)}


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

    def url(self, key: str | None = None) -> URL:
        path = "recent" if key is None else quote(key, safe="")
        # encoded=True: keep %2F in a key as is instead of letting yarl turn it back into '/'
        return URL(f"{self.base}/admin/idempotency/{path}", encoded=True)

    async def call(self, method: str, key: str | None, *, changed: bool) -> tuple[int, Any]:
        """(status, JSON body or None). 404 is returned to the caller; other failures raise."""
        what = f"{method} {self.base}/admin/idempotency/{'recent' if key is None else '<key>'}"
        try:
            async with self.session.request(method, self.url(key), headers=self.headers) as resp:
                status = int(resp.status)
                text = await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
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
            return PermanentError(
                f"{message} after some keys were purged; the action is idempotent, so a new Remediation may finish the job",
                reason="Interrupted",
            )
        return RetryableError(message)


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


async def _http_plan(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyHttpBackend) -> Evidence:
    token = await ctx.secret(cfg.token_secret_ref)
    async with AdminApi(ctx, cfg, token) as api:
        status, body = await api.call("GET", None, changed=False)
    if status == 404:
        raise PermanentError(f"no idempotency admin API at {api.base}/admin/idempotency/recent (404)", reason="AdminApiNotFound")
    items = _items(body, api.base)
    now = datetime.now(UTC)
    reasons: Counter[str] = Counter()
    stale: list[dict[str, Any]] = []
    for item in items:
        key = item.get(p.field_map.key) if isinstance(item, dict) else None
        if not isinstance(key, str) or not key:
            reasons[NOT_A_RECORD] += 1
            continue
        verdict = judge(item, key, p, now)
        if verdict.stale:
            stale.append(_entry(item, key, p, now))
        else:
            reasons[verdict.why] += 1
    return _plan_evidence(p, stale, len(items), reasons, f"{api.base} (admin API)")


async def _http_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyHttpBackend, plan: Evidence) -> Evidence:
    token = await ctx.secret(cfg.token_secret_ref)
    purged: list[dict[str, Any]] = []
    gone: list[str] = []
    skipped: list[dict[str, str]] = []
    async with AdminApi(ctx, cfg, token) as api:
        for planned in plan.get("keys", []):
            key = str(planned["key"])
            status, body = await api.call("GET", key, changed=bool(purged))
            if status == 404:
                gone.append(key)
                continue
            if not isinstance(body, dict):
                skipped.append({"key": key, "why": "re-read did not return a JSON object"})
                continue
            now = datetime.now(UTC)
            verdict = judge(body, key, p, now)
            if not verdict.stale:
                skipped.append({"key": key, "why": f"no longer stale: {verdict.detail}"})
                continue
            # The API has no conditional DELETE: a leader reviving between this GET and the
            # DELETE is the residual race, milliseconds wide instead of plan-to-execute wide.
            status, _ = await api.call("DELETE", key, changed=bool(purged))
            if status == 404:
                gone.append(key)
            else:
                purged.append(_entry(body, key, p, now))
    return _result_evidence(purged, gone, skipped)


# --- redis backend -----------------------------------------------------------------------


def _fields(p: PurgeIdempotencyKeys) -> list[str]:
    fm = p.field_map
    return [fm.key, fm.tenant, fm.state, fm.lock_expires_at, fm.replay_count]


def _decode_record(kind: Any, raw: Any, fields: list[str]) -> dict[str, Any] | None:
    """Only the mapped fields of a hash or JSON-string record; the rest (payloads) is dropped here."""
    kind = key_name(kind)
    if kind == "hash":
        values = [None if v is None else key_name(v) for v in raw]
        record = {f: v for f, v in zip(fields, values) if v is not None}
        return record or None
    if kind == "string" and raw is not None:
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return {f: doc[f] for f in fields if f in doc} if isinstance(doc, dict) else None
    return None


async def _read_records(client: Any, names: list[Any], fields: list[str]) -> list[dict[str, Any] | None]:
    """Two pipelined round trips per batch: TYPE of each key, then HMGET (hash) or GET (string)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    kinds = [key_name(k) for k in await pipe.execute()]
    pipe = client.pipeline(transaction=False)
    for name, kind in zip(names, kinds):
        if kind == "hash":
            pipe.hmget(name, fields)
        elif kind == "string":
            pipe.get(name)
    raws = iter(await pipe.execute() if any(k in ("hash", "string") for k in kinds) else [])
    return [_decode_record(k, next(raws), fields) if k in ("hash", "string") else None for k in kinds]


def _record_key(record: Mapping[str, Any], redis_key: str, p: PurgeIdempotencyKeys) -> str:
    key = record.get(p.field_map.key)
    return key if isinstance(key, str) and key else redis_key


async def _redis_plan(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend) -> Evidence:
    fields = _fields(p)
    reasons: Counter[str] = Counter()
    stale: list[dict[str, Any]] = []
    scanned = 0
    now = datetime.now(UTC)
    async with open_redis(ctx, cfg.connection) as session:
        try:
            async for names in scan_batches(session.client, cfg.pattern, SCAN_COUNT):
                scanned += len(names)
                for name, record in zip(names, await _read_records(session.client, names, fields)):
                    rkey = key_name(name)
                    if record is None:
                        reasons[NOT_A_RECORD] += 1
                        continue
                    key = _record_key(record, rkey, p)
                    verdict = judge(record, key, p, now)
                    if not verdict.stale:
                        reasons[verdict.why] += 1  # counted, not kept: memory stays constant
                        continue
                    stale.append({**_entry(record, key, p, now), "redisKey": rkey})
                    if len(stale) > p.max_keys:
                        raise _over_cap(p, len(stale))
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"scanning {cfg.pattern}", changed=False) from None
    return _plan_evidence(p, stale, scanned, reasons, f"redis {cfg.pattern}")


async def _purge_one(session: RedisSession, name: str, key: str, p: PurgeIdempotencyKeys) -> tuple[str, str, dict[str, Any] | None]:
    """WATCH, re-read, judge, MULTI DEL EXEC: the key is deleted only if it is still stale when
    deleted; a write in between aborts EXEC and the key is reported as skipped."""
    fields = _fields(p)
    async with session.client.pipeline(transaction=True) as pipe:
        await pipe.watch(name)
        kind = key_name(await pipe.type(name))
        if kind == "none":
            return "gone", "", None
        raw: Any = None
        if kind == "hash":
            raw = await pipe.hmget(name, fields)
        elif kind == "string":
            raw = await pipe.get(name)
        record = _decode_record(kind, raw, fields)
        if record is None:
            return "skipped", f"no longer a readable record (type {kind})", None
        now = datetime.now(UTC)
        verdict = judge(record, _record_key(record, key, p), p, now)
        if not verdict.stale:
            return "skipped", f"no longer stale: {verdict.detail}", None
        pipe.multi()
        pipe.delete(name)
        try:
            (removed,) = await pipe.execute()
        except rexc.WatchError:
            return "skipped", "modified while being purged", None
    if not removed:
        return "gone", "", None
    return "purged", "", {**_entry(record, _record_key(record, key, p), p, now), "redisKey": name}


async def _redis_execute(ctx: ActionContext, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend, plan: Evidence) -> Evidence:
    purged: list[dict[str, Any]] = []
    gone: list[str] = []
    skipped: list[dict[str, str]] = []
    async with open_redis(ctx, cfg.connection) as session:
        for planned in plan.get("keys", []):
            name, key = str(planned["redisKey"]), str(planned["key"])
            try:
                outcome, why, entry = await _purge_one(session, name, key, p)
            except rexc.RedisError as exc:
                raise session.error(exc, doing=f"purging {name}", changed=bool(purged)) from None
            if outcome == "purged" and entry is not None:
                purged.append(entry)
            elif outcome == "gone":
                gone.append(key)
            else:
                skipped.append({"key": key, "why": why})
    return _result_evidence(purged, gone, skipped)


# --- the action --------------------------------------------------------------------------


def _plan_evidence(p: PurgeIdempotencyKeys, stale: list[dict[str, Any]], scanned: int,
                   reasons: Counter[str], source: str) -> Evidence:
    if len(stale) > p.max_keys:
        raise _over_cap(p, len(stale))
    if not stale:
        raise SkipError(
            f"no stale idempotency locks among {scanned} record(s) at {source}",
            reason="NothingToDo", evidence={"scanned": scanned, "notSelected": dict(reasons)},
        )
    return {
        "source": source, "scanned": scanned, "stale": len(stale), "maxKeys": p.max_keys,
        "grace": p.grace, "notSelected": dict(reasons), "keys": stale, **_summarise(stale),
        "change": f"purge {len(stale)} stale idempotency lock(s) at {source}",
    }


def _result_evidence(purged: list[dict[str, Any]], gone: list[str], skipped: list[dict[str, str]]) -> Evidence:
    return {
        "purged": purged, "purgedCount": len(purged), "alreadyGone": gone, "alreadyGoneCount": len(gone),
        "skipped": skipped, "skippedCount": len(skipped), **_summarise(purged),
        "summary": f"purged {len(purged)} stale idempotency lock(s); {len(gone)} already gone; "
        f"{len(skipped)} skipped (no longer stale)",
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


PURGE_IDEMPOTENCY_KEYS = ActionDef(
    name="purgeIdempotencyKeys", params=PurgeIdempotencyKeys, target=_target,
    plan=purge_plan, execute=purge_execute, idempotent=True, destructive=True,
)
