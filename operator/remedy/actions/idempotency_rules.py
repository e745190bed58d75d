"""purgeIdempotencyKeys: the judgement of one record and the evidence both backends write.

Why a module: the HTTP backend (idempotency_http.py) and the Redis backend (idempotency.py,
with its Lua in idempotency_redis.py) judge records by the same rule and report plans and
results in the same bounded shape; the rule lives once, here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ..api.common import parse_duration
from ..api.idempotency import PurgeIdempotencyKeys
from ..base import rfc3339
from ..base.errors import (
    InvalidSpecError,
    OverCapError,
    SkipError,
)
from .base import Evidence
from .keyset import KeySetTally, drift

# Why a stale-looking record was not selected; counted in plan evidence so an empty plan explains itself.
NOT_IN_PROGRESS, LOCK_NOT_EXPIRED, NO_LOCK_TIME, FILTERED, NOT_A_RECORD = (
    "notInProgress", "lockNotExpired", "unparseableLockTime", "filteredOut", "notARecord",
)


# --- staleness (shared by both backends) -------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (``Z`` or offset; naive means UTC) or epoch seconds/milliseconds; None if neither."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and is_number(value)):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if seconds > 1e11:  # no lock expires in the year 5138: this is milliseconds
            seconds /= 1000.0
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        return None
    return rfc3339.parse(value)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_int(value: Any) -> int | None:
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
        replays = as_int(record.get(fm.replay_count))
        if replays is None or replays < p.min_replay_count:
            return Verdict(False, FILTERED, f"{fm.replay_count} {replays} < {p.min_replay_count}")
    return Verdict(True, "stale", "")


def record_entry(record: Mapping[str, Any], key: str, p: PurgeIdempotencyKeys, now: datetime) -> dict[str, Any]:
    """The evidence for one stale key: identity, tenant, lock age. Nothing from the payload."""
    fm = p.field_map
    expires = parse_time(record.get(fm.lock_expires_at))
    entry: dict[str, Any] = {"key": key, "tenant": record.get(fm.tenant)}
    if expires is not None:
        entry["lockAgeSeconds"] = round((now - expires).total_seconds(), 1)
    replays = as_int(record.get(fm.replay_count))
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


def check_backend(p: PurgeIdempotencyKeys) -> None:
    if p.backend == "http" and p.http is None:
        raise InvalidSpecError("backend: http needs the http section (baseUrl, tokenSecretRef)")
    if p.backend == "redis" and p.redis is None:
        raise InvalidSpecError("backend: redis needs the redis section (connection, pattern)")


def over_cap(p: PurgeIdempotencyKeys, count: int) -> OverCapError:
    return OverCapError(
        f"{count}{'+' if count > p.max_keys else ''} stale idempotency keys exceed maxKeys={p.max_keys}; "
        "refused, nothing purged: narrow with tenant/keyPrefix/minReplayCount or raise maxKeys"
    )


def grew_past_cap(p: PurgeIdempotencyKeys, purged: int, left: int) -> OverCapError:
    return OverCapError(
        f"stale idempotency keys grew past maxKeys={p.max_keys} after planning: stopped after purging {purged} "
        f"(each still stale when deleted); at least {left} more left. Raise maxKeys or narrow the filters and retry"
    )


def purge_target(p: PurgeIdempotencyKeys) -> str:
    if p.backend == "http" and p.http is not None:
        return f"idempotency {urlsplit(p.http.base_url).netloc}"
    if p.redis is not None:
        return f"idempotency redis {p.redis.pattern}"
    return "idempotency"



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


# --- evidence shared by both backends -----------------------------------------------------


def planned_keys(plan: Evidence, field: str = "key") -> dict[str, str]:
    """{name: record key} of the plan, but only when its sample lists every planned key.

    Small plans (up to 20 keys) are explained key by key in the result; bigger ones by count
    and digest only."""
    if not plan.get("keysComplete"):
        return {}
    return {str(e.get(field) or e.get("key")): str(e.get("key")) for e in plan.get("keys", []) if isinstance(e, dict)}


def explain_planned(planned: dict[str, str], out: Outcome, seen_fresh: dict[str, str]) -> None:
    """Name what became of each planned key execute did not purge (small plans only)."""
    acted = {e["key"] for e in out.purged.sample} | set(out.gone.sample) | {e["key"] for e in out.skipped.sample}
    for key in planned.values():
        if key in acted:
            continue
        if key in seen_fresh:
            out.skipped.add(key, {"key": key, "why": seen_fresh[key]})
        else:
            out.gone.add(key)


def plan_evidence(p: PurgeIdempotencyKeys, stale: KeySetTally, ages: Ages, scanned: int,
                   reasons: Counter[str], source: str) -> Evidence:
    if stale.count > p.max_keys:
        raise over_cap(p, stale.count)
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


def result_evidence(plan: Evidence, out: Outcome) -> Evidence:
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


