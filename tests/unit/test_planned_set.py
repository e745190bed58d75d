"""Bounded evidence of the database actions (actions/planned_set.py, postgres_evidence.py,
mongo.py builders): at 10,000 identities plan + result stay under 64 KiB, the digest covers
every identity (one identity more or less changes it), the plan's filters win over a later spec
edit, and a plan this version cannot read fails with a reason instead of an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from remedy.actions.mongo import kill_plan_evidence, kill_result_evidence
from remedy.actions.planned_set import bounded, planned_params
from remedy.actions.postgres_evidence import (
    backend_evidence,
    identity,
    terminate_plan_evidence,
    terminate_result_evidence,
)
from remedy.api.mongo import KillSlowMongoOps
from remedy.api.postgres import TerminatePostgresQueries
from remedy.base.errors import PermanentError

LIMIT = 65_536
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PG = TerminatePostgresQueries.model_validate({"connection": {"dsnSecretRef": {"name": "pg", "key": "dsn"}},
                                              "minDuration": "30s", "applicationName": "checkout", "maxQueries": 10_000})
MONGO = KillSlowMongoOps.model_validate({"connection": {"uriSecretRef": {"name": "m", "key": "uri"}},
                                         "minSecsRunning": 30, "appName": "inventory", "maxOps": 10_000})


def pg_rows(n: int) -> list[tuple[Any, ...]]:
    bound = NOW - timedelta(seconds=30)
    rows = []
    for i in range(n):
        qs = bound - timedelta(seconds=i % 600, microseconds=i)
        rows.append((1000 + i, "app", "checkout", "app", "active", qs - timedelta(minutes=1), qs, qs,
                     (NOW - qs).total_seconds(), "x" * 120, n, NOW, bound))
    return rows


def mongo_ops(n: int) -> list[dict[str, Any]]:
    return [{"opid": 5000 + i, "ns": "inventory.orders", "op": "query", "secsRunning": 60 + i % 600,
             "client": f"10.0.{i // 250}.{i % 250}:5000", "appName": "inventory", "connectionId": 100 + i,
             "command": "find"} for i in range(n)]


def test_postgres_status_at_10k_identities_is_bounded_and_the_digest_covers_every_one() -> None:
    rows = pg_rows(10_000)
    plan = terminate_plan_evidence(rows, PG)
    backends = [backend_evidence(r) for r in rows]
    result = terminate_result_evidence(plan, backends, {identity(b): "terminated" for b in backends})
    assert len(json.dumps({"plan": plan, "result": result})) < LIMIT
    assert plan["count"] == 10_000 and len(plan["backends"]) == 20 and bounded(plan)
    assert result["found"]["sameSet"] is True and result["signalledDigest"] == plan["backendsDigest"]
    assert terminate_plan_evidence(rows[:-1], PG)["backendsDigest"] != plan["backendsDigest"]
    missing_one = terminate_result_evidence(plan, backends[1:], {identity(b): "terminated" for b in backends[1:]})
    assert missing_one["found"]["sameSet"] is False and missing_one["gone"] == 1


def test_mongo_status_at_10k_identities_is_bounded() -> None:
    ops = mongo_ops(10_000)
    now_us = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    plan = kill_plan_evidence(ops, MONGO, now_us)
    result = kill_result_evidence(plan, ops, {f"{o['opid']}|{o['connectionId']}|{o['client']}|{o['ns']}|{o['op']}": "killed"
                                              for o in ops})
    assert len(json.dumps({"plan": plan, "result": result})) < LIMIT
    assert plan["count"] == 10_000 and result["killed"] == 10_000 and result["found"]["sameSet"] is True
    assert plan["startedBefore"] == (NOW - timedelta(seconds=30)).isoformat()


def test_the_plans_filters_win_over_a_later_spec_edit() -> None:
    plan = terminate_plan_evidence(pg_rows(3), PG)
    widened = TerminatePostgresQueries.model_validate({**PG.model_dump(by_alias=True), "applicationName": None,
                                                       "minDuration": "1s"})
    q = planned_params(widened, plan)
    assert q.application_name == "checkout" and q.min_duration == "30s" and q.max_queries == 10_000


def test_a_plan_this_version_cannot_read_fails_with_a_reason() -> None:
    plan = {**terminate_plan_evidence(pg_rows(1), PG), "filters": {"noSuchField": 1}}
    with pytest.raises(PermanentError) as info:
        planned_params(PG, plan)
    assert info.value.reason == "PlanUnreadable"
    assert not bounded({"backends": [], "count": 0})  # an older plan lists every identity
