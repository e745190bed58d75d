"""How the plugin shows things: kubectl-style ages and tables, YAML/JSON dumps, the one-word
reason of a Remediation, and its timeline (status stamps, conditions and Events by time).

Pure functions of API objects: no API calls here, so every command renders the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import yaml

from ..base import rfc3339

# -- times --------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's compact age style: 45s, 3m20s, 2h5m, 3d4h."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 10:
        return f"{m}m{s}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h == 0:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    if d == 0:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h}h" if h else f"{d}d"
    return f"{d}d"


def age(value: Any, now: datetime | None = None) -> str:
    seconds = rfc3339.age_seconds(value, now)
    return "<unknown>" if seconds is None else human_duration(seconds)


def fmt_time(t: datetime | None) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def fmt_stamp(value: Any) -> str:
    """An RFC 3339 field as a table cell ("-" when missing)."""
    return fmt_time(rfc3339.parse(value))


def duration_of(obj: dict[str, Any]) -> float | None:
    """Seconds from start of execution (or creation, if it never started) to completion."""
    status = obj.get("status") or {}
    end = rfc3339.parse(status.get("completedAt"))
    start = rfc3339.parse(status.get("startedAt")) or rfc3339.parse(meta(obj).get("creationTimestamp"))
    if end is None or start is None:
        return None
    return max(0.0, (end - start).total_seconds())


def duration_text(obj: dict[str, Any], missing: str = "-") -> str:
    d = duration_of(obj)
    return human_duration(d) if d is not None else missing


# -- objects ------------------------------------------------------------------------------------


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in ((obj.get("status") or {}).get("conditions") or []) if isinstance(c, dict)]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in conditions(obj):
        if c.get("type") == type_:
            return c
    return None


def reason_of(obj: dict[str, Any]) -> str:
    """The one word that explains where the object is: Completed's reason once final, else the
    reason of the step it is waiting on."""
    status = obj.get("status") or {}
    completed = condition(obj, "Completed")
    if completed and completed.get("status") == "True":
        return str(completed.get("reason") or "")
    if status.get("phase") == "AwaitingApproval":
        approved = condition(obj, "Approved")
        return str((approved or {}).get("reason") or "AwaitingApproval")
    for type_ in ("Verified", "Executed", "Approved", "Validated"):
        c = condition(obj, type_)
        if c and c.get("reason") not in (None, "", "NotEvaluated", "NotConfigured"):
            return str(c["reason"])
    return ""


def phase_of(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "")


# -- text ---------------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]]) -> str:
    """kubectl-style left-aligned columns separated by three spaces."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=4, sort_keys=False, default=str) + "\n"
    return yaml_text(data)


def yaml_text(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


def indent(text: str, prefix: str = "  ") -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


def yaml_block(data: Any) -> str:
    """An indented YAML section of ``describe`` ("<none>" when empty)."""
    if data in (None, {}, []):
        return "  <none>\n"
    return indent(yaml_text(data))


def section(rows: Sequence[Sequence[str]]) -> str:
    """An indented table under a heading; "<none>" when only the header (or nothing) is left."""
    return indent(table(rows)) if len(rows) > 1 else "  <none>\n"


# -- timeline -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of a Remediation's story."""

    time: datetime
    source: str  # object | status | condition | event
    what: str
    order: int = 0  # tie-break within the same second: creation first, completion last


def timeline(obj: dict[str, Any], events: Iterable[dict[str, Any]]) -> list[Entry]:
    """Status timestamps, conditions' lastTransitionTime and the object's Events, by time."""
    status = obj.get("status") or {}
    entries: list[Entry] = []

    def add(when: Any, source: str, what: str, order: int) -> None:
        t = rfc3339.parse(when)
        if t is not None:
            entries.append(Entry(t, source, what, order))

    add(meta(obj).get("creationTimestamp"), "object", "Remediation created", 0)
    attempt = status.get("attemptId")
    add(status.get("startedAt"), "status", f"execution started{f' (attempt {attempt})' if attempt else ''}", 3)
    if status.get("completedAt"):
        add(status.get("completedAt"), "status", f"completed: {phase_of(obj) or '?'} ({reason_of(obj) or '-'})", 5)
    for c in conditions(obj):
        msg = f"{c.get('type')}={c.get('status')} {c.get('reason') or ''}".rstrip()
        if c.get("message"):
            msg += f": {c['message']}"
        add(c.get("lastTransitionTime"), "condition", msg, 2)
    for e in events:
        when = e.get("eventTime") or e.get("firstTimestamp") or e.get("lastTimestamp") or meta(e).get("creationTimestamp")
        count = int(e.get("count") or 1)
        text = f"{e.get('type') or 'Normal'} {e.get('reason') or ''}: {e.get('message') or ''}"
        if count > 1:
            text += f" (x{count})"
        add(when, "event", text, 4)
    entries.sort(key=lambda x: (x.time, x.order))
    return entries
