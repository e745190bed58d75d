"""What changed on a workload since the plan read it, and who changed it.

Why a module of its own: a failed precondition (a JSON-patch ``test`` op) only says *that*
something moved. A person's edit wins (issue 21): the Remediation then ends Skipped, and it must
say which field moved, to what value, and which field manager wrote it (from the target's
``managedFields``, stamped by the API server), so the person whose change won can be found and
nobody has to guess why remedy stood down. The workload actions' writer (``workload._patch``)
calls ``what_changed`` after a TargetChanged answer.
"""

from __future__ import annotations

import json
from typing import Any

from ..base.errors import TargetChangedError


def _walk(obj: Any, pointer: str) -> Any:
    cur = obj
    for part in pointer.strip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def _item_key(fields: dict[str, Any], item: Any) -> str | None:
    """The fieldsV1 key of a list item: k:{"name":"app"} names the item whose fields match."""
    for key in fields:
        if key.startswith("k:") and isinstance(item, dict):
            try:
                ident = json.loads(key[2:])
            except ValueError:
                continue
            if isinstance(ident, dict) and all(item.get(k) == v for k, v in ident.items()):
                return key
    return None


def _owns(fields: Any, parts: list[str], obj: Any) -> bool:
    """Whether a managedFields ``fieldsV1`` tree names the field at ``parts``; list items are
    keyed by content (k:{"name":"app"}), so the object itself is walked alongside."""
    cur, node = fields, obj
    for part in parts:
        if not isinstance(cur, dict):
            return False
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
            key = _item_key(cur, node)
        else:
            node = node.get(part) if isinstance(node, dict) else None
            key = f"f:{part}"
        if key is None or key not in cur:
            return False
        cur = cur[key]
    return True


def manager_of(managed_fields: list[dict[str, Any]], pointer: str, obj: Any = None) -> dict[str, Any] | None:
    """The entry of the manager that owns the field, else the latest writer of the object.

    ``metadata.generation`` has no owner: any spec write moves it, so the most recent entry
    that is not a status write is the best witness of who edited the spec.
    """
    parts = [p for p in pointer.strip("/").split("/") if p]
    entries = [m for m in managed_fields if m.get("subresource") != "status"]
    owners = [m for m in entries if _owns(m.get("fieldsV1") or {}, parts, obj)]
    pool = owners or entries
    if not pool:
        return None
    latest = max(str(m.get("time") or "") for m in pool)
    tied = [m for m in pool if str(m.get("time") or "") == latest]
    if len(tied) == 1:
        return tied[0]
    # managedFields times have one-second resolution: name every writer of that second.
    return {**tied[0], "manager": " or ".join(sorted(str(m.get("manager")) for m in tied)), "subresource": None}


def what_changed(now: dict[str, Any], read: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tested field whose value differs from what the plan read: field, was, now and the
    manager (with its operation and time) that wrote it."""
    managed = (now.get("metadata") or {}).get("managedFields") or []
    out = []
    # The named fields first; metadata.generation only says that *some* spec field moved.
    for pointer, was in sorted(read.items(), key=lambda kv: kv[0] == "/metadata/generation"):
        cur = _walk(now, pointer)
        if cur == was:
            continue
        m = manager_of(managed, pointer, now) or {}
        out.append({"field": pointer.strip("/").replace("/", "."), "was": was, "now": cur,
                    "manager": m.get("manager"), "operation": m.get("operation"),
                    "subresource": m.get("subresource"), "time": m.get("time")})
    return out


def describe(change: dict[str, Any]) -> str:
    who = change.get("manager")
    by = f" by {who!r}" if who else " (writer unknown)"
    if who and change.get("subresource"):
        by += f" via {change['subresource']}"
    if who and change.get("time"):
        by += f" at {change['time']}"
    return f"{change['field']} was {change['was']!r} at plan time, now {change['now']!r}, changed{by}"


def target_changed(kind: str, name: str, changes: list[dict[str, Any]]) -> TargetChangedError:
    what = "; ".join(describe(c) for c in changes)
    if any(c["field"] == "metadata.generation" for c in changes):
        what += " (someone edited its spec in between)"
    return TargetChangedError(f"{kind}/{name} changed since the plan: {what}", changes=changes)
