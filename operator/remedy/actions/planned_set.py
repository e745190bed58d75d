"""Bounded evidence for actions that signal live identities picked by filters and a plan-time bound.

Why: terminatePostgresQueries (backends) and killSlowMongoOps (operations) may plan up to
10,000 identities, and the plan used to list every one in the Remediation's status (megabytes:
over etcd's object limit, and every watch of the object pays for it). So the plan records only
the count, the first ``SAMPLE_SIZE`` entries, a digest of every identity (``keyset``), the
filters it applied and the plan time with the bound derived from it (``startedBefore`` = plan
time minus the threshold, on the *server's* clock).

Where the full set lives between plan and execute: nowhere. Execute re-derives it with the
plan's filters and bound: an identity qualifies only if it matches the filters now AND its
query/operation started at or before ``startedBefore``, which is exactly "already past the
threshold at plan time"; anything younger was not planned and is never signalled. Each signal
is still guarded by the identity (pid + backend_start + query_start + state; opid + the same
connection, namespace and start). The digest of what execute found, compared with the plan's
(``found.sameSet``), and the digest of what it signalled, say at observe time and in the
result which set was acted on, without listing it.

A plan recorded by an older operator lists every identity and has no ``startedBefore``:
``bounded(plan)`` is False and the actions fall back to that recorded list, so an attempt
that was Running across an upgrade resumes with the same exactly-once guards.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from ..api.common import ApiModel
from ..base.errors import PermanentError
from .base import Evidence
from .keyset import SAMPLE_SIZE, KeySetTally, drift

__all__ = ["SAMPLE_SIZE", "bounded", "plan_evidence", "planned_params", "result_evidence"]

P = TypeVar("P", bound=ApiModel)


def bounded(plan: Evidence) -> bool:
    """True for a plan that holds a bound to re-derive from, not a list of every identity."""
    return isinstance(plan.get("startedBefore"), str)


def planned_params(p: P, plan: Evidence) -> P:
    """The spec with the filters the plan recorded: execute and observe act on what was
    planned, never on a later edit of the spec (which could widen the set)."""
    try:
        return type(p).model_validate({**p.model_dump(by_alias=True), **dict(plan.get("filters") or {})})
    except ValidationError as exc:  # a plan from another operator version whose fields moved
        raise PermanentError(f"the recorded plan's filters are not valid for this operator version: "
                             f"{exc.error_count()} error(s)", reason="PlanUnreadable") from None


def plan_evidence(prefix: str, tally: KeySetTally, *, plan_time: str, started_before: str,
                  filters: dict[str, Any]) -> Evidence:
    """``count``, ``<prefix>`` (the sample), its digest and completeness, the bound and the filters."""
    return {
        "count": tally.count,
        prefix: list(tally.sample),
        f"{prefix}Digest": tally.digest,
        f"{prefix}SampleComplete": tally.complete,
        "planTime": plan_time,
        "startedBefore": started_before,
        "filters": filters,
    }


def result_evidence(prefix: str, plan: Evidence, found: KeySetTally, signalled: KeySetTally) -> Evidence:
    """What execute found (drift against the plan's count and digest) and what it signalled."""
    return {
        "signalledCount": signalled.count,
        "signalledDigest": signalled.digest,
        "found": drift(plan.get("count"), plan.get(f"{prefix}Digest"), found),
    }
