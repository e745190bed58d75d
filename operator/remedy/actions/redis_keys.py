"""deleteRedisKeys (runbooks 001, 002): remove stuck locks and leftover chaos keys by pattern.

Why an action rather than the runbooks' one-liners: runbook 002's ``redis-cli DEL "lock:purchase:*"``
deletes nothing (DEL does not glob), and the obvious fix, ``KEYS | xargs DEL``, blocks Redis and has
no blast-radius limit. Here the pattern must carry a specific literal prefix, the plan counts
matches with SCAN in constant memory and refuses (never truncates) a match over ``maxKeys``, and
execute re-counts, then SCANs + UNLINKs in pipelined batches, stopping if the match grows past the
cap. Only key names ever reach evidence, never values.

The Redis connection helpers (``open_redis``, ``RedisSession.error``) are shared with the redis
backend of purgeIdempotencyKeys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rexc

from ..api.common import SecretKeyRef, parse_duration
from ..api.redis import DeleteRedisKeys, RedisConnection
from ..errors import (
    ForbiddenError,
    InvalidSpecError,
    OverCapError,
    PermanentError,
    RemedyError,
    RetryableError,
)
from .base import ActionContext, ActionDef, Evidence

GLOB_CHARS = frozenset("*?[")
MIN_PREFIX_SEGMENTS = 2
MIN_PREFIX_CHARS = 8
# Keys per UNLINK command: a single command holding thousands of names would stall Redis's one
# thread while it frees the key slots; many small commands in one pipeline cost one round trip.
UNLINK_CHUNK = 100


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

        A RetryableError promises the engine that nothing changed, so once a delete may have
        been sent a lost connection is reported as a permanent, partial outcome instead.
        """
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, rexc.AuthenticationError):
            ref = self.conn.password_secret_ref or self.conn.url_secret_ref
            return ForbiddenError(f"bad credentials for redis ({_secret_label(self.ctx, ref)}) while {doing}")
        if isinstance(exc, rexc.NoPermissionError):
            return ForbiddenError(f"redis ACL refused {doing}: {detail}")
        if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError, TimeoutError)):
            if changed:
                return PermanentError(
                    f"redis connection lost while {doing}, after some keys were changed ({detail}); "
                    "the action is idempotent, so a new Remediation may safely finish the job",
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


async def scan_batches(client: Any, pattern: str, count: int) -> AsyncIterator[list[Any]]:
    """SCAN MATCH pattern COUNT count, one reply at a time: memory stays one batch however big the DB.

    SCAN may return a key twice (rehashing); callers that count treat the count as an upper bound.
    """
    cursor: Any = 0
    while True:
        cursor, names = await client.scan(cursor=cursor, match=pattern, count=count)
        if names:
            yield list(names)
        if int(cursor) == 0:
            return


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


async def _count(session: RedisSession, p: DeleteRedisKeys) -> tuple[int, list[str], bool]:
    """(matches seen, first sampleSize names, over cap); stops as soon as the cap is exceeded."""
    count = 0
    sample: list[str] = []
    try:
        async for names in scan_batches(session.client, p.pattern, p.batch_size):
            room = p.sample_size - len(sample)
            if room > 0:
                sample.extend(key_name(n) for n in names[:room])
            count += len(names)
            if count > p.max_keys:
                return count, sample, True
    except rexc.RedisError as exc:
        raise session.error(exc, doing=f"scanning {p.pattern}", changed=False) from None
    return count, sample, False


def _over_cap(p: DeleteRedisKeys, count: int, when: str) -> OverCapError:
    return OverCapError(
        f"pattern {p.pattern!r} matches more than maxKeys={p.max_keys} keys ({count}+ seen {when}); "
        "refused, nothing deleted: narrow the pattern or raise maxKeys"
    )


async def delete_plan(ctx: ActionContext, p: DeleteRedisKeys) -> Evidence:
    prefix = check_pattern(p.pattern, p.allow_wide_match)
    async with open_redis(ctx, p.connection) as session:
        count, sample, over = await _count(session, p)
        if over:
            raise _over_cap(p, count, "while planning")
        try:
            db_size = int(await session.client.dbsize())
        except rexc.RedisError as exc:
            raise session.error(exc, doing="reading DBSIZE", changed=False) from None
    return {
        "pattern": p.pattern, "literalPrefix": prefix, "wideMatchAllowed": p.allow_wide_match,
        "matched": count, "maxKeys": p.max_keys, "dbSize": db_size, "sample": sample,
        "change": f"UNLINK {count} key(s) matching {p.pattern} (cap {p.max_keys})",
    }


def _chunks(names: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(names), size):
        yield names[i : i + size]


async def delete_execute(ctx: ActionContext, p: DeleteRedisKeys, plan: Evidence) -> Evidence:
    check_pattern(p.pattern, p.allow_wide_match)
    async with open_redis(ctx, p.connection) as session:
        # Execute may run long after planning (approval), so re-count before the first delete:
        # a match that grew past the cap in between is refused with nothing deleted.
        count, _, over = await _count(session, p)
        if over:
            raise _over_cap(p, count, "when re-checked before deleting")
        seen = deleted = batches = 0
        sample: list[str] = []
        sent = False
        try:
            async for names in scan_batches(session.client, p.pattern, p.batch_size):
                seen += len(names)
                if seen > p.max_keys:
                    raise OverCapError(
                        f"pattern {p.pattern!r} grew past maxKeys={p.max_keys} while deleting "
                        f"({seen}+ seen); stopped after deleting {deleted} key(s)",
                    )
                pipe = session.client.pipeline(transaction=False)
                for chunk in _chunks(names, UNLINK_CHUNK):
                    pipe.unlink(*chunk)
                sent = True
                replies = await pipe.execute()
                deleted += sum(int(r) for r in replies)
                batches += 1
                room = p.sample_size - len(sample)
                if room > 0:
                    sample.extend(key_name(n) for n in names[:room])
        except rexc.RedisError as exc:
            raise session.error(exc, doing=f"deleting {p.pattern} ({deleted} deleted so far)", changed=sent) from None
    gone = max(0, seen - deleted)
    return {
        "pattern": p.pattern, "deleted": deleted, "matched": seen, "alreadyGone": gone,
        "batches": batches, "sample": sample,
        "summary": f"deleted {deleted} key(s) matching {p.pattern} in {batches} batch(es)"
        + (f"; {gone} already gone" if gone else ""),
    }


DELETE_REDIS_KEYS = ActionDef(
    name="deleteRedisKeys", params=DeleteRedisKeys, target=_target,
    plan=delete_plan, execute=delete_execute, idempotent=True, destructive=True,
)
