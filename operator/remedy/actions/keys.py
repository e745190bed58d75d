"""The full key list of a bulk action, re-derived on demand (``kubectl remedy describe --keys``).

Why not stored: a Remediation's status holds only counts, the first 20 keys and a digest (see
``keyset``), so that a million-key purge still fits in a small object. A person who wants every
key asks for it; the list is computed now, from the same rule the action uses, with the
requester's own credentials (the plugin reads the referenced Secret as the person running it).
It is what the rule selects *now*: after a purge it is what is left, before it what would go.

The public surface for the plugin is ``key_set_action`` and ``selected_keys``: the plugin
hands over a Secret reader and gets keys back, without building action contexts itself (an
import-linter contract keeps it away from the action internals).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from ..api.common import SecretKeyRef
from ..api.remediation import ActionSpec
from .base import ActionContext
from .idempotency import PURGE_IDEMPOTENCY_KEYS, iter_stale_keys
from .redis_keys import DELETE_REDIS_KEYS, iter_matching_keys

Lister = Callable[[ActionContext, Any], AsyncIterator[str]]
# (Secret name, key) -> the value, read with the caller's own credentials.
SecretReader = Callable[[str, str], str]

LISTERS: dict[str, Lister] = {
    PURGE_IDEMPOTENCY_KEYS.name: iter_stale_keys,
    DELETE_REDIS_KEYS.name: iter_matching_keys,
}


def lister(action_name: str) -> Lister | None:
    """The key lister of an action, or None when its evidence is not a key set."""
    return LISTERS.get(action_name)


def key_set_action(action: dict[str, Any]) -> tuple[str, bool]:
    """The name of ``spec.action``'s member and whether it acts on a key set; ValueError when
    spec.action cannot be read."""
    name, _ = ActionSpec.model_validate(action).only()
    return name, name in LISTERS


async def selected_keys(action: dict[str, Any], namespace: str, name: str, uid: str,
                        read_secret: SecretReader) -> AsyncIterator[str]:
    """Every key the action's rule selects now; RemedyError when the target cannot tell."""
    member, params = ActionSpec.model_validate(action).only()
    list_keys = LISTERS[member]

    class SecretOnlyContext(ActionContext):
        async def secret(self, ref: SecretKeyRef) -> str:
            return read_secret(ref.name, ref.key)

    ctx = SecretOnlyContext(namespace=namespace, name=name, uid=uid,
                            kube=None)  # type: ignore[arg-type]  # secret() above is all a lister uses
    async for key in list_keys(ctx, params):
        yield key
