"""The redis backend of purgeIdempotencyKeys: one pipelined pass over the keyspace per step.

Why a pass and not a list: the plan may cover a million stale locks, so neither plan nor
execute holds more than one SCAN batch. Each batch costs one round trip: the EVALSHA of the
staleness script (``stale_locks_lua``) on batch *i* travels in the same pipeline as the SCAN
for batch *i+1*. Plan runs the script in ``judge`` mode (read-only); execute re-derives the set
by running it in ``purge`` mode, which re-checks and UNLINKs each key atomically on the server,
never more than ``maxKeys`` in total. Evidence is a ``KeySetTally``: count, digest, first 20.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rexc

from ..api.common import parse_duration
from ..api.idempotency import IdempotencyRedisBackend, PurgeIdempotencyKeys
from .keyset import KeySetTally
from .redis_keys import RedisSession
from .stale_locks_lua import REASONS, STALE_LOCKS_LUA


@dataclass
class StaleScan:
    """What one pass saw: keys scanned, why the others were not stale, the stale (or purged) set."""

    tally: KeySetTally = field(default_factory=KeySetTally)
    scanned: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    oldest_expiry: float | None = None
    newest_expiry: float | None = None
    capped: int = 0  # purge mode: stale keys left because maxKeys was reached
    batches: int = 0
    writes_sent: bool = False  # purge mode: a script that may delete was sent (its reply may be lost)

    def lock_ages(self, now: float) -> dict[str, Any]:
        return {
            "maxLockAgeSeconds": None if self.oldest_expiry is None else round(now - self.oldest_expiry, 1),
            "minLockAgeSeconds": None if self.newest_expiry is None else round(now - self.newest_expiry, 1),
        }


def _args(p: PurgeIdempotencyKeys, mode: str, now: float, budget: int) -> list[str]:
    fm = p.field_map
    return [
        mode, repr(now), repr(parse_duration(p.grace)),
        fm.key, fm.tenant, fm.state, fm.lock_expires_at, fm.replay_count, fm.in_progress_value,
        "1" if p.tenant is not None else "0", p.tenant or "",
        "1" if p.key_prefix is not None else "0", p.key_prefix or "",
        "1" if p.min_replay_count is not None else "0", str(p.min_replay_count or 0),
        str(budget),
    ]


def _take(scan: StaleScan, reply: Any, now: float) -> int:
    """Fold one script reply into the pass; returns how many stale (or purged) keys it named."""
    counts, entries, capped = reply
    for reason, n in zip(REASONS, counts):
        if int(n):
            scan.reasons[reason] += int(n)
    scan.capped += int(capped)
    for redis_key, record_key, tenant, expires_text, replay in entries:
        expires = float(expires_text)
        entry: dict[str, Any] = {"key": record_key, "tenant": tenant or None,
                                 "lockAgeSeconds": round(now - expires, 1), "redisKey": redis_key}
        if replay is not None and replay is not False:
            entry["replayCount"] = int(replay)
        scan.tally.add(redis_key, entry, group=str(tenant or None))
        if scan.oldest_expiry is None or expires < scan.oldest_expiry:
            scan.oldest_expiry = expires
        if scan.newest_expiry is None or expires > scan.newest_expiry:
            scan.newest_expiry = expires
    return len(entries)


async def stale_pass(session: RedisSession, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend, scan: StaleScan,
                     *, purge: bool, stop_after: int | None = None) -> StaleScan:
    """SCAN the pattern once, judging (or purging) each batch on the server.

    ``stop_after``: judge mode stops once more than this many stale keys were seen (the plan's
    over-cap refusal needs no full count). Purge mode never deletes more than ``p.max_keys``.
    RedisError propagates; the caller maps it (in purge mode ``scan.tally.count`` says whether
    anything was deleted before it, so the caller passes in the ``scan`` it will look at).
    """
    client = session.client
    mode = "purge" if purge else "judge"
    budget = p.max_keys
    sha = await client.script_load(STALE_LOCKS_LUA)
    cursor, names = await client.scan(cursor=0, match=cfg.pattern, count=cfg.batch_size)
    while True:
        now = time.time()
        pipe = client.pipeline(transaction=False)
        if names:
            pipe.evalsha(sha, len(names), *names, *_args(p, mode, now, budget))
        more = int(cursor) != 0
        if more:
            pipe.scan(cursor=cursor, match=cfg.pattern, count=cfg.batch_size)
        if purge and names:
            scan.writes_sent = True
        replies = await pipe.execute(raise_on_error=False) if (names or more) else []
        if names:
            reply = replies.pop(0)
            if isinstance(reply, rexc.NoScriptError):  # script cache flushed mid-run: reload, redo the batch
                sha = await client.script_load(STALE_LOCKS_LUA)
                reply = await client.evalsha(sha, len(names), *names, *_args(p, mode, now, budget))
            if isinstance(reply, Exception):
                raise reply
            scan.scanned += len(names)
            scan.batches += 1
            named = _take(scan, reply, now)
            if purge:
                budget -= named
                if scan.capped:
                    return scan
            elif stop_after is not None and scan.tally.count > stop_after:
                return scan
        if not more:
            return scan
        nxt = replies.pop(0)
        if isinstance(nxt, Exception):
            raise nxt
        cursor, names = nxt
