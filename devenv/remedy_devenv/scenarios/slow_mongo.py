"""Runbook 004: slow COLLSCAN queries on inventory; killSlowMongoOps kills exactly those two
(not the fast one, not another app's, not MongoDB's internal threads)."""

from __future__ import annotations

from typing import Any

from ..demo.stack import Stack
from ..demo.support import DemoError
from .base import Scenario


def inject(st: Stack) -> str:
    c = st.mongo_admin()
    try:
        slow = [c.admin.command({"remedyInjectOp": 1, "ns": "inventory.product_stocks", "secs_running": 45 + i,
                                 "appName": "inventory-service"})["opid"] for i in range(2)]
        fast = c.admin.command({"remedyInjectOp": 1, "ns": "inventory.product_stocks", "secs_running": 2,
                                "appName": "inventory-service"})["opid"]
        other = c.admin.command({"remedyInjectOp": 1, "ns": "analytics.events", "secs_running": 120,
                                 "appName": "nightly-report"})["opid"]
    finally:
        c.close()
    st.scratch["mongo"] = (slow, [fast, other])
    return (f"2 slow COLLSCAN queries (opids {slow}, 45s+) from inventory-service; also a 2s query, "
            "a 120s analytics query of another app, and MongoDB's internal threads")


def detect(st: Stack) -> str | None:
    c = st.mongo_admin()
    try:
        ops = c.admin.command({"currentOp": 1, "secs_running": {"$gte": 30}, "appName": "inventory-service"})["inprog"]
    finally:
        c.close()
    return f"symptom: db.currentOp({{secs_running: {{$gte: 30}}}}) lists {len(ops)} inventory-service ops" if ops else None


def check(st: Stack, obj: dict[str, Any]) -> str:
    slow, _keep = st.scratch["mongo"]
    c = st.mongo_admin()
    try:
        killed = list(c.admin.command({"remedyStats": 1})["killed"])
    finally:
        c.close()
    if sorted(killed) != sorted(slow):
        raise DemoError(f"killed {killed}, expected exactly {slow}")
    return f"killOp {sorted(killed)}; the 2s query, the other app's op and internal threads untouched"


def cleanup(st: Stack) -> None:
    c = st.mongo_admin()
    try:
        c.admin.command({"remedyReset": 1})
    finally:
        c.close()


SCENARIO = Scenario(
    "slow-mongo", "004", "slow MongoDB queries on inventory", "kubectl apply", "killSlowMongoOps",
    inject, [("symptom", detect)], check, remediation="kill-slow-inventory-queries", cleanup=cleanup)
