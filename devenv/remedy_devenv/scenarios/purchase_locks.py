"""Runbook 002: lock:purchase:* keys stuck in Redis; deleteRedisKeys applied by a person and
approved before it runs; unrelated lock:checkout:* keys must survive."""

from __future__ import annotations

from typing import Any

from ..demo.stack import Stack
from ..demo.support import DemoError
from .base import Scenario


def inject(st: Stack) -> str:
    r = st.redis_client()
    for i in range(12):
        r.set(f"lock:purchase:{1000 + i}", "valid-purchase", ex=3600)
    for i in range(3):
        r.set(f"lock:checkout:{i}", "held", ex=3600)
    return "12 stuck lock:purchase:* keys (and 3 unrelated lock:checkout:* keys) in Redis"


def detect(st: Stack) -> str | None:
    n = sum(1 for _ in st.redis_client().scan_iter("lock:purchase:*"))
    return f"symptom: {n} lock:purchase:* keys held for an hour (redis SCAN)" if n else None


def check(st: Stack, obj: dict[str, Any]) -> str:
    r = st.redis_client()
    left = sum(1 for _ in r.scan_iter("lock:purchase:*"))
    other = sum(1 for _ in r.scan_iter("lock:checkout:*"))
    if left or other != 3:
        raise DemoError(f"lock:purchase left {left}, lock:checkout {other}")
    return "0 lock:purchase:* keys left; the 3 lock:checkout:* keys untouched"


def cleanup(st: Stack) -> None:
    r = st.redis_client()
    for k in list(r.scan_iter("lock:checkout:*")):
        r.delete(k)


SCENARIO = Scenario(
    "purchase-locks", "002", "lock:purchase:* keys stuck", "kubectl apply + approval", "deleteRedisKeys",
    inject, [("symptom", detect)], check, remediation="flush-purchase-locks", approve=True, cleanup=cleanup)
