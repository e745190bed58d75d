"""The bounded plan and result of terminatePostgresQueries: pure functions over candidate rows.

Why a module of its own: the same builders run in the action (postgres.py) and in
bench/database_status.py, which feeds them 10,000 synthetic rows to measure the status size at
a count no local server can hold as real backends (max_connections); keeping them apart from
the connection and signalling code makes "the same code path" literally true. What the evidence
holds and why (count, sample, digest, plan time and bound, filters): planned_set.py.

A row has the columns of ``postgres._CANDIDATES_SQL``: pid, usename, application_name, datname,
state, backend_start, query_start, xact_start, duration, query preview, total, plan_time,
started_before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..api.postgres import TerminatePostgresQueries
from .base import Evidence
from .keyset import SAMPLE_SIZE, KeySetTally
from .planned_set import plan_evidence, result_evidence

# The spec fields that choose backends; the plan records them and execute uses the recorded ones.
FILTER_FIELDS = frozenset({"min_duration", "states", "database", "user", "application_name", "query_pattern",
                            "max_queries"})


def backend_evidence(r: Sequence[Any]) -> Evidence:
    """One candidate row as evidence (also the identity execute signals by)."""
    return {
        "pid": r[0], "user": r[1], "applicationName": r[2], "database": r[3], "state": r[4],
        "backendStart": r[5].isoformat(), "queryStart": r[6].isoformat() if r[6] else None,
        "durationSeconds": round(float(r[8]), 1), "query": r[9],
    }


def identity(b: Evidence) -> str:
    """What the digest counts: the identity triple every signal is guarded by."""
    return f"{b['pid']}|{b['backendStart']}|{b['queryStart']}"


def terminate_plan_evidence(rows: Sequence[Sequence[Any]], p: TerminatePostgresQueries) -> Evidence:
    """The bounded plan for candidate rows (columns in ``postgres._CANDIDATES_SQL`` order): count, sample,
    digest, plan time and bound, filters. Public so bench/database_status.py measures this very code."""
    tally = KeySetTally()
    for r in rows:
        b = backend_evidence(r)
        tally.add(identity(b), b)
    how = "pg_cancel_backend, then after grace pg_terminate_backend" if p.cancel_first else "pg_terminate_backend"
    started_before = rows[0][12].isoformat()
    return {
        **plan_evidence("backends", tally, plan_time=rows[0][11].isoformat(), started_before=started_before,
                        filters=p.model_dump(by_alias=True, include=set(FILTER_FIELDS), mode="json")),
        "change": f"{how} for the {tally.count} backend(s) matching the filters whose query (transaction "
        f"when idle) started at or before {started_before}, each only while pid, backend_start, "
        "query_start and state are unchanged",
    }


def terminate_result_evidence(plan: Evidence, backends: list[Evidence], outcome: dict[str, str]) -> Evidence:
    """The bounded result: the plan's sample with each one's outcome, counts, the digest of what
    was signalled and how the set found at execute compares with the planned one. ``outcome``
    maps the identity of each backend found at execute to gone/cancelled/terminated/terminateSignalled.
    Public so bench/database_status.py measures this very code."""
    found, signalled = KeySetTally(sample_size=0), KeySetTally(sample_size=0)
    for b in backends:
        found.add(identity(b))
        if outcome[identity(b)] != "gone":
            signalled.add(identity(b))
    sample = [{"pid": b["pid"], "user": b["user"], "applicationName": b["applicationName"],
               "database": b["database"], "outcome": outcome.get(identity(b), "gone")}
              for b in plan["backends"][:SAMPLE_SIZE]]
    cancelled = sum(1 for v in outcome.values() if v == "cancelled")
    terminated = sum(1 for v in outcome.values() if v in ("terminated", "terminateSignalled"))
    return {
        "backends": sample,
        "cancelled": cancelled,
        "terminated": terminated,
        # planned identities not signalled (ended or moved on before execute); exact when found.sameSet
        "gone": max(0, int(plan.get("count", len(plan["backends"]))) - cancelled - terminated),
        **result_evidence("backends", plan, found, signalled),
    }
