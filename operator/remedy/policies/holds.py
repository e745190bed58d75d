"""Start guards that depend on the world outside the policy: time windows (spec.windows) and
Alertmanager state (spec.holdWhile). Checked after the cheap in-memory guards, so a storm of
deduplicated firings never reaches Alertmanager.

Fail closed: when holdWhile is set and Alertmanager cannot be asked, the start is held (and
counted) rather than run blind; Alertmanager resends the firing, so it starts once the hold
lifts.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..api.holds import WEEKDAYS, Matcher, SilenceSpec, Window
from ..api.policy import RemediationPolicySpec
from ..base.errors import InvalidSpecError, RetryableError
from ..clients.alertmanager import CREATED_BY, Alertmanager, matches
from .templating import render


def _minutes(clock: str) -> int:
    h, m = clock.split(":")
    return int(h) * 60 + int(m)


def _days(spec: list[str]) -> set[int]:
    if not spec:
        return set(range(7))
    days: set[int] = set()
    for item in spec:
        first, _, last = item.partition(":")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return days


def in_window(window: Window, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.time_zone))
    if local.weekday() not in _days(window.weekdays):
        return False
    if not window.times:
        return True
    minute = local.hour * 60 + local.minute
    return any(_minutes(t.start) <= minute < _minutes(t.end) for t in window.times)


def describe(window: Window) -> str:
    days = ",".join(window.weekdays) or "every day"
    times = ",".join(f"{t.start}-{t.end}" for t in window.times) or "all day"
    return f"{days} {times} {window.time_zone}"


def render_matchers(matchers: list[Matcher], variables: dict[str, Any], where: str) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(matchers):
        wire = m.wire()
        wire["value"] = str(render(m.value, variables, f"{where}[{i}].value"))
        out.append(wire)
    return out


def silence_annotation(spec: SilenceSpec, variables: dict[str, Any]) -> str:
    """What the child carries so the silence keeper needs no policy lookup: rendered matchers
    and duration, or the template error to report."""
    from ..api.common import parse_duration

    try:
        matchers = render_matchers(spec.matchers, variables, "spec.silence.matchers")
    except InvalidSpecError as exc:
        return json.dumps({"error": exc.message})
    return json.dumps({"matchers": matchers, "durationSeconds": parse_duration(spec.duration), "comment": spec.comment or ""})


class Holds:
    def __init__(self, alertmanager: Alertmanager | None = None) -> None:
        self.am = alertmanager

    async def check(self, spec: RemediationPolicySpec, fingerprint: str, labels: dict[str, str],
                    variables: dict[str, Any], now: datetime | None = None) -> tuple[str, str] | None:
        """(guard, message) when the start must wait; None when it may go."""
        now = now or datetime.now(timezone.utc)
        if spec.windows and not any(in_window(w, now) for w in spec.windows):
            return "window", f"outside spec.windows ({'; '.join(describe(w) for w in spec.windows)})"
        hold = spec.hold_while
        if hold is None or (not hold.alerts and not hold.silenced):
            return None
        if self.am is None:
            return "hold", "spec.holdWhile needs the operator's REMEDY_ALERTMANAGER_URL; holding"
        try:
            if hold.alerts:
                wanted = [render_matchers(entry, variables, f"spec.holdWhile.alerts[{i}]") for i, entry in enumerate(hold.alerts)]
                for alert in await self.am.active_alerts():
                    if alert.get("fingerprint") == fingerprint:
                        continue  # the firing being handled never holds itself
                    alabels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
                    if any(matches(m, alabels) for m in wanted):
                        return "hold", f"alert {alabels.get('alertname', '?')} {_brief(alabels)} is firing (spec.holdWhile.alerts)"
            if hold.silenced:
                for s in await self.am.silences():
                    if (s.get("status") or {}).get("state") != "active" or s.get("createdBy") == CREATED_BY:
                        continue
                    if matches(s.get("matchers") or [], labels):
                        return "hold", (f"silence {s.get('id')} by {s.get('createdBy')} ({str(s.get('comment') or '')[:80]}) "
                                        f"matches the alert's labels (spec.holdWhile.silenced)")
        except RetryableError as exc:
            return "hold", f"cannot ask Alertmanager, holding: {exc.message}"
        except InvalidSpecError as exc:
            return "hold", exc.message
        return None


def _brief(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")[:160] + "}"
