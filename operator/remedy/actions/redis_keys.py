"""deleteRedisKeys (runbooks 001, 002): remove stuck locks and leftover chaos keys by pattern.

Why an action rather than the runbooks' one-liners: runbook 002's ``redis-cli DEL "lock:purchase:*"``
deletes nothing (DEL does not glob), and the obvious fix, ``KEYS | xargs DEL``, blocks Redis and has
no blast-radius limit. Here the pattern must carry a specific literal prefix, the plan counts
matches with SCAN in constant memory and refuses (never truncates) a match over ``maxKeys``, and
execute re-derives the match in one pass, both passes run as bounded server-side scripts
(``redis_lua``: SCAN, tally, UNLINK; one small reply per batch), never deleting more than
``maxKeys``. Evidence is bounded whatever
the match size (``keyset``): count, digest of the names, the first ``sampleSize`` names; never
values. The plan costs one SCAN pass, execute one more: the old re-count before deleting (a
third pass) is gone, so a match that grew past the cap since planning is deleted up to the cap
and then stopped with OverCap instead of refused untouched.

The Redis connection helpers (``open_redis``, ``RedisSession.error``) are shared with the redis
backend of purgeIdempotencyKeys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rexc

from ..api.common import SecretKeyRef, parse_duration
from ..api.redis import DeleteRedisKeys, RedisConnection
from ..base.errors import (
    AmbiguousOutcomeError,
    ForbiddenError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RemedyError,
    RetryableError,
)
from .base import ActionContext, ActionDef, Applied, Evidence, NotApplied, Observation
from .keyset import KeySetTally, drift
from .redis_lua import MATCH_LUA, MAX_SCAN_STEPS, fold_digest

GLOB_CHARS = frozenset("*?[")
MIN_PREFIX_SEGMENTS = 2
MIN_PREFIX_CHARS = 8


# --- shared Redis plumbing ---------------------------------------------------------------


def key_name(raw: bytes | str) -> str:
    """A key name fit for evidence: clients without decode_responses hand back bytes."""
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw


def _secret_label(ctx: ActionContext, ref: SecretKeyRef) -> str:
    return f"Secret {ctx.namespace}/{ref.name} key {ref.key}"


@dataclass
class RedisSession:
    """An open client plus what is needed to turn its errors into remedy's, secret-free."""

    client: Any
    ctx: ActionContext
    conn: RedisConnection
    secrets: tuple[str, ...]

    def _redact(self, text: str) -> str:
        for value in self.secrets:
            if value:
                text = text.replace(value, "***")
        return text[:300]

    def error(self, exc: Exception, *, doing: str, changed: bool) -> RemedyError:
        """Map a client error; ``changed`` says whether a write may already have happened.

        A RetryableError promises the lifecycle that nothing changed, so once a delete may have
        been sent a lost connection is an AmbiguousOutcomeError: the lifecycle then asks the
        action's ``observe`` (what still matches) instead of planning again.
        """
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, rexc.AuthenticationError):
            ref = self.conn.password_secret_ref or self.conn.url_secret_ref
            return ForbiddenError(f"bad credentials for redis ({_secret_label(self.ctx, ref)}) while {doing}")
        if isinstance(exc, rexc.NoPermissionError):
            return ForbiddenError(f"redis ACL refused {doing}: {detail}")
        if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError, TimeoutError)):
            if changed:
                return AmbiguousOutcomeError(
                    f"redis connection lost while {doing}, after deletes were sent ({detail}); "
                    "the action is idempotent: re-running it deletes only what still matches",
                    reason="Interrupted",
                )
            return RetryableError(f"redis unreachable while {doing}: {detail}")
        return PermanentError(f"redis error while {doing}: {detail}", reason="RedisError")


@asynccontextmanager
async def open_redis(ctx: ActionContext, conn: RedisConnection) -> AsyncIterator[RedisSession]:
    """Resolve the Secrets, build the client through ctx.connectors and always close it."""
    url = await ctx.secret(conn.url_secret_ref)
    password = await ctx.optional_secret(conn.password_secret_ref)
    try:
        client = await ctx.connectors.redis(url, password, parse_duration(conn.timeout))
    except ValueError:
        # from_url's message quotes the URL, which may embed the password: name the Secret only
        raise InvalidSpecError(
            f"invalid redis URL in {_secret_label(ctx, conn.url_secret_ref)}: expected redis://, rediss:// or unix://"
        ) from None
    session = RedisSession(client, ctx, conn, tuple(s for s in (url, password) if s))
    try:
        yield session
    finally:
        try:
            await client.aclose()
        except (rexc.RedisError, OSError):
            ctx.logger.debug("closing redis client failed", exc_info=True)


# --- deleteRedisKeys -------------------------------------------------------------------


def literal_prefix(pattern: str) -> tuple[str, bool]:
    """(literal text before the first unescaped glob char, whether any glob char exists)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        if ch in GLOB_CHARS:
            return "".join(out), True
        out.append(ch)
        i += 1
    return "".join(out), False


def check_pattern(pattern: str, allow_wide_match: bool) -> str:
    """Refuse patterns that could flush a whole keyspace (``*``, ``lock:*``); returns the prefix."""
    prefix, has_glob = literal_prefix(pattern)
    if allow_wide_match or not has_glob:
        # without a glob char the pattern names exactly one key: nothing wide about it
        return prefix
    segments = [s for s in prefix.split(":") if s]
    if len(segments) < MIN_PREFIX_SEGMENTS or len(prefix) < MIN_PREFIX_CHARS:
        raise InvalidSpecError(
            f"pattern {pattern!r} is too wide: its literal prefix {prefix!r} must have at least "
            f"{MIN_PREFIX_SEGMENTS} ':'-separated segments and {MIN_PREFIX_CHARS} characters "
            f"(e.g. lock:purchase:*); set allowWideMatch: true to override"
        )
    return prefix


def _target(p: DeleteRedisKeys) -> str:
    return f"redis {p.pattern}"




def _over_cap(p: DeleteRedisKeys, count: int) -> OverCapError:
    return OverCapError(
        f"pattern {p.pattern!r} matches more than maxKeys={p.max_keys} keys ({count}+ seen while planning); "
        "refused, nothing deleted: narrow the pattern or raise maxKeys"
    )


@dataclass
class MatchRun:
    """What a pass did so far; kept outside the loop so an error can say how far it got."""

    tally: KeySetTally
    deleted: int = 0
    calls: int = 0
    capped: int = 0
    sent: bool = False  # an unlinking call was sent (its reply may have been lost)


async def eval_script(client: Any, script: str, sha: str | None, *args: Any) -> tuple[str, Any]:
    """EVALSHA, loading the script first (or again, if Redis's script cache was flushed)."""
    if sha is not None:
        try:
            return sha, await client.evalsha(sha, 0, *args)
        except rexc.NoScriptError:
            pass  # NOSCRIPT: the script did not run at all; load it and run it now
    sha = str(await client.script_load(script))
    return sha, await client.evalsha(sha, 0, *args)


async def match_pass(session: RedisSession, p: DeleteRedisKeys, run: MatchRun, *, unlink: bool, budget: int) -> None:
    """One server-side SCAN pass over the pattern (``redis_lua.MATCH_LUA``), a few thousand keys
    per call: tallies names (count, digest, first ``sampleSize``) and, with ``unlink``, deletes
    them. Never tallies or deletes more than ``budget`` names; ``run.capped`` counts the excess."""
    sha: str | None = None
    cursor = "0"
    while True:
        room = max(0, p.sample_size - len(run.tally.sample))
        if unlink:
            run.sent = True
        sha, reply = await eval_script(session.client, MATCH_LUA, sha, cursor, p.pattern, p.batch_size,
                                       MAX_SCAN_STEPS, room, budget - run.tally.count, "unlink" if unlink else "count")
        cursor, matched, unlinked, capped, sample, digest = reply
        run.tally.merge(int(matched), fold_digest(digest), [key_name(k) for k in sample])
        run.deleted += int(unlinked)
        run.capped += int(capped)
        run.calls += 1
        if run.capped or str(cursor) == "0":
            return


async def delete_plan(ctx: ActionContext, p: DeleteRedisKeys) -> Evidence:
    prefix = check_pattern(p.pattern, p.allow_wide_match)
    run = MatchRun(KeySetTally(sample_size=p.sample_size))
    tally = run.tally
    async with open_redis(ctx, p.connection) as session:
        try:
            await match_pass(session, p, run, unlink=False, budget=p.max_keys)
            db_size = int(await session.client.dbsize())
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"scanning {p.pattern}", changed=False) from None
    if run.capped:
        raise _over_cap(p, tally.count + run.capped)
    return {
        "pattern": p.pattern, "literalPrefix": prefix, "wideMatchAllowed": p.allow_wide_match,
        "matched": tally.count, "keySetDigest": tally.digest, "sampleComplete": tally.complete,
        "maxKeys": p.max_keys, "dbSize": db_size, "sample": tally.sample,
        "change": f"UNLINK {tally.count} key(s) matching {p.pattern} (cap {p.max_keys})",
    }


async def delete_execute(ctx: ActionContext, p: DeleteRedisKeys, plan: Evidence) -> Evidence:
    """Re-derive the match and UNLINK it in one pipelined pass; report how it differs from the plan.

    Drift: execute acts on the pattern, not on a list. Keys created since planning that match
    are deleted too, keys deleted since are counted as gone; ``drift`` compares count and digest
    with the plan. SCAN may return a key twice while Redis rehashes: the second UNLINK counts it
    as already gone, and the digest then differs from the plan's (reported, never an error).
    """
    check_pattern(p.pattern, p.allow_wide_match)
    run = MatchRun(KeySetTally(sample_size=p.sample_size))
    async with open_redis(ctx, p.connection) as session:
        try:
            await match_pass(session, p, run, unlink=True, budget=p.max_keys)
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"deleting {p.pattern} ({run.deleted} deleted so far)", changed=run.sent) from None
    if run.capped:
        raise OverCapError(
            f"pattern {p.pattern!r} grew past maxKeys={p.max_keys} after planning: stopped after deleting "
            f"{run.deleted} key(s) (planned {plan.get('matched')}); raise maxKeys or narrow the pattern and retry",
        )
    gone = max(0, run.tally.count - run.deleted)
    return {
        "pattern": p.pattern, "deleted": run.deleted, "matched": run.tally.count, "alreadyGone": gone,
        "keySetDigest": run.tally.digest, "drift": drift(plan.get("matched"), plan.get("keySetDigest"), run.tally),
        "batches": run.calls, "sample": run.tally.sample,
        "summary": f"deleted {run.deleted} key(s) matching {p.pattern} in {run.calls} batch(es)"
        + (f"; {gone} already gone" if gone else ""),
    }


async def delete_observe(ctx: ActionContext, p: DeleteRedisKeys, plan: Evidence) -> Observation:
    """After an interrupted run: Applied when nothing matches the pattern any more, else NotApplied
    (execute is safe to re-run: it acts on the pattern, up to maxKeys)."""
    check_pattern(p.pattern, p.allow_wide_match)
    run = MatchRun(KeySetTally(sample_size=0))
    async with open_redis(ctx, p.connection) as session:
        try:
            await match_pass(session, p, run, unlink=False, budget=0)
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"scanning {p.pattern}", changed=False) from None
    if run.capped == 0:
        return Applied(f"no key matches {p.pattern} any more")
    return NotApplied(f"keys matching {p.pattern} remain; execute re-derives the match and deletes them")


async def iter_matching_keys(ctx: ActionContext, p: DeleteRedisKeys) -> AsyncIterator[str]:
    """Every key the pattern matches now (re-derived, never stored): ``kubectl remedy describe --keys``."""
    check_pattern(p.pattern, p.allow_wide_match)
    async with open_redis(ctx, p.connection) as session:
        try:
            async for name in session.client.scan_iter(match=p.pattern, count=p.batch_size):
                yield key_name(name)
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"scanning {p.pattern}", changed=False) from None


DELETE_REDIS_KEYS = ActionDef(
    name="deleteRedisKeys", params=DeleteRedisKeys, target=_target,
    plan=delete_plan, execute=delete_execute, observe=delete_observe, idempotent=True, destructive=True,
)
