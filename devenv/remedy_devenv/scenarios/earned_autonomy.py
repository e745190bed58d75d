"""Earned autonomy (issue 15) on runbook 000's incident: a RemediationPolicy in shadow mode
plans without acting, is promoted to approve by its track record, runs once with a person's
approval, is promoted to auto, and then purges the next incident's stale locks by itself.

The first two incidents are driven here (inject); the runner then follows the auto run like
any other scenario. While this runs, the idempotency-locks scenario's policy (same metric) is
paused so the two policies do not race for one incident; cleanup resumes it.
"""

from __future__ import annotations

import time
from typing import Any

from remedy.base.constants import ANN_APPROVED_BY, ANN_MODE, GROUP, POLICIES, VERSION

from ..demo.stack import ADMIN_TOKEN, NS, Stack
from ..demo.support import DemoError, http, say, wait_until
from .base import AlertRule, Scenario, alert_chain

POLICY = "lock-wait-earned"
APPROVER = "admin"
OTHER = "idem-stuck-locks"
RULE = AlertRule("LockWaitEarnedAutonomy", "idemp_lock_wait_p95_seconds > 1", "2s",
                 {"severity": "page", "team": "platform"}, "idempotency lock wait p95 above 1s")


def _policy(st: Stack) -> dict[str, Any]:
    obj: dict[str, Any] = st.custom().get_namespaced_custom_object(GROUP, VERSION, NS, POLICIES, POLICY)
    return obj


def _pause_other(st: Stack, paused: bool) -> None:
    try:
        st.custom().patch_namespaced_custom_object(GROUP, VERSION, NS, POLICIES, OTHER, {"spec": {"paused": paused}})
    except Exception:  # noqa: BLE001 - absent when this scenario runs alone
        pass


def _stale(st: Stack, prefix: str) -> list[str]:
    status, body = http("POST", f"{st.url('gateway')}/admin/idempotency/_inject", {"count": 3, "stale": True, "prefix": prefix},
                        ADMIN_TOKEN)
    if status != 201:
        raise DemoError(f"inject failed: {status}")
    return [str(i["key"]) if isinstance(i, dict) else str(i) for i in body["created"]]


def _wait_mode(st: Stack, mode: str) -> dict[str, Any]:
    wait_until(lambda: (_policy(st).get("status") or {}).get("mode") == mode, 40, f"policy mode {mode}")
    return _policy(st)


def _wait_resolved(st: Stack) -> None:
    wait_until(lambda: not st.firing(RULE.alert), 30, f"{RULE.alert} resolved")


def _new_child(st: Stack, seen: set[str]) -> str:
    wait_until(lambda: [k for k in st.children(POLICY) if k["metadata"]["name"] not in seen], 40, "a new child")
    return str(next(k["metadata"]["name"] for k in st.children(POLICY) if k["metadata"]["name"] not in seen))


def _end(st: Stack, name: str) -> dict[str, Any]:
    wait_until(lambda: ((st.remediation(name) or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed"), 40, f"{name} final")
    return st.remediation(name) or {}


def inject(st: Stack) -> str:
    _pause_other(st, True)
    # 1. shadow: a plan, nothing executed; the alert is still firing when the verify window ends.
    keys = _stale(st, "shadow-")
    child = _new_child(st, set())
    obj = _end(st, child)
    if not obj["spec"].get("dryRun"):
        raise DemoError(f"shadow run {child} was not a dry run")
    say(f"    shadow run {child}: dry run, plan: {(obj['status'].get('plan') or {}).get('change')}")
    _wait_mode(st, "approve")
    say("    promoted shadow -> approve (1 planned run the alert still needed)")
    for key in keys:  # the on-call fixes it by hand, as the plan said
        http("DELETE", f"{st.url('gateway')}/admin/idempotency/{key}", token=ADMIN_TOKEN)
    _wait_resolved(st)
    # 2. approve: the run waits for a person, then acts and is verified.
    seen = {k["metadata"]["name"] for k in st.children(POLICY)}
    _stale(st, "approve-")
    child = _new_child(st, seen)
    wait_until(lambda: ((st.remediation(child) or {}).get("status") or {}).get("phase") == "AwaitingApproval", 30, "AwaitingApproval")
    time.sleep(0.5)
    # The approver must be who the API server authenticated (admission policy): the demo's admin.
    st.kubectl("annotate", "-n", NS, f"remediation/{child}", f"{ANN_APPROVED_BY}={APPROVER}")
    obj = _end(st, child)
    if obj["status"]["phase"] != "Succeeded":
        raise DemoError(f"approved run {child} ended {obj['status']['phase']}: {obj['status'].get('message')}")
    say(f"    approved run {child}: {obj['status'].get('message')}")
    _wait_mode(st, "auto")
    say("    promoted approve -> auto (1 verified run)")
    _wait_resolved(st)
    # 3. auto: the incident the runner follows.
    seen = {k["metadata"]["name"] for k in st.children(POLICY)}
    _stale(st, "auto-")
    _new_child(st, seen)
    return "third incident (3 stale locks) after shadow -> approve -> auto; this run needs no person"


def check(st: Stack, obj: dict[str, Any]) -> str:
    annotations = obj["metadata"].get("annotations") or {}
    if annotations.get(ANN_MODE) != "auto" or (obj["spec"].get("approval") or {}).get("required"):
        raise DemoError(f"the followed run was not an auto run: {annotations}")
    _, recent = http("GET", f"{st.url('gateway')}/admin/idempotency/recent", token=ADMIN_TOKEN)
    left = [i["key"] for i in recent["items"] if str(i["key"]).startswith("auto-")]
    if left:
        raise DemoError(f"stale keys left: {left}")
    wait_until(lambda: ((_policy(st).get("status") or {}).get("trackRecord") or {}).get("runs") == 3, 20, "track record of 3 runs")
    record = (_policy(st).get("status") or {}).get("trackRecord") or {}
    if (record.get("planned"), record.get("verified")) != (1, 2):
        raise DemoError(f"track record {record}")
    return (f"auto run purged the stale locks; track record: runs {record['runs']}, planned {record['planned']}, verified {record['verified']}, "
            f"median {record.get('medianSecondsToVerified')}s to verified (kubectl remedy history {POLICY})")


def cleanup(st: Stack) -> None:
    _pause_other(st, False)


SCENARIO = Scenario(
    "earned-autonomy", "000", "shadow -> approve -> auto by track record", f"alert {RULE.alert}", "purgeIdempotencyKeys",
    inject, alert_chain(RULE), check, policy=POLICY, cleanup=cleanup, alerts=(RULE,))
