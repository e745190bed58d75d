"""The Prometheus trigger: poll a PromQL query; each series that stays non-empty for `for`
fires once. First-seen times live in the policy's status (activeSeries), so an operator
restart keeps the same dedup keys instead of firing again."""

from __future__ import annotations

import time
from typing import Any

from ..api.common import now_rfc3339, parse_duration
from ..api.policy import RemediationPolicySpec
from ..base.errors import RemedyError
from ..lifecycle.verify import query
from ..policies.firing import TRIGGER_DEGRADED_REASONS, Firing, series_fingerprint
from ..policies.machinery import Policies


async def poll_once(policies: Policies, policy: dict[str, Any], prometheus_url: str | None) -> dict[str, str]:
    meta = policy["metadata"]
    spec = RemediationPolicySpec.model_validate(policy["spec"])
    trig = spec.trigger.prometheus
    assert trig is not None
    st = policy.get("status") or {}
    if not prometheus_url:
        await _condition(policies, policy, "Degraded", "True", "NoPrometheus", "REMEDY_PROMETHEUS_URL is not configured")
        return {}
    try:
        series = await query(prometheus_url, trig.query)
    except RemedyError as exc:
        await _condition(policies, policy, "Degraded", "True", exc.reason, exc.message)
        return {}
    degraded: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Degraded"), {})
    if degraded.get("status") == "True" and degraded.get("reason") in TRIGGER_DEGRADED_REASONS:
        await _condition(policies, policy, "Degraded", "False", "Healthy", "Prometheus answers the trigger query again")
    active: dict[str, Any] = dict(st.get("activeSeries") or {})
    patch: dict[str, Any] = {}
    outcomes: dict[str, str] = {}
    now = time.time()
    seen = set()
    hold = parse_duration(trig.for_)
    for s in series:
        labels = {str(k): str(v) for k, v in (s.get("metric") or {}).items()}
        fp = series_fingerprint(labels)
        seen.add(fp)
        entry = dict(active.get(fp) or {"firstSeen": now_rfc3339(), "firstSeenUnix": now, "fired": False, "labels": labels})
        if fp not in active:
            patch[fp] = entry
        if not entry.get("fired") and now - float(entry.get("firstSeenUnix", now)) >= hold:
            outcome = await policies.fire(policy, Firing(fp, entry["firstSeen"], labels, {}, "prometheus"))
            outcomes[fp] = outcome
            if outcome in ("created", "deduplicated"):
                entry["fired"] = True
                patch[fp] = entry
    # A series missing from one poll is not resolved yet: a failed scrape (a restarting target)
    # writes staleness markers, and treating that gap as "resolved" would start a new episode
    # (and a second remediation) for the same incident.
    grace = max(2 * parse_duration(trig.interval), 10.0)
    for fp, entry in active.items():
        if fp in seen:
            if entry.get("absentSince"):
                patch[fp] = {**entry, "absentSince": None}
            continue
        absent_since = float(entry.get("absentSince") or 0)
        if not absent_since:
            patch[fp] = {**entry, "absentSince": now}
        elif now - absent_since >= grace:
            await policies.resolve(policy, Firing(fp, entry.get("firstSeen", ""), entry.get("labels") or {}, {}, "prometheus"))
            patch[fp] = None  # merge patch: null deletes the key
    if patch:
        # Through the policy's one status writer (optimistic lock, re-read on 409): a merge
        # patch of these keys only, so alert handling's writes in between are kept.
        await policies.write_status(meta["namespace"], meta["name"], lambda _fresh: {"activeSeries": patch})
    return outcomes


async def _condition(policies: Policies, policy: dict[str, Any], type_: str, status: str, reason: str, message: str) -> None:
    # Computed from the policy as it is when written, not as it was when the poll started.
    await policies.set_policy_condition(policy, type_, status, reason, message)
