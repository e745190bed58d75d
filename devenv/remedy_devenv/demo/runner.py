"""One scenario from injection to verdict (inject, watch the milestones, create or find the
Remediation, approve when the scenario says so, wait for its end, check the world), and
``main``: argument parsing, signals, start, every scenario, summary, teardown."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remedy.api.digest import spec_digest
from remedy.base.constants import ANN_APPROVED_BY, ANN_APPROVED_SPEC_DIGEST, FINAL_PHASES, GROUP, POLICIES, VERSION

from ..scenarios import BY_NAME, SCENARIOS, Scenario
from .ports import choose_ports
from .report import Outcome, Timeline, keep_running, summary
from .stack import NS, Stack
from .start import start_stack
from .support import DemoError, Interrupted, say, wait_until

# The demo runs kubectl as the cluster admin; the API server accepts only the approving user's own
# name as approver (deploy/admission, docs/security.md).
APPROVER = "admin"
DESCRIPTION = "`./scripts/demo`: a live incident demo on a real local control plane."


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def _wait_policy_ready(st: Stack, policy: str) -> None:
    wait_until(lambda: (_cond(st.custom().get_namespaced_custom_object(GROUP, VERSION, NS, POLICIES, policy), "Ready")
                        or {}).get("status") == "True", 20, f"policy {policy} Ready")


def _detect(st: Stack, sc: Scenario, tl: Timeline) -> None:
    for key, fn in sc.detect:
        if key not in tl:
            with contextlib.suppress(DemoError, OSError, ValueError, KeyError):
                text = fn(st)
                if text:
                    tl.mark(key, text)


def _find_remediation(st: Stack, sc: Scenario, tl: Timeline) -> str | None:
    """Applies the scenario's Remediation once every symptom is seen, or finds the policy's child."""
    if sc.remediation and sc.from_git and all(k in tl for k, _ in sc.detect):
        if st.remediation(sc.remediation) is None:
            return None
        tl.mark("created", f"Remediation {sc.remediation} applied by Argo CD from git (docs/cookbook/{sc.name}.yaml)")
        return sc.remediation
    if sc.remediation and all(k in tl for k, _ in sc.detect):
        st.apply(sc.name)
        tl.mark("created", f"Remediation {sc.remediation} applied with kubectl (docs/cookbook/{sc.name}.yaml)")
        return sc.remediation
    if sc.policy:
        kids = st.children(sc.policy)
        if kids:  # the newest: a scenario may drive earlier runs itself (earned-autonomy)
            name = str(max(kids, key=lambda k: (k["metadata"]["creationTimestamp"], k["metadata"]["name"]))["metadata"]["name"])
            tl.mark("created", f"Remediation {name} created by policy {sc.policy}")
            return name
    return None


def _follow(st: Stack, sc: Scenario, tl: Timeline, name: str, obj: dict[str, Any] | None) -> bool:
    """Prints the Remediation's new milestones; True once it is final."""
    status = (obj or {}).get("status") or {}
    plan = status.get("plan") or {}
    if plan:
        tl.mark("plan", f"plan: {plan.get('change') or json.dumps(plan)[:160]}")
    if status.get("phase") == "AwaitingApproval" and "awaiting" not in tl:
        tl.mark("awaiting", "phase AwaitingApproval: nothing runs until a person approves")
        return False
    if status.get("phase") == "AwaitingApproval" and sc.approve and "approved" not in tl:
        time.sleep(1)
        # The approval names the spec it approves, as `kubectl remedy approve` writes it.
        st.kubectl("annotate", "-n", NS, f"remediation/{name}", f"{ANN_APPROVED_BY}={APPROVER}",
                   f"{ANN_APPROVED_SPEC_DIGEST}={spec_digest((obj or {}).get('spec'))}")
        tl.mark("approved", f"approved by {APPROVER} (kubectl annotate {ANN_APPROVED_BY})")
    ex = _cond(obj or {}, "Executed")
    if ex and ex.get("status") == "True":
        result = status.get("result") or {}
        counts = ", ".join(f"{k} {v}" for k, v in result.items()
                           if isinstance(v, int) and not isinstance(v, bool) and k != "durationMs")
        summary = result.get("summary") or (f"{ex.get('message')} ({counts})" if counts else ex.get("message"))
        tl.mark("action", f"action: {summary}")
    ver = _cond(obj or {}, "Verified")
    if ver and ver.get("status") in ("True", "False") and status.get("phase") not in (None, "Running", "Pending"):
        tl.mark("verify", f"verification: {ver.get('status')} {ver.get('reason')}: {ver.get('message')}"[:200])
    if status.get("phase") in FINAL_PHASES:
        comp = _cond(obj or {}, "Completed") or {}
        tl.mark("phase", f"phase {status['phase']} ({comp.get('reason')}): {comp.get('message', '')}"[:200])
        return True
    return False


def _explain_timeout(st: Stack, name: str | None, obj: dict[str, Any] | None) -> None:
    """A scenario that times out prints what the Remediation was doing: its status, its Events
    and the operator's last log lines about it, so a slow or stuck run can be told apart."""
    with contextlib.suppress(Exception):
        if obj is not None:
            status = obj.get("status") or {}
            say(f"    status at timeout: phase={status.get('phase')} attempts={status.get('attempts')} "
                f"intent={status.get('intent')}")
            for c in status.get("conditions") or []:
                say(f"      condition {c.get('type')}={c.get('status')} {c.get('reason')}: "
                    f"{str(c.get('message'))[:160]} (since {c.get('lastTransitionTime')})")
        if name is not None:
            events = st.kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name}",
                                "-o", "custom-columns=LAST:.lastTimestamp,REASON:.reason,MESSAGE:.message")
            for line in events.stdout.splitlines()[-15:]:
                say(f"      event {line}"[:220])
            log = st.state / "logs" / "operator.log"
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if name in ln]
            for line in lines[-25:]:
                say(f"      log {line}"[:260])


def run_scenario(st: Stack, sc: Scenario, timeout: float) -> Outcome:
    say()
    say(f"=== {sc.name} (runbook {sc.runbook}): {sc.title}")
    trig = f"{sc.trigger}" + (f" -> policy {sc.policy}" if sc.policy else "")
    tl = Timeline()
    try:
        if sc.policy:
            st.apply(sc.name)
            say(f"    RemediationPolicy {sc.policy} applied (kubectl apply -f docs/cookbook/{sc.name}.yaml)")
            _wait_policy_ready(st, sc.policy)
        tl.start()
        deadline = tl.t0 + timeout
        tl.mark("inject", f"incident injected: {sc.inject(st)}")
        name: str | None = None
        obj: dict[str, Any] | None = None
        ended: float | None = None
        while time.monotonic() < deadline:
            _detect(st, sc, tl)
            if name is None:
                name = _find_remediation(st, sc, tl)
            if name is not None:
                obj = st.remediation(name)
                if _follow(st, sc, tl, name, obj):
                    ended = tl.elapsed()
                    break
            time.sleep(0.25)
        if ended is None or obj is None:
            missing = [k for k, _ in sc.detect if k not in tl] or (["Remediation"] if name is None else ["end"])
            _explain_timeout(st, name, obj)
            raise DemoError(f"no outcome within {timeout:.0f}s (waiting for: {', '.join(missing)})")
        return _verdict(st, sc, tl, obj, ended, trig)
    except DemoError as exc:
        say(f"    => FAILED: {exc}")
        return Outcome(sc.name, trig, sc.action, None, f"FAILED: {exc}"[:100], False)
    except Exception as exc:  # noqa: BLE001 - one broken scenario must not stop the others
        say(f"    => FAILED: {type(exc).__name__}: {exc}")
        return Outcome(sc.name, trig, sc.action, None, f"FAILED: {type(exc).__name__}: {exc}"[:100], False)
    finally:
        if sc.cleanup is not None:
            with contextlib.suppress(Exception):
                sc.cleanup(st)


def _verdict(st: Stack, sc: Scenario, tl: Timeline, obj: dict[str, Any], took: float, trig: str) -> Outcome:
    status = obj["status"]
    reason = (_cond(obj, "Completed") or {}).get("reason")
    if status["phase"] != sc.expect_phase or (sc.expect_reason and reason != sc.expect_reason):
        raise DemoError(f"ended {status['phase']}/{reason}, expected {sc.expect_phase}"
                        + (f"/{sc.expect_reason}" if sc.expect_reason else "") + f": {status.get('message')}")
    detail = sc.check(st, obj)
    refused = sc.expect_phase == "Skipped"
    tl.mark("resolved", detail if refused else f"resolved: {detail}")
    say(f"    => {'refused as expected' if refused else 'remediated'} in {took:.1f}s")
    return Outcome(sc.name, trig, sc.action, took, f"refused ({reason}) as expected" if refused else "remediated", True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./scripts/demo", description=DESCRIPTION)
    parser.add_argument("--scenario", action="append", choices=list(BY_NAME), metavar="NAME",
                        help="run only these (repeatable): " + ", ".join(BY_NAME))
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=90.0, help="per-scenario limit in seconds (default 90)")
    parser.add_argument("--record", type=Path, help="write pids, ports and the state dir as JSON here (for tests)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `./scripts/demo -- --scenario x`
        argv = argv[1:]
    args = parser.parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:24} runbook {sc.runbook:8} {sc.action:26} {sc.title}")
        return 0
    chosen = [BY_NAME[n] for n in dict.fromkeys(args.scenario)] if args.scenario else list(SCENARIOS)
    chosen.sort(key=SCENARIOS.index)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    ports, moved = choose_ports()
    state = Path(tempfile.mkdtemp(prefix="remedy-demo-"))
    stack = Stack(state=state, ports=ports, record_path=args.record)
    stack.record()
    began = time.monotonic()
    rc, kept = 1, False
    try:
        say(f"demo: {len(chosen)} scenario(s); state dir {state}")
        say("thresholds are shortened for the demo: scrape/evaluation 1s, alerts `for` 2-3s, "
            "Alertmanager group_wait 1s, durations of seconds instead of minutes")
        if moved:
            say(f"ports in use, using free ones instead: {', '.join(moved)}")
        start_stack(stack)
        say(f"stack ready in {time.monotonic() - began:.1f}s")
        outcomes = [run_scenario(stack, sc, args.timeout) for sc in chosen]
        summary(outcomes)
        rc = 0 if all(o.ok for o in outcomes) else 1
        say(f"total {time.monotonic() - began:.1f}s")
        if args.keep:
            kept = True
            keep_running(stack)
    except Interrupted as exc:
        say(f"interrupted ({exc}): stopping everything")
        rc = rc if kept else 130
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        say(f"demo failed: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        say("stopping everything the demo started...")
        with contextlib.suppress(Exception):
            stack.record()
        stack.stop()
        stack.record_path = None
        for sig, handler in old.items():
            signal.signal(sig, handler)
        say(f"stopped; removed {state}")
    return rc
