"""The explicit registry: ``spec.action`` member name -> ActionDef.

No import-time discovery: adding an action means adding one line here (and its params
model to remedy.api.remediation.ActionSpec); tests/unit/test_api_and_generation.py checks both agree.
"""

from __future__ import annotations

from typing import Any

from . import circuit_breaker, http, idempotency, mongo, postgres, redis_keys, workload
from .base import ActionDef

_ALL: list[ActionDef[Any]] = [
    workload.RESTART,
    workload.SCALE,
    workload.ROLLBACK,
    workload.RAISE_MEMORY,
    postgres.TERMINATE_POSTGRES_QUERIES,
    postgres.POSTGRES_STATEMENT,
    mongo.KILL_SLOW_MONGO_OPS,
    circuit_breaker.RESET_CIRCUIT_BREAKER,
    http.HTTP_REQUEST,
    http.NOTIFY,
    idempotency.PURGE_IDEMPOTENCY_KEYS,
    redis_keys.DELETE_REDIS_KEYS,
]

REGISTRY: dict[str, ActionDef[Any]] = {a.name: a for a in _ALL}


def get(name: str) -> ActionDef[Any]:
    return REGISTRY[name]
