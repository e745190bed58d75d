"""The Pending record of a new Remediation, and why a first pass does not write it on its own.

Why: every Remediation's first pass used to cost two API round trips before it could act, a
GET of the object kopf had just delivered and a status PATCH saying Pending, and on a loaded
operator those calls decide whether it keeps up with alerts (issue 23). Now a first pass
starts from the watch event's body (machine.py) and keeps this record in memory; run.py adds
it to the pass's first status write (usually the intent), which is locked on the
resourceVersion read, so a stale body or a racing writer still costs only a 409 and a fresh
read, never a second attempt.
"""

from __future__ import annotations

from typing import Any

from ..api.remediation import CONDITION_TYPES
from .authz import requester_of
from .conditions import initial_conditions, set_condition


def pending_record(obj: dict[str, Any], action: str, target: str, generation: Any) -> dict[str, Any]:
    """Status of an accepted object: Pending, the action and target, the requester, conditions."""
    conds = initial_conditions(CONDITION_TYPES, generation)
    conds = set_condition(conds, "Validated", "True", "Valid", "spec is valid", generation)
    return {"phase": "Pending", "action": action, "target": target, "conditions": conds, "attempts": 0,
            "requestedBy": getattr(requester_of(obj), "username", None)}
