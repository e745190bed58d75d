"""Conditions keyed by type (metav1.Condition semantics) and the phase derived from them."""

from __future__ import annotations

from typing import Any

from ..api.common import now_rfc3339


def set_condition(
    conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str, generation: int | None
) -> list[dict[str, Any]]:
    """Return a new list with ``type_`` set; lastTransitionTime changes only when status does."""
    out = [dict(c) for c in conditions]
    for c in out:
        if c.get("type") == type_:
            if c.get("status") != status:
                c["lastTransitionTime"] = now_rfc3339()
            c.update(status=status, reason=reason, message=message[:1024], observedGeneration=generation)
            return out
    out.append(
        {
            "type": type_, "status": status, "reason": reason, "message": message[:1024],
            "observedGeneration": generation, "lastTransitionTime": now_rfc3339(),
        }
    )
    return out


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def initial_conditions(types: tuple[str, ...], generation: int | None) -> list[dict[str, Any]]:
    conds: list[dict[str, Any]] = []
    for t in types:
        conds = set_condition(conds, t, "Unknown", "NotEvaluated", "not evaluated yet", generation)
    return conds
