"""Bounded evidence for bulk actions: a count, a first-N sample and a digest of a key set.

Why: a bulk action may touch a million keys, rows or records, but its plan and result live in
the Remediation's status, which must stay small (etcd refuses objects over 1.5 MiB, and a fat
status slows every watch). So evidence never lists the whole set: it holds the count, the
first ``SAMPLE_SIZE`` entries in the order they were met, and an order-independent digest of
every key. Execute re-derives the set from the rule (it never replays a stored list), and the
two digests tell whether the set it acted on is the one the plan showed. The full list, when a
human wants it, is re-derived on demand (``kubectl remedy describe --keys``), never stored.

The digest is the sum, modulo 2**52, of the first 52 bits of SHA-1 of each key: independent of the order in which SCAN or a paged listing returns keys,
computable in constant memory, the same for the same set on any machine, and computable inside
Redis, whose Lua numbers are doubles exact to 2**53 (``redis.sha1hex`` in a script, see
``redis_lua``). It is a drift detector, not a security boundary.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SAMPLE_SIZE = 20
LIMB_BITS = 52
LIMB_MOD = 1 << LIMB_BITS
# Distinct values shown per breakdown (e.g. tenants): beyond this, the rest is summed as "(other)".
MAX_BREAKDOWN = 20
# Distinct values tracked at all: a million distinct tenants must not grow the operator's memory.
MAX_TRACKED_GROUPS = 1000
OTHER = "(other)"


def key_hash(key: str | bytes) -> int:
    """The first 52 bits (13 hex digits) of SHA-1 of the key name."""
    data = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
    return int(hashlib.sha1(data).hexdigest()[:13], 16)


def digest_hex(total: int) -> str:
    return f"sha1sum52:{total % LIMB_MOD:013x}"


@dataclass
class KeySetTally:
    """Count + digest of every key added, the first ``sample_size`` entries, and a few breakdowns."""

    sample_size: int = SAMPLE_SIZE
    count: int = 0
    _sum: int = 0
    sample: list[Any] = field(default_factory=list)
    breakdown: Counter[str] = field(default_factory=Counter)

    def add(self, key: str | bytes, entry: Any = None, group: str | None = None) -> None:
        """Count one key; ``entry`` (default: the key) is what the sample shows for it."""
        self.count += 1
        self._sum = (self._sum + key_hash(key)) % LIMB_MOD
        if len(self.sample) < self.sample_size:
            self.sample.append(key if entry is None else entry)
        if group is not None:
            self.count_group(group)

    def count_group(self, group: str, n: int = 1) -> None:
        if group in self.breakdown or len(self.breakdown) < MAX_TRACKED_GROUPS:
            self.breakdown[group] += n
        else:
            self.breakdown[OTHER] += n

    def merge(self, count: int, digest_sum: int, sample: list[Any]) -> None:
        """Fold in a partial tally computed elsewhere (e.g. by a Redis script over one batch)."""
        self.count += count
        self._sum = (self._sum + digest_sum) % LIMB_MOD
        room = self.sample_size - len(self.sample)
        if room > 0:
            self.sample.extend(sample[:room])

    def add_many(self, keys: Iterable[str | bytes]) -> None:
        keys = list(keys)
        self.count += len(keys)
        self._sum = (self._sum + sum(map(key_hash, keys))) % LIMB_MOD
        room = self.sample_size - len(self.sample)
        if room > 0:
            self.sample.extend(k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else k for k in keys[:room])

    @property
    def digest(self) -> str:
        return digest_hex(self._sum)

    @property
    def complete(self) -> bool:
        """True when the sample lists every key (the set is no bigger than the sample)."""
        return self.count <= self.sample_size

    def groups(self) -> dict[str, int]:
        """The breakdown, bounded: the biggest MAX_BREAKDOWN groups plus "(other)" for the rest."""
        top = self.breakdown.most_common(MAX_BREAKDOWN)
        out = dict(top)
        out.pop(OTHER, None)
        rest = sum(self.breakdown.values()) - sum(out.values())
        if rest:
            out[OTHER] = rest
        return out

    def evidence(self, prefix: str) -> dict[str, Any]:
        """``{prefix}Count``, ``{prefix}Digest``, ``{prefix}SampleComplete``: the bounded summary."""
        return {f"{prefix}Count": self.count, f"{prefix}Digest": self.digest,
                f"{prefix}SampleComplete": self.complete}


def drift(planned_count: Any, planned_digest: Any, tally: KeySetTally) -> dict[str, Any]:
    """How the set execute acted on differs from the planned one, in bounded form.

    ``sameSet`` is True only when count and digest both match; counts say by how much it moved.
    A plan recorded by an older operator (no digest) reports ``sameSet: null``.
    """
    if not isinstance(planned_count, int) or not isinstance(planned_digest, str):
        return {"sameSet": None, "planned": planned_count, "acted": tally.count}
    same = planned_count == tally.count and planned_digest == tally.digest
    return {"sameSet": same, "planned": planned_count, "acted": tally.count,
            "difference": tally.count - planned_count}
