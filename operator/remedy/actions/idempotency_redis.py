"""The redis backend of purgeIdempotencyKeys: one pipelined pass over the keyspace per step.

Why a pass and not a list: the plan may cover a million stale locks, so neither plan nor
execute holds more than one batch. Each batch is one EVALSHA of the staleness script
(``stale_locks_lua``), which SCANs, judges and tallies on the server and answers with counts,
a digest and the first few entries. Plan runs it in ``judge`` mode (read-only); execute
re-derives the set by running it in ``purge`` mode, which re-checks and UNLINKs each key
atomically, never more than ``maxKeys`` in total. Evidence is a ``KeySetTally``: count, digest,
first 20, tenants.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..api.common import parse_duration
from ..api.idempotency import IdempotencyRedisBackend, PurgeIdempotencyKeys
from .keyset import KeySetTally
from .redis_keys import RedisSession, eval_script
from .redis_lua import MAX_SCAN_STEPS, fold_digest
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


def _args(p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend, mode: str, now: float, budget: int,
          cursor: str, room: int) -> list[Any]:
    fm = p.field_map
    return [
        mode, repr(now), repr(parse_duration(p.grace)),
        fm.key, fm.tenant, fm.state, fm.lock_expires_at, fm.replay_count, fm.in_progress_value,
        "1" if p.tenant is not None else "0", p.tenant or "",
        "1" if p.key_prefix is not None else "0", p.key_prefix or "",
        "1" if p.min_replay_count is not None else "0", str(p.min_replay_count or 0),
        str(budget), cursor, cfg.pattern, cfg.batch_size, MAX_SCAN_STEPS, room,
    ]


def _take(scan: StaleScan, reply: Any, now: float) -> str:
    """Fold one script reply into the pass; returns the next cursor."""
    cursor, scanned, counts, n, capped, sample, digest, oldest, newest, tenants = reply
    scan.scanned += int(scanned)
    for reason, count in zip(REASONS, counts, strict=True):
        if int(count):
            scan.reasons[reason] += int(count)
    scan.capped += int(capped)
    entries = []
    for redis_key, record_key, tenant, expires_text, replay in sample:
        entry: dict[str, Any] = {"key": record_key, "tenant": tenant or None,
                                 "lockAgeSeconds": round(now - float(expires_text), 1), "redisKey": redis_key}
        if replay is not None and replay is not False:
            entry["replayCount"] = int(replay)
        entries.append(entry)
    scan.tally.merge(int(n), fold_digest(digest), entries)
    for i in range(0, len(tenants), 2):
        name = str(tenants[i])
        scan.tally.count_group("None" if name == "\0" else name, int(tenants[i + 1]))
    if oldest:
        scan.oldest_expiry = float(oldest) if scan.oldest_expiry is None else min(scan.oldest_expiry, float(oldest))
    if newest:
        scan.newest_expiry = float(newest) if scan.newest_expiry is None else max(scan.newest_expiry, float(newest))
    return str(cursor)


async def stale_pass(session: RedisSession, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend, scan: StaleScan,
                     *, purge: bool, budget: int) -> StaleScan:
    """SCAN the pattern once on the server, judging (or purging) a batch per call.

    Never tallies (judge mode) or purges (purge mode) more than ``budget`` stale keys; the
    excess is counted in ``scan.capped`` and ends the pass, so an over-cap plan needs no full
    count. RedisError propagates; the caller maps it (``scan.writes_sent`` says whether a
    purging call was sent, so the caller passes in the ``scan`` it will look at).
    """
    sha: str | None = None
    cursor = "0"
    mode = "purge" if purge else "judge"
    while True:
        now = time.time()
        room = max(0, scan.tally.sample_size - len(scan.tally.sample))
        if purge:
            scan.writes_sent = True
        sha, reply = await eval_script(session.client, STALE_LOCKS_LUA, sha,
                                       *_args(p, cfg, mode, now, budget - scan.tally.count, cursor, room))
        cursor = _take(scan, reply, now)
        scan.batches += 1
        if scan.capped or cursor == "0":
            return scan


async def iter_stale(session: RedisSession, p: PurgeIdempotencyKeys, cfg: IdempotencyRedisBackend) -> AsyncIterator[tuple[str, str]]:
    """Every stale key, re-derived now, as (redis key, record key): ``kubectl remedy describe
    --keys``. Read-only (judge mode); one batch in memory at a time."""
    sha: str | None = None
    cursor = "0"
    while True:
        sha, reply = await eval_script(session.client, STALE_LOCKS_LUA, sha,
                                       *_args(p, cfg, "judge", time.time(), 1 << 50, cursor, 1 << 30))
        cursor = str(reply[0])
        for entry in reply[5]:
            yield str(entry[0]), str(entry[1])
        if cursor == "0":
            return
