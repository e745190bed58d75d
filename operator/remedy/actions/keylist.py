"""The full key list of a bulk action, re-derived on demand (``kubectl remedy describe --keys``).

Why not stored: a Remediation's status holds only counts, the first 20 keys and a digest (see
``keyset``), so that a million-key purge still fits in a small object. A person who wants every
key asks for it; the list is computed now, from the same rule the action uses, with the
requester's own credentials (the plugin reads the referenced Secret as the person running it).
It is what the rule selects *now*: after a purge it is what is left, before it what would go.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from .base import ActionContext
from .idempotency import PURGE_IDEMPOTENCY_KEYS, iter_stale_keys
from .redis_keys import DELETE_REDIS_KEYS, iter_matching_keys

Lister = Callable[[ActionContext, Any], AsyncIterator[str]]

LISTERS: dict[str, Lister] = {
    PURGE_IDEMPOTENCY_KEYS.name: iter_stale_keys,
    DELETE_REDIS_KEYS.name: iter_matching_keys,
}


def lister(action_name: str) -> Lister | None:
    """The key lister of an action, or None when its evidence is not a key set."""
    return LISTERS.get(action_name)
